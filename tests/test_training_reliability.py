"""Killed and resumed runs, non-finite losses, and 2-process (gloo) training via the launcher."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import torch
from detectron2.config import get_cfg

from nd_det.errors import NonFiniteError
from nd_det import add_distill_config

from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import (
    REPO,
    config_path,
    tiny_distill_opts,
    write_random_class_means,
    write_teacher_checkpoint,
)

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CONFIG = config_path("R50_from_R101_nd.yaml")
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def _setup(tmp_path, output, max_iter, extra=()):
    """Tiny dataset + teacher + class means; the train_net command line writing to ``output``."""
    train_json, train_images = write_tiny_coco(tmp_path / "train", num_images=6, seed=1)
    val_json, val_images = write_tiny_coco(tmp_path / "val", num_images=3, seed=2)
    opts = tiny_distill_opts(str(tmp_path)) + [
        "DATASETS.TRAIN", "('rel_train',)",
        "DATASETS.TEST", "('rel_val',)",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.BASE_LR", "0.002",
        "SEED", "7",
        "OUTPUT_DIR", str(output),
        *extra,
    ]
    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(opts)
    if not os.path.exists(cfg.MODEL.DISTILL.TEACHER_WEIGHTS):
        write_teacher_checkpoint(cfg)
        write_random_class_means(cfg)
    datasets = ["--dataset", "rel_train", str(train_json), str(train_images),
                "--dataset", "rel_val", str(val_json), str(val_images)]
    return datasets + opts


def _model_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    max_iter = 10
    out = tmp_path / "killed"
    straight_args = _setup(tmp_path, tmp_path / "straight", max_iter, ["DATASETS.TEST", "()"])
    args = _setup(tmp_path, out, max_iter, ["DATASETS.TEST", "()"])
    # the uninterrupted run, beside (one thread each) ...
    straight_log = tmp_path / "straight.log"
    with open(straight_log, "wb") as log_file:
        straight_run = subprocess.Popen(
            [sys.executable, TRAIN_NET, "--config-file", CONFIG, *straight_args],
            env=ENV, stdout=log_file, stderr=subprocess.STDOUT)
    # ... the same run, killed (SIGKILL) as soon as its first checkpoint is tagged
    cmd = [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args]
    victim = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tag = out / "last_checkpoint"
    deadline = time.time() + 300
    while not tag.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "model_final.pth").exists()
    resumed_from = tag.read_text().strip()
    assert re.fullmatch(r"model_\d{7}\.pth", resumed_from)
    # every checkpoint under its final name is complete (atomic writes)
    for name in os.listdir(out):
        if name.endswith(".pth"):
            assert "model" in torch.load(out / name, map_location="cpu", weights_only=True)

    assert straight_run.wait(timeout=600) == 0, straight_log.read_text()[-3000:]
    straight = _model_state(tmp_path / "straight" / "model_final.pth")

    resume_cmd = cmd[:4] + ["--resume"] + cmd[4:]
    proc = subprocess.run(resume_cmd, env=ENV, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    start = int(resumed_from[6:13]) + 1
    assert f"Starting training from iteration {start}" in log
    assert f"Resumed at iteration {start}; the data stream skips {start * 2} images" in log
    resumed = _model_state(out / "model_final.pth")

    assert resumed.keys() == straight.keys()
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"


def test_resume_recovers_from_a_damaged_newest_checkpoint_and_keeps_the_run_record(tmp_path):
    out = tmp_path / "recover"
    args = _setup(tmp_path, out, 2, ["DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "1"])
    first = subprocess.run([sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
                           env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    record = (out / "config.yaml").read_bytes()
    final = out / "model_final.pth"
    final.write_bytes(final.read_bytes()[:4096])  # the newest checkpoint, truncated
    (out / "last_checkpoint").write_bytes(b"\xff\xfe")  # and a tag that is not text
    resumed = subprocess.run([sys.executable, TRAIN_NET, "--config-file", CONFIG, "--resume",
                              *args, "SOLVER.MAX_ITER", "4"],
                             env=ENV, capture_output=True, text=True, timeout=600)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"skipping {final}: it is truncated or not a checkpoint" in log
    assert f"continuing from {out / 'model_0000001.pth'}" in log
    assert "Starting training from iteration 2" in log
    assert (out / "config.yaml").read_bytes() == record  # the run's record of its settings
    assert "MAX_ITER: 4" in (out / "config.resume.yaml").read_text()
    assert torch.load(final, weights_only=True)["iteration"] == 3


def test_an_image_that_cannot_be_decoded_mid_run_is_named(tmp_path):
    """Without --check-images, the broken file is found when a loader worker reaches it: one
    line naming it, exit 2 (the worker's exception would otherwise be a traceback)."""
    args = _setup(tmp_path, tmp_path / "broken", 3, ["DATASETS.TEST", "()",
                                                      "DATALOADER.NUM_WORKERS", "1"])
    image_dir = tmp_path / "train" / "images"
    victim = sorted(os.listdir(image_dir))[0]
    (image_dir / victim).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and f"image {image_dir / victim} cannot be decoded" in errors[0]


def test_non_finite_distillation_loss_stops_naming_the_term(tmp_path):
    # a weight so large that the float32 ReviewKD loss overflows to inf at the first step
    args = _setup(tmp_path, tmp_path / "nan", 3, ["MODEL.DISTILL.REVIEWKD.WEIGHT", "1e39"])
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "ERROR: non-finite loss at iteration 0: loss_reviewkd=inf" in proc.stderr
    assert "loss_nd" not in proc.stderr.split("ERROR:")[-1]  # only the bad term is named
    written = [n for n in os.listdir(tmp_path / "nan") if n.endswith(".pth")]
    assert written == []  # no checkpoint at all, let alone one with NaN weights


def test_non_finite_loss_at_the_last_iteration_writes_no_final_checkpoint(tmp_path):
    args = _setup(tmp_path, tmp_path / "nan_last", 1, ["MODEL.DISTILL.REVIEWKD.WEIGHT", "1e39"])
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert not (tmp_path / "nan_last" / "model_final.pth").exists()
    assert "Evaluation results" not in proc.stdout + proc.stderr


def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    args = _setup(tmp_path, tmp_path / "ddp", 3, ["SOLVER.CHECKPOINT_PERIOD", "100"])
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.ddp_train", "--num-gpus", "2", "--dump", str(dump),
         "--config-file", CONFIG, *args],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "World size: 2" in log
    rank0 = torch.load(dump / "rank0.pth", weights_only=True)
    rank1 = torch.load(dump / "rank1.pth", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # one checkpoint, holding exactly rank 0's weights
    checkpoints = sorted(n for n in os.listdir(tmp_path / "ddp") if n.endswith(".pth"))
    assert checkpoints == ["model_final.pth"]
    final = _model_state(tmp_path / "ddp" / "model_final.pth")
    assert all(torch.equal(final[k], rank0[k]) for k in rank0)

    # evaluating that checkpoint in one process gives the 2-process run's result
    ddp_eval = json.loads((dump / "eval.json").read_text())
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, "--eval-only", *args,
         "MODEL.WEIGHTS", str(tmp_path / "ddp" / "model_final.pth"),
         "OUTPUT_DIR", str(tmp_path / "single_eval")],
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    line = re.findall(r"copypaste: ([-\d.nan,]+)\n", log)[-1]
    single = [float(x) for x in line.split(",")]
    ddp = [ddp_eval["bbox"][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    for a, b in zip(single, ddp):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-4, (single, ddp)


def test_checkpointer_refuses_nan_weights_and_keeps_the_last_good_file(tmp_path):
    from nd_det.engine.checkpoint import AtomicCheckpointer

    model = torch.nn.Linear(3, 2)
    checkpointer = AtomicCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000001")
    good = (tmp_path / "model_0000001.pth").read_bytes()
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    try:
        checkpointer.save("model_0000002")
    except NonFiniteError as e:
        assert "NaN/inf in 1 weight tensor(s), e.g. weight" in str(e)
    else:
        raise AssertionError("a NaN model was saved")
    assert not (tmp_path / "model_0000002.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == good


def test_checkpoint_write_interrupted_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    from nd_det.engine import checkpoint as ckpt_module

    model = torch.nn.Linear(3, 2)
    checkpointer = ckpt_module.AtomicCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. the job is cancelled while writing

    monkeypatch.setattr(ckpt_module.torch, "save", dying_save)
    with torch.no_grad():
        model.weight.add_(1.0)  # newer weights that never make it to disk
    try:
        checkpointer.save("model_final")
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]

