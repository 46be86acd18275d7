"""tools/train_net.py end to end on a tiny COCO-format dataset, on CPU (real runs in
subprocesses; set-up errors in process, through the same command-line code)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg

from nd_det import add_distill_config

from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import (
    REPO,
    config_path,
    tiny_distill_opts,
    write_random_class_means,
    write_teacher_checkpoint,
)

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def _prepare(tmp_path, config_file="R50_from_R101_nd.yaml", suffix=""):
    train_name, val_name = "tiny_train" + suffix, "tiny_val" + suffix
    train_json, train_images = write_tiny_coco(
        tmp_path / "train", num_images=6, seed=1, empty_images=1
    )
    val_json, val_images = write_tiny_coco(tmp_path / "val", num_images=3, seed=2)
    opts = tiny_distill_opts(str(tmp_path)) + [
        "DATASETS.TRAIN",
        f"('{train_name}',)",
        "DATASETS.TEST",
        f"('{val_name}',)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "SOLVER.WARMUP_ITERS",
        "1",
        "SOLVER.BASE_LR",
        "0.001",
        "MODEL.DISTILL.MECHANISM_PERIOD",
        "2",
    ]
    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(config_path(config_file))
    cfg.merge_from_list(opts)
    write_teacher_checkpoint(cfg)
    write_random_class_means(cfg)
    datasets = [
        "--dataset",
        train_name,
        str(train_json),
        str(train_images),
        "--dataset",
        val_name,
        str(val_json),
        str(val_images),
    ]
    return [sys.executable, TRAIN_NET, "--config-file", config_path(config_file)], datasets, opts


def _run(cmd, cwd):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run (3 iterations + COCO evaluation) shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("train_net")
    base, datasets, opts = _prepare(tmp_path)
    proc = _run(base + datasets + opts, cwd=tmp_path)
    return tmp_path, base, datasets, opts, proc


def test_train_then_coco_eval_on_cpu(trained):
    tmp_path, base, datasets, opts, proc = trained
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # detectron2's COCOEvaluator ran pycocotools and printed the AP table of the student
    assert "Evaluation results for bbox" in log
    assert re.search(r"\|\s*AP\s*\|\s*AP50\s*\|\s*AP75\s*\|", log)
    assert "loss_reviewkd" in log and "loss_nd" in log
    out = tmp_path / "output"
    final = out / "model_final.pth"
    assert final.is_file() and (out / "model_0000001.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    state = torch.load(final, map_location="cpu", weights_only=True)
    assert state["iteration"] == 2
    keys = list(state["model"])
    assert any(k.startswith("backbone.") for k in keys)
    assert any(k.startswith("distill_terms.") for k in keys)  # ABFs are resumed, too
    assert not any("teacher" in k for k in keys)
    assert (out / "inference" / "tiny_val" / "coco_instances_results.json").is_file()
    # ND's mechanism, live (MODEL.DISTILL.MECHANISM_PERIOD 2: iteration 1) in metrics.json and
    # TensorBoard's event file, both written by detectron2's writers
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    logged = [r for r in records if "nd/norm_ratio" in r]
    assert [r["iteration"] for r in logged] == [1]
    assert logged[0]["nd/norm_ratio"] > 0 and -1 <= logged[0]["nd/cosine_to_class_mean"] <= 1
    assert list(out.glob("events.out.tfevents.*"))


def test_eval_only_student_and_teacher_side_by_side(trained):
    tmp_path, base, datasets, opts, proc = trained
    assert proc.returncode == 0
    weights = str(tmp_path / "output" / "model_final.pth")
    proc = _run(
        base + ["--eval-only", "--eval-teacher"] + datasets + opts + ["MODEL.WEIGHTS", weights],
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "| model | dataset | AP | AP50 | AP75 |" in log
    assert re.search(r"\| student \| tiny_val \| [\d.]+ \|", log)
    assert re.search(r"\| teacher \| tiny_val \| [\d.]+ \|", log)
    # the student was built without its teacher: no "unexpected key" noise about distill modules
    assert "distill_terms" not in log.split("Evaluating the student")[-1].split("\n")[0]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            ["MODEL.ROI_HEADS.NUM_CLASSES", "3"],
            "has 2 classes: set MODEL.ROI_HEADS.NUM_CLASSES 2",
        ),
        (
            ["MODEL.DISTILL.TEACHER_WEIGHTS", "missing/teacher.pkl"],
            "MODEL.DISTILL.TEACHER_WEIGHTS missing/teacher.pkl: file not found",
        ),
        (
            ["MODEL.DISTILL.NO_SUCH_KEY", "1"],
            "ERROR: command-line overrides: Non-existent key: MODEL.DISTILL.NO_SUCH_KEY",
        ),
    ],
)
def test_bad_setup_fails_fast_with_a_clear_message(tmp_path, override, message):
    # in-process runs share detectron2's dataset catalog: unique names per case
    base, datasets, opts = _prepare(tmp_path, suffix="_" + tmp_path.name)
    message = message.replace("tiny_train", "tiny_train_" + tmp_path.name)
    code, stderr = run_tool_in_process(TRAIN_NET, base[2:] + datasets + opts + override)
    assert code == 2, stderr[-3000:]
    assert message in stderr
    assert "Traceback" not in stderr  # one clear line, not a stack dump
    assert not (tmp_path / "output").exists()  # failed before anything was written
