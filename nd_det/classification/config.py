"""Training configs: yaml files with an optional ``_BASE_`` chain, merged over ``DEFAULTS``.

Every key is checked: an unknown key is an error naming the file, the key and the valid keys.
``distill.losses`` is the one free-form mapping (term name -> parameters); the loss-term
registry checks it.  ``apply_overrides(cfg, ["solver.epochs=2", ...])`` applies command-line
``KEY=VALUE`` pairs (values parsed as yaml).

Every value is checked too, in the file or override that sets it (``VALUE_RULES``: its type,
whether it may be null, its range or choices); a number written as text (``1e-3``, which YAML 1.1
reads as a string) is read as the number.  Errors are :class:`ConfigError` (a ``UserError``).
"""
import copy
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml

from ..errors import ConfigError
from ..utils.values import is_int, is_number

__all__ = ["DEFAULTS", "VALUE_RULES", "load_config", "apply_overrides",
           "merge_config", "check_values"]

DEFAULTS: Dict[str, Any] = {
    "model": {
        "name": None,              # a registered classifier (nd_det.classification.models)
        "weights": None,           # optional initial weights (our checkpoint or a raw state dict)
    },
    "data": {
        "name": None,              # cifar100 | image_folder | fashion_mnist | digits
        "root": None,              # dataset folder (each dataset has a default)
        "train_subset": None,      # use N training samples (fixed random choice) - quick runs
        "test_subset": None,       # use N test samples
        "subset_seed": 0,
        "image_size": 224,         # image_folder: crop size
        "train_dir": "train",      # image_folder: sub-folders of root
        "test_dir": "val",
        "download": False,         # cifar100: fetch the archive with torchvision
        "verify_checksums": True,  # cifar100: require the official files' md5
        "num_workers": 4,          # data-loading processes per training process
    },
    "solver": {
        "epochs": 240,
        "batch_size": 128,         # TOTAL over all processes (divided by the world size)
        "eval_batch_size": 256,    # per process
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "lr_schedule": "multistep",  # multistep | cosine
        "lr_milestones": [150, 180, 210],
        "lr_gamma": 0.1,
        "clip_grad_norm": None,
    },
    "distill": {
        "teacher": {
            "name": None,          # registered classifier of the teacher; null = no teacher
            "weights": None,       # the trained teacher (tools/train_cls.py output or raw state dict)
            "config": None,        # the teacher's training config (recorded for provenance)
        },
        "class_means": None,       # file from tools/extract_cls_means.py (needed by 'nd')
        "warm_up_epochs": 0,       # warmed-up terms are scaled by min(1, epoch / warm_up_epochs)
        "losses": {"ce": {"weight": 1.0}},  # term name -> parameters (free-form, see loss_terms)
    },
    "train": {
        "output_dir": "output/classification",
        "seed": 0,
        "device": "auto",          # auto | cpu | cuda
        "amp": False,              # autocast: float16 + GradScaler on CUDA, bfloat16 on CPU
        "log_period": 50,          # iterations between progress lines / JSON records
        "eval_period": 1,          # epochs between evaluations (the last epoch is always evaluated)
        "tensorboard": True,
    },
}

_FREE_FORM = {("distill", "losses")}


@dataclass(frozen=True)
class ValueRule:
    """What one config value may be: ``kind`` is int, number, bool, str or int_list."""

    kind: str
    nullable: bool = False
    minimum: Optional[float] = None   # inclusive
    positive: bool = False            # > 0
    choices: Tuple[str, ...] = ()


