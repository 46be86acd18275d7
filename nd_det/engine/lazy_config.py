"""A LazyConfig run's config: the file and its dotted overrides (each naming a key the file
has), and its run settings seen in the yacs keys that nd-det's checks and DistillTrainer read.

detectron2's LazyConfig convention (``configs/common/train.py``, ``tools/lazyconfig_train_net.py``)
keeps a run's settings in ``train``, ``dataloader``, ``optimizer`` and ``lr_multiplier``; nd-det's
pre-flight and trainer read yacs keys.  :func:`run_view` writes the one into the other through
the table :data:`LAZY_KEYS`, and :func:`lazy_key_names` names the LazyConfig's keys in any
message that names a yacs key of that table, so that a LazyConfig user reads their own keys.
"""

import contextlib
import os
import re
import tempfile

import torch
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from omegaconf import DictConfig, OmegaConf

from ..config import add_distill_config, load_lazy_config
from ..errors import ConfigError, UserError, input_stage
from ..modeling.lazy import PLAIN_TARGETS, DistillTerms, distill_model_target, plain_student_model

__all__ = [
    "LAZY_KEYS",
    "REQUIRED_KEYS",
    "load_run_config",
    "run_view",
    "lazy_key_names",
    "lazy_config_text",
    "build_on_meta",
    "teacher_node_values",
]

# yacs key -> the LazyConfig key holding that setting (detectron2's names, nd-det's model nodes)
LAZY_KEYS = {
    "OUTPUT_DIR": "train.output_dir",
    "MODEL.WEIGHTS": "train.init_checkpoint",
    "MODEL.DEVICE": "train.device",
    "SOLVER.MAX_ITER": "train.max_iter",
    "SOLVER.CHECKPOINT_PERIOD": "train.checkpointer.period",
    "TEST.EVAL_PERIOD": "train.eval_period",
    "SOLVER.AMP.ENABLED": "train.amp.enabled",
    "SOLVER.AMP.PRECISION": "train.amp.precision",
    "SEED": "train.seed",
    "CUDNN_BENCHMARK": "train.cudnn_benchmark",
    "SOLVER.IMS_PER_BATCH": "dataloader.train.total_batch_size",
    "DATALOADER.NUM_WORKERS": "dataloader.train.num_workers",
    "DATASETS.TRAIN": "dataloader.train.dataset.names",
    "DATASETS.TEST": "dataloader.test.dataset.names",
    "SOLVER.BASE_LR": "optimizer.lr",
    "INPUT.FORMAT": "model.input_format",
    "MODEL.PIXEL_MEAN": "model.pixel_mean",
    "MODEL.PIXEL_STD": "model.pixel_std",
    "MODEL.ROI_HEADS.NUM_CLASSES": "model.roi_heads.num_classes",
    "INPUT.MAX_SIZE_TRAIN/TEST": "model.teacher.max_input_size",
    "MODEL.DISTILL.TEACHER_CONFIG": "model.teacher.config",
    "MODEL.DISTILL.TEACHER_WEIGHTS": "model.teacher.weights",
    "MODEL.DISTILL.TEACHER_OPTS": "model.teacher.opts",
    "TEACHER_OPTS": "model.teacher.opts",
    "MODEL.DISTILL.TEACHER_CASCADE_STAGE": "model.teacher.cascade_stage",
    "MODEL.DISTILL.TEACHER_AUTOCAST": "model.teacher.autocast",
}
# what a LazyConfig run needs besides the model (detectron2's lazyconfig_train_net reads them)
REQUIRED_KEYS = {
    "train": (
        "model",
        "train",
        "dataloader.train",
        "dataloader.test",
        "optimizer",
        "lr_multiplier",
    ),
    "eval": ("model", "train", "dataloader.test", "dataloader.evaluator"),
}
_DEFAULTS = {  # optional keys of detectron2's `train` node
    "train.amp.enabled": False,
    "train.amp.precision": "float16",
    "train.seed": -1,
    "train.cudnn_benchmark": False,
    "train.checkpointer.period": 5000,
    "train.eval_period": 0,
    "train.init_checkpoint": "",
    "train.device": "cuda",
    "dataloader.train.num_workers": 0,
    "dataloader.train.total_batch_size": 16,
}
_KEY_PATTERN = re.compile(
    r"(?<![\w.])(?:"
    + "|".join(re.escape(k) for k in sorted(LAZY_KEYS, key=len, reverse=True))
    + r"|MODEL\.DISTILL(?:\.[A-Z_]+)+)(?![\w.])"
)


def _lazy_name(match: re.Match) -> str:
    key = match.group(0)
    if key in LAZY_KEYS:
        return LAZY_KEYS[key]
    return "model.distill_terms" + key[len("MODEL.DISTILL") :].lower()  # LOSSES, ND.WEIGHT, ...


@contextlib.contextmanager
def lazy_key_names():
    """A UserError whose message names yacs keys of :data:`LAZY_KEYS` (or ``MODEL.DISTILL.*``)
    is raised again naming the LazyConfig's keys instead."""
    try:
        yield
    except UserError as error:
        text = _KEY_PATTERN.sub(_lazy_name, str(error))
        if text == str(error):
            raise
        raise type(error)(text) from None


def load_run_config(config_file: str, overrides, mode: str = "train") -> DictConfig:
    """The LazyConfig of a run: the file with its overrides (each naming a key the file has);
    ``mode`` "train" or "eval" names the nodes it must hold."""
    return load_lazy_config(config_file, overrides, required=REQUIRED_KEYS[mode])


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_DEFAULTS.get(key))


def _names(value) -> tuple:
    return (value,) if isinstance(value, str) else tuple(value or ())


