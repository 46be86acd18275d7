"""Convert torchvision ImageNet ResNet weights to the key names of detectron2's ResNet.

Supported torchvision architectures and the detectron2 backbone each one loads into:

* ``resnet18`` / ``resnet34``: detectron2's ``build_resnet_fpn_backbone``
  (``MODEL.RESNETS.DEPTH`` 18/34,
  ``RES2_OUT_CHANNELS: 64``);
* ``resnet50``: detectron2's ``build_resnet_fpn_backbone`` with ``MODEL.RESNETS.STRIDE_IN_1X1:
  False`` (torchvision puts the stride in the 3x3 conv; detectron2's default True is for the MSRA
  weights).

Students with a torchvision backbone (``build_torchvision_fpn_backbone``: MobileNetV2,
MobileNetV3, ...) need no conversion: torchvision's file is their MODEL.WEIGHTS as published
(:mod:`nd_det.modeling.torchvision_weights`).

Key mapping.  ResNet: ``conv1`` -> ``stem.conv1``, ``bn1`` -> ``stem.conv1.norm``,
``layer<K>.<i>.conv<J>`` -> ``res<K+1>.<i>.conv<J>``, ``layer<K>.<i>.bn<J>`` ->
``res<K+1>.<i>.conv<J>.norm``, ``layer<K>.<i>.downsample.0`` / ``.1`` -> ``res<K+1>.<i>.shortcut``
/ ``.shortcut.norm``.  Dropped: the classifier (``fc``) and BN's ``num_batches_tracked``
counters.

Every converted key gets the prefix ``backbone.bottom_up.`` (by default), the exact name of the
bottom-up network inside a detectron2 ``GeneralizedRCNN`` with an FPN backbone.  The file is then
loaded by exact key names (``MODEL.WEIGHTS``, ``DetectionCheckpointer``) with no name-matching
heuristics: only the student's backbone receives the weights, never a teacher held in the same
model, and nothing is matched by guess.  Output: ``.pkl`` (detectron2 model-zoo layout, numpy
arrays) or ``.pth`` (torch tensors), both ``{"model": ..., "__author__": ...,
"conversion": {...}}``.

Input normalisation: torchvision's ImageNet weights expect RGB images normalised with ImageNet
mean/std; in detectron2's 0..255 pixel scale that is ::

    INPUT.FORMAT: "RGB"
    MODEL.PIXEL_MEAN: [123.675, 116.28, 103.53]
    MODEL.PIXEL_STD: [58.395, 57.12, 57.375]

(detectron2's defaults, BGR with std 1.0, are for its MSRA/Caffe2 weights and would feed these
weights wrongly scaled, channel-swapped inputs).
"""

import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Optional

import torch

from ..errors import ConfigError, input_stage
from ..utils.checkpoint_files import state_mismatch
from ..utils.safe_pickle import load_torch
from .backbone.torchvision_stages import TORCHVISION_DEFAULT_STAGES, build_torchvision_classifier

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "TORCHVISION_INPUT_FORMAT",
    "TORCHVISION_PIXEL_MEAN",
    "TORCHVISION_PIXEL_STD",
    "DEFAULT_KEY_PREFIX",
    "load_torchvision_state_dict",
    "torchvision_reference_shapes",
    "convert_torchvision_state_dict",
    "save_converted_weights",
    "convert_torchvision_file",
]

SUPPORTED_ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
TORCHVISION_INPUT_FORMAT = "RGB"
TORCHVISION_PIXEL_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_PIXEL_STD = (58.395, 57.12, 57.375)
DEFAULT_KEY_PREFIX = "backbone.bottom_up."


def load_torchvision_state_dict(path: str) -> "OrderedDict[str, torch.Tensor]":
    """A torchvision weight file (``torch.save(model.state_dict())``), read as data."""
    with input_stage(f"--input {path}"):  # missing, truncated, not a torch file: one line
        loaded = load_torch(path)
    if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ConfigError(f"--input {path} is not a state dict: give torchvision's ImageNet file")
    return OrderedDict(loaded)


