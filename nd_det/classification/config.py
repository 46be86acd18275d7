"""Training configs: fvcore's ``CfgNode`` with every key's default (``DEFAULTS``), a yaml file
(``_BASE_`` chains) merged over it, then ``KEY=VALUE`` overrides (values read as yaml).

Each key and value is checked where a file or override sets it: an unknown key names the file,
the key and the valid keys; a bad value names the key, what it got and what it takes (the
default's type, ``KINDS``, ``MINIMUM``, ``POSITIVE``, ``CHOICES``); a number written as text
('1e-3', a string to YAML 1.1) is read as the number.  ``distill.losses`` is the one free-form
node (``new_allowed``: term name -> parameters, checked by the loss-term registry); setting it
replaces the whole loss list.  fvcore's ``merge_from_file`` / ``merge_from_list`` do not serve:
they merge a file into its ``_BASE_`` before any check (an error could not name its file), merge
the loss list key by key, read Python literals rather than yaml and cannot add a term parameter.
"""

import json
import os
from collections.abc import Iterable

import yaml
from fvcore.common.config import CfgNode

from ..errors import ConfigError
from ..utils.values import is_int, is_number

__all__ = [
    "DEFAULTS",
    "load_config",
    "apply_overrides",
    "merge_config",
    "check_values",
    "config_dict",
]

_C = CfgNode()
_C.model = CfgNode()
_C.model.name = None  # a registered classifier (nd_det.classification.models)
_C.model.weights = None  # optional initial weights (our checkpoint or a raw state dict)
_C.model.drop_path_rate = 0.0  # stochastic depth of the transformer models (0: none)
_C.data = CfgNode()
_C.data.name = None  # cifar100 | image_folder | fashion_mnist | digits
_C.data.root = None  # dataset folder (each dataset has a default)
_C.data.train_subset = None  # use N training samples (fixed random choice) - quick runs
_C.data.test_subset = None  # use N test samples
_C.data.subset_seed = 0  # the random choice of those subsets
_C.data.image_size = 224  # image_folder: crop size
_C.data.train_dir = "train"  # image_folder: the training split under root
_C.data.test_dir = "val"  # image_folder: the evaluated split
_C.data.augment = "standard"  # image_folder training augmentation: standard | deit
_C.data.mixup_alpha = 0.0  # batch mixup, Beta(alpha, alpha) (0: off)
_C.data.cutmix_alpha = 0.0  # batch cutmix (0: off); with mixup, one of the two per batch
_C.data.download = False  # cifar100: fetch the archive with torchvision
_C.data.verify_checksums = True  # cifar100: require the official files' md5
_C.data.num_workers = 4  # data-loading processes per training process
_C.solver = CfgNode()
_C.solver.epochs = 240  # training epochs
_C.solver.batch_size = 128  # TOTAL over all processes (divided by the world size)
_C.solver.eval_batch_size = 256  # per process
_C.solver.optimizer = "sgd"  # sgd | adamw (no weight decay on biases and norm layers)
_C.solver.lr = 0.1  # the base learning rate
_C.solver.momentum = 0.9  # sgd
_C.solver.nesterov = True  # sgd
_C.solver.betas = [0.9, 0.999]  # adamw
_C.solver.weight_decay = 5e-4  # L2 weight decay
# multistep, cosine (both set per epoch) or warmup_cosine (set every iteration)
_C.solver.lr_schedule = "multistep"
_C.solver.lr_milestones = [150, 180, 210]  # multistep
_C.solver.lr_gamma = 0.1  # multistep
_C.solver.warmup_epochs = 0.0  # warmup_cosine: linear warm-up from 0 over these epochs
_C.solver.min_lr = 0.0  # warmup_cosine: the LR the cosine ends at
_C.solver.clip_grad_norm = None  # clip the gradient's total norm to this (null: no clipping)
_C.distill = CfgNode()
_C.distill.teacher = CfgNode()
_C.distill.teacher.name = None  # registered classifier of the teacher; null = no teacher
_C.distill.teacher.weights = None  # the trained teacher (train_cls.py output or raw state dict)
_C.distill.teacher.config = None  # the teacher's training config (recorded for provenance)
_C.distill.class_means = (
    None  # file from tools/extract_class_means.py --task classification (needed by 'nd')
)
_C.distill.warm_up_epochs = 0.0  # warmed-up terms are scaled by min(1, epoch / warm_up_epochs)
# term name -> parameters (free-form, see loss_terms)
_C.distill.losses = CfgNode({"ce": {"weight": 1.0}}, new_allowed=True)
_C.train = CfgNode()
_C.train.output_dir = "output/classification"  # where the run writes
_C.train.seed = 0  # seeds weights, data order and augmentation
_C.train.device = "auto"  # auto | cpu | cuda
_C.train.amp = False  # autocast: float16 + GradScaler on CUDA, bfloat16 on CPU
_C.train.log_period = 50  # iterations between progress lines / JSON records
_C.train.eval_period = 1  # epochs between evaluations (the last epoch is always evaluated)
_C.train.tensorboard = True  # write TensorBoard events too
_C.freeze()
DEFAULTS = _C