def teacher_node_values(cfg: DictConfig) -> dict:
    """The values of ``model.teacher`` (a ``FrozenTeacher.from_values`` node), interpolations
    resolved; {} when the model has no teacher."""
    node = cfg.model.get("teacher")
    if node is None:
        return {}
    values = OmegaConf.to_container(node, resolve=True)
    values.pop("_target_", None)
    return values


def run_view(cfg: DictConfig) -> CfgNode:
    """The run's settings in the yacs keys nd-det's checks and DistillTrainer read (see
    :data:`LAZY_KEYS`): the train settings, the datasets, the student's input and classes, and
    ``MODEL.DISTILL`` (the teacher's values and the terms, empty for a plain model)."""
    model = cfg.model
    target = distill_model_target(model)
    distill = target in PLAIN_TARGETS  # DistillRCNN, or a one-stage DistillRetinaNet / DistillFCOS
    missing = [k for k in ("teacher", "distill_terms") if distill and k not in model]
    if missing:
        raise ConfigError(
            f"model is a {target.__name__} without model.{missing[0]}: give model.teacher = "
            "L(FrozenTeacher.from_values)(...) and model.distill_terms = distill_terms(...) "
            "(nd_det.modeling.lazy; configs/COCO-Distill/*.py)"
        )
    classes = OmegaConf.select(model, "roi_heads.num_classes", default=None)
    num_classes = int(classes or OmegaConf.select(model, "num_classes", default=0) or 0)
    with input_stage("model.distill_terms"):
        terms = instantiate(model.distill_terms) if distill else DistillTerms()
    view = terms.distill_cfg(num_classes).clone() if distill else add_distill_config(get_cfg())
    view.defrost()
    view.MODEL.DISTILL.LOSSES = list(terms.losses)
    teacher = teacher_node_values(cfg)
    for key, name in (
        ("config", "TEACHER_CONFIG"),
        ("weights", "TEACHER_WEIGHTS"),
        ("opts", "TEACHER_OPTS"),
        ("cascade_stage", "TEACHER_CASCADE_STAGE"),
        ("autocast", "TEACHER_AUTOCAST"),
    ):
        if key in teacher:
            value = teacher[key]
            view.MODEL.DISTILL[name] = list(value) if key == "opts" else value
    view.MODEL.META_ARCHITECTURE = target.__name__ if distill else "GeneralizedRCNN"
    view.MODEL.MASK_ON = OmegaConf.select(model, "roi_heads.mask_head", default=None) is not None
    view.MODEL.ROI_HEADS.NUM_CLASSES = view.MODEL.RETINANET.NUM_CLASSES = num_classes
    view.MODEL.WEIGHTS = _get(cfg, "train.init_checkpoint") or ""
    view.MODEL.DEVICE = str(_get(cfg, "train.device"))
    view.MODEL.PIXEL_MEAN = [float(x) for x in model.get("pixel_mean", view.MODEL.PIXEL_MEAN)]
    view.MODEL.PIXEL_STD = [float(x) for x in model.get("pixel_std", view.MODEL.PIXEL_STD)]
    view.INPUT.FORMAT = str(model.get("input_format") or "BGR")
    view.OUTPUT_DIR = str(_get(cfg, "train.output_dir") or "")
    view.SOLVER.MAX_ITER = int(_get(cfg, "train.max_iter") or 0)
    view.SOLVER.CHECKPOINT_PERIOD = int(_get(cfg, "train.checkpointer.period"))
    view.TEST.EVAL_PERIOD = int(_get(cfg, "train.eval_period"))
    view.SOLVER.AMP.ENABLED = bool(_get(cfg, "train.amp.enabled"))
    view.SOLVER.AMP.PRECISION = str(_get(cfg, "train.amp.precision"))
    view.SEED = int(_get(cfg, "train.seed"))
    view.CUDNN_BENCHMARK = bool(_get(cfg, "train.cudnn_benchmark"))
    view.SOLVER.IMS_PER_BATCH = int(_get(cfg, "dataloader.train.total_batch_size"))
    view.SOLVER.BASE_LR = float(OmegaConf.select(cfg, "optimizer.lr", default=0.0) or 0.0)
    view.DATALOADER.NUM_WORKERS = int(_get(cfg, "dataloader.train.num_workers"))
    view.DATASETS.TRAIN = _names(OmegaConf.select(cfg, "dataloader.train.dataset.names"))
    view.DATASETS.TEST = _names(OmegaConf.select(cfg, "dataloader.test.dataset.names"))
    view.freeze()
    return view


def build_on_meta(model_cfg: DictConfig, what: str = "model"):
    """``instantiate(model_cfg)`` on PyTorch's meta device (shapes, no weights, no memory): the
    checks before a run; what detectron2 refuses is one line naming ``what``."""
    with input_stage(what), torch.device("meta"):
        return instantiate(model_cfg)


def build_student_on_meta(cfg: DictConfig):
    return build_on_meta(plain_student_model(cfg.model), "the student (model)")


def lazy_config_text(cfg: DictConfig) -> str:
    """The yaml detectron2's ``LazyConfig.save`` writes for ``cfg`` (what OUTPUT_DIR/config.yaml
    records; ``LazyConfig.load`` reads it back)."""
    with tempfile.TemporaryDirectory(prefix="nd_det_lazy_") as folder:
        path = os.path.join(folder, "config.yaml")
        LazyConfig.save(cfg, path)
        if not os.path.isfile(path):  # a value yaml cannot hold (a lambda): detectron2 logged it
            return (
                "# this LazyConfig holds values yaml cannot (see the log); its file is the record\n"
            )
        with open(path, encoding="utf-8") as f:
            return f.read()