_STR_OR_NULL = ValueRule("str", nullable=True)
VALUE_RULES: Dict[str, ValueRule] = {
    "model.name": _STR_OR_NULL,
    "model.weights": _STR_OR_NULL,
    "data.name": _STR_OR_NULL,
    "data.root": _STR_OR_NULL,
    "data.train_subset": ValueRule("int", nullable=True, minimum=1),
    "data.test_subset": ValueRule("int", nullable=True, minimum=1),
    "data.subset_seed": ValueRule("int"),
    "data.image_size": ValueRule("int", minimum=1),
    "data.train_dir": ValueRule("str"),
    "data.test_dir": ValueRule("str"),
    "data.download": ValueRule("bool"),
    "data.verify_checksums": ValueRule("bool"),
    "data.num_workers": ValueRule("int", minimum=0),
    "solver.epochs": ValueRule("int", minimum=1),
    "solver.batch_size": ValueRule("int", minimum=1),
    "solver.eval_batch_size": ValueRule("int", minimum=1),
    "solver.lr": ValueRule("number", positive=True),
    "solver.momentum": ValueRule("number", minimum=0),
    "solver.nesterov": ValueRule("bool"),
    "solver.weight_decay": ValueRule("number", minimum=0),
    "solver.lr_schedule": ValueRule("str", choices=("multistep", "cosine")),
    "solver.lr_milestones": ValueRule("int_list"),
    "solver.lr_gamma": ValueRule("number", positive=True),
    "solver.clip_grad_norm": ValueRule("number", nullable=True, positive=True),
    "distill.teacher.name": _STR_OR_NULL,
    "distill.teacher.weights": _STR_OR_NULL,
    "distill.teacher.config": _STR_OR_NULL,
    "distill.class_means": _STR_OR_NULL,
    "distill.warm_up_epochs": ValueRule("number", minimum=0),
    "train.output_dir": ValueRule("str"),
    "train.seed": ValueRule("int"),
    "train.device": ValueRule("str", choices=("auto", "cpu", "cuda")),
    "train.amp": ValueRule("bool"),
    "train.log_period": ValueRule("int", minimum=1),
    "train.eval_period": ValueRule("int", minimum=1),
    "train.tensorboard": ValueRule("bool"),
}
_KIND_TEXT = {"int": "an integer", "number": "a number", "bool": "true or false",
              "str": "a string", "int_list": "a list of integers, e.g. [150, 180, 210]"}


# the test of each kind but "number" (which also reads numbers written as text)
_FITS = {"int": is_int, "bool": lambda v: isinstance(v, bool),
         "str": lambda v: isinstance(v, str),
         "int_list": lambda v: isinstance(v, list) and all(map(is_int, v))}


def _as_number(value):
    """``value`` as an int/float, or None; text such as '1e-3' (a string to YAML 1.1) counts."""
    if is_number(value):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _check_value(dotted: str, value, rule: ValueRule, source: str):
    """The value to store for ``dotted`` (numbers given as text become numbers); a value that
    breaks ``rule`` is a ConfigError."""
    if value is None and rule.nullable:
        return value
    default = _default_of(dotted)
    if rule.kind == "number":
        checked = _as_number(value)
    else:
        checked = value if _FITS[rule.kind](value) else None
    if checked is None:
        raise ConfigError(
            f"{source}: {dotted}={value!r} must be {_KIND_TEXT[rule.kind]}"
            f"{' or null' if rule.nullable else ''} (the default is {default!r})")
    if rule.choices and checked not in rule.choices:
        raise ConfigError(f"{source}: {dotted}={value!r}: use one of {', '.join(rule.choices)}")
    if rule.positive and not checked > 0:
        raise ConfigError(f"{source}: {dotted}={value!r}: give a positive value "
                          f"(the default is {default!r})")
    if rule.minimum is not None and checked < rule.minimum:
        raise ConfigError(f"{source}: {dotted}={value!r}: give {rule.minimum:g} or more")
    return checked


def _default_of(dotted: str):
    node = DEFAULTS
    for key in dotted.split("."):
        node = node[key]
    return node


def check_values(cfg: Dict, source: str, prefix: Tuple[str, ...] = ()) -> None:
    """Check (in place) every value of ``cfg`` (a config or a part of one below ``prefix``) that
    has a rule in ``VALUE_RULES``; numbers given as text are replaced by the number."""
    for key, value in cfg.items():
        where = prefix + (key,)
        dotted = ".".join(where)
        if isinstance(value, dict) and where not in _FREE_FORM and dotted not in VALUE_RULES:
            check_values(value, source, where)
        elif dotted in VALUE_RULES:
            cfg[key] = _check_value(dotted, value, VALUE_RULES[dotted], source)


