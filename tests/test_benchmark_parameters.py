"""The benchmark's parameter counts of a student (``student_parameters`` in its JSON), checked
against torchvision's own MobileNetV3-Large for a frozen-stem torchvision student."""
import torchvision
from detectron2.modeling import build_model

from nd_benchmark.runner import student_parameter_counts
from nd_det.config import load_config
from nd_det.modeling.student_checkpoint import plain_student_cfg

from .helpers.tiny_distill import config_path, tiny_distill_opts


def _numel(modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def test_student_parameter_counts(tmp_path):
    # GN keeps one weight and bias per norm layer as parameters, as torchvision's BatchNorm has
    opts = tiny_distill_opts(str(tmp_path)) + ["MODEL.TORCHVISION.NORM", "GN",
                                               "MODEL.TORCHVISION.FREEZE_AT", "1"]
    cfg = load_config(config_path("MV3_from_R50_nd.yaml"), opts)
    model = build_model(plain_student_cfg(cfg))
    counts = student_parameter_counts(model)

    features = torchvision.models.mobilenet_v3_large().features
    bottom_up = _numel(features[:16])  # features.0 .. features.15: the default stages
    frozen = _numel(features[:4])  # FREEZE_AT 1: everything up to the stride-4 stage
    fpn = _numel([model.backbone]) - _numel([model.backbone.bottom_up])
    heads = _numel([model.proposal_generator, model.roi_heads])
    total = bottom_up + fpn + heads
    assert counts == {"total": total, "trainable": total - frozen,
                      "backbone": bottom_up + fpn, "bottom_up": bottom_up}
    assert fpn > 0 and heads > 0 and frozen > 0
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(isinstance(v, int) for v in counts.values())
