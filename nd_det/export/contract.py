"""What every deploy format of ``tools/export_model.py`` shares: the export folder it reads, the
one input contract, the student's own detections as the reference, the parity check made
before a file is written, and the JSON record written next to it.

The input contract, the same for ``.pt2``, ``.onnx`` and TorchScript: one image as a float32
tensor ``(3, H, W)`` of 0..255 pixels in the config's ``INPUT.FORMAT`` channel order, already
resized by the test transform (``ResizeShortestEdge`` with ``INPUT.MIN_SIZE_TEST`` /
``INPUT.MAX_SIZE_TEST``); the model normalises inside.  Outputs, in this order and (ONNX)
under these names: ``boxes`` float32 ``(N, 4)`` (x0, y0, x1, y1 in that resized image's
pixels), ``scores`` float32 ``(N,)``, ``classes`` int64 ``(N,)``.
"""

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torchvision
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from omegaconf import OmegaConf

from ..config import add_backbone_config, is_lazy_run_config, merge_config
from ..errors import ConfigError, DataError, ExportError, input_stage
from ..modeling import backbone as _backbones  # noqa: F401  (registers nd-det's backbones)
from ..modeling.student_checkpoint import load_student_checkpoint
from ..utils.skip_init import without_random_init
from .dense_graph import dense_student_detections, is_dense_student
from .student import DEPLOY_RECORD_SUFFIX, EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME

__all__ = [
    "TOLERANCE",
    "BOX_RTOL",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "RECORD_SUFFIX",
    "SECOND_SIZE_SCALE",
    "SizeCheck",
    "load_exported_student",
    "deploy_image",
    "parity_images",
    "student_detections",
    "in_python_order",
    "compare_detections",
    "check_parity",
    "deploy_record",
]

# largest difference accepted between the exported model and the student in Python: scores
# TOLERANCE; boxes TOLERANCE pixels + BOX_RTOL x |coordinate| (float32 keeps ~7 digits: at 1000
# px a coordinate's rounding step is 6e-5 px, and ONNX Runtime sums its convolutions in another
# order: 1.5e-3 px measured on an R50-FPN at 800x1067); the classes and the number of
# detections must be equal
TOLERANCE = 1e-3
BOX_RTOL = 1e-5
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "classes")
RECORD_SUFFIX = DEPLOY_RECORD_SUFFIX  # model.pt2 -> model.pt2.json
# the parity check's second input: the same image resized for a test size this much smaller
# (or 1/this larger when the smaller one would be under the format's smallest side)
SECOND_SIZE_SCALE = 0.75

Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def load_exported_student(export_dir: str, device: str = "cpu") -> tuple[CfgNode, torch.nn.Module]:
    """The config and the eval-mode student of an export folder, its weights loaded strictly.
    The folder of a LazyConfig run's export (``LazyConfig.load`` + ``instantiate``, as plain
    detectron2 loads it) gives a yacs view of what deploying reads: the model's class name and
    the ``input`` node (channel order, test sizes) that export recorded."""
    config_file = os.path.join(export_dir, EXPORT_CONFIG_NAME)
    weights_file = os.path.join(export_dir, EXPORT_WEIGHTS_NAME)
    what = f"--export-dir {export_dir} (tools/export_student.py's folder)"
    cfg = add_backbone_config(get_cfg())
    if os.path.isfile(config_file) and is_lazy_run_config(config_file):
        with input_stage(what):
            lazy = LazyConfig.load(config_file)
            with without_random_init():  # the strict load replaces every value
                model = instantiate(lazy.model)
        if (recorded := OmegaConf.select(lazy, "input", default=None)) is None:
            raise ConfigError(f"{what}: no test input in its {EXPORT_CONFIG_NAME}: export again")
        cfg.INPUT.FORMAT = str(recorded.format)
        cfg.INPUT.MIN_SIZE_TEST = int(recorded.min_size_test)
        cfg.INPUT.MAX_SIZE_TEST = int(recorded.max_size_test)
        cfg.MODEL.META_ARCHITECTURE = type(model).__name__
    else:
        merge_config(cfg, config_file, what)
        cfg.MODEL.DEVICE = device
        with input_stage(f"--export-dir {export_dir}"), without_random_init():
            model = build_model(cfg)  # the strict load replaces every value
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = weights_file
    cfg.freeze()
    model.to(device)
    load_student_checkpoint(
        model, weights_file, weights_file, "give the folder tools/export_student.py wrote"
    )
    return cfg, model.eval()


def read_deploy_image(image_path: str, channel_order: str):
    """The image file as an HxWx3 uint8 array in ``channel_order``."""
    with input_stage(f"--image {image_path}"):
        return read_image(image_path, format=channel_order)


def deploy_image(cfg: CfgNode, image_path: str, scale: float = 1.0) -> torch.Tensor:
    """The image file as the exported model takes it: float32 (3, H, W), 0..255, channels in
    ``INPUT.FORMAT``, resized as detectron2's DefaultPredictor resizes (with both test sizes
    times ``scale``: the parity check's second size)."""
    image = read_deploy_image(image_path, cfg.INPUT.FORMAT)
    shortest = round(cfg.INPUT.MIN_SIZE_TEST * scale)
    resize = T.ResizeShortestEdge([shortest] * 2, round(cfg.INPUT.MAX_SIZE_TEST * scale))
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def parity_images(cfg: CfgNode, image_path: str, min_side: int = 1) -> list[torch.Tensor]:
    """The two inputs the parity check runs: the image at the test size, and at a second size
    (``SECOND_SIZE_SCALE`` smaller, or larger if that falls under ``min_side``)."""
    first = deploy_image(cfg, image_path)
    if min(first.shape[1:]) < min_side:
        raise DataError(
            f"--image {image_path} is {tuple(first.shape[1:])} after the test resize, under the "
            f"{min_side} pixels a side this format takes: give a less elongated image"
        )
    second = deploy_image(cfg, image_path, SECOND_SIZE_SCALE)
    if min(second.shape[1:]) < min_side:
        second = deploy_image(cfg, image_path, 1 / SECOND_SIZE_SCALE)
    return [first, second]