# What a value may be beyond its default's type (a null default: null or a string, unless KINDS
# says otherwise): an inclusive minimum (POSITIVE: above 0) and a list of choices.
KINDS = {"data.train_subset": "int", "data.test_subset": "int", "solver.clip_grad_norm": "number"}
MINIMUM = {
    "data.train_subset": 1,
    "data.test_subset": 1,
    "data.image_size": 1,
    "data.mixup_alpha": 0,
    "data.cutmix_alpha": 0,
    "data.num_workers": 0,
    "model.drop_path_rate": 0,
    "solver.epochs": 1,
    "solver.batch_size": 1,
    "solver.eval_batch_size": 1,
    "solver.momentum": 0,
    "solver.betas": 0,
    "solver.weight_decay": 0,
    "solver.warmup_epochs": 0,
    "solver.min_lr": 0,
    "distill.warm_up_epochs": 0,
    "train.log_period": 1,
    "train.eval_period": 1,
}
POSITIVE = {"solver.lr", "solver.lr_gamma", "solver.clip_grad_norm"}
CHOICES = {
    "data.augment": ("standard", "deit"),
    "solver.optimizer": ("sgd", "adamw"),
    "solver.lr_schedule": ("multistep", "cosine", "warmup_cosine"),
    "train.device": ("auto", "cpu", "cuda"),
}
_KIND_TEXT = {
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "int_list": "a list of integers, e.g. [150, 180, 210]",
    "number_list": "a list of numbers, e.g. [0.9, 0.999]",
}


def _kind_of(default) -> str:
    if isinstance(default, list):
        return "int_list" if all(map(is_int, default)) else "number_list"
    return {bool: "bool", int: "int", float: "number"}.get(type(default), "str")


def _checked(value, kind: str):
    """``value`` as ``kind``, or None; numbers become floats (so a value keeps its default's
    type) and text such as '1e-3' (a string to YAML 1.1) counts as a number."""
    if kind.endswith("_list"):
        items = [_checked(v, kind[:-5]) for v in value] if isinstance(value, list) else [None]
        return None if None in items else items
    if kind == "number":
        try:
            return float(value) if is_number(value) or isinstance(value, str) else None
        except ValueError:
            return None
    fits = {
        "int": is_int,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }[kind]
    return value if fits(value) else None


def _check_value(dotted: str, value, default, source: str):
    """The value to store for ``dotted``; one that breaks its rules is a ConfigError."""
    kind = KINDS.get(dotted) or _kind_of(default)
    if value is None and default is None:
        return value
    checked = _checked(value, kind)
    if checked is None:
        raise ConfigError(
            f"{source}: {dotted}={value!r} must be {_KIND_TEXT[kind]}"
            f"{' or null' if default is None else ''} (the default is {default!r})"
        )
    if dotted in CHOICES and checked not in CHOICES[dotted]:
        raise ConfigError(f"{source}: {dotted}={value!r}: use one of {', '.join(CHOICES[dotted])}")
    numbers = checked if isinstance(checked, list) else [checked]
    if dotted in POSITIVE and not all(v > 0 for v in numbers):
        raise ConfigError(
            f"{source}: {dotted}={value!r}: give a positive value (the default is {default!r})"
        )
    if dotted in MINIMUM and any(v < MINIMUM[dotted] for v in numbers):
        raise ConfigError(f"{source}: {dotted}={value!r}: give {MINIMUM[dotted]:g} or more")
    return checked


