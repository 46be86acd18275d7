"""Config keys of nd-det: ``MODEL.DISTILL`` (distillation), the student backbones' own node
(``MODEL.TORCHVISION``) and ``SOLVER.AMP.PRECISION``.

Usage::

    from detectron2.config import get_cfg
    from nd_det import add_distill_config

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file("configs/COCO-Distill/R50_from_R101_nd.yaml")
"""

import os
from collections.abc import Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .errors import ConfigError, input_stage
from .utils.paths import not_found

__all__ = [
    "DISTILL_META_ARCHITECTURES",
    "plain_meta_architecture",
    "num_classes_key",
    "num_classes",
    "add_distill_config",
    "add_backbone_config",
    "merge_config",
    "load_config",
    "load_lazy_config",
    "is_lazy_run_config",
]

# nd-det's distillation meta-architectures -> the plain detectron2 one of their student (what an
# export and an --eval-only run build).  DistillFCOS is a LazyConfig only, as detectron2's FCOS;
# it is here for the yacs view of such a run (its classes at MODEL.RETINANET.NUM_CLASSES).
DISTILL_META_ARCHITECTURES = {
    "DistillRCNN": "GeneralizedRCNN",
    "DistillRetinaNet": "RetinaNet",
    "DistillFCOS": "FCOS",
}


def plain_meta_architecture(cfg: CN) -> str:
    """The plain detectron2 META_ARCHITECTURE of the student of ``cfg``."""
    name = cfg.MODEL.META_ARCHITECTURE
    return DISTILL_META_ARCHITECTURES.get(name, name)


def num_classes_key(cfg: CN) -> str:
    """The key holding the student's number of classes: a one-stage student's (RetinaNet's; the
    FCOS of a LazyConfig in its yacs view), else the R-CNN's."""
    if plain_meta_architecture(cfg) in ("RetinaNet", "FCOS"):
        return "MODEL.RETINANET.NUM_CLASSES"
    return "MODEL.ROI_HEADS.NUM_CLASSES"


def num_classes(cfg: CN) -> int:
    """The student's number of classes (at :func:`num_classes_key`)."""
    one_stage = num_classes_key(cfg) == "MODEL.RETINANET.NUM_CLASSES"
    return int((cfg.MODEL.RETINANET if one_stage else cfg.MODEL.ROI_HEADS).NUM_CLASSES)


def add_backbone_config(cfg: CN) -> CN:
    """Add the keys of the student backbones detectron2 lacks, in place: ``MODEL.TORCHVISION``,
    any torchvision classifier (MobileNetV2 and MobileNetV3 included) as an FPN student backbone
    (``MODEL.BACKBONE.NAME: build_torchvision_fpn_backbone``).

    This is all a process that only deploys an exported student with such a backbone needs.
    Safe to call more than once: an existing node is left as it is.  Returns ``cfg``.
    """
    if "TORCHVISION" in cfg.MODEL:
        return cfg
    cfg.MODEL.TORCHVISION = CN()
    # The torchvision.models builder name, e.g. "mobilenet_v3_large", "efficientnet_b0",
    # "regnet_x_400mf", "resnet18", "convnext_tiny", "mobilenet_v2".  Any torchvision
    # classification model works when STAGES is given; the listed ones have default STAGES.
    cfg.MODEL.TORCHVISION.ARCH = "mobilenet_v3_large"
    # Graph node names (torchvision.models.feature_extraction.get_graph_node_names; a module
    # name such as "features.6" means its last node) whose outputs the bottom-up network
    # returns, shallow to deep, strides doubling (4, 8, 16, 32 for p2..p5).  [] = the built-in
    # table for ARCH (nd_det.modeling.backbone.TORCHVISION_DEFAULT_STAGES): the last block at
    # each of the strides 4/8/16/32, without the classifier's widening 1x1 conv.
    cfg.MODEL.TORCHVISION.STAGES = []
    # Names of those outputs, one per stage (MODEL.FPN.IN_FEATURES picks among them).  The
    # default names say the stride: c<k> is at stride 2^k.
    cfg.MODEL.TORCHVISION.OUT_FEATURES = ["c2", "c3", "c4", "c5"]
    # Normalisation of the model's BatchNorm layers: "FrozenBN" (fixed statistics: the usual
    # choice with ImageNet weights), "BN" (torchvision's own, trained), "SyncBN" (BN synchronised
    # across GPUs) or "GN" (GroupNorm with the largest group count <= 32 dividing the channels;
    # trains sanely from random init).  Other norms (ConvNeXt's LayerNorm) are kept as they are.
    cfg.MODEL.TORCHVISION.NORM = "FrozenBN"
    # 0 trains every layer; k in 1..len(STAGES) freezes every layer that computes the k-th stage
    # output (weights fixed, BatchNorm turned into FrozenBN).  1 = everything up to stride 4,
    # what detectron2's ResNet freezes with MODEL.BACKBONE.FREEZE_AT 2 (stem + res2).
    cfg.MODEL.TORCHVISION.FREEZE_AT = 1
    # Channel width multiplier, for the builders that take one (mobilenet_v2,
    # mobilenet_v3_large, mobilenet_v3_small); 1.0 for every other ARCH and for ImageNet weights.
    cfg.MODEL.TORCHVISION.WIDTH_MULT = 1.0
    return cfg