def student_detections(model: torch.nn.Module, image: torch.Tensor) -> Detections:
    """(boxes, scores, classes) of one image, in that image's pixels: the reference."""
    if is_dense_student(model):
        return dense_student_detections(model, image)
    instances = model.inference([{"image": image}], do_postprocess=False)[0]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def in_python_order(python: Detections, exported: Sequence[torch.Tensor]) -> Detections:
    """The exported detections in the order of Python's where their scores tie (within
    TOLERANCE, same class): both sort by score, and float rounding may order such detections
    either way.  Each Python detection takes the closest unmatched box among its ties."""
    boxes, scores, classes = python
    ex_boxes, ex_scores, ex_classes = (t.to(r) for t, r in zip(exported, python))
    if len(ex_boxes) != len(boxes) or not len(boxes):
        return ex_boxes, ex_scores, ex_classes
    ties = (ex_scores[None] - scores[:, None]).abs() <= TOLERANCE
    ties &= ex_classes[None] == classes[:, None]
    cost = (ex_boxes[None] - boxes[:, None]).abs().amax(-1).masked_fill(~ties, float("inf"))
    order, free = [], torch.ones(len(boxes), dtype=torch.bool)
    for row in cost:
        order.append(int(row.masked_fill(~free, float("inf")).argmin()))
        free[order[-1]] = False
    return ex_boxes[order], ex_scores[order], ex_classes[order]


def compare_detections(
    python: Detections, exported: Sequence[torch.Tensor], what: str = "the exported model"
) -> tuple[float, float]:
    """Largest box and score differences; raises ExportError (one line saying how much) when
    the number of detections, a class, or a value beyond TOLERANCE differs."""
    boxes, scores, classes = python
    ex_boxes, ex_scores, ex_classes = in_python_order(python, exported)
    if len(ex_boxes) != len(boxes) or not torch.equal(ex_classes.to(classes), classes):
        raise ExportError(
            f"{what} gives {len(ex_boxes)} detections (classes {ex_classes.tolist()[:10]}), "
            f"Python {len(boxes)} (classes {classes.tolist()[:10]}); nothing was written"
        )
    if not len(boxes):
        return 0.0, 0.0
    box_error = (ex_boxes - boxes).abs()
    box_diff = float(box_error.max())
    score_diff = float((ex_scores - scores).abs().max())
    if (box_error > TOLERANCE + BOX_RTOL * boxes.abs()).any() or score_diff > TOLERANCE:
        raise ExportError(
            f"{what} and Python detections differ: max |box diff| {box_diff:.3g} px, max "
            f"|score diff| {score_diff:.3g} (tolerance {TOLERANCE} + {BOX_RTOL} x |coordinate| "
            f"px, {TOLERANCE} for scores); nothing was written"
        )
    return box_diff, score_diff


@dataclass
class SizeCheck:
    """The parity check on one input size."""

    input_size: tuple[int, int]
    detections: int
    max_box_diff: float
    max_score_diff: float


def check_parity(
    run: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    model: torch.nn.Module,
    images: Sequence[torch.Tensor],
    what: str,
) -> list[SizeCheck]:
    """Run the exported model ``run`` and the Python student on every image and compare
    (:func:`compare_detections`)."""
    checks = []
    for image in images:
        with torch.no_grad():
            python = student_detections(model, image)
            box_diff, score_diff = compare_detections(python, run(image), what)
        checks.append(
            SizeCheck(
                (int(image.shape[1]), int(image.shape[2])), len(python[0]), box_diff, score_diff
            )
        )
    return checks


def deploy_record(
    cfg: CfgNode,
    fmt: str,
    path: str,
    exporter: str,
    image_path: str,
    checks: Sequence[SizeCheck],
    sizes: str,
    versions: Optional[dict[str, str]] = None,
    notes: Sequence[str] = (),
    **extra,
) -> dict:
    """The JSON record written next to an exported file: how it was made, how to feed it,
    what it returns, and the parity check it passed."""
    return {
        "format": fmt,
        "file": os.path.basename(path),
        "exporter": exporter,
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            **(versions or {}),
        },
        "input": {
            "name": INPUT_NAME,
            "tensor": "float32 (3, H, W), pixel values 0..255 (normalised inside)",
            "channel_order": cfg.INPUT.FORMAT,
            "resize": {
                "shortest_side": cfg.INPUT.MIN_SIZE_TEST,
                "longest_side_at_most": cfg.INPUT.MAX_SIZE_TEST,
            },
            "sizes": sizes,
        },
        "outputs": {
            "boxes": "float32 (N, 4): x0, y0, x1, y1 in the input tensor's pixels",
            "scores": "float32 (N,)",
            "classes": "int64 (N,): contiguous class ids 0..NUM_CLASSES-1",
        },
        "check": {
            "image": os.path.basename(image_path),
            "tolerance": {
                "boxes": f"{TOLERANCE} px + {BOX_RTOL} x |coordinate|",
                "scores": TOLERANCE,
                "classes": "equal",
            },
            "sizes": [asdict(c) for c in checks],
        },
        "notes": list(notes),
        **extra,
    }
