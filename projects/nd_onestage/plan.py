"""The one-stage ablation's protocol as code (docs/one_stage.md, written before its first run):
the methods, their loss weights, the seeds and the sizes."""

import os
from collections.abc import Sequence
from dataclasses import dataclass

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
TEACHER_CONFIG = os.path.join(CONFIG_DIR, "teacher_RetinaNet_MV2_FPN.yaml")
STUDENT_CONFIG = os.path.join(CONFIG_DIR, "student_RetinaNet_MV2x0.5_FPN.yaml")


@dataclass(frozen=True)
class Method:
    name: str
    losses: tuple[str, ...]  # MODEL.DISTILL.LOSSES; the weights are the student config's


# ReviewKD 1.0 and ND 1.0 (configs/COCO-Distill/RetinaNet_R50_from_R101_nd.yaml's weights)
METHODS: list[Method] = [
    Method("student alone", ()),
    Method("ReviewKD", ("reviewkd",)),
    Method("ReviewKD++", ("reviewkd", "nd")),
]
PAIR = ("ReviewKD", "ReviewKD++")
DEFAULT_SEEDS: Sequence[int] = (0, 1, 2)
QUICK_SEEDS: Sequence[int] = (0,)
TEACHER_SEED = 0


@dataclass(frozen=True)
class Sizes:
    teacher_iters: int
    student_iters: int
    input_size: int = 0  # 0: the configs' own (the tiles' native 400 px)


DEFAULT_SIZES = Sizes(teacher_iters=300, student_iters=150)
QUICK_SIZES = Sizes(teacher_iters=2, student_iters=2, input_size=160)


def run_folder(root: str, method: Method, seed: int) -> str:
    slug = method.name.lower().replace("++", "pp").replace(" ", "_")
    return os.path.join(root, "runs", f"{slug}-seed{seed}")


def teacher_paths(root: str) -> dict[str, str]:
    folder = os.path.join(root, "teacher")
    return {
        "folder": folder,
        "config": os.path.join(folder, "config.yaml"),
        "weights": os.path.join(folder, "model_final.pth"),
        "class_means": os.path.join(folder, "class_means.pth"),
    }
