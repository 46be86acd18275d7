"""Config keys of nd-det, all under ``MODEL.DISTILL`` (plus the student backbones' own keys).

Usage::

    from detectron2.config import get_cfg
    from nd_det import add_distill_config

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file("configs/COCO-Distill/R50_from_R101_nd.yaml")
"""
import os
from typing import Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .modeling.backbone.config import add_backbone_config

__all__ = ["add_distill_config", "DISTILL_LOSS_NAMES", "ConfigError", "merge_config",
           "load_config"]

# The loss names MODEL.DISTILL.LOSSES may hold (each maps to one loss-dict key ``loss_<name>``).
DISTILL_LOSS_NAMES = ("nd", "kd", "dkd", "reviewkd")


def add_distill_config(cfg: CN) -> CN:
    """Add the ``MODEL.DISTILL`` keys (and student backbone keys) to a detectron2 config.

    Safe to call twice.  Returns ``cfg`` for chaining.
    """
    add_backbone_config(cfg)
    if "DISTILL" in cfg.MODEL:
        return cfg
    _C = cfg
    # Precision of detectron2's AMP trainer (SOLVER.AMP.ENABLED): "float16" (detectron2's
    # choice, with a gradient scaler) or "bfloat16" (no gradient scaler needed, hence none: no
    # extra pass and no host sync per step).  The teacher's own precision is
    # MODEL.DISTILL.TEACHER_AUTOCAST.
    _C.SOLVER.AMP.PRECISION = "float16"
    _C.MODEL.DISTILL = CN()

    # --- the teacher ---------------------------------------------------------------------------
    # Teacher config: a detectron2 model-zoo name ("COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml")
    # or a path to a yaml file.  The teacher is built from it as a plain GeneralizedRCNN.
    _C.MODEL.DISTILL.TEACHER_CONFIG = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"
    # Teacher weights: a local path or a URL detectron2's checkpointer understands
    # ("detectron2://...", "https://...").  Empty: the model-zoo weights of TEACHER_CONFIG (only
    # when it is a model-zoo name).  Missing or mismatching keys stop the run.
    _C.MODEL.DISTILL.TEACHER_WEIGHTS = ""
    # Extra "KEY VALUE" overrides applied to the teacher config after loading it, e.g.
    # ["MODEL.ROI_HEADS.NUM_CLASSES", "1"].  MODEL.DEVICE always follows the student's.
    _C.MODEL.DISTILL.TEACHER_OPTS = []
    # Run the teacher forward under autocast with this dtype on CUDA ("" = full precision;
    # "bfloat16" or "float16").  Distillation losses are always computed in float32.
    _C.MODEL.DISTILL.TEACHER_AUTOCAST = ""

    # --- class means for ND --------------------------------------------------------------------
    # The teacher's class-mean table ((NUM_CLASSES + 1, box-head dim), background last), written
    # by tools/extract_class_means.py, which writes to this path by default.  Needed when "nd" is
    # in LOSSES; checked against the teacher before training starts.
    _C.MODEL.DISTILL.CLASS_MEANS = "class_means/teacher_class_means.pth"

    # --- which losses ---------------------------------------------------------------------------
    # Names from ("nd", "kd", "dkd", "reviewkd"); each adds "loss_<name>" to the loss dict.
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

    return cfg


class ConfigError(ValueError):
    """A config file or override is wrong (missing file, unknown key, bad value)."""


def merge_config(cfg: CN, source, what: str) -> None:
    """Merge a yaml file (str) or KEY VALUE overrides (list) into ``cfg``; mistakes raise one
    ConfigError naming ``what`` and the problem."""
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise ConfigError(f"{what}: file not found")
        merge = cfg.merge_from_file
    else:
        source = list(source)
        if len(source) % 2:
            raise ConfigError(f"{what} must be KEY VALUE pairs; got an odd list: {source}")
        merge = cfg.merge_from_list
    try:
        merge(source)
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        message = str(e).strip().strip("'")
        raise ConfigError(
            f"{what}: {message}. Check the spelling against nd_det/config.py (MODEL.DISTILL keys) "
            "and detectron2's config reference."
        ) from None


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
