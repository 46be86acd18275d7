"""Killed, preempted and resumed runs, full disks, non-finite losses, and 2-process (gloo)
training via the launcher."""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.config import get_cfg

from nd_det import add_distill_config
from nd_det.errors import NonFiniteError

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
        "DATASETS.TRAIN",
        "('rel_train',)",
        "DATASETS.TEST",
        "('rel_val',)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "SOLVER.WARMUP_ITERS",
        "2",
        "SOLVER.BASE_LR",
        "0.002",
        "SEED",
        "7",
        "OUTPUT_DIR",
        str(output),
        *extra,
    ]
    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(opts)
    if not os.path.exists(cfg.MODEL.DISTILL.TEACHER_WEIGHTS):
        write_teacher_checkpoint(cfg)
        write_random_class_means(cfg)
    datasets = [
        "--dataset",
        "rel_train",
        str(train_json),
        str(train_images),
        "--dataset",
        "rel_val",
        str(val_json),
        str(val_images),
    ]
    return datasets + opts


def _model_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# ---------------------------------------------------------------- killed, preempted, full disk
# One tiny single-process run, 20 iterations, a checkpoint every 2: the reference every test
# below compares its final weights with.  The runs are forked by tests.helpers.forked_runs
# (the tool's own main, in a fresh process each, without re-importing torch and detectron2).
FORKED_MAX_ITER = 20


KILL_MOMENTS = [
    "training",
    "setup",
    "during_write",
    "training",
    "training",
    "during_write",
    "setup",
    "training",
    "during_write",
    "training",
]


def _run(folder, name, output=None, **options):
    return dict(output=str(folder / (output or name)), log=str(folder / f"{name}.log"), **options)


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """Every forked run of the tests below, in one plan (one import of torch and detectron2):
    {group: [(report entry, run)]}, the reference's final weights, and the folder."""
    root = tmp_path_factory.mktemp("forked")
    argv = [
        "--config-file",
        CONFIG,
        *_setup(
            root,
            root / "unused",
            FORKED_MAX_ITER,
            [
                "DATASETS.TEST",
                "()",
                "SOLVER.CHECKPOINT_PERIOD",
                "2",
                # a frozen student backbone: no optimizer state
                # for it, half-size checkpoints, quick steps
                "MODEL.BACKBONE.FREEZE_AT",
                "5",
            ],
        ),
    ]
    groups = {
        # the uninterrupted run: the weights to reach, and the timing of the kill moments
        "straight": [_run(root, "straight")],
        "killed": [
            _run(root, f"kill{i}", "killed", kill=kind, resume=i > 0)
            for i, kind in enumerate(KILL_MOMENTS)
        ]
        + [_run(root, "killed_final", "killed", resume=True)],
        "sigusr1": [
            _run(root, "signalled", "preempted", kill="training", signal=signal.SIGUSR1),
            _run(root, "preempted_resumed", "preempted", resume=True),
        ],
        "full_disk": [
            _run(root, "full_disk", "full", fault="enospc_checkpoint:model_0000009.pth"),
            _run(root, "full_resumed", "full", resume=True),
        ],
        "metrics": [_run(root, "metrics", fault="enospc_metrics")],
    }
    runs = [run for group in groups.values() for run in group]
    plan, report = root / "plan.json", root / "report.json"
    plan.write_text(json.dumps({"argv": argv, "seed": 26, "runs": runs}))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.forked_runs", str(plan), str(report)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    entries = iter(json.loads(report.read_text()))
    outcome = {name: [(next(entries), run) for run in group] for name, group in groups.items()}
    ((straight, run),) = outcome["straight"]
    assert straight["status"] == 0, open(run["log"]).read()[-3000:]
    yield outcome, _model_state(root / "straight" / "model_final.pth"), root
    for path in root.glob("*/*.pth"):
        path.unlink()  # some 45 MB each


def _log(run):
    return open(run["log"]).read()


def _assert_same_weights(path, expected):
    resumed = _model_state(path)
    assert resumed.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"


def _intact_checkpoints(entry):
    """The checkpoints a run left (its report entry): all intact, last_checkpoint names one."""
    names = [n for n in entry["files"] if n.endswith(".pth")]
    assert entry["intact"] == names, entry
    assert entry["last_checkpoint"] is None or entry["last_checkpoint"] in names, entry
    return names