def add_distill_config(cfg: CN) -> CN:
    """Add every nd-det key (``MODEL.DISTILL``, the backbone nodes, ``SOLVER.AMP.PRECISION``) to
    a detectron2 config.

    Safe to call twice: each node is added only where it is missing.  Returns ``cfg``.
    """
    add_backbone_config(cfg)
    if "PRECISION" not in cfg.SOLVER.AMP:
        # Precision of detectron2's AMP trainer (SOLVER.AMP.ENABLED): "float16" (detectron2's
        # choice, with a gradient scaler) or "bfloat16" (no gradient scaler needed, hence none:
        # no extra pass and no host sync per step).  The teacher's own precision is
        # MODEL.DISTILL.TEACHER_AUTOCAST.
        cfg.SOLVER.AMP.PRECISION = "float16"
    if "DISTILL" in cfg.MODEL:
        return cfg
    _C = cfg
    _C.MODEL.DISTILL = CN()

    # --- the teacher ---------------------------------------------------------------------------
    # Teacher config: a detectron2 model-zoo name or a path, either a yacs yaml
    # ("COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", built by build_model) or a LazyConfig .py
    # ("new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py", a ViTDet / MViTv2 file of detectron2's
    # projects/: LazyConfig.load + instantiate(cfg.model)).  Faster, Mask (its mask head never
    # runs) and Cascade R-CNN teachers; each keeps its own input format and pixel mean/std.
    _C.MODEL.DISTILL.TEACHER_CONFIG = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"
    # Teacher weights: a local path or a URL detectron2's checkpointer understands
    # ("detectron2://...", "https://...").  Empty: the model-zoo weights of TEACHER_CONFIG (only
    # when it is a model-zoo name).  Missing or mismatching keys stop the run.
    _C.MODEL.DISTILL.TEACHER_WEIGHTS = ""
    # Overrides applied to the teacher config after loading it: "KEY VALUE" pairs for a yaml
    # teacher, e.g. ["MODEL.ROI_HEADS.NUM_CLASSES", "1"]; dotted "key=value" strings for a
    # LazyConfig teacher (LazyConfig.apply_overrides syntax; every key must exist in the file),
    # e.g. ["model.roi_heads.num_classes=1"].  The device always follows the student's.
    _C.MODEL.DISTILL.TEACHER_OPTS = []
    # Which box head of a Cascade R-CNN teacher gives the RoI embeddings and logits the terms use
    # (and the class means are averaged from): 0 .. stages-1, counted from the first, or -1 for
    # the last.  -1 by default: the last stage's head is trained on the best-localised boxes
    # (IoU 0.7) and gives the cascade's final boxes, so its embeddings separate the classes best.
    # It runs on the student's sampled boxes as they are.  Other teachers have one head: keep -1.
    _C.MODEL.DISTILL.TEACHER_CASCADE_STAGE = -1
    # Run the teacher forward under autocast with this dtype on CUDA ("" = full precision;
    # "bfloat16" or "float16").  Distillation losses are always computed in float32.
    _C.MODEL.DISTILL.TEACHER_AUTOCAST = ""

    # --- class means for ND --------------------------------------------------------------------
    # The teacher's class-mean table ((NUM_CLASSES + 1, box-head dim), background last), written
    # by tools/extract_class_means.py, which writes to this path by default.  Needed when "nd" is
    # in LOSSES; checked against the teacher before training starts.
    _C.MODEL.DISTILL.CLASS_MEANS = "class_means/teacher_class_means.pth"

    # --- ND's mechanism, live -------------------------------------------------------------------
    # Every this many iterations (with detectron2's writers: metrics.json, the console,
    # TensorBoard) the run logs nd/norm_ratio (the student's mean RoI-embedding norm over the
    # teacher's on the same foreground RoIs) and, with ND, nd/cosine_to_class_mean (the mean
    # cosine of each foreground embedding to the teacher's class mean of its label).  0: never.
    _C.MODEL.DISTILL.MECHANISM_PERIOD = 20

    # --- which losses ---------------------------------------------------------------------------
    # Names from ("nd", "kd", "dkd", "dist", "reviewkd"); each adds "loss_<name>" to the loss dict.
    # ReviewKD++ = ["reviewkd", "nd"]; KD++ = ["kd", "nd"]; DKD++ = ["dkd", "nd"]; [] = no
    # distillation (the student trains alone and the teacher is not built).
    _C.MODEL.DISTILL.LOSSES = ["reviewkd", "nd"]

    # ND: student RoI embeddings vs the teacher's class-mean directions and embedding norms.
    _C.MODEL.DISTILL.ND = CN()
    # Weight of loss_nd.
    _C.MODEL.DISTILL.ND.WEIGHT = 1.0
    # Include background RoIs (class NUM_CLASSES, the table's last row) in ND, as the reference
    # does.  False: ND averages over foreground RoIs only.
    _C.MODEL.DISTILL.ND.INCLUDE_BACKGROUND = True
    # When the student's box-head embedding is narrower or wider than the teacher's: True passes
    # it, for ND only, through a student-side projector to the teacher's width (BatchNorm1d ->
    # Dropout 0.5 -> Linear, the reference's ImageNet/Models/embtrans.py answer for
    # classification), and ND is computed in the teacher's width.  The projector trains with the
    # student, is saved with the distillation modules (distill_terms.*) and left out of the
    # export.  False: differing widths are an error.  Equal widths never build one.
    _C.MODEL.DISTILL.ND.PROJECTOR = False

    # KD on the (NUM_CLASSES + 1)-way RoI classification logits.
    _C.MODEL.DISTILL.KD = CN()
    # Weight of loss_kd.
    _C.MODEL.DISTILL.KD.WEIGHT = 1.0
    # Softmax temperature T (the loss is scaled by T^2).
    _C.MODEL.DISTILL.KD.TEMPERATURE = 1.0

    # DKD on the RoI logits, with the RoI labels (background included).
    _C.MODEL.DISTILL.DKD = CN()
    # Overall multiplier of loss_dkd (on top of ALPHA / BETA).
    _C.MODEL.DISTILL.DKD.WEIGHT = 1.0
    # Weight of the target-class term (TCKD).
    _C.MODEL.DISTILL.DKD.ALPHA = 1.0
    # Weight of the non-target-class term (NCKD).
    _C.MODEL.DISTILL.DKD.BETA = 0.25
    # Softmax temperature T (both terms are scaled by T^2).
    _C.MODEL.DISTILL.DKD.TEMPERATURE = 1.0

    # DIST (Huang et al., 2022) on the RoI logits: inter- and intra-class Pearson relations
    # (DIST++ = ["dist", "nd"]).  No published detection recipe: the paper's defaults.
    _C.MODEL.DISTILL.DIST = CN()
    # Weight of loss_dist.
    _C.MODEL.DISTILL.DIST.WEIGHT = 1.0
    # Weight of the inter-class (per RoI, across classes) relation.
    _C.MODEL.DISTILL.DIST.BETA = 1.0
    # Weight of the intra-class (per class, across RoIs) relation.
    _C.MODEL.DISTILL.DIST.GAMMA = 1.0
    # Softmax temperature T.
    _C.MODEL.DISTILL.DIST.TEMPERATURE = 1.0

    # ReviewKD: ABF fusion of the student FPN levels + HCL against the teacher's levels.
    _C.MODEL.DISTILL.REVIEWKD = CN()
    # Weight of loss_reviewkd.
    _C.MODEL.DISTILL.REVIEWKD.WEIGHT = 1.0
    # FPN levels compared, shallow to deep; channels are read from the two backbones.
    _C.MODEL.DISTILL.REVIEWKD.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Width of the ABF fusion path.
    _C.MODEL.DISTILL.REVIEWKD.MID_CHANNELS = 256
    # Normalisation inside the ABF modules: "bn" (reference), "gn" or "none".
    _C.MODEL.DISTILL.REVIEWKD.NORM = "bn"
    # With NORM "bn": the number of images each ABF BatchNorm normalises over.  The reference
    # trained 4 GPUs x 2 images, so 2; when a process holds fewer (8 GPUs x 1 image), consecutive
    # ranks are synchronised in groups holding BN_IMAGES images.  0: each process's own images.
    _C.MODEL.DISTILL.REVIEWKD.BN_IMAGES = 2

    return cfg


