"""A tiny LazyConfig distillation run for CPU tests: configs/COCO-Distill/R50_from_R101_nd.py
shrunk in a LazyConfig file of its own (ResNet-18 GroupNorm student, 32-channel FPN, 64-wide
box head, the yacs R101 teacher shrunk by TEACHER_OPTS as tests/helpers/tiny_distill.py shrinks
it), its teacher checkpoint and class means written next to it, and tiny COCO-format sets."""

import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from nd_det.class_means import ClassMeanAccumulator, save_class_means
from nd_det.modeling import FrozenTeacher

from .tiny_coco import write_tiny_coco
from .tiny_distill import CONFIG_DIR, _opts_with_classes

LAZY_CONFIG = os.path.join(CONFIG_DIR, "R50_from_R101_nd.py")
TEACHER_CONFIG = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"

_TOY = """from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
import detectron2.data.transforms as T
from detectron2.modeling import ResNet

_cfg = LazyConfig.load({config!r})
model, dataloader, optimizer, train, lr_multiplier = (
    _cfg.model, _cfg.dataloader, _cfg.optimizer, _cfg.train, _cfg.lr_multiplier
)
_bottom_up = model.backbone.bottom_up
_bottom_up.stem.norm = "GN"
_bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="GN")
_bottom_up.freeze_at = 5  # a frozen backbone: small checkpoints, quick steps
model.backbone.norm = "GN"
model.backbone.out_channels = 32
_rpn = model.proposal_generator
_rpn.head.in_channels = 32
_rpn.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
_rpn.pre_nms_topk, _rpn.post_nms_topk = (200, 100), (100, 50)
_heads = model.roi_heads
_heads.num_classes = 2
_heads.batch_size_per_image = 32
_heads.box_head.input_shape.channels = 32
_heads.box_head.fc_dims = [64, 64]
_heads.box_predictor.input_shape.channels = 64
model.teacher.opts = {teacher_opts!r}
model.teacher.weights = {teacher_weights!r}
model.teacher.max_input_size = 160
model.distill_terms.class_means = {class_means!r}
model.distill_terms.reviewkd.mid_channels = 32
dataloader.train.dataset.names = "lazy_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(96,), sample_style="choice", max_size=160),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "lazy_val"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=96, max_size=160)]
dataloader.test.num_workers = 0
optimizer.lr = 0.002
train.device = "cpu"
train.init_checkpoint = ""
train.max_iter = 2
train.checkpointer.period = 1
train.seed = 7
"""


def write_tiny_lazy_run(root, num_classes: int = 2) -> tuple[str, list[str]]:
    """The toy LazyConfig file, its teacher checkpoint and class means, and the train / val sets
    under ``root``: (config file, the --dataset arguments)."""
    root = str(root)
    teacher_opts = _opts_with_classes(num_classes)
    weights = os.path.join(root, "teacher.pth")
    class_means = os.path.join(root, "class_means.pth")
    torch.manual_seed(0)
    teacher = FrozenTeacher.from_values(
        config=TEACHER_CONFIG, weights=weights, opts=teacher_opts, num_classes=num_classes
    )
    DetectionCheckpointer(teacher.model, save_dir=root).save("teacher")
    k = num_classes + 1
    accumulator = ClassMeanAccumulator(k, teacher.embedding_dim)
    g = torch.Generator().manual_seed(0)
    accumulator.update(
        torch.rand(4 * k, teacher.embedding_dim, generator=g), torch.arange(k).repeat(4)
    )
    save_class_means(class_means, accumulator.finalize(dict(teacher.identity)))
    config = os.path.join(root, "tiny_lazy.py")
    with open(config, "w", encoding="utf-8") as f:
        f.write(
            _TOY.format(
                config=LAZY_CONFIG,
                teacher_opts=teacher_opts,
                teacher_weights=weights,
                class_means=class_means,
            )
        )
    datasets = []
    for name, count, seed in (("lazy_train", 4, 1), ("lazy_val", 2, 2)):
        json_file, images = write_tiny_coco(os.path.join(root, name), num_images=count, seed=seed)
        datasets += ["--dataset", name, str(json_file), str(images)]
    return config, datasets
