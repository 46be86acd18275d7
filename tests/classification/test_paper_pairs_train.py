"""The config of every classification row of the paper (docs/paper_rows.md) trains two steps
through tools/train_cls.py: the real architectures with random weights, at toy size (32x32
images: three classes of random images in an image folder, or CIFAR-100 files of one random image
per class in the official format, both written here; two steps of batch 2), the teacher's class
means
extracted with tools/extract_class_means.py --task classification from the teacher config the
row's config names.  Only
the data, sizes, files and device are overridden."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from nd_det.classification.config import load_config
from nd_det.classification.models import build_classifier

from ..helpers.run_tool import run_tool_in_process
from .helpers import write_tiny_cifar100

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train_cls.py")
EXTRACT = os.path.join(REPO, "tools", "extract_class_means.py")
SIZE = 32
# the config of each classification row, with the loss terms it trains
ROW_CONFIGS = {
    "cifar100/resnet32x4_shufflenet_v2/reviewkdpp.yaml": ("reviewkd", "nd"),
    "cifar100/resnet32x4_shufflenet_v1/reviewkdpp.yaml": ("reviewkd", "nd"),
    "cifar100/resnet32x4_resnet8x4/dkdpp.yaml": ("dkd", "nd"),
    "cifar100/wrn_40_2_wrn_40_1/reviewkdpp.yaml": ("reviewkd", "nd"),
    "cifar100/resnet56_resnet20/kdpp.yaml": ("kd", "nd"),
    "cifar100/resnet50_mobilenet_v2/dkdpp.yaml": ("dkd", "nd"),
    "imagenet/regnet_y_16gf_deit_b_distilled/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet152_resnet101/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet152_resnet50/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet152_resnet34/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet50_mobilenet_v1/reviewkdpp.yaml": ("reviewkd", "nd"),
    "imagenet/resnet152_resnet18/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet101_resnet18/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet50_resnet18/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet34_resnet18/kdpp.yaml": ("kd", "nd"),
    "imagenet/resnet34_resnet18/dkdpp.yaml": ("dkd", "nd"),
    "imagenet/vit_b_16_resnet18/kdpp.yaml": ("kd", "nd"),
    "imagenet/vit_s_16_resnet18/kdpp.yaml": ("kd", "nd"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """data.name -> (the overrides that point a config at the toy data, its class count)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for c in range(3):
            folder = root / "folder" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    write_tiny_cifar100(root / "cifar", n_train=100, n_test=3, every_class=True)
    common = ["data.num_workers", "0", "train.device", "cpu"]
    folder = ["data.root", str(root / "folder"), "data.image_size", str(SIZE)]
    cifar = ["data.root", str(root / "cifar"), "data.verify_checksums", "False"]
    return {"image_folder": ([*folder, *common], 3), "cifar100": ([*cifar, *common], 100)}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, data):
    """(teacher config, dataset) -> (random weights, class means extracted with the real tool),
    made once."""
    root = tmp_path_factory.mktemp("teachers")
    made = {}

    def get(config, dataset):
        if config not in made:
            toy, classes = data[dataset]
            name = load_config(os.path.join(REPO, config))["model"]["name"]
            stem = os.path.join(root, f"{len(made)}_{name}")
            torch.manual_seed(0)
            torch.save(build_classifier(name, classes, image_size=SIZE).state_dict(), f"{stem}.pth")
            code, err = run_tool_in_process(
                EXTRACT,
                [
                    "--task",
                    "classification",
                    "--config-file",
                    os.path.join(REPO, config),
                    "--output",
                    f"{stem}_means.pth",
                    "model.weights",
                    f"{stem}.pth",
                    "solver.eval_batch_size",
                    "6",
                    *toy,
                ],
            )
            assert code == 0, err
            made[config] = f"{stem}.pth", f"{stem}_means.pth"
        return made[config]

    return get


@pytest.mark.parametrize("row_config", sorted(ROW_CONFIGS))
def test_row_config_trains_two_steps(row_config, data, teachers, tmp_path):
    path = os.path.join(REPO, "configs", "classification", row_config)
    cfg = load_config(path)
    toy, classes = data[cfg["data"]["name"]]
    weights, means = teachers(cfg["distill"]["teacher"]["config"], cfg["data"]["name"])
    out = tmp_path / "run"
    code, err = run_tool_in_process(
        TRAIN,
        [
            "--config-file",
            path,
            *toy,
            *("data.train_subset", "4", "solver.batch_size", "2", "solver.eval_batch_size", "3"),
            *("solver.epochs", "1", "distill.teacher.weights", weights),
            *("distill.class_means", means, "train.output_dir", str(out)),
            *("train.log_period", "1", "train.tensorboard", "False"),
        ],
    )
    assert code == 0, err
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    steps = [r for r in records if r["type"] == "iter"]
    assert [r["iter"] for r in steps] == [1, 2]
    terms = cfg.distill.losses
    assert tuple(terms) == ROW_CONFIGS[row_config]
    warmed = {t for t in terms if cfg.distill[t].warm_up}
    for step in steps:  # every term computed and finite; a warmed-up one is 0 in epoch 1
        losses = {t: step[f"loss_{t}"] for t in ["ce", *terms]}
        assert all(np.isfinite(list(losses.values()))), step
        assert {t for t, v in losses.items() if v == 0} == warmed, step
        assert 0 < step["norm_ratio"] and -1 <= step["cosine_to_class_mean"] <= 1
        assert step["loss"] == pytest.approx(sum(losses.values()), rel=1e-5)
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["model_name"] == cfg["model"]["name"] and final["epoch"] == 1
    # strict: every key and shape of the student
    build_classifier(cfg["model"]["name"], classes, image_size=SIZE).load_state_dict(final["model"])