def merge_config(cfg: CN, source, what: str) -> None:
    """Merge a yaml file (str) or KEY VALUE overrides (list) into ``cfg``; what yacs refuses is
    one ConfigError naming ``what``.  A relative ``_BASE_`` is taken from the folder of the yaml
    that names it, as detectron2 does."""
    if isinstance(source, str) and not os.path.isfile(source):
        raise ConfigError(f"{what}: {not_found(source)}")
    try:
        if isinstance(source, str):
            cfg.merge_from_file(source)
        else:
            cfg.merge_from_list(list(source))
    except FileNotFoundError as e:  # a _BASE_ of the file
        raise ConfigError(
            f"{what}: its _BASE_ {not_found(e.filename)} (a _BASE_ is relative to "
            "the yaml that names it)"
        ) from None
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        message = str(e).strip().strip("'")
        hint = (
            "give the key a value of the type its default has"
            if "Type mismatch" in message
            else "check it against nd_det/config.py and detectron2's config reference"
        )
        raise ConfigError(f"{what}: {message}; {hint}") from None


def load_config(config_file: str, opts: Sequence[str] = (), freeze: bool = True) -> CN:
    """detectron2's defaults + nd-det's keys + ``config_file`` (if any) + ``opts``."""
    cfg = get_cfg()
    add_distill_config(cfg)
    if config_file:
        merge_config(cfg, config_file, f"--config-file {config_file}")
    merge_config(cfg, opts, "command-line overrides")
    if freeze:
        cfg.freeze()
    return cfg


