"""Any torchvision classification model as a detectron2 bottom-up backbone.

:class:`TorchvisionBottomUp` cuts the model at its stage nodes with torchvision's own feature
extraction (``create_feature_extractor``: an FX graph module holding only the layers those
nodes need, under torchvision's own module names), then

* replaces its BatchNorm layers as ``norm`` says (:mod:`.norm_conversion`);
* freezes every layer that computes the first ``freeze_at`` stage outputs (found by walking the
  graph back from each output: it works for any architecture, with no per-model stage list):
  parameters fixed, BatchNorm turned into FrozenBatchNorm2d, as detectron2's ResNet freezes;
* reads each output's channels and stride from one meta-device run (or takes them from the
  caller, who may know them: ``build_torchvision_backbone`` keeps those of its first build of
  an architecture, so that building it again costs no second run).

State-dict keys are ``body.`` + torchvision's key (``body.features.0.0.weight``): a torchvision
ImageNet file maps onto the student by adding the prefix ``backbone.bottom_up.body.``
(:mod:`nd_det.modeling.torchvision_weights`).
"""

from collections.abc import Sequence
from typing import Optional

import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import Backbone
from torch import fx, nn
from torchvision.models.feature_extraction import create_feature_extractor

from .norm_conversion import convert_batch_norms
from .torchvision_stages import measure_stage_shapes

__all__ = ["TorchvisionBottomUp", "BODY_NAME"]

# attribute (and state-dict prefix) of the feature-extraction module inside the bottom-up
BODY_NAME = "body"


def _graphs(body: fx.GraphModule) -> list[fx.Graph]:
    # create_feature_extractor traces train and eval mode separately (dropout, stochastic depth)
    graphs = [getattr(body, name) for name in ("train_graph", "eval_graph") if hasattr(body, name)]
    return graphs or [body.graph]


def _used_by_output(graph: fx.Graph, output_name: str) -> tuple[set[str], set[str]]:
    """(module targets, attribute targets) of every node the output ``output_name`` depends
    on."""
    output = next(node for node in graph.nodes if node.op == "output")
    todo = [output.args[0][output_name]]
    seen: set[fx.Node] = set()
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(node.all_input_nodes)
    modules = {str(node.target) for node in seen if node.op == "call_module"}
    attributes = {str(node.target) for node in seen if node.op == "get_attr"}
    return modules, attributes


class TorchvisionBottomUp(Backbone):
    """The stage outputs of a torchvision classifier, as a dict ``{out_feature: tensor}``.

    Args:
        model: a torchvision classification model (e.g. ``torchvision.models.resnet18()``).
        stages: graph node names, shallow to deep (see :mod:`.torchvision_stages`).
        out_features: one output name per stage.
        norm: "FrozenBN", "BN", "SyncBN" or "GN" for the model's BatchNorm layers.
        freeze_at: 0 trains everything; k freezes every layer the first k stages need.
        arch: the torchvision architecture name (kept for messages and weight loading).
        shapes: (channels, stride) of each stage, when known; measured otherwise.
    """

    def __init__(
        self,
        model: nn.Module,
        stages: Sequence[str],
        out_features: Sequence[str],
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        arch: str = "",
        shapes: Optional[Sequence[tuple[int, int]]] = None,
    ):
        super().__init__()
        if len(stages) != len(out_features) or not stages:
            raise ValueError(
                f"give one out_feature per stage; got stages {list(stages)} and "
                f"out_features {list(out_features)}"
            )
        if not 0 <= freeze_at <= len(stages):
            raise ValueError(f"freeze_at must be in 0..{len(stages)}, got {freeze_at!r}")
        self.arch = arch or type(model).__name__
        self._out_features = list(out_features)
        full_keys = set(model.state_dict())
        body = create_feature_extractor(model, dict(zip(stages, out_features)))
        convert_batch_norms(body, norm)
        self.add_module(BODY_NAME, body)
        # torchvision keys the cut model does not hold (classifier, layers past the last stage)
        self.unused_torchvision_keys = frozenset(full_keys - set(body.state_dict()))
        self.freeze(freeze_at)
        # Backbone.output_shape() reads these two
        if shapes is None:
            measured = measure_stage_shapes(body)
            shapes = [(measured[n].channels, measured[n].stride) for n in out_features]
        self._out_feature_channels = {n: c for n, (c, _) in zip(out_features, shapes)}
        self._out_feature_strides = {n: s for n, (_, s) in zip(out_features, shapes)}

    def freeze(self, freeze_at: int) -> "TorchvisionBottomUp":
        """Fix the weights of every layer the first ``freeze_at`` stages need and turn their
        BatchNorm layers into FrozenBatchNorm2d."""
        # detectron2's ResNet.freeze walks its own stage blocks; a torchvision model has no such
        # blocks, so its graph says which layers a stage needs
        modules: set[str] = set()
        attributes: set[str] = set()
        for name in self._out_features[:freeze_at]:
            for graph in _graphs(self.body):
                used_modules, used_attributes = _used_by_output(graph, name)
                modules |= used_modules
                attributes |= used_attributes
        for target in sorted(modules):
            module = self.body.get_submodule(target)
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(module)
            if frozen is not module:
                parent_name, _, child_name = target.rpartition(".")
                parent = self.body.get_submodule(parent_name) if parent_name else self.body
                parent.add_module(child_name, frozen)
        for target in attributes:  # parameters used directly, e.g. ConvNeXt's layer_scale
            try:
                self.body.get_parameter(target).requires_grad_(False)
            except AttributeError:  # a buffer: nothing to freeze
                pass
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body(x)
