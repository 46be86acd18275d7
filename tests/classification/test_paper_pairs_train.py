"""Each ImageNet pair added for the paper's rows (docs/paper_rows.md) trains two steps through
tools/train_cls.py with its shipped config: the real architectures with random weights, at toy
size (three classes of 32x32 random images in an image folder this test writes, batch 2, one
epoch), the teacher's class means extracted with tools/extract_cls_means.py from its shipped
teacher config.  Only the data, sizes, files and device are overridden."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from nd_det.classification.models import build_classifier

from ..helpers.run_tool import run_tool_in_process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train_cls.py")
EXTRACT = os.path.join(REPO, "tools", "extract_cls_means.py")
CONFIGS = os.path.join(REPO, "configs", "classification", "imagenet")
CLASSES, SIZE = 3, 32
# pair folder -> (teacher, student)
NEW_PAIRS = {
    "resnet152_resnet101": ("resnet152", "resnet101"),
    "resnet152_resnet50": ("resnet152", "resnet50"),
    "resnet152_resnet34": ("resnet152", "resnet34"),
    "resnet152_resnet18": ("resnet152", "resnet18"),
    "resnet101_resnet18": ("resnet101", "resnet18"),
    "resnet50_resnet18": ("resnet50", "resnet18"),
    "vit_b_16_resnet18": ("vit_b_16", "resnet18"),
    "vit_s_16_resnet18": ("vit_s_16", "resnet18"),
    "regnet_y_16gf_deit_b_distilled": ("regnet_y_16gf", "deit_b_distilled"),
}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """<root>/{train,val}/<class>/*.png: two training and one test image per class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(root)


def _toy(image_root):
    return [f"data.root={image_root}", f"data.image_size={SIZE}", "data.num_workers=0",
            "train.device=cpu"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, image_root):
    """teacher name -> (random weights, class means extracted with the real tool), made once."""
    root = tmp_path_factory.mktemp("teachers")
    made = {}

    def get(name):
        if name not in made:
            torch.manual_seed(0)
            weights = str(root / f"{name}.pth")
            torch.save(build_classifier(name, CLASSES, image_size=SIZE).state_dict(), weights)
            means = str(root / f"{name}_means.pth")
            code, err = run_tool_in_process(EXTRACT, [
                "--config", os.path.join(CONFIGS, "teachers", f"{name}.yaml"),
                "--weights", weights, "--output", means, "--batch-size", "6", *_toy(image_root)])
            assert code == 0, err
            made[name] = weights, means
        return made[name]

    return get


@pytest.mark.parametrize("pair", sorted(NEW_PAIRS))
def test_new_imagenet_pair_trains_two_steps(pair, image_root, teachers, tmp_path):
    teacher, student = NEW_PAIRS[pair]
    weights, means = teachers(teacher)
    out = tmp_path / "run"
    code, err = run_tool_in_process(TRAIN, [
        "--config", os.path.join(CONFIGS, pair, "kdpp.yaml"), *_toy(image_root),
        "data.train_subset=4", "solver.batch_size=2", "solver.eval_batch_size=3", "solver.epochs=1",
        f"distill.teacher.weights={weights}", f"distill.class_means={means}",
        f"train.output_dir={out}", "train.log_period=1", "train.tensorboard=false"])
    assert code == 0, err
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    steps = [r for r in records if r["type"] == "iter"]
    assert [r["iter"] for r in steps] == [1, 2]
    for step in steps:  # CE, KD (warm-up factor 0 in the first epoch) and ND, finite
        losses = [step[f"loss_{term}"] for term in ("ce", "kd", "nd")]
        assert all(np.isfinite(losses)) and losses[1] == 0 and losses[2] > 0, step
        assert step["loss"] == pytest.approx(sum(losses), rel=1e-5)
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["model_name"] == student and final["epoch"] == 1
    assert final["config"]["distill"]["teacher"]["name"] == teacher
    # strict: every key and shape of the student
    build_classifier(student, CLASSES, image_size=SIZE).load_state_dict(final["model"])
