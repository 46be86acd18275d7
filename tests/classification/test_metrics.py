"""Top-k counting, learning-rate schedule, ETA, checkpoints written atomically, weight loading
(strict, as data)."""

import os

import pytest
import torch

from nd_det.classification.checkpoint import ClassifierCheckpointer, load_weights
from nd_det.classification.metrics import topk_correct
from nd_det.classification.solver import learning_rate_at
from nd_det.errors import ConfigError, FileError, NonFiniteError
from nd_det.utils.progress import ProgressClock

from ..helpers.crafted_files import marker_torch


def test_topk_correct_against_a_loop():
    torch.manual_seed(0)
    logits = torch.randn(50, 7)
    labels = torch.randint(0, 7, (50,))
    expected = []
    for k in (1, 5):
        order = [sorted(range(7), key=lambda c: -float(row[c]))[:k] for row in logits]
        expected.append(sum(int(labels[i]) in order[i] for i in range(50)))
    assert topk_correct(logits, labels, (1, 5)).tolist() == expected
    # fewer classes than k: top-5 of 3 classes is always right
    assert topk_correct(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), (5,)).tolist() == [4]


def test_learning_rate_schedules():
    solver = {
        "lr": 0.1,
        "lr_schedule": "multistep",
        "lr_milestones": [150, 180, 210],
        "lr_gamma": 0.1,
        "epochs": 240,
    }
    got = [learning_rate_at(e, solver) for e in (0, 149, 150, 179, 180, 210, 239)]
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 1e-4, 1e-4])
    cosine = dict(solver, lr_schedule="cosine", epochs=10)
    assert learning_rate_at(0, cosine) == pytest.approx(0.1)
    assert learning_rate_at(5, cosine) == pytest.approx(0.05)
    # the MAE / DeiT schedule of the reference's DeiT code: linear warm-up from 0 over 20
    # epochs, then half a cosine from lr to min_lr over the other 280, at fractional epochs
    deit = dict(
        solver, lr_schedule="warmup_cosine", lr=8e-4, epochs=300, warmup_epochs=20, min_lr=1e-6
    )
    assert [learning_rate_at(e, deit) for e in (0, 5.5, 20, 160, 300)] == pytest.approx(
        [0.0, 8e-4 * 5.5 / 20, 8e-4, 1e-6 + (8e-4 - 1e-6) / 2, 1e-6]
    )
    with pytest.raises(
        ValueError,
        match=r"solver.lr_schedule 'step': use multistep, cosine or warmup_cosine",
    ):
        learning_rate_at(0, dict(solver, lr_schedule="step"))


def test_eta_from_the_mean_iteration_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("nd_det.utils.progress.time.perf_counter", lambda: now[0])
    clock = ProgressClock(total_iters=20, done_iters=10, skip=1)
    clock.start()
    for duration in (5.0, 1.0, 3.0):  # the first (start-up) one is not timed
        now[0] += duration
        clock.step()
    assert clock.seconds_per_iter == pytest.approx(2.0)
    assert clock.eta_seconds() == pytest.approx(2.0 * 7)


def test_checkpoints_are_atomic_and_refuse_nan_weights(tmp_path):
    model = torch.nn.Linear(2, 2)
    checkpointer = ClassifierCheckpointer(
        model, str(tmp_path), optimizer=torch.optim.SGD(model.parameters(), lr=0.1)
    )
    checkpointer.save("model_last", epoch=3)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_last.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_last.pth")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        checkpointer.save("model_last", epoch=4, extra=Unpicklable())
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"not saving checkpoint model_last: NaN/inf in 1"):
        checkpointer.save("model_last", epoch=5)
    # the file of epoch 3 is intact, no temporary file is left behind
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_last.pth"]
    assert load_weights(torch.nn.Linear(2, 2), str(tmp_path / "model_last.pth"))["epoch"] == 3


def test_weight_loading_is_strict_and_reads_files_as_data(tmp_path):
    model = torch.nn.Linear(2, 2)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "raw.pth")
    with pytest.raises(
        FileError,
        match=r"distill.teacher.weights .*raw\.pth does not fit Linear \(missing keys: bias; "
        r"shape mismatches: weight \(2,\) in the file vs \(2, 2\) in the model\): is the "
        r"model name right\?",
    ):
        load_weights(model, str(tmp_path / "raw.pth"), "distill.teacher.weights")
    with pytest.raises(ConfigError, match=r"model.weights .*nope\.pth: .*not found"):
        load_weights(model, str(tmp_path / "nope.pth"))
    # a file that would run code when unpickled is refused, and nothing of it ran
    crafted = marker_torch(tmp_path / "crafted.pth", tmp_path / "marker", model.state_dict())
    with pytest.raises(FileError, match=r"crafted\.pth asks to load .* refused"):
        load_weights(model, crafted)
    assert not (tmp_path / "marker").exists()
    torch.save(
        {"model": {"module." + k: v for k, v in model.state_dict().items()}},
        tmp_path / "wrapped.pth",
    )
    other = torch.nn.Linear(2, 2)
    load_weights(other, str(tmp_path / "wrapped.pth"))
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