_MISSING = object()


def load_lazy_config(
    path: str, overrides: Sequence[str] = (), what: str = "", fix="the override", required=()
):
    """A LazyConfig (``LazyConfig.load``) with detectron2's dotted overrides (``key=value``),
    each naming a key the file has (OmegaConf would silently add a misspelt one), as must the
    ``required`` keys; what detectron2, omegaconf or hydra refuse is one ConfigError naming
    ``what`` (default ``--config-file <path>``; ``fix``: what to change instead of the file)."""
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf

    what = what or f"--config-file {path}"
    with input_stage(what):
        root = LazyConfig.load(path)
        keys = [*required, *(str(o).split("=", 1)[0].strip() for o in overrides)]
        unknown = [k for k in keys if OmegaConf.select(root, k, default=_MISSING) is _MISSING]
        if unknown:
            raise ConfigError(f"{what} has no key {unknown[0]!r}; fix {fix} or the file")
        try:
            LazyConfig.apply_overrides(root, list(overrides))
        except Exception as e:  # noqa: BLE001 - hydra's parse errors share no type of the table
            message = " ".join(str(e).split("\n")[:2])
            raise ConfigError(f"{what}: {message}; write each override as key=value") from None
    return root


def is_lazy_run_config(path: str) -> bool:
    """A LazyConfig file: a ``.py`` one, or the yaml ``LazyConfig.save`` wrote (a run's
    config.yaml: a ``model`` node with a ``_target_``)."""
    if path.endswith(".py"):
        return True
    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16)
    return "_target_" in head and any(line.startswith("model:") for line in head.splitlines())
