"""Training with the real trainer on tiny real data (scikit-learn digits): one epoch of each ++
method lowers the training objective, a resumed run repeats an uninterrupted one exactly (after
an epoch, and after a SIGTERM within an epoch: exit status 3 with a checkpoint), a non-finite
loss stops before the optimizer step, AMP runs, and the command lines write and re-read their
files."""

import json
import os
import shutil
import signal

import pytest
import torch

from nd_det.class_means import load_class_means
from nd_det.class_means.classification import extract_classification_main
from nd_det.classification.checkpoint import file_sha256
from nd_det.classification.cli import train_main
from nd_det.classification.data import build_dataset
from nd_det.classification.trainer import ClassificationTrainer
from nd_det.errors import NonFiniteError
from nd_det.utils.preemption import EXIT_PREEMPTED
from nd_det.utils.progress import ProgressClock

from .helpers import DIGITS_TRAIN, distill_section, tiny_config, write_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = {
    "kdpp": {"kd": {"weight": 1.0, "temperature": 4.0}, "nd": {"weight": 2.0}},
    "dkdpp": {"dkd": {"alpha": 1.0, "beta": 2.0, "temperature": 4.0}, "nd": {}},
    "reviewkdpp": {"reviewkd": {"weight": 1.0, "mid_channels": 16}, "nd": {}},
    "distpp": {"dist": {"weight": 2.0}, "nd": {"weight": 1.5}},
}
MECHANISM = {"norm_ratio", "cosine_to_class_mean"}


@torch.no_grad()
def _objective(trainer: ClassificationTrainer, epoch: int) -> float:
    """The training objective over the (un-augmented) training images, in training mode, with a
    fixed seed for the projection's dropout."""
    dataset, _ = build_dataset(trainer.cfg["data"], train=True, augment=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32)
    torch.manual_seed(123)
    trainer.distiller.train()
    total = 0.0
    for images, labels in loader:
        losses, _ = trainer.distiller(images, labels, epoch)
        total += float(losses["loss"]) * labels.shape[0]
    return total / len(dataset)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_epoch_lowers_the_training_loss(tmp_path, method):
    distill = distill_section(tmp_path, METHODS[method])
    cfg = tiny_config(tmp_path, method, distill=distill, overrides=["solver.batch_size", "16"])
    trainer = ClassificationTrainer(cfg)
    assert list(trainer.distiller.terms) == list(METHODS[method])
    before = _objective(trainer, epoch=0)
    assert trainer.iters == DIGITS_TRAIN // 16
    epoch_losses = trainer.train_one_epoch(0, ProgressClock(trainer.iters))
    after = _objective(trainer, epoch=0)
    assert after < before, (method, before, after)
    terms = {f"loss_{n}" for n in ["ce", *METHODS[method]]}
    assert set(epoch_losses) == {"loss"} | terms | MECHANISM
    assert all(torch.isfinite(torch.tensor(v)) for v in epoch_losses.values())


def _assert_same_run(a, b) -> None:
    for x, y in (
        (a.distiller.student, b.distiller.student),
        (a.distiller.terms, b.distiller.terms),
    ):
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys()
        for key in sx:
            assert torch.equal(sx[key], sy[key]), key
    assert a.last_eval == b.last_eval


def _jsonl(folder, kind):
    return [
        r for r in map(json.loads, open(os.path.join(folder, "metrics.jsonl"))) if r["type"] == kind
    ]