def merge_config(base: Dict, update: Dict, _path=()) -> Dict:
    """Recursive merge: mappings merge, everything else replaces.  The free-form
    ``distill.losses`` mapping is replaced as a whole: a config's loss list is complete."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = _path + (key,)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path not in _FREE_FORM:
            out[key] = merge_config(out[key], value, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _yaml_problem(error: yaml.YAMLError) -> str:
    """``"<problem> at line L, column C"`` of a yaml parse error (its first line otherwise)."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _read_yaml(path: str, chain: List[str]) -> Dict:
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(chain + [path])}")
    if not os.path.isfile(path):
        where = f" (the _BASE_ of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file {path} not found{where}: check the path (the shipped "
                          "configs are under configs/classification/)")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a yaml config (not UTF-8 text: a weights file?); "
                              "give the .yaml config of the run") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid yaml ({_yaml_problem(e)}); fix the file") \
                from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a yaml config: it must hold a mapping (section: "
                          f"{{key: value}}) at the top level, not a {type(data).__name__}")
    base = data.pop("_BASE_", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: _BASE_ must be the path of one yaml file; got {base!r}")
    _check_keys(data, DEFAULTS, path)
    check_values(data, path)
    if base is None:
        return data
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    return merge_config(_read_yaml(base_path, chain + [path]), data)


def _unknown_key(source: str, where: Tuple[str, ...], reference) -> ConfigError:
    valid = ", ".join(sorted(reference)) if isinstance(reference, dict) else "(none)"
    return ConfigError(f"{source}: unknown key {'.'.join(where)!r}; valid keys here: {valid}")


def _check_keys(cfg: Dict, reference: Dict, source: str, prefix=()) -> None:
    for key, value in cfg.items():
        where = prefix + (key,)
        if key not in reference:
            raise _unknown_key(source, where, reference)
        if where in _FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {'.'.join(where)} must be a mapping "
                                  "(term name -> parameters)")
            continue
        if isinstance(reference[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {'.'.join(where)} must be a mapping, got {value!r}")
            _check_keys(value, reference[key], source, where)


def load_config(path: str) -> Dict:
    """The merged, checked config of ``path``; ``cfg['_source']`` records the file."""
    data = _read_yaml(path, [])
    cfg = merge_config(DEFAULTS, data)
    cfg["_source"] = os.path.abspath(path)
    return cfg


def apply_overrides(cfg: Dict, overrides: Iterable[str]) -> Dict:
    """``cfg`` with ``KEY=VALUE`` items applied (values parsed as yaml), each key and value
    checked like a config file's; errors name the override."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        source = f"override {item!r}"
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: the value is not valid yaml ({_yaml_problem(e)}); "
                              "quote it for the shell, e.g. 'solver.lr_milestones=[30, 60]'") \
                from None
        keys = dotted.split(".")
        node, ref = cfg, DEFAULTS
        for depth, key in enumerate(keys):
            where = tuple(keys[:depth + 1])
            inside_free_form = any(tuple(keys[:i]) in _FREE_FORM for i in range(1, depth + 1))
            if not inside_free_form:
                if not isinstance(ref, dict) or key not in ref:
                    raise _unknown_key(source, where, ref)
                ref = ref[key]
            if depth == len(keys) - 1:
                if isinstance(ref, dict) and not inside_free_form and where not in _FREE_FORM:
                    # a whole section, e.g. solver={epochs: 2, lr: 0.1}: merged, not replaced
                    if not isinstance(value, dict):
                        raise ConfigError(f"{source}: {dotted} is a section; give a mapping or "
                                          f"set one of its keys ({', '.join(sorted(ref))})")
                    _check_keys(value, ref, source, where)
                    check_values(value, source, where)
                    node[key] = merge_config(node[key], value, where)
                else:
                    if where in _FREE_FORM and not isinstance(value, dict):
                        raise ConfigError(f"{source}: {dotted} must be a mapping "
                                          "(term name -> parameters)")
                    holder = {key: value}
                    check_values(holder, source, where[:-1])
                    node[key] = holder[key]
            else:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
    return cfg