def torchvision_reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``arch`` state dict (built on the meta device: no memory,
    no download)."""
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"torchvision's {arch} file needs no conversion: give it as it is as MODEL.WEIGHTS "
            "of a student with MODEL.BACKBONE.NAME build_torchvision_fpn_backbone and "
            f"MODEL.TORCHVISION.ARCH {arch}"
            if arch in TORCHVISION_DEFAULT_STAGES
            else f"Unknown architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    model = build_torchvision_classifier(arch, device="meta")
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _optional(key: str) -> bool:
    # BN counters may be absent; the classifier is dropped, whatever its number of classes
    return key.endswith("num_batches_tracked") or key.startswith("fc.")


def _resnet_key(key: str) -> Optional[str]:
    """detectron2's name of a torchvision ResNet key (None for the classifier)."""
    stem = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if key.startswith("fc."):
        return None
    if stem:
        return "stem.conv1." + ("norm." if stem[1] == "bn1" else "") + stem[2]
    stage, block, layer, leaf = re.fullmatch(
        r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)", key
    ).groups()
    target = {"downsample.0": "shortcut", "downsample.1": "shortcut.norm"}.get(layer)
    if target is None:
        target = layer if layer.startswith("conv") else f"conv{layer[2:]}.norm"
    return f"res{int(stage) + 1}.{block}.{target}.{leaf}"


def convert_torchvision_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    arch: str,
    prefix: str = DEFAULT_KEY_PREFIX,
    source: str = "the state dict",
) -> "OrderedDict[str, torch.Tensor]":
    """``state_dict`` under detectron2 names (each prefixed with ``prefix``), without the
    classifier and ``num_batches_tracked``, once its keys and shapes are torchvision's ``arch``'s
    (else one ConfigError naming the mismatches, and the architecture it fits, if another)."""
    shapes = {  # every supported architecture's, to name the one the file fits
        a: {k: v for k, v in torchvision_reference_shapes(a).items() if not _optional(k)}
        for a in SUPPORTED_ARCHITECTURES
    }
    fits = [a for a in shapes if not state_mismatch(shapes[a], state_dict, _optional)]
    if arch not in fits:
        hint = f"convert it with arch {fits[0]!r}" if fits else f"pass torchvision's {arch} file"
        problems = state_mismatch(shapes[arch], dict(sorted(state_dict.items())), _optional)
        raise ConfigError(
            f"The keys of {source} do not match torchvision's {arch}: {problems} ({hint})"
        )
    converted = OrderedDict()
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        new_key = _resnet_key(key)
        if new_key is not None:
            converted[prefix + new_key] = value.detach().clone()
    return converted


def save_converted_weights(
    converted: Mapping[str, torch.Tensor], path: str, arch: str, source_name: str = ""
) -> str:
    """Write converted weights as a detectron2-loadable ``.pkl`` (numpy) or ``.pth`` (torch)."""
    if not path.endswith((".pkl", ".pth")):
        raise ConfigError(f"--output {path} must end in .pkl (detectron2's model zoo) or .pth")
    conversion = {
        "arch": arch,
        "source": source_name,
        "input_format": TORCHVISION_INPUT_FORMAT,
        "pixel_mean": list(TORCHVISION_PIXEL_MEAN),
        "pixel_std": list(TORCHVISION_PIXEL_STD),
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if path.endswith(".pkl"):
        model = OrderedDict((key, value.cpu().numpy()) for key, value in converted.items())
        with open(path, "wb") as f:
            pickle.dump(
                {
                    "model": model,
                    "__author__": "nd_det torchvision converter",
                    "conversion": conversion,
                },
                f,
            )
    else:
        torch.save(
            {
                "model": OrderedDict(converted),
                "__author__": "nd_det torchvision converter",
                "conversion": conversion,
            },
            path,
        )
    return path


def convert_torchvision_file(
    arch: str, input_path: str, output_path: str, prefix: str = DEFAULT_KEY_PREFIX
) -> int:
    """Convert one torchvision weight file; returns the number of tensors written."""
    torchvision_reference_shapes(arch)  # refuses an architecture before anything is read
    state_dict = load_torchvision_state_dict(input_path)
    converted = convert_torchvision_state_dict(state_dict, arch, prefix, source=input_path)
    save_converted_weights(converted, output_path, arch, os.path.basename(input_path))
    return len(converted)
