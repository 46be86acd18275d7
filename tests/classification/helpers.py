"""Small builders shared by the classification tests: tiny configs on real (scikit-learn digits)
data, a saved teacher, its class means, and CIFAR-100 files in the official pickle format."""

import io
import os
import pickle
import struct
from typing import Optional

import numpy as np
import torch
import yaml

from nd_det.classification.config import load_config

DIGITS_TRAIN = 96  # training images used by the tiny runs (all 10 classes present)
DIGITS_TEST = 40


def write_yaml(path, data: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return str(path)


def tiny_config(
    tmp_path,
    name: str = "run",
    overrides=(),
    distill: Optional[dict] = None,
    model: str = "resnet8",
    epochs: int = 1,
):
    """A config (through load_config, ``overrides`` as KEY VALUE pairs) training ``model`` on a
    digits subset, on CPU."""
    data = {
        "model": {"name": model},
        "data": {
            "name": "digits",
            "train_subset": DIGITS_TRAIN,
            "test_subset": DIGITS_TEST,
            "num_workers": 0,
        },
        "solver": {
            "epochs": epochs,
            "batch_size": 32,
            "eval_batch_size": 64,
            "lr": 0.05,
            "lr_schedule": "multistep",
            "lr_milestones": [1],
            "lr_gamma": 0.5,
        },
        "train": {
            "output_dir": str(tmp_path / name),
            "device": "cpu",
            "log_period": 2,
            "tensorboard": False,
        },
    }
    if distill:
        data["distill"] = distill
    path = write_yaml(tmp_path / f"{name}.yaml", data)
    return load_config(path, list(overrides))


def save_random_teacher(
    path, name: str = "wrn_16_2", num_classes: int = 10, in_channels: int = 1, seed: int = 1
) -> str:
    """A randomly initialised teacher saved as a raw state dict (a stand-in for trained weights)."""
    from nd_det.classification.models import build_classifier

    torch.manual_seed(seed)
    model = build_classifier(name, num_classes, in_channels)
    torch.save(model.state_dict(), path)
    return str(path)


def distill_section(
    tmp_path, losses: dict, teacher: str = "wrn_16_2", warm_up_epochs: int = 0
) -> dict:
    """A saved random teacher plus its class means on the tiny digits split, extracted with the
    real tool; returns the ``distill`` config section that uses them with the terms ``losses``
    (name -> parameters)."""
    from nd_det.class_means.classification import extract_classification_main

    weights = save_random_teacher(tmp_path / f"teacher_{teacher}.pth", teacher)
    means = tmp_path / f"means_{teacher}.pth"
    if not means.exists():
        teacher_cfg = write_yaml(
            tmp_path / f"teacher_{teacher}.yaml",
            {
                "model": {"name": teacher},
                "data": {"name": "digits", "train_subset": DIGITS_TRAIN, "num_workers": 0},
                "solver": {"eval_batch_size": 64},
                "train": {"device": "cpu"},
            },
        )
        extract_classification_main(
            ["--config-file", teacher_cfg, "--output", str(means), "model.weights", weights]
        )
    return {
        "teacher": {"name": teacher, "weights": weights},
        "class_means": str(means),
        "warm_up_epochs": warm_up_epochs,
        "losses": [name for name in losses if name != "ce"],
        **{name: params for name, params in losses.items() if params and name != "ce"},
    }


# ---------------------------------------------------------------- CIFAR-100 python format
class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` the way Python 2 wrote its ``str`` (SHORT_BINSTRING / BINSTRING opcodes),
    which is how the official CIFAR-100 files store their keys (b'data', b'fine_labels', ...)
    and array buffers."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def dump_python2_pickle(obj, path) -> None:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def write_tiny_cifar100(
    root, n_train: int = 6, n_test: int = 4, seed: int = 0, every_class: bool = False
):
    """``<root>/cifar-100-python/{train,test,meta}`` with the official keys and layouts:
    b'data' (N, 3072) uint8 in channel-major (R plane, G plane, B plane) order, b'fine_labels',
    b'coarse_labels', b'filenames', b'batch_label'; meta with b'fine_label_names' (100) and
    b'coarse_label_names' (20).  ``every_class``: the training labels are 0..99 in turn (for
    class means).  Returns {split: (data, fine_labels)}."""
    rng = np.random.RandomState(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        fine = [int(v) for v in rng.randint(0, 100, size=n)]
        if every_class and split == "train":
            fine = [i % 100 for i in range(n)]
        entry = {
            b"filenames": [f"img_{split}_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [v // 5 for v in fine],
            b"data": data,
        }
        dump_python2_pickle(entry, os.path.join(folder, split))
        written[split] = (data, fine)
    meta = {
        b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)],
    }
    dump_python2_pickle(meta, os.path.join(folder, "meta"))
    return written


def terms_config(losses: dict, label_smoothing: float = 0.0):
    """The defaults with ``losses`` (term name -> parameters, "ce" -> its label smoothing)
    set as a config file would set them."""
    from nd_det.classification.config import get_cfg

    cfg = get_cfg()
    cfg.distill.losses = [n for n in losses if n != "ce"]
    cfg.model.label_smoothing = (losses.get("ce") or {}).get("label_smoothing", label_smoothing)
    for name, params in losses.items():
        for key, value in (params or {}).items():
            if name != "ce":
                cfg.distill[name][key] = value
    return cfg


def data_cfg(**values):
    """The defaults' ``data`` section with ``values`` set."""
    from nd_det.classification.config import get_cfg

    data = get_cfg().data
    data.update(values)
    return data
