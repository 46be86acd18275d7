"""The student's view of checkpoints: its config without nd-det's training keys, its entries of a
DistillRCNN state dict, and the one checkpointer that loads them strictly.

A DistillRCNN checkpoint holds the student (keys identical to a GeneralizedRCNN's) plus the
training-only modules of the distillation terms (``distill_terms.*``, e.g. ReviewKD's ABFs) and
the trainer's state; it never holds the teacher.
"""

from typing import Callable, Optional

import torch
from detectron2.config import CfgNode
from detectron2.modeling import BACKBONE_REGISTRY, build_model

from ..config import plain_meta_architecture
from ..errors import ConfigError, UserError
from ..utils.checkpoint_files import mismatch_text
from ..utils.skip_init import without_random_init
from ..utils.text import first_line, short_list
from .weights import SafeCheckpointer, local_weights_file

__all__ = [
    "DISTILL_STATE_PREFIX",
    "ND_DET_MODEL_NODES",
    "BACKBONE_CONFIG_NODES",
    "student_state_dict",
    "is_distill_module_key",
    "uses_nd_det_backbone",
    "plain_student_cfg",
    "StrictCheckpointer",
    "StudentCheckpointer",
    "load_student_checkpoint",
    "build_plain_student",
    "without_ddp_prefix",
    "student_mismatch_message",
]

# state_dict prefix of the training-only distillation modules (DistillRCNN.distill_terms)
DISTILL_STATE_PREFIX = "distill_terms."
# config nodes (under MODEL) that nd-det adds; stock detectron2 rejects a yaml holding them
ND_DET_MODEL_NODES = ("DISTILL", "TORCHVISION")
# the node each nd-det backbone builder reads (kept in a plain config that uses the builder)
BACKBONE_CONFIG_NODES = {
    "build_torchvision_fpn_backbone": "TORCHVISION",
}


def without_ddp_prefix(key: str) -> str:
    """``key`` without the ``module.`` prefix a DistributedDataParallel wrapper adds."""
    return key.removeprefix("module.")


def is_distill_module_key(key: str) -> bool:
    """True for a key of the distillation terms' modules (``distill_terms.*``, DDP or not;
    ``distill_losses.*`` in checkpoints written before the attribute was renamed)."""
    return without_ddp_prefix(key).startswith((DISTILL_STATE_PREFIX, "distill_losses."))


def student_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's entries of a DistillRCNN state dict (also accepts a DDP ``module.`` one)."""
    return {without_ddp_prefix(k): v for k, v in state.items() if not is_distill_module_key(k)}