def test_sigkill_at_ten_moments_then_resume_ends_with_the_uninterrupted_weights(forked):
    """SIGKILL at 10 moments drawn from a seeded generator: during set-up, during training,
    during a checkpoint write (a run's second); each time the next run is started with --resume
    (the first run is killed once training has begun, so that its folder holds the run's
    record)."""
    outcome, expected, root = forked
    *kills, (final, final_run) = outcome["killed"]
    for entry, run in kills:
        assert entry["killed"] and entry["status"] == -signal.SIGKILL, (entry, _log(run)[-3000:])
        _intact_checkpoints(entry)  # whatever the moment, no half-written checkpoint
        if run["kill"] == "during_write":
            assert entry["during_write"], entry
    assert final["status"] == 0, _log(final_run)[-3000:]
    start = int(re.search(r"Starting training from iteration (\d+)", _log(final_run)).group(1))
    assert 0 < start < FORKED_MAX_ITER  # the killed runs made progress, the last one finished it
    assert not [f for f in final["files"] if f.endswith(".tmp")]  # cut-short writes: gone
    assert "model_final.pth" in _intact_checkpoints(final)
    _assert_same_weights(root / "killed" / "model_final.pth", expected)


def test_sigusr1_writes_a_checkpoint_of_the_current_iteration_and_exits_3(forked):
    outcome, expected, root = forked
    (signalled, run), (resumed, resumed_run) = outcome["sigusr1"]
    out = root / "preempted"
    log = _log(run)
    assert signalled["status"] == 3, log[-3000:]
    stopped = re.search(
        r"SIGUSR1 received: training stopped after iteration (\d+), checkpoint "
        r"(\S+) written; continue with --resume \(exit status 3\)",
        log,
    )
    assert stopped, log[-3000:]
    iteration = int(stopped.group(1))
    assert stopped.group(2) == str(out / f"model_{iteration:07d}.pth")
    assert signalled["last_checkpoint"] == f"model_{iteration:07d}.pth"
    assert torch.load(stopped.group(2), weights_only=True)["iteration"] == iteration
    assert "model_final.pth" not in _intact_checkpoints(signalled)
    assert "Traceback" not in log
    assert resumed["status"] == 0, _log(resumed_run)[-3000:]
    assert f"Starting training from iteration {iteration + 1}" in _log(resumed_run)
    _assert_same_weights(out / "model_final.pth", expected)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one_and_resumes(forked):
    """ENOSPC half-way through model_0000009.pth (simulated in the forked run: the write of its
    temporary file stops after half of its bytes): one line, the previous checkpoint and its
    tag intact, and --resume continues from it to the uninterrupted weights."""
    outcome, expected, root = forked
    (failed, run), (resumed, resumed_run) = outcome["full_disk"]
    out = root / "full"
    log = _log(run)
    assert failed["status"] == 2, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("ERROR: ")]
    assert errors == [
        f"ERROR: checkpoint {out / 'model_0000009.pth'} could not be written: [Errno 28] No "
        f"space left on device; nothing was replaced ({out / 'last_checkpoint'} still names "
        f"model_0000007.pth, which is intact): free space or fix {out}, then continue with "
        "--resume"
    ], log[-3000:]
    assert "Traceback" not in log
    assert _intact_checkpoints(failed) == [f"model_{i:07d}.pth" for i in (1, 3, 5, 7)]
    assert failed["last_checkpoint"] == "model_0000007.pth"
    assert not [f for f in failed["files"] if f.endswith(".tmp")]
    assert resumed["status"] == 0, _log(resumed_run)[-3000:]
    assert "Starting training from iteration 8" in _log(resumed_run)
    _assert_same_weights(out / "model_final.pth", expected)


def test_a_full_disk_when_metrics_are_written_is_one_line_naming_the_file(forked):
    outcome, _, root = forked
    ((entry, run),) = outcome["metrics"]
    log = _log(run)
    assert entry["status"] == 2, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("ERROR: ")]
    assert errors == [
        f"ERROR: training metrics {root / 'metrics' / 'metrics.json'} could not be written: "
        "[Errno 28] No space left on device; free space or fix OUTPUT_DIR, then continue from "
        "the last checkpoint with --resume"
    ], log[-3000:]
    assert "Traceback" not in log
    _intact_checkpoints(entry)  # the failed write of metrics spoilt no checkpoint


