"""Where the teacher's architecture is written down, and how it is built.

``MODEL.DISTILL.TEACHER_CONFIG`` is either

* a yacs config (``.yaml``: a detectron2 model-zoo name or a file), with ``TEACHER_OPTS`` as
  ``KEY VALUE`` pairs, built by its meta-architecture as ``build_model`` does; or
* a LazyConfig (``.py``: detectron2's LSJ "new baselines", its ``projects/`` such as ViTDet and
  MViTv2, or a file of your own), with ``TEACHER_OPTS`` as detectron2's dotted overrides
  (``"model.roi_heads.num_classes=3"``, ``LazyConfig.apply_overrides``), built by
  ``instantiate(cfg.model)``.

Either way the result is a plain detector on the student's device, or on PyTorch's meta device
(no weights, no memory) when built inside ``torch.device("meta")``: the checks before a run.
The file is read once per :class:`TeacherSource`; what detectron2, yacs, hydra or omegaconf
refuse while reading or building it is one line naming the key (``input_stage``).
"""

import contextlib
import os

import torch
from detectron2.config import CfgNode, get_cfg, instantiate
from detectron2.modeling import META_ARCH_REGISTRY
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ...config import add_distill_config, load_lazy_config, merge_config, plain_meta_architecture
from ...errors import input_stage
from ...utils.skip_init import without_random_init
from .spec import TeacherSpec, as_teacher_spec

__all__ = ["TeacherSource", "teacher_config_file", "is_lazy_config", "on_meta_device"]

_KEY = "MODEL.DISTILL.TEACHER_CONFIG"


def is_lazy_config(name: str) -> bool:
    """A LazyConfig (Python) file or model-zoo name, rather than a yacs yaml."""
    return str(name).endswith(".py")


def on_meta_device() -> bool:
    """True inside ``with torch.device("meta")``: models are built for their shapes only."""
    return torch.get_default_device().type == "meta"


def teacher_config_file(name: str) -> str:
    """A path for TEACHER_CONFIG: an existing file, or a detectron2 model-zoo config name."""
    if os.path.isfile(name):
        return name
    from detectron2 import model_zoo  # it needs pkg_resources: loaded only when a name is given

    with input_stage(f"{_KEY} {name!r} (neither a file nor a model-zoo config name)"):
        return model_zoo.get_config_file(name)


class TeacherSource:
    """The teacher's config (yacs ``CfgNode`` or LazyConfig ``DictConfig`` in ``config``), read
    once, its input format, and its builder."""

    def __init__(self, cfg: "CfgNode | TeacherSpec"):
        spec = as_teacher_spec(cfg)
        self.name = spec.config
        self.device = spec.device
        self.lazy = is_lazy_config(self.name)
        opts = list(spec.opts)
        with input_stage(f"{_KEY} {self.name}"):
            self.config = _lazy_config(self.name, opts) if self.lazy else _yacs_config(spec, opts)

    @property
    def input_format(self) -> str:
        """The channel order the teacher was trained on ("BGR" when a LazyConfig model does not
        say: detectron2's default)."""
        if not self.lazy:
            return self.config.INPUT.FORMAT
        return OmegaConf.select(self.config, "model.input_format", default=None) or "BGR"

    def build(self, initialize: bool = True) -> nn.Module:
        """The detector, randomly initialised: on the student's device, or on the meta device
        inside ``torch.device("meta")``.  A model whose constructor reads tensor values (ViT's
        drop-path schedule) cannot be built there: it is built on the CPU instead.
        ``initialize=False`` skips the random initialisation (the tensors hold whatever their
        memory held): only for a caller that loads every weight strictly next."""
        with input_stage(f"the teacher ({_KEY} {self.name})"):
            if not on_meta_device():
                with contextlib.nullcontext() if initialize else without_random_init():
                    model = self._build()
                return model.to(torch.device(self.device))
            try:
                return self._build()
            except Exception:  # noqa: BLE001 - a real error is reported by the CPU build
                with torch.device("cpu"):
                    return self._build()

    def _build(self) -> nn.Module:
        if not self.lazy:  # build_model's steps, without its move to MODEL.DEVICE
            return META_ARCH_REGISTRY.get(self.config.MODEL.META_ARCHITECTURE)(self.config)
        return instantiate(self.config.model)


def _yacs_config(spec: TeacherSpec, opts: list) -> CfgNode:
    """The teacher's yaml + TEACHER_OPTS (KEY VALUE pairs), on the student's device."""
    teacher_cfg = add_distill_config(get_cfg())  # the teacher file may use nd-det backbones' keys
    teacher_cfg.set_new_allowed(True)  # a teacher yaml from another project may carry its keys
    path = teacher_config_file(spec.config)
    merge_config(teacher_cfg, path, f"{_KEY} {path}")
    teacher_cfg.set_new_allowed(False)
    merge_config(teacher_cfg, opts, "MODEL.DISTILL.TEACHER_OPTS")
    teacher_cfg.MODEL.DEVICE = spec.device
    teacher_cfg.MODEL.WEIGHTS = ""
    # a teacher is a plain detector (a distilled student used as teacher too)
    teacher_cfg.MODEL.META_ARCHITECTURE = plain_meta_architecture(teacher_cfg)
    teacher_cfg.freeze()
    return teacher_cfg


def _lazy_config(name: str, overrides: list) -> DictConfig:
    """The teacher's LazyConfig file + TEACHER_OPTS (dotted ``key=value`` overrides of keys the
    file has); ``model`` is what is built."""
    path = teacher_config_file(name)
    return load_lazy_config(path, overrides, f"{_KEY} {name}", "TEACHER_OPTS", required=["model"])
