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

from ..errors import ConfigError
from ..utils.checkpoint_files import mismatch_text
from .backbone.torchvision_stages import TORCHVISION_DEFAULT_STAGES, build_torchvision_classifier

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "TORCHVISION_INPUT_FORMAT",
    "TORCHVISION_PIXEL_MEAN",
    "TORCHVISION_PIXEL_STD",
    "DEFAULT_KEY_PREFIX",
    "load_torchvision_state_dict",
    "torchvision_reference_shapes",
    "check_torchvision_keys",
    "convert_torchvision_state_dict",
    "save_converted_weights",
    "convert_torchvision_file",
]

SUPPORTED_ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
TORCHVISION_INPUT_FORMAT = "RGB"
TORCHVISION_PIXEL_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_PIXEL_STD = (58.395, 57.12, 57.375)
DEFAULT_KEY_PREFIX = "backbone.bottom_up."
_OUTPUT_SUFFIXES = (".pkl", ".pth")
_LISTED_KEYS = 8


def _check_architecture(arch: str) -> None:
    if arch not in SUPPORTED_ARCHITECTURES and arch in TORCHVISION_DEFAULT_STAGES:
        raise ConfigError(
            f"torchvision's {arch} file needs no conversion: give it as it is as MODEL.WEIGHTS "
            f"of a student with MODEL.BACKBONE.NAME build_torchvision_fpn_backbone and "
            f"MODEL.TORCHVISION.ARCH {arch} (this converter is for detectron2's ResNet: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)})."
        )
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"Unknown architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}."
        )


def _check_output_path(path: str) -> None:
    if not path.endswith(_OUTPUT_SUFFIXES):
        raise ConfigError(
            f"Output {path!r} must end in .pkl (detectron2 model-zoo layout) or .pth."
        )


def load_torchvision_state_dict(path: str) -> "OrderedDict[str, torch.Tensor]":
    """Read a torchvision weight file (a plain ``state_dict()`` saved with ``torch.save``)."""
    if not os.path.isfile(path):
        raise ConfigError(
            f"Weight file {path!r} does not exist; pass the path of a torchvision .pth file."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for files that are not torch pickles
        raise ConfigError(
            f"Cannot read {path!r} as a torch state dict ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); pass the .pth file written by "
            "torch.save(model.state_dict(), path), e.g. torchvision's ImageNet download."
        ) from None
    if not isinstance(loaded, Mapping) or not loaded:
        raise ConfigError(
            f"{path!r} holds a {type(loaded).__name__}, not a state dict (a non-empty mapping of "
            "parameter names to tensors); save model.state_dict() instead."
        )
    not_tensors = [
        key
        for key, value in loaded.items()
        if not (isinstance(key, str) and isinstance(value, torch.Tensor))
    ]
    if not_tensors:
        raise ConfigError(
            f"{path!r} is not a state dict: entries {not_tensors[:_LISTED_KEYS]} are not "
            "name -> tensor pairs (a training checkpoint? extract its model state_dict first)."
        )
    return OrderedDict(loaded)


def torchvision_reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``arch`` state dict (built on the meta device: no memory,
    no download)."""
    _check_architecture(arch)
    model = build_torchvision_classifier(arch, device="meta")
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def check_torchvision_keys(
    state_dict: Mapping[str, torch.Tensor], arch: str, source: str = "the state dict"
) -> None:
    """Raise a ConfigError naming the missing keys, unexpected keys and shape
    mismatches of ``state_dict`` against torchvision's ``arch``.  ``num_batches_tracked``
    counters may be absent, and the classifier may have any number of classes (it is dropped)."""
    reference = torchvision_reference_shapes(arch)
    given = set(state_dict)
    missing = [
        key for key in reference if key not in given and not key.endswith("num_batches_tracked")
    ]
    unexpected = [key for key in given if key not in reference]
    wrong_shapes = [
        (key, tuple(state_dict[key].shape), reference[key])
        for key in given
        if key in reference
        and tuple(state_dict[key].shape) != reference[key]
        and _resnet_key(key) is not None
    ]
    if not (missing or unexpected or wrong_shapes):
        return
    problems = mismatch_text(sorted(missing), sorted(unexpected), sorted(wrong_shapes))
    hint = f"pass the torchvision {arch} ImageNet file"
    for other in SUPPORTED_ARCHITECTURES:
        if other != arch and _matches_exactly(state_dict, other):
            hint = f"its keys are those of torchvision's {other}: convert it with arch {other!r}"
            break
    raise ConfigError(
        f"The keys of {source} do not match torchvision's {arch}: " + problems + f". ({hint})"
    )


def _matches_exactly(state_dict: Mapping[str, torch.Tensor], arch: str) -> bool:
    reference = torchvision_reference_shapes(arch)
    required = {key for key in reference if not key.endswith("num_batches_tracked")}
    return required <= set(state_dict) <= set(reference) and all(
        tuple(state_dict[key].shape) == reference[key]
        for key in state_dict
        if _resnet_key(key) is not None
    )


def _resnet_key(key: str) -> Optional[str]:
    if key.startswith("fc."):
        return None
    match = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if match:
        layer, leaf = match.groups()
        return "stem.conv1." + ("norm." if layer == "bn1" else "") + leaf
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)", key)
    if match is None:
        raise ConfigError(f"No detectron2 name for torchvision ResNet key {key!r}.")
    stage, block, layer, leaf = match.groups()
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
    """Check ``state_dict`` against torchvision's ``arch`` and return it under detectron2 names
    (each prefixed with ``prefix``), without the classifier and ``num_batches_tracked``."""
    check_torchvision_keys(state_dict, arch, source)
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
    _check_output_path(path)
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
    _check_architecture(arch)
    _check_output_path(output_path)
    state_dict = load_torchvision_state_dict(input_path)
    converted = convert_torchvision_state_dict(state_dict, arch, prefix, source=repr(input_path))
    save_converted_weights(converted, output_path, arch, os.path.basename(input_path))
    return len(converted)
