"""Where the teacher's architecture is written down, and how it is built.

``MODEL.DISTILL.TEACHER_CONFIG`` is either

* a yacs config (``.yaml``: a detectron2 model-zoo name or a file), with ``TEACHER_OPTS`` as
  ``KEY VALUE`` pairs, built by ``build_model``; or
* a LazyConfig (``.py``: detectron2's LSJ "new baselines", its ``projects/`` such as ViTDet and
  MViTv2, or a file of your own), with ``TEACHER_OPTS`` as detectron2's dotted overrides
  (``"model.roi_heads.num_classes=3"``, ``LazyConfig.apply_overrides``), built by
  ``instantiate(cfg.model)``.

Either way the result is a plain detector on the student's device; :class:`TeacherSource` also
builds it on PyTorch's meta device (no weights, no memory) for the checks made before anything
real is built.
"""

import os

import torch
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ...config import add_distill_config, merge_config
from ...errors import ConfigError
from ...utils.text import first_line, short_list

__all__ = ["TeacherSource", "teacher_config_file", "is_lazy_config"]

_KEY = "MODEL.DISTILL.TEACHER_CONFIG"
_OPTS = "MODEL.DISTILL.TEACHER_OPTS"
_MISSING = object()


def is_lazy_config(name: str) -> bool:
    """A LazyConfig (Python) file or model-zoo name, rather than a yacs yaml."""
    return str(name).endswith(".py")


def teacher_config_file(name: str) -> str:
    """A path for TEACHER_CONFIG: an existing file, or a detectron2 model-zoo config name."""
    if not name:
        raise ConfigError(
            f"{_KEY} is empty: set it to a detectron2 model-zoo name such as "
            "'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml' or to a yaml or LazyConfig (.py) file."
        )
    if os.path.isfile(name):
        return name
    from detectron2 import model_zoo  # it needs pkg_resources: loaded only when a name is given

    try:
        return model_zoo.get_config_file(name)
    except RuntimeError:
        raise ConfigError(
            f"{_KEY}={name!r} is neither an existing file nor a detectron2 model-zoo config name "
            "(e.g. 'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml' or "
            "'new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py')."
        ) from None


class TeacherSource:
    """The teacher's validated config (yacs ``CfgNode`` or LazyConfig ``DictConfig`` in
    ``config``), its input format, and its builders."""

    def __init__(self, cfg: CfgNode):
        self.name = cfg.MODEL.DISTILL.TEACHER_CONFIG
        self.device = str(cfg.MODEL.DEVICE)
        self.lazy = is_lazy_config(self.name)
        opts = list(cfg.MODEL.DISTILL.TEACHER_OPTS)
        self.config = _lazy_config(self.name, opts) if self.lazy else _yacs_config(cfg, opts)

    @property
    def input_format(self) -> str:
        """The channel order the teacher was trained on ("BGR" when a LazyConfig model does not
        say: detectron2's default)."""
        if not self.lazy:
            return self.config.INPUT.FORMAT
        return OmegaConf.select(self.config, "model.input_format", default=None) or "BGR"

    def build(self) -> nn.Module:
        """The detector on the student's device, randomly initialised."""
        if not self.lazy:
            return build_model(self.config)
        return self._instantiate().to(torch.device(self.device))

    def build_meta(self) -> nn.Module:
        """The detector on PyTorch's meta device, for its shapes and its state-dict keys.  A
        model whose constructor reads tensor values (ViT's drop-path schedule) cannot be built
        there: it is built on the CPU instead."""
        try:
            with torch.device("meta"):
                return self._build_plain()
        except Exception:  # noqa: BLE001 - retried below, where a real error is reported
            pass
        try:
            return self._build_plain()
        except Exception as e:  # noqa: BLE001 - builders reject bad configs with many types
            raise ConfigError(
                f"the teacher ({_KEY} {self.name}) cannot be built from its config "
                f"({first_line(e)}): check its keys and {_OPTS}"
            ) from None

    def _build_plain(self) -> nn.Module:
        # the meta-architecture's constructor, without build_model's move to MODEL.DEVICE
        if not self.lazy:
            return META_ARCH_REGISTRY.get(self.config.MODEL.META_ARCHITECTURE)(self.config)
        return self._instantiate()

    def _instantiate(self) -> nn.Module:
        model = instantiate(self.config.model)
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"{_KEY} {self.name}: its `model` builds a "
                f"{type(model).__name__}, not a detector module"
            )
        return model


def _yacs_config(cfg: CfgNode, opts: list) -> CfgNode:
    """The teacher's yaml + TEACHER_OPTS (KEY VALUE pairs), on the student's device."""
    # the teacher file may use nd-det backbones' keys
    teacher_cfg = add_distill_config(get_cfg())
    teacher_cfg.set_new_allowed(True)  # a teacher yaml from another project may carry its keys
    path = teacher_config_file(cfg.MODEL.DISTILL.TEACHER_CONFIG)
    merge_config(teacher_cfg, path, f"{_KEY} {path}")
    teacher_cfg.set_new_allowed(False)
    merge_config(teacher_cfg, opts, _OPTS)
    teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    teacher_cfg.MODEL.WEIGHTS = ""
    # the teacher is always a plain detector, never a distiller itself
    if teacher_cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
        teacher_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    teacher_cfg.freeze()
    return teacher_cfg


def _lazy_config(name: str, overrides: list) -> DictConfig:
    """The teacher's LazyConfig file + TEACHER_OPTS (dotted ``key=value`` overrides, every key
    one the file already has)."""
    path = teacher_config_file(name)
    try:
        root = LazyConfig.load(path)
    except Exception as e:  # noqa: BLE001 - a Python file fails to load in many ways
        raise ConfigError(
            f"{_KEY} {name}: the LazyConfig file cannot be loaded ({first_line(e)})"
        ) from None
    if not isinstance(OmegaConf.select(root, "model", default=None), DictConfig):
        raise ConfigError(
            f"{_KEY} {name} is a LazyConfig without a `model` entry (it has "
            f"{short_list(sorted(root.keys()), 8)}): name a file that defines "
            "`model = L(GeneralizedRCNN)(...)`, e.g. "
            "new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py"
        )
    for override in overrides:
        key = str(override).split("=", 1)[0].strip()
        if not isinstance(override, str) or "=" not in override or not key:
            raise ConfigError(
                f"{_OPTS} {override!r}: a LazyConfig teacher takes dotted overrides KEY=VALUE, "
                "e.g. ['model.roi_heads.num_classes=3']"
            )
        if OmegaConf.select(root, key, default=_MISSING) is _MISSING:
            parent, _, _ = key.rpartition(".")
            node = OmegaConf.select(root, parent, default=None) if parent else root
            known = (
                f"; {parent or 'the file'} has {short_list(sorted(map(str, node.keys())), 12)}"
                if isinstance(node, DictConfig)
                else ""
            )
            raise ConfigError(
                f"{_OPTS} {override!r}: the teacher's LazyConfig ({name}) has no key {key!r}{known}"
            )
    try:
        LazyConfig.apply_overrides(root, overrides)
    except Exception as e:  # noqa: BLE001 - hydra's parser and OmegaConf raise many types
        raise ConfigError(f"{_OPTS} {overrides}: {first_line(e)}") from None
    return root