def uses_nd_det_backbone(cfg: CfgNode) -> bool:
    """True when MODEL.BACKBONE.NAME is registered by nd-det (stock detectron2 lacks it)."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONE_REGISTRY:
        return False
    return BACKBONE_REGISTRY.get(name).__module__.split(".")[0] == "nd_det"


def plain_student_cfg(cfg: CfgNode) -> CfgNode:
    """``cfg`` as a plain detectron2 GeneralizedRCNN config: no ``MODEL.DISTILL`` keys, no
    ``SOLVER.AMP.PRECISION`` (nd-det's training-only key), and no nd-det backbone keys unless
    the student's backbone is one of nd-det's own."""
    plain = cfg.clone()
    plain.defrost()
    plain.SOLVER.AMP.pop("PRECISION", None)
    plain.MODEL.META_ARCHITECTURE = plain_meta_architecture(plain)
    keep = BACKBONE_CONFIG_NODES.get(plain.MODEL.BACKBONE.NAME)
    for node in ND_DET_MODEL_NODES:
        if node != keep:
            plain.MODEL.pop(node, None)
    plain.freeze()
    return plain


class StrictCheckpointer(SafeCheckpointer):
    """DetectionCheckpointer read as data (:class:`SafeCheckpointer`: paths, detectron2:// and
    https URLs, .pkl/.pth) that keeps what its last load did not match instead of logging
    warnings, for the caller to refuse.

    Args:
        unreadable: turns a reason ("it holds a list", an exception's first line) into the
            exception to raise for a file that is not a detectron2 checkpoint.
        allowed_unexpected: keys of the file the model may lack (e.g. old buffers).
        state_filter: applied to the file's ``model`` state before loading.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        unreadable: Optional[Callable[[str], Exception]] = None,
        allowed_unexpected: Callable[[str], bool] = lambda key: False,
        state_filter: Optional[Callable[[dict], dict]] = None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, **checkpointables)
        self.unreadable = unreadable or (lambda why: ValueError(f"not a checkpoint: {why}"))
        self.allowed_unexpected = allowed_unexpected
        self.state_filter = state_filter
        self.mismatch = ""  # the last load's mismatch_text, "" when none

    def _load_file(self, filename):
        try:
            loaded = super()._load_file(filename)
            state = loaded["model"]
            bad = [k for k, v in state.items() if not (torch.is_tensor(v) or hasattr(v, "shape"))]
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - unreadable files fail in many exception types
            raise self.unreadable(first_line(e)) from None
        if not state or bad:
            raise self.unreadable(f"no 'model' state dict of tensors ({short_list(bad, 3)})")
        return loaded

    def _load_model(self, checkpoint):
        state = checkpoint["model"]
        if self.state_filter is not None:
            checkpoint["model"] = self.state_filter(state)
        incompatible = super()._load_model(checkpoint)
        wrong_shape = {k for k, _, _ in incompatible.incorrect_shapes}
        self.mismatch = mismatch_text(
            [k for k in incompatible.missing_keys if k not in wrong_shape],
            [k for k in incompatible.unexpected_keys if not self.allowed_unexpected(k)],
            incompatible.incorrect_shapes,
        )
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        """Mismatches are the caller's to report (as one error), not warnings."""


def student_mismatch_message(what: str, weights: str, problems: str) -> str:
    """The message for student weights (named by ``what``) that do not fit the config."""
    return (
        f"{what} {weights} does not fit the student of the config ({problems}); give the "
        "checkpoint trained with this config, or the config and KEY VALUE overrides it was "
        "trained with"
    )


class StudentCheckpointer(StrictCheckpointer):
    """Loads the student part of any checkpoint (DistillRCNN training checkpoints included) into
    a plain GeneralizedRCNN; remembers which ``distill_terms.*`` keys it left out."""

    def __init__(self, model, save_dir: str = "", **kwargs):
        kwargs.setdefault(
            "allowed_unexpected", lambda key: key.endswith(("pixel_mean", "pixel_std"))
        )
        super().__init__(model, save_dir, state_filter=self._student_only, **kwargs)
        self.training_only_keys: list[str] = []

    def _student_only(self, state: dict) -> dict:
        self.training_only_keys = sorted(k for k in state if is_distill_module_key(k))
        return student_state_dict(state)


def load_student_checkpoint(
    model,
    weights: str,
    what: str = "MODEL.WEIGHTS",
    hint: str = "give the model_final.pth a training run of this config wrote",
    error=ConfigError,
) -> StudentCheckpointer:
    """Load the student entries of ``weights`` (a path or a URL) into ``model``; raise
    ``error`` naming ``what`` unless every key matched in name and shape.  Returns the
    checkpointer (what it left out, the checkpoint's other entries in ``extra``)."""
    local = local_weights_file(what, weights)

    def unreadable(why: str) -> Exception:
        return error(f"{what} {weights} is not a detectron2 checkpoint ({why}); {hint}")

    checkpointer = StudentCheckpointer(model, unreadable=unreadable)
    checkpointer.extra = checkpointer.load(local)
    if checkpointer.mismatch:
        raise error(student_mismatch_message(what, weights, checkpointer.mismatch))
    return checkpointer


def build_plain_student(cfg: CfgNode, weights: str) -> tuple[CfgNode, torch.nn.Module]:
    """``(plain_student_cfg(cfg), its model)`` for a distillation or plain config: built, the
    student entries of ``weights`` loaded strictly (:func:`load_student_checkpoint`), in eval
    mode."""
    student_cfg = plain_student_cfg(cfg)
    with without_random_init():  # the strict load replaces every value
        model = build_model(student_cfg)
    load_student_checkpoint(model, weights)
    return student_cfg, model.eval()
