"""Training configs: yaml files with an optional ``_BASE_`` chain, merged over ``DEFAULTS``.

Every key is checked: an unknown key is an error naming the file, the key and the valid keys.
``distill.losses`` is the one free-form mapping (term name -> parameters); the loss-term
registry checks it.  ``apply_overrides(cfg, ["solver.epochs=2", ...])`` applies command-line
``KEY=VALUE`` pairs (values parsed as yaml).
"""
import copy
import os
from typing import Any, Dict, Iterable, List

import yaml

__all__ = ["DEFAULTS", "ConfigError", "load_config", "apply_overrides", "merge_config"]

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


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file/key and the fix."""


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


def _read_yaml(path: str, chain: List[str]) -> Dict:
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(chain + [path])}")
    if not os.path.isfile(path):
        where = f" (the _BASE_ of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file {path} not found{where}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid yaml: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    return merge_config(_read_yaml(base_path, chain + [path]), data)


def _check_keys(cfg: Dict, reference: Dict, source: str, prefix=()) -> None:
    for key, value in cfg.items():
        where = prefix + (key,)
        if key not in reference:
            raise ConfigError(
                f"{source}: unknown key {'.'.join(where)!r}; valid keys here: "
                f"{', '.join(sorted(reference))}"
            )
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
    _check_keys(data, DEFAULTS, path)
    cfg = merge_config(DEFAULTS, data)
    cfg["_source"] = os.path.abspath(path)
    return cfg


def apply_overrides(cfg: Dict, overrides: Iterable[str]) -> Dict:
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.split(".")
        node, ref = cfg, DEFAULTS
        for depth, key in enumerate(keys):
            inside_free_form = any(tuple(keys[:i]) in _FREE_FORM for i in range(1, depth + 1))
            if not inside_free_form:
                if not isinstance(ref, dict) or key not in ref:
                    valid = ", ".join(sorted(ref)) if isinstance(ref, dict) else "(none)"
                    raise ConfigError(f"override {item!r}: unknown key "
                                      f"{'.'.join(keys[:depth + 1])!r}; valid keys here: {valid}")
                ref = ref[key]
            if depth == len(keys) - 1:
                node[key] = yaml.safe_load(raw)
            else:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
    return cfg