def test_resume_after_an_epoch_and_after_sigterm_repeats_an_uninterrupted_run(tmp_path):
    """--resume continues from the tagged checkpoint of train.output_dir: after the first run of
    one epoch, and after a SIGTERM in the second epoch's second step (exit status 3, a checkpoint
    of that step with the RNG states and the data position): the weights, the terms, the test
    metrics and the epoch's mean losses equal those of the uninterrupted run."""
    distill = distill_section(tmp_path, METHODS["kdpp"], warm_up_epochs=2)
    straight = tiny_config(tmp_path, "straight", distill=distill, epochs=2)
    straight_trainer, written = ClassificationTrainer(straight), []
    save = straight_trainer.checkpointer.save
    straight_trainer.checkpointer.save = lambda name, **data: (
        written.append(name),
        save(name, **data),
    )
    reference = straight_trainer.fit()
    assert written == ["model_last", "model_final"]  # the last epoch's state is written once

    first = tiny_config(tmp_path, "resumed", distill=distill, epochs=1)
    ClassificationTrainer(first).fit()
    second = tiny_config(tmp_path, "resumed", distill=distill, epochs=2)
    trainer = ClassificationTrainer(second, resume=True)
    assert (trainer.start_epoch, trainer.start_iter) == (1, 0)
    steps = []

    def signal_at_second_step(images, labels, epoch):
        steps.append(epoch)
        if len(steps) == 2:  # SLURM's SIGTERM arrives while the step runs
            os.kill(os.getpid(), signal.SIGTERM)
        return type(trainer.distiller).forward(trainer.distiller, images, labels, epoch)

    trainer.model.forward = signal_at_second_step
    with pytest.raises(SystemExit) as stop:
        trainer.fit()
    assert stop.value.code == EXIT_PREEMPTED == 3
    out = second.train.output_dir
    saved = torch.load(os.path.join(out, "model_last.pth"), weights_only=True)
    assert (saved["epoch"], saved["iteration"]) == (1, 2)
    assert not [k for k in (*saved["model"], *saved["terms"]) if "teacher" in k]
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_last.pth"
    assert len(saved["rng"]["ranks"]) == 1

    resumed_trainer = ClassificationTrainer(second, resume=True)
    assert (resumed_trainer.start_epoch, resumed_trainer.start_iter) == (1, 2)
    resumed = resumed_trainer.fit()
    _assert_same_run(reference, resumed)
    done = _jsonl(straight.train.output_dir, "epoch")[-1]
    again = _jsonl(out, "epoch")[-1]
    assert done.keys() == again.keys()
    assert done.pop("type") == again.pop("type") == "epoch"
    for key in done:
        assert done[key] == pytest.approx(again[key], rel=1e-12), key
    # the last checkpoint is now the final one: nothing left to do
    assert ClassificationTrainer(second, resume=True).start_epoch == 2
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == [
        "model_best.pth",
        "model_final.pth",
    ]


def test_a_non_finite_loss_stops_before_the_optimizer_step(tmp_path):
    """A weight that overflows float32 makes loss_nd inf at the first step: NonFiniteError naming
    the term and its key, raised before the optimizer stepped (the weights are the initial ones)
    and before any checkpoint was written."""
    distill = distill_section(tmp_path, {"nd": {"weight": 1e39}})
    cfg = tiny_config(tmp_path, "nan", distill=distill)
    trainer = ClassificationTrainer(cfg)
    initial = {k: v.detach().clone() for k, v in trainer.distiller.student.named_parameters()}
    with pytest.raises(
        NonFiniteError,
        match=r"non-finite loss at iteration 0: loss_nd=inf, loss=inf; stopped before "
        r"the optimizer step: .*\(distill.<term>.weight\), then --resume",
    ):
        trainer.fit()
    for key, value in trainer.distiller.student.named_parameters():  # the step never ran
        assert torch.equal(value, initial[key]), key
    assert os.listdir(cfg.train.output_dir) == ["config.yaml"]


def test_amp_bfloat16_on_cpu(tmp_path):
    distill = distill_section(tmp_path, METHODS["reviewkdpp"])
    cfg = tiny_config(tmp_path, "amp", distill=distill, overrides=["train.amp", "True"])
    trainer = ClassificationTrainer(cfg)
    assert trainer.amp_dtype == torch.bfloat16
    start = {k: v.clone() for k, v in trainer.distiller.student.state_dict().items()}
    losses = trainer.train_one_epoch(0, ProgressClock(trainer.iters))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    changed = [
        k
        for k, v in trainer.distiller.student.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, start[k])
    ]
    assert changed


