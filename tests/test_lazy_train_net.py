"""A LazyConfig distillation run (tools/lazy_train_net.py) on the tests' small models: the R50 <-
R101 ReviewKD++ LazyConfig (configs/COCO-Distill/R50_from_R101_nd.py) shrunk, trained 2 steps,
killed and resumed, preempted with SIGTERM (exit 3) and resumed, evaluated with its teacher side
by side; its exported student loaded by plain detectron2's LazyConfig path in a process that
imports no nd_det, with the same detections."""

import json
import re
import signal
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data.detection_utils import read_image

from nd_det.engine.lazy_config import load_run_config
from nd_det.engine.lazy_export import export_lazy_student

from .helpers.threads import one_torch_thread  # noqa: F401
from .helpers.tiny_distill import REPO
from .helpers.tiny_lazy import write_tiny_lazy_run
from .test_training_reliability import ENV, _assert_same_weights, _model_state

_NO_TEST_SET = ["dataloader.test.dataset.names=[]"]  # training runs: no evaluation at the end


def _run(folder, name, output=None, args=_NO_TEST_SET, **options):
    return dict(
        output=str(folder / (output or name)), log=str(folder / f"{name}.log"), args=args, **options
    )


@pytest.fixture(scope="module")
def lazy_runs(tmp_path_factory):
    """Every run of the tool, forked from one process (tests.helpers.forked_runs): a straight
    2-step run, a run SIGKILLed while writing its second checkpoint then resumed, a run sent
    SIGTERM during training then resumed, and --eval-only --eval-teacher of the straight run."""
    root = tmp_path_factory.mktemp("lazy")
    config, datasets = write_tiny_lazy_run(root)
    final = root / "straight" / "model_final.pth"
    groups = {
        "straight": [_run(root, "straight")],
        "killed": [
            _run(root, "killed", kill="during_write"),
            _run(root, "killed_resumed", "killed", resume=True),
        ],
        "sigterm": [
            _run(root, "sigterm", kill="training", signal=signal.SIGTERM),
            _run(root, "sigterm_resumed", "sigterm", resume=True),
        ],
        "eval": [
            _run(
                root,
                "eval",
                args=[
                    "--eval-only",
                    "--eval-teacher",
                    f"train.init_checkpoint={final}",
                ],
            )
        ],
    }
    plan = {
        "argv": ["--config-file", config, *datasets],
        "tool": "lazy_train_net",
        "seed": 3,
        "runs": [run for group in groups.values() for run in group],
    }
    (root / "plan.json").write_text(json.dumps(plan))
    report = root / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.forked_runs", str(root / "plan.json"), str(report)],
        cwd=REPO,
        env=dict(ENV, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    entries = iter(json.loads(report.read_text()))
    outcome = {name: [(next(entries), run) for run in group] for name, group in groups.items()}
    ((straight, run),) = outcome["straight"]
    assert straight["status"] == 0, open(run["log"]).read()[-3000:]
    return outcome, root, config


def _log(run):
    return open(run["log"]).read()


def test_lazyconfig_run_trains_two_steps_with_both_terms(lazy_runs):
    outcome, root, _ = lazy_runs
    ((entry, run),) = outcome["straight"]
    log = _log(run)
    assert "Starting training from iteration 0" in log
    metrics = [json.loads(line) for line in (root / "straight" / "metrics.json").open()]
    steps = [m for m in metrics if "loss_nd" in m]
    assert [m["iteration"] for m in steps] == [1]  # written at the last of the 2 steps
    assert steps[0]["loss_nd"] > 0 and steps[0]["loss_reviewkd"] > 0
    assert {"model_0000000.pth", "model_0000001.pth", "model_final.pth"} <= set(entry["files"])
    # the run's record: the LazyConfig's own yaml, with the overrides
    record = (root / "straight" / "config.yaml").read_text()
    assert "FrozenTeacher.from_values" in record and f"output_dir: {root / 'straight'}" in record
    state = _model_state(root / "straight" / "model_final.pth")
    assert any(k.startswith("distill_terms.") for k in state)  # the ABF modules are saved
    assert not any(k.startswith("teacher") for k in state)


def test_lazyconfig_run_killed_while_writing_resumes_to_the_same_weights(lazy_runs):
    outcome, root, _ = lazy_runs
    (killed, run), (resumed, resumed_run) = outcome["killed"]
    assert killed["killed"] and killed["during_write"] and killed["status"] == -signal.SIGKILL
    assert killed["intact"] == [f for f in killed["files"] if f.endswith(".pth")]
    assert resumed["status"] == 0, _log(resumed_run)[-3000:]
    assert "Starting training from iteration 1" in _log(resumed_run)
    _assert_same_weights(root / "killed" / "model_final.pth", _straight(root))


def test_lazyconfig_run_preempted_by_sigterm_exits_3_and_resumes_exactly(lazy_runs):
    outcome, root, _ = lazy_runs
    (stopped, run), (resumed, resumed_run) = outcome["sigterm"]
    log = _log(run)
    assert stopped["status"] == 3, log[-3000:]
    found = re.search(r"SIGTERM received: training stopped after iteration (\d+)", log)
    assert found and "Traceback" not in log, log[-3000:]
    iteration = int(found.group(1))
    assert stopped["last_checkpoint"] == f"model_{iteration:07d}.pth"
    assert resumed["status"] == 0, _log(resumed_run)[-3000:]
    assert f"Starting training from iteration {iteration + 1}" in _log(resumed_run)
    _assert_same_weights(root / "sigterm" / "model_final.pth", _straight(root))


def test_lazyconfig_eval_only_evaluates_teacher_and_student_side_by_side(lazy_runs):
    outcome, _, _ = lazy_runs
    ((entry, run),) = outcome["eval"]
    log = _log(run)
    assert entry["status"] == 0, log[-3000:]
    rows = re.findall(r"^\| (student|teacher) \| lazy_val \|", log, re.M)
    assert rows == ["student", "teacher"], log[-3000:]
    assert "Teacher loaded from" in log


def _straight(root):
    return _model_state(root / "straight" / "model_final.pth")


# plain detectron2 only: no nd_det module may be imported on the way
_PLAIN = """
import sys, torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data.detection_utils import read_image

export, images, out = sys.argv[1:4]
model = instantiate(LazyConfig.load(export + "/config.yaml").model).eval()
DetectionCheckpointer(model).load(export + "/model_final.pth")
with torch.no_grad():
    outputs = model([{"image": torch.as_tensor(read_image(p, "BGR").transpose(2, 0, 1).copy())}
                     for p in images.split(",")])
fields = [{k: v for k, v in o["instances"].get_fields().items()} for o in outputs]
torch.save([{"boxes": f["pred_boxes"].tensor, "scores": f["scores"],
             "classes": f["pred_classes"]} for f in fields], out)
assert not [m for m in sys.modules if m.split(".")[0] == "nd_det"], "nd_det was imported"
"""


def test_exported_student_gives_the_same_detections_in_plain_detectron2(lazy_runs, tmp_path):
    _, root, config = lazy_runs
    cfg = load_run_config(config, [])
    export = export_lazy_student(cfg, str(root / "straight" / "model_final.pth"), tmp_path / "exp")
    assert export.dropped_modules and all(
        k.startswith("distill_terms.") for k in export.dropped_modules
    )
    images = sorted((root / "lazy_val" / "images").iterdir())
    (tmp_path / "plain.py").write_text(_PLAIN)
    proc = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "plain.py"),
            export.output_dir,
            ",".join(map(str, images)),
            str(tmp_path / "plain.pth"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain = torch.load(tmp_path / "plain.pth", weights_only=True)
    # the distillation model of the run, from its training checkpoint: in eval mode, the student
    model = instantiate(cfg.model).eval()
    DetectionCheckpointer(model).load(str(root / "straight" / "model_final.pth"))
    with torch.no_grad():
        ours = model(
            [
                {"image": torch.as_tensor(read_image(str(p), "BGR").transpose(2, 0, 1).copy())}
                for p in images
            ]
        )
    assert len(plain) == len(ours) == len(images)
    for mine, theirs in zip(ours, plain):
        instances = mine["instances"]
        assert len(instances) > 0  # a detector that detects something, so the check means it
        assert torch.equal(instances.pred_boxes.tensor, theirs["boxes"])
        assert torch.equal(instances.scores, theirs["scores"])
        assert torch.equal(instances.pred_classes, theirs["classes"])