def check_values(cfg: dict, source: str, prefix: tuple[str, ...] = ()) -> None:
    """Check (in place) the keys and values of ``cfg``, a config or a part of one below
    ``prefix``; numbers given as text are replaced by the number."""
    reference = DEFAULTS
    for key in prefix:
        reference = reference[key]
    for key, value in cfg.items():
        where = prefix + (key,)
        dotted = ".".join(where)
        if where == ("_source",):  # recorded by load_config, not a setting
            continue
        if key not in reference:
            valid = ", ".join(sorted(reference))
            raise ConfigError(f"{source}: unknown key {dotted!r}; valid keys here: {valid}")
        default = reference[key]
        if not isinstance(default, CfgNode):
            cfg[key] = _check_value(dotted, value, default, source)
        elif not isinstance(value, dict):
            what = (
                "a mapping (term name -> parameters)"
                if default.is_new_allowed()
                else f"a mapping of its keys ({', '.join(sorted(default))})"
            )
            raise ConfigError(f"{source}: {dotted} must be {what}; got {value!r}")
        elif not default.is_new_allowed():
            check_values(value, source, where)


def _merge(node: CfgNode, update: dict, replace_free_form: bool = True) -> None:
    """Merge a checked mapping into ``node``: mappings merge, other values replace; the
    free-form node is emptied first unless ``replace_free_form`` is false."""
    for key, value in update.items():
        child = node.get(key)
        if isinstance(value, dict) and isinstance(child, CfgNode):
            if child.is_new_allowed() and replace_free_form:
                child.clear()
            _merge(child, value, replace_free_form)
        else:
            node[key] = CfgNode(value) if isinstance(value, dict) else value


def merge_config(base: CfgNode, update: dict) -> CfgNode:
    """A copy of ``base`` (``DEFAULTS`` or a config) with the mapping ``update`` merged in (a
    ``distill.losses`` mapping replaces the loss list); check it with :func:`check_values`."""
    cfg = base.clone()
    cfg.defrost()
    _merge(cfg, update)
    return cfg


def config_dict(cfg: CfgNode) -> dict:
    """``cfg`` as plain dicts and lists (for yaml files and checkpoints that load without
    fvcore)."""
    return json.loads(json.dumps(cfg))


def _yaml_problem(error: yaml.YAMLError) -> str:
    """``"<problem> at line L, column C"`` of a yaml parse error (its first line otherwise)."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _read_chain(path: str, chain: tuple[str, ...] = ()) -> list[dict]:
    """The checked contents of ``path`` and of its ``_BASE_`` files, the deepest base first."""
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(chain + (path,))}")
    if not os.path.isfile(path):
        where = f" (the _BASE_ of {chain[-1]})" if chain else ""
        raise ConfigError(
            f"config file {path} not found{where}: check the path (the shipped "
            "configs are under configs/classification/)"
        )
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except UnicodeDecodeError:
            raise ConfigError(
                f"{path} is not a yaml config (not UTF-8 text: a weights file?); "
                "give the .yaml config of the run"
            ) from None
        except yaml.YAMLError as e:
            raise ConfigError(
                f"{path} is not valid yaml ({_yaml_problem(e)}); fix the file"
            ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} is not a yaml config: it must hold a mapping (section: "
            f"{{key: value}}) at the top level, not a {type(data).__name__}"
        )
    base = data.pop("_BASE_", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: _BASE_ must be the path of one yaml file; got {base!r}")
    check_values(data, path)
    if base is None:
        return [data]
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    return _read_chain(base_path, chain + (path,)) + [data]


def load_config(path: str) -> CfgNode:
    """The merged, checked config of ``path``; ``cfg['_source']`` records the file."""
    cfg = merge_config(DEFAULTS, {})
    for data in _read_chain(path):
        _merge(cfg, data)
    cfg["_source"] = os.path.abspath(path)
    return cfg


def _below_free_form(keys: list[str]) -> bool:
    """Whether the dotted key ``keys`` names something inside the free-form node."""
    node = DEFAULTS
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, CfgNode) else None
        if isinstance(node, CfgNode) and node.is_new_allowed():
            return True
    return False


def apply_overrides(cfg: CfgNode, overrides: Iterable[str]) -> CfgNode:
    """A copy of ``cfg`` with ``KEY=VALUE`` items applied (values parsed as yaml), each key and
    value checked like a config file's; errors name the override.  A whole section
    (``solver={epochs: 2}``) merges into it; a key inside ``distill.losses`` is set alone."""
    cfg = merge_config(cfg, {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        source = f"override {item!r}"
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(
                f"{source}: the value is not valid yaml ({_yaml_problem(e)}); "
                "quote it for the shell, e.g. 'solver.lr_milestones=[30, 60]'"
            ) from None
        keys = dotted.split(".")
        update = value
        for key in reversed(keys):
            update = {key: update}
        check_values(update, source)
        _merge(cfg, update, replace_free_form=not _below_free_form(keys))
    return cfg
