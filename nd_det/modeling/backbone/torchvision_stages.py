"""torchvision classification models as seen by an FPN: which graph nodes are their stages, and
what those nodes return (channels, stride).

Stages are graph nodes of torchvision's feature extraction
(``torchvision.models.feature_extraction``): a module name such as ``"features.6"`` stands for
the last node inside that module.  :data:`TORCHVISION_DEFAULT_STAGES` gives, per architecture,
the last block at each of the strides 4, 8, 16 and 32 (detectron2's res2..res5 positions),
without the 1x1 conv some classifiers put after their last block to widen it for the classifier
(MobileNetV2's ``features.18``, MobileNetV3's ``features.16``, EfficientNet's ``features.8``).
For MobileNetV2 they return 24/32/96/320 channels at width 1.0 (16/16/48/160 at 0.5).

Shapes are measured, not tabulated: the model runs once on a meta-device input (no memory, no
arithmetic) through ``torch.func.functional_call`` with meta copies of its tensors.
"""

import functools
from collections.abc import Sequence

import torch
import torchvision
from detectron2.layers import ShapeSpec
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

__all__ = [
    "TORCHVISION_DEFAULT_STAGES",
    "WIDTH_MULT_ARCHS",
    "torchvision_classifiers",
    "build_torchvision_classifier",
    "graph_node_names",
    "is_graph_node",
    "measure_stage_shapes",
    "stage_shapes",
]

TORCHVISION_DEFAULT_STAGES: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("features.3", "features.6", "features.13", "features.17"),
    "mobilenet_v3_large": ("features.3", "features.6", "features.12", "features.15"),
    "mobilenet_v3_small": ("features.1", "features.3", "features.8", "features.11"),
    "efficientnet_b0": ("features.2", "features.3", "features.5", "features.7"),
    "efficientnet_b1": ("features.2", "features.3", "features.5", "features.7"),
    "regnet_x_400mf": tuple(f"trunk_output.block{i}" for i in range(1, 5)),
    "regnet_y_400mf": tuple(f"trunk_output.block{i}" for i in range(1, 5)),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet34": ("layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
    "convnext_tiny": ("features.1", "features.3", "features.5", "features.7"),
}
# builders that take a ``width_mult`` argument
WIDTH_MULT_ARCHS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")
# side of the square meta-device input the shapes are measured on: any stride up to 512 shows
_MEASURE_SIZE = 512


@functools.cache
def torchvision_classifiers() -> tuple[str, ...]:
    """Names of torchvision's classification model builders (``torchvision.models.<name>``)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def build_torchvision_classifier(
    arch: str, width_mult: float = 1.0, device: str = "cpu"
) -> nn.Module:
    """torchvision's ``arch`` with random weights (nothing is downloaded)."""
    kwargs = {"width_mult": float(width_mult)} if arch in WIDTH_MULT_ARCHS else {}
    if device != "meta":
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(arch, weights=None, **kwargs)
    except (NotImplementedError, RuntimeError):
        # some builders (RegNet) compute their widths with tensors, which meta cannot read back
        return torchvision.models.get_model(arch, weights=None, **kwargs).to("meta")


@functools.cache
def graph_node_names(arch: str, width_mult: float = 1.0) -> tuple[str, ...]:
    """The eval-mode graph node names of ``arch`` (as ``get_graph_node_names`` lists them)."""
    model = build_torchvision_classifier(arch, width_mult, device="meta")
    _, eval_nodes = get_graph_node_names(model)
    return tuple(eval_nodes)


def is_graph_node(name: str, nodes: Sequence[str]) -> bool:
    """True for a node name, or for a module name whose nodes are in ``nodes`` (torchvision's
    feature extraction then returns the last of them)."""
    return name in nodes or any(node.startswith(name + ".") for node in nodes)


def measure_stage_shapes(body: nn.Module) -> dict[str, ShapeSpec]:
    """Channels and stride of each output of the feature extractor ``body``, from one eval-mode
    run on the meta device (``body``'s own tensors, training mode and statistics are not
    touched).  (torchvision's own detection backbones list channels per model by hand; this
    works for any model.)"""
    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in list(body.named_parameters()) + list(body.named_buffers())
    }
    image = torch.empty(1, 3, _MEASURE_SIZE, _MEASURE_SIZE, device="meta")
    was_training = body.training
    body.eval()
    try:
        with torch.no_grad():
            outputs = torch.func.functional_call(body, meta, (image,))
    finally:
        body.train(was_training)
    return {
        name: ShapeSpec(channels=int(out.shape[1]), stride=_MEASURE_SIZE // int(out.shape[-1]))
        for name, out in outputs.items()
    }


@functools.cache
def stage_shapes(
    arch: str, stages: tuple[str, ...], width_mult: float = 1.0
) -> list[tuple[str, int, int]]:
    """``[(stage, channels, stride), ...]`` of ``arch`` at the given stage nodes (measured on
    the meta device; every node must exist, see :func:`is_graph_node`)."""
    model = build_torchvision_classifier(arch, width_mult, device="meta")
    body = create_feature_extractor(model, {stage: stage for stage in stages})
    shapes = measure_stage_shapes(body)
    return [(stage, shapes[stage].channels, shapes[stage].stride) for stage in stages]