def test_resume_recovers_from_a_damaged_newest_checkpoint_and_keeps_the_run_record(tmp_path):
    out = tmp_path / "recover"
    args = _setup(tmp_path, out, 2, ["DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "1"])
    first = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    record = (out / "config.yaml").read_bytes()
    final = out / "model_final.pth"
    final.write_bytes(final.read_bytes()[:4096])  # the newest checkpoint, truncated
    (out / "last_checkpoint").write_bytes(b"\xff\xfe")  # and a tag that is not text
    resumed = subprocess.run(
        [
            sys.executable,
            TRAIN_NET,
            "--config-file",
            CONFIG,
            "--resume",
            *args,
            "SOLVER.MAX_ITER",
            "4",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"skipping {final}: it is truncated or not a checkpoint" in log
    assert f"continuing from {out / 'model_0000001.pth'}" in log
    assert "Starting training from iteration 2" in log
    assert (out / "config.yaml").read_bytes() == record  # the run's record of its settings
    assert "MAX_ITER: 4" in (out / "config.resume.yaml").read_text()
    assert torch.load(final, weights_only=True)["iteration"] == 3


def test_a_damaged_image_is_named_before_any_model_is_built(tmp_path):
    """The up-front scan decodes every image: a damaged file is one line before the run starts
    (no training, no traceback from a loader worker, OUTPUT_DIR not even made)."""
    out = tmp_path / "broken"
    args = _setup(tmp_path, out, 3, ["DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "1"])
    image_dir = tmp_path / "train" / "images"
    victim = sorted(os.listdir(image_dir))[0]
    (image_dir / victim).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR: ")]
    assert (
        len(errors) == 1 and f"1 of 6 images cannot be decoded: {image_dir / victim} (" in errors[0]
    ), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Starting training" not in proc.stdout
    assert not out.exists()


def test_non_finite_distillation_loss_stops_naming_the_term(tmp_path):
    # a weight so large that the float32 ReviewKD loss overflows to inf at the first step
    args = _setup(tmp_path, tmp_path / "nan", 3, ["MODEL.DISTILL.REVIEWKD.WEIGHT", "1e39"])
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "ERROR: non-finite loss at iteration 0: loss_reviewkd=inf" in proc.stderr
    assert "loss_nd" not in proc.stderr.split("ERROR:")[-1]  # only the bad term is named
    written = [n for n in os.listdir(tmp_path / "nan") if n.endswith(".pth")]
    assert written == []  # no checkpoint at all, let alone one with NaN weights


def test_non_finite_loss_at_the_last_iteration_writes_no_final_checkpoint(tmp_path):
    args = _setup(tmp_path, tmp_path / "nan_last", 1, ["MODEL.DISTILL.REVIEWKD.WEIGHT", "1e39"])
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert not (tmp_path / "nan_last" / "model_final.pth").exists()
    assert "Evaluation results" not in proc.stdout + proc.stderr


TWO_PROCESS_MAX_ITER = 16


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    """An uninterrupted 2-process gloo run through detectron2's launcher (tests.helpers.ddp_train:
    tools/train_net.py's training, plus each rank's weights and the evaluation dumped):
    (its folder, the train_net arguments, the log)."""
    root = tmp_path_factory.mktemp("two_process")
    (root / "dump").mkdir()
    args = _setup(
        root,
        root / "ddp",
        TWO_PROCESS_MAX_ITER,
        ["SOLVER.CHECKPOINT_PERIOD", "100", "MODEL.BACKBONE.FREEZE_AT", "5"],
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.helpers.ddp_train",
            "--num-gpus",
            "2",
            "--dump",
            str(root / "dump"),
            "--config-file",
            CONFIG,
            *args,
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return root, args, log


def test_two_process_gloo_training_keeps_ranks_in_sync(two_process):
    tmp_path, args, log = two_process
    dump = tmp_path / "dump"
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
        [
            sys.executable,
            TRAIN_NET,
            "--config-file",
            CONFIG,
            "--eval-only",
            *args,
            "MODEL.WEIGHTS",
            str(tmp_path / "ddp" / "model_final.pth"),
            "OUTPUT_DIR",
            str(tmp_path / "single_eval"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    line = re.findall(r"copypaste: ([-\d.nan,]+)\n", log)[-1]
    single = [float(x) for x in line.split(",")]
    ddp = [ddp_eval["bbox"][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    for a, b in zip(single, ddp):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-4, (single, ddp)


def _started(log_path, text, process, timeout=300):
    """Seconds until ``text`` appears in the log file of ``process`` (None if it ended first)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if text in log_path.read_text(errors="replace"):
            return time.perf_counter() - start
        if process.poll() is not None:
            return None
        time.sleep(0.01)
    raise AssertionError(f"no {text!r} in {log_path} after {timeout} s")


def test_sigterm_to_a_two_process_gloo_run_checkpoints_and_resumes_to_the_same_weights(
    tmp_path, two_process
):
    """SIGTERM, as SLURM sends it, to the launcher of a 2-process gloo run at a random moment
    of its training: both workers stop after the same iteration, rank 0 writes its checkpoint
    (with both ranks' RNG states), exit status 3; --resume ends bit-identical to the
    uninterrupted 2-process run of the same command."""
    reference, args, _ = two_process
    expected = _model_state(reference / "ddp" / "model_final.pth")
    max_iter = TWO_PROCESS_MAX_ITER
    cmd = [sys.executable, TRAIN_NET, "--num-gpus", "2", "--config-file", CONFIG, *args]

    def launch(name, output, *flags):
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as f:
            process = subprocess.Popen(
                cmd[:2] + list(flags) + cmd[2:] + ["OUTPUT_DIR", str(tmp_path / output)],
                env=ENV,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        return process, log

    victim, victim_log = launch("preempted", "preempted")
    assert _started(victim_log, "Starting training from iteration 0", victim) is not None
    time.sleep(random.Random(26).uniform(0.0, 0.8))  # 16 steps take about 2 s here
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=600) == 3, victim_log.read_text()[-3000:]
    log = victim_log.read_text()
    stopped = re.search(r"SIGTERM received: training stopped after iteration (\d+)", log)
    assert stopped, log[-3000:]
    iteration = int(stopped.group(1))
    assert iteration < max_iter - 1
    out = tmp_path / "preempted"
    assert (out / "last_checkpoint").read_text() == f"model_{iteration:07d}.pth"
    assert not (out / "model_final.pth").exists()
    assert "Traceback" not in log
    state = torch.load(out / f"model_{iteration:07d}.pth", weights_only=True)
    assert state["iteration"] == iteration and len(state["rng"]["ranks"]) == 2  # each rank's

    resumed, resumed_log = launch("resumed", "preempted", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed_log.read_text()[-3000:]
    assert f"Starting training from iteration {iteration + 1}" in resumed_log.read_text()
    _assert_same_weights(out / "model_final.pth", expected)


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_at_zero(tmp_path, caplog):
    """A run killed during set-up or its first steps left its config.yaml but no checkpoint:
    --resume (as a requeued job repeats it) starts it again; a folder holding no run at all
    stays an error (it may be a mistyped OUTPUT_DIR)."""
    from nd_det.engine.checkpoint import resume_checkpoint
    from nd_det.errors import FileError

    with pytest.raises(FileError, match="holds no checkpoint to resume from"):
        resume_checkpoint(str(tmp_path))
    (tmp_path / "config.yaml").write_text("MODEL: {}\n")
    with caplog.at_level("WARNING", logger="nd_det.engine.checkpoint"):
        assert resume_checkpoint(str(tmp_path)) is None
    assert (
        "holds a run stopped before its first checkpoint; it starts again from iteration 0"
        in caplog.text
    )
    (tmp_path / "model_0000001.pth").write_bytes(b"PK\x03\x04 cut")  # a damaged one: still refused
    with pytest.raises(FileError, match="holds no intact checkpoint to resume from"):
        resume_checkpoint(str(tmp_path))


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

    monkeypatch.setattr(torch, "save", dying_save)  # what the atomic write calls
    with torch.no_grad():
        model.weight.add_(1.0)  # newer weights that never make it to disk
    try:
        checkpointer.save("model_final")
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
