"""Training with the real trainer on tiny real data (scikit-learn digits): one epoch of each ++
method lowers the training objective, a resumed run repeats an uninterrupted one exactly, AMP
runs, and the command lines write and re-read their files."""

import json
import os
import shutil

import pytest
import torch

from nd_det.class_means import load_class_means
from nd_det.class_means.classification import extract_classification_main
from nd_det.classification.checkpoint import file_sha256, load_checkpoint
from nd_det.classification.cli import train_main
from nd_det.classification.data import build_dataset
from nd_det.classification.trainer import ClassificationTrainer
from nd_det.utils.progress import ProgressClock

from .helpers import DIGITS_TRAIN, distill_section, tiny_config, write_yaml

METHODS = {
    "kdpp": {"ce": {}, "kd": {"weight": 1.0, "temperature": 4.0}, "nd": {"weight": 2.0}},
    "dkdpp": {"ce": {}, "dkd": {"alpha": 1.0, "beta": 2.0, "temperature": 4.0}, "nd": {}},
    "reviewkdpp": {"ce": {}, "reviewkd": {"weight": 1.0, "mid_channels": 16}, "nd": {}},
    "distpp": {"ce": {}, "dist": {"weight": 2.0}, "nd": {"weight": 1.5}},
}


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
    cfg = tiny_config(tmp_path, method, distill=distill, overrides=["solver.batch_size=16"])
    trainer = ClassificationTrainer(cfg)
    assert list(trainer.distiller.terms) == list(METHODS[method])
    before = _objective(trainer, epoch=0)
    iters = len(trainer.train_loader)
    assert iters == DIGITS_TRAIN // 16
    epoch_losses = trainer.train_one_epoch(0, ProgressClock(iters))
    after = _objective(trainer, epoch=0)
    assert after < before, (method, before, after)
    assert set(epoch_losses) == {"loss"} | {f"loss_{n}" for n in METHODS[method]}
    assert all(torch.isfinite(torch.tensor(v)) for v in epoch_losses.values())


def test_resume_repeats_an_uninterrupted_run(tmp_path):
    distill = distill_section(tmp_path, METHODS["kdpp"], warm_up_epochs=2)
    straight = tiny_config(tmp_path, "straight", distill=distill, epochs=2)
    first_half = tiny_config(tmp_path, "first", distill=distill, epochs=1)
    second_half = tiny_config(tmp_path, "second", distill=distill, epochs=2)

    reference = ClassificationTrainer(straight).fit()
    ClassificationTrainer(first_half).fit()
    checkpoint = os.path.join(first_half["train"]["output_dir"], "last_checkpoint.pth")
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 1 and "teacher" not in " ".join(state["model"])
    resumed_trainer = ClassificationTrainer(second_half)
    resumed_trainer.resume(checkpoint)
    assert resumed_trainer.start_epoch == 1
    resumed = resumed_trainer.fit()

    for a, b in (
        (reference.distiller.student, resumed.distiller.student),
        (reference.distiller.terms, resumed.distiller.terms),
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    assert reference.last_eval == resumed.last_eval
    # "auto" picks the output folder's checkpoint, which is already complete: nothing to do
    again = ClassificationTrainer(second_half)
    again.resume("auto")
    assert again.start_epoch == 2


def test_amp_bfloat16_on_cpu(tmp_path):
    distill = distill_section(tmp_path, METHODS["reviewkdpp"])
    cfg = tiny_config(tmp_path, "amp", distill=distill, overrides=["train.amp=true"])
    trainer = ClassificationTrainer(cfg)
    assert trainer.amp_dtype == torch.bfloat16
    start = {k: v.clone() for k, v in trainer.distiller.student.state_dict().items()}
    losses = trainer.train_one_epoch(0, ProgressClock(len(trainer.train_loader)))
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
    train_main(["--config", teacher_cfg])
    teacher_dir = tmp_path / "teacher"
    assert {
        "last_checkpoint.pth",
        "model_final.pth",
        "model_best.pth",
        "metrics.jsonl",
        "config.yaml",
    } <= set(os.listdir(teacher_dir))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(teacher_dir / "tensorboard"))
    records = [json.loads(line) for line in open(teacher_dir / "metrics.jsonl")]
    iters = [r for r in records if r["type"] == "iter"]
    assert [r["iter"] for r in iters] == [1, 2, 3]
    epoch = [r for r in records if r["type"] == "epoch"][-1]
    assert {"train_loss", "train_loss_ce", "test_top1", "test_top5", "lr"} <= set(epoch)
    from nd_det.classification.config import load_config

    assert load_config(str(teacher_dir / "config.yaml"))["model"]["name"] == "resnet14"
    out = capsys.readouterr().out
    assert "eta 0:00:00" in out and "test top-1" in out

    weights = str(teacher_dir / "model_final.pth")
    extract_classification_main(["--config", teacher_cfg, "--weights", weights])
    table = load_class_means(str(teacher_dir / "class_means.pth"), num_classes=10, dim=64)
    assert table.metadata["teacher_weights_sha256"] == file_sha256(weights)
    assert table.metadata["teacher_model"] == "resnet14"
    assert table.metadata["teacher_config"] == os.path.abspath(teacher_cfg)
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
                "losses": METHODS["kdpp"],
            },
            "train": {
                "output_dir": str(tmp_path / "student"),
                "device": "cpu",
                "tensorboard": False,
            },
        },
    )
    result = train_main(["--config", student_cfg])
    final = str(tmp_path / "student" / "model_final.pth")
    evaluated = train_main(["--config", student_cfg, "--eval-only", "--weights", final])
    assert evaluated["top1"] == result.last_eval["top1"] and evaluated["samples"] == 40

    # class means of another teacher are refused, naming the mismatch
    other = tmp_path / "other.pth"
    shutil.copy(weights, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    with pytest.raises(
        ValueError,
        match=r"class means .*class_means\.pth were not made with this "
        r"teacher/dataset \(teacher_weights_sha256: file has",
    ):
        train_main(["--config", student_cfg, f"distill.teacher.weights={other}"])
