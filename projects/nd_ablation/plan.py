"""What the ablation runs: methods, their loss weights, the seeds and the sizes (the protocol of
docs/ablation.md, fixed before any result was seen).

A method X and its X++ share every setting but the ND term, so X++ - X measures what ND adds.
Detection weights are the reference's MobileNetV2 yamls (Detection/configs/*/MV2-R50.yaml), the
pair of the paper closest to the embedded demo's MobileNetV2 student; classification weights are
nd-det's CIFAR-100 resnet56 -> resnet20 configs (the reference's published pair of CIFAR ResNets
closest to the ResNet-20 -> ResNet-8 pair here).
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str  # "KD++"
    losses: tuple[str, ...]  # MODEL.DISTILL.LOSSES (detection) / distill.losses names
    overrides: tuple[str, ...] = ()  # detection: KEY VALUE pairs
    terms: dict = field(default_factory=dict)  # classification: each term's parameters

    @property
    def is_baseline(self) -> bool:
        return not self.losses


# ---- detection (keys of nd_det/config.py; the demo's student and teacher configs)
_KD = ("MODEL.DISTILL.KD.WEIGHT", "1.0", "MODEL.DISTILL.KD.TEMPERATURE", "1.0")
_DKD = (
    "MODEL.DISTILL.DKD.ALPHA",
    "1.0",
    "MODEL.DISTILL.DKD.BETA",
    "0.25",
    "MODEL.DISTILL.DKD.TEMPERATURE",
    "1.0",
)
_REVIEWKD = ("MODEL.DISTILL.REVIEWKD.WEIGHT", "2.2")
DETECTION_METHODS: list[Method] = [
    Method("student alone", ()),
    Method("KD", ("kd",), _KD),
    # KD++/MV2-R50.yaml: KD 1.0, ND 1.0
    Method("KD++", ("kd", "nd"), _KD + ("MODEL.DISTILL.ND.WEIGHT", "1.0")),
    # ReviewKD++/MV2-R50.yaml: ReviewKD 2.2 (kept for the baseline too, so that only ND differs)
    Method("ReviewKD", ("reviewkd",), _REVIEWKD),
    Method("ReviewKD++", ("reviewkd", "nd"), _REVIEWKD + ("MODEL.DISTILL.ND.WEIGHT", "1.5")),
    # DKD defaults of the reference's model/config.py; ND 1.0 as its KD++ runs
    Method("DKD", ("dkd",), _DKD),
    Method("DKD++", ("dkd", "nd"), _DKD + ("MODEL.DISTILL.ND.WEIGHT", "1.0")),
]

# ---- classification (nd_det.classification's distill node: the terms' names, each term's
# parameters; configs/classification/cifar100/resnet56_resnet20/*.yaml)
_KD_TERM = {"kd": {"weight": 1.0, "temperature": 4.0}}
_DKD_TERM = {"dkd": {"weight": 1.0, "alpha": 2.5, "beta": 4.0, "temperature": 4.0}}
_DIST_TERM = {"dist": {"weight": 2.0, "beta": 1.0, "gamma": 1.0, "temperature": 4.0}}
_REVIEWKD_TERM = {
    "reviewkd": {"weight": 1.2, "mid_channels": 64, "student_preact": False, "teacher_preact": True}
}


def _cls(name, extra, nd=None):
    terms = dict(extra)
    if nd is not None:
        terms["nd"] = dict(nd)
    return Method(name, tuple(terms), terms=terms)


CLASSIFICATION_METHODS: list[Method] = [
    _cls("student alone", {}),
    _cls("KD", _KD_TERM),
    _cls("KD++", _KD_TERM, {"weight": 2.0}),
    _cls("DKD", _DKD_TERM),
    _cls("DKD++", _DKD_TERM, {"weight": 3.5, "warm_up": False}),
    _cls("DIST", _DIST_TERM),
    _cls("DIST++", _DIST_TERM, {"weight": 1.0}),
    _cls("ReviewKD", _REVIEWKD_TERM),
    _cls("ReviewKD++", _REVIEWKD_TERM, {"weight": 1.0}),
]

# what a default run runs: DKD / DKD++ detection runs would take the default ablation past its
# 60-minute budget on a 2-core machine (docs/ablation.md); `--methods DKD DKD++` adds them
DEFAULT_METHODS = {
    "detection": ("student alone", "KD", "KD++", "ReviewKD", "ReviewKD++"),
    "classification": tuple(m.name for m in CLASSIFICATION_METHODS),
}

# (X, X++) pairs whose per-seed difference the report gives
PAIRS: list[tuple[str, str]] = [
    ("KD", "KD++"),
    ("DKD", "DKD++"),
    ("DIST", "DIST++"),
    ("ReviewKD", "ReviewKD++"),
]
DEFAULT_SEEDS: Sequence[int] = (0, 1, 2)
QUICK_SEEDS: Sequence[int] = (0, 1)
# the quick run's methods: one pair per half is enough to exercise every stage of the pipeline
QUICK_METHODS: Sequence[str] = ("student alone", "KD", "KD++")


@dataclass(frozen=True)
class Sizes:
    """The schedule and data sizes of one ablation (docs/ablation.md)."""

    teacher_iters: int
    student_iters: int
    cls_dataset: str  # "fashion_mnist" (default) or "digits" (quick)
    cls_train_images: int  # a fixed subset of the training split
    cls_test_images: int  # 0: the whole test split
    cls_epochs: int
    cls_warm_up_epochs: float
    cls_batch_size: int
    det_input_size: int = 0  # 0: the demo configs' own


DEFAULT_SIZES = Sizes(
    teacher_iters=150,
    student_iters=150,
    cls_dataset="fashion_mnist",
    cls_train_images=4000,
    cls_test_images=0,
    cls_epochs=5,
    cls_warm_up_epochs=0,
    cls_batch_size=128,
    det_input_size=400,  # the tiles' native size, whatever the demo's configs say
)
QUICK_SIZES = Sizes(
    teacher_iters=2,
    student_iters=2,
    cls_dataset="digits",
    cls_train_images=200,
    cls_test_images=100,
    cls_epochs=1,
    cls_warm_up_epochs=1,
    cls_batch_size=50,
    det_input_size=128,
)


def teacher_paths(root: str, domain: str) -> dict[str, str]:
    """Where the teacher of ``domain`` writes its config, weights and class means."""
    folder = os.path.join(root, domain, "teacher")
    return {
        "folder": folder,
        "config": os.path.join(folder, "config.yaml"),
        "weights": os.path.join(folder, "model_final.pth"),
        "class_means": os.path.join(folder, "class_means.pth"),
    }


def run_folder(root: str, domain: str, method: Method, seed: int) -> str:
    """The output folder of one student run, e.g. ``<root>/detection/runs/kdpp-seed0``."""
    slug = method.name.lower().replace("++", "pp").replace(" ", "_")
    return os.path.join(root, domain, "runs", f"{slug}-seed{seed}")
