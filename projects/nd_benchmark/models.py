"""The models a benchmark run times: the configured student alone and one DistillRCNN per loss
set, all with the SAME random student weights and the SAME random teacher (its real config,
e.g. the model-zoo R101-FPN).  No downloaded weights are needed.

A randomly initialised detectron2 ResNet keeps its FrozenBatchNorm2d layers at the identity:
activations grow by orders of magnitude through the stages and a step soon gives NaN.
:func:`calibrate_frozen_batchnorm` sets each layer's statistics from one batch, layer by layer
in forward order, so that each normalises its own input like a trained network.
"""

import os
from collections.abc import Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from fvcore.nn import parameter_count

from nd_det.class_means import ClassMeans, save_class_means
from nd_det.config import load_config, merge_config
from nd_det.errors import ConfigError
from nd_det.modeling import (
    FrozenTeacher,
    available_distill_terms,
    is_distill_module_key,
    plain_student_cfg,
    teacher_identity,
)

MIN_IMAGE_SIDE = 32  # the smallest side the synthetic images (and their boxes) are made with


def parse_loss_set(text: str) -> list[str]:
    """``"kd+nd"`` -> ``["kd", "nd"]``, checked against the loss names nd-det knows."""
    names = [n.strip() for n in text.split("+")]
    known = available_distill_terms()
    bad = [n for n in names if n not in known]
    if not text or bad:
        raise ConfigError(
            f"--losses {text!r}: unknown loss name(s) {bad or [text]}; give sets of "
            f"{known} joined by '+', e.g. nd kd+nd dkd+nd reviewkd+nd"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--losses {text!r} names a loss twice")
    return names


def build_benchmark_cfg(config_file: str, overrides: Sequence[str], device: str, precision: str):
    """The distillation config + overrides on ``device``, with random student weights, the
    teacher autocast of ``precision`` and a zero learning rate unless an override sets them.

    A zero learning rate: the optimizer still does all its work (momentum, weight decay, the
    update, which adds zero), so a step costs what a training step costs, but every measured
    step runs on the same weights (random models trained on one repeated batch diverge)."""
    cfg = load_config(config_file, freeze=False)
    cfg.MODEL.DISTILL.TEACHER_AUTOCAST = "bfloat16" if precision == "bf16" else ""
    cfg.SOLVER.BASE_LR = 0.0
    merge_config(cfg, overrides, "config overrides")
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    if cfg.MODEL.META_ARCHITECTURE != "DistillRCNN":
        raise ConfigError(
            f"{config_file}: MODEL.META_ARCHITECTURE is "
            f"{cfg.MODEL.META_ARCHITECTURE!r}; the benchmark needs a DistillRCNN "
            "config (configs/COCO-Distill/*.yaml)"
        )
    return cfg


def synthetic_batch(
    batch_size: int,
    height: int,
    width: int,
    num_classes: int,
    boxes_per_image: int = 5,
    seed: int = 0,
) -> list[dict]:
    """detectron2 training inputs: random uint8 (3, H, W) images with ``boxes_per_image``
    ground-truth boxes of random classes covering 1/10 to 1/2 of each side."""
    if batch_size < 1 or min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"synthetic_batch: need batch_size >= 1 and images of at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels; got batch_size={batch_size}, "
            f"height={height}, width={width}"
        )
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=torch.float32)
    batch = []
    for _ in range(batch_size):
        image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
        wh = size * (0.1 + 0.4 * torch.rand(boxes_per_image, 2, generator=g))
        xy = (size - wh) * torch.rand(boxes_per_image, 2, generator=g)
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        instances.gt_classes = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        batch.append({"image": image, "instances": instances, "height": height, "width": width})
    return batch


@torch.no_grad()
def calibrate_frozen_batchnorm(module: torch.nn.Module, run_forward) -> int:
    """Set every FrozenBatchNorm2d of ``module`` from the input it sees in ``run_forward()``
    (mean, variance; weight 1, bias 0), each before it runs; returns how many were set."""
    calibrated = []

    def set_from_input(layer, args):
        x = args[0].detach().float()
        layer.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        # running_var + eps must equal the input variance for a unit-variance output
        layer.running_var.copy_((x.var(dim=(0, 2, 3), unbiased=False) - layer.eps).clamp_min(0))
        layer.weight.fill_(1.0)
        layer.bias.fill_(0.0)
        calibrated.append(layer)

    handles = [
        m.register_forward_pre_hook(set_from_input)
        for m in module.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    try:
        run_forward()
    finally:
        for h in handles:
            h.remove()
    return len(calibrated)


def prepare_weight_files(cfg, work_dir: str, batch: list[dict], seed: int = 0) -> str:
    """Random, calibrated teacher and student weights and a made-up class-means table of the
    right shape, written into ``work_dir``; ``cfg`` then names the teacher and the table (as a
    real run would).  Returns the student weights file."""

    def backbone_on(model):
        return lambda: model.backbone(model.preprocess_image(batch).tensor)

    torch.manual_seed(seed)
    teacher = FrozenTeacher(cfg, load_weights=False)  # built as DistillRCNN builds it
    calibrate_frozen_batchnorm(teacher.model, backbone_on(teacher.model))
    DetectionCheckpointer(teacher.model, save_dir=work_dir).save("teacher_random")
    rows, dim = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1, teacher.embedding_dim
    torch.manual_seed(seed + 1)
    student = build_model(plain_student_cfg(cfg)).eval()
    calibrate_frozen_batchnorm(student, backbone_on(student))
    student_file = os.path.join(work_dir, "student_random.pth")
    torch.save({"model": student.state_dict()}, student_file)
    cfg.defrost()
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = os.path.join(work_dir, "teacher_random.pth")
    cfg.MODEL.DISTILL.CLASS_MEANS = os.path.join(work_dir, "class_means_random.pth")
    cfg.freeze()
    g = torch.Generator().manual_seed(seed)  # positive, like post-ReLU box-head features
    table = ClassMeans(
        torch.rand(rows, dim, generator=g),
        torch.full((rows,), 100, dtype=torch.int64),
        teacher_identity(cfg),
    )
    save_class_means(cfg.MODEL.DISTILL.CLASS_MEANS, table)
    return student_file


def build_distiller(cfg, losses: Sequence[str], student_file: str) -> torch.nn.Module:
    """DistillRCNN with ``MODEL.DISTILL.LOSSES = losses`` (``[]``: the student alone, which
    trains exactly as a GeneralizedRCNN), the shared student weights, in training mode."""
    run_cfg = cfg.clone()
    run_cfg.defrost()
    run_cfg.MODEL.DISTILL.LOSSES = list(losses)
    run_cfg.freeze()
    torch.manual_seed(0)  # the same ABF initialisation in every process
    model = build_model(run_cfg if losses else plain_student_cfg(run_cfg))
    state = torch.load(student_file, map_location="cpu", weights_only=True)["model"]
    result = model.load_state_dict(state, strict=False)  # the terms' modules keep their init
    assert not result.unexpected_keys and all(
        is_distill_module_key(k) for k in result.missing_keys
    ), result
    return model.train()


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def student_parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """The student's parameters: all, trainable, the backbone's (FPN included), the bottom-up's."""
    counts = parameter_count(model)  # by module name; "": the whole model
    bottom_up = "backbone.bottom_up" if hasattr(model.backbone, "bottom_up") else "backbone"
    return {
        "total": counts[""],
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "backbone": counts["backbone"],
        "bottom_up": counts[bottom_up],
    }