def test_command_lines_teacher_means_student_and_evaluation(tmp_path, capsys):
    data = {"name": "digits", "train_subset": DIGITS_TRAIN, "test_subset": 40, "num_workers": 0}
    solver = {"epochs": 1, "batch_size": 32, "lr": 0.05}
    teacher_cfg = write_yaml(
        tmp_path / "teacher.yaml",
        {
            "model": {"name": "resnet14"},
            "data": data,
            "solver": solver,
            "train": {"output_dir": str(tmp_path / "teacher"), "device": "cpu", "log_period": 1},
        },
    )
    train_main(["--config-file", teacher_cfg])
    teacher_dir = tmp_path / "teacher"
    assert {
        "last_checkpoint",
        "model_final.pth",
        "model_best.pth",
        "metrics.jsonl",
        "config.yaml",
    } == set(os.listdir(teacher_dir)) - {"tensorboard"}
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(teacher_dir / "tensorboard"))
    records = [json.loads(line) for line in open(teacher_dir / "metrics.jsonl")]
    iters = [r for r in records if r["type"] == "iter"]
    assert [r["iter"] for r in iters] == [1, 2, 3]
    epoch = [r for r in records if r["type"] == "epoch"][-1]
    assert {"train_loss", "train_loss_ce", "test_top1", "test_top5", "lr"} <= set(epoch)
    from nd_det.classification.config import load_config

    assert load_config(str(teacher_dir / "config.yaml")).model.name == "resnet14"
    out = capsys.readouterr().out
    assert "eta 0:00:00" in out and "test top-1" in out

    weights = str(teacher_dir / "model_final.pth")
    extract_classification_main(["--config-file", teacher_cfg, "model.weights", weights])
    table = load_class_means(str(teacher_dir / "class_means.pth"), num_classes=10, dim=64)
    assert table.metadata["teacher_weights_sha256"] == file_sha256(weights)
    assert table.metadata["teacher_model"] == "resnet14"
    assert table.metadata["teacher_config"] == teacher_cfg
    assert int(table.counts.sum()) == DIGITS_TRAIN

    student_cfg = write_yaml(
        tmp_path / "student.yaml",
        {
            "model": {"name": "resnet8"},
            "data": data,
            "solver": solver,
            "distill": {
                "teacher": {"name": "resnet14", "weights": weights},
                "class_means": str(teacher_dir / "class_means.pth"),
                "losses": ["kd", "nd"],
                "nd": {"weight": 2.0},
            },
            "train": {
                "output_dir": str(tmp_path / "student"),
                "device": "cpu",
                "tensorboard": False,
            },
        },
    )
    result = train_main(["--config-file", student_cfg])
    final = str(tmp_path / "student" / "model_final.pth")
    evaluated = train_main(["--config-file", student_cfg, "--eval-only", "model.weights", final])
    assert evaluated["top1"] == result.last_eval["top1"] and evaluated["samples"] == 40
    # --resume is a flag: the KEY VALUE pair after it is an override (one more epoch here)
    longer = train_main(["--config-file", student_cfg, "--resume", "solver.epochs", "2"])
    assert longer.epochs_done == 2 and len(_jsonl(tmp_path / "student", "epoch")) == 2
    evaluated = train_main(["--config-file", student_cfg, "--eval-only", "--resume"])
    assert evaluated["top1"] == longer.last_eval["top1"]

    # class means of another teacher are refused, naming the mismatch
    other = tmp_path / "other.pth"
    shutil.copy(weights, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    with pytest.raises(
        ValueError,
        match=r"distill.class_means .*class_means\.pth was not made with this "
        r"teacher/dataset \(teacher_weights_sha256: file has",
    ):
        train_main(["--config-file", student_cfg, "distill.teacher.weights", str(other)])


def test_eval_only_on_a_quick_config_reads_the_test_split_only(tmp_path):
    """--eval-only builds the student and the test split, nothing of the training split (the
    folder holds Fashion-MNIST's test files only), and the KEY VALUE pairs after the flags are
    overrides."""
    import gzip
    import struct

    import numpy as np

    from .helpers import save_random_teacher

    rng = np.random.RandomState(0)
    for name, array in (
        ("t10k-images-idx3-ubyte.gz", rng.randint(0, 256, (20, 28, 28)).astype(np.uint8)),
        ("t10k-labels-idx1-ubyte.gz", (np.arange(20) % 10).astype(np.uint8)),
    ):
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(header + array.tobytes())
    weights = save_random_teacher(tmp_path / "student.pth", "resnet8")
    result = train_main(
        [
            *("--config-file", os.path.join(REPO, "configs/classification/quick/student.yaml")),
            *("--eval-only", "data.root", str(tmp_path), "model.weights", weights),
            *("train.device", "cpu", "train.output_dir", str(tmp_path / "out")),
        ]
    )
    assert result["samples"] == 20 and 0 <= result["top1"] <= 100
    assert _jsonl(tmp_path / "out", "eval")[0]["weights"] == weights
