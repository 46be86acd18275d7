"""Every mistake a user can make with tools/train_cls.py and tools/extract_class_means.py --task
classification is one ``ERROR:`` line on stderr naming the key / file / flag, exit status 2, no
traceback, and nothing new on disk. Each case runs the tool script itself (``python tools/...`` in
this process), on the tiny digits set-up of the other classification tests; the last test runs two
torchrun-style processes of which one has the mistake."""

import contextlib
import multiprocessing
import os
import shutil
import socket
import sys

import pytest
import torch

from nd_det.class_means import ClassMeans, save_class_means

from ..helpers.run_tool import run_tool_in_process
from .helpers import DIGITS_TEST, DIGITS_TRAIN, save_random_teacher, write_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train_cls.py")
EXTRACT = os.path.join(REPO, "tools", "extract_class_means.py")
TEACHER = "resnet14"
KDPP = {"ce": {}, "kd": {"temperature": 4.0}, "nd": {}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A (random) teacher's weights and its class means, extracted with the real tool."""
    root = tmp_path_factory.mktemp("teacher")
    weights = save_random_teacher(root / "teacher.pth", TEACHER)
    config = write_yaml(
        root / "teacher.yaml",
        {
            "model": {"name": TEACHER},
            "data": {"name": "digits", "train_subset": DIGITS_TRAIN, "num_workers": 0},
            "train": {"device": "cpu"},
        },
    )
    means = str(root / "means.pth")
    code, err = run_tool_in_process(
        EXTRACT,
        [
            "--task",
            "classification",
            "--config",
            config,
            "--weights",
            weights,
            "--output",
            means,
            "--batch-size",
            "96",
        ],
    )
    assert code == 0, err
    return {"root": str(root), "weights": weights, "config": config, "means": means}


def _config(case, teacher=None, losses=None, **sections):
    """A tiny digits run (its sections updated by ``sections``); ``teacher`` adds a distillation
    section with ``losses`` (KD++ by default)."""
    data = {
        "model": {"name": "resnet8"},
        "data": {
            "name": "digits",
            "train_subset": DIGITS_TRAIN,
            "test_subset": DIGITS_TEST,
            "num_workers": 0,
        },
        "solver": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "train": {"output_dir": os.path.join(case, "out"), "device": "cpu", "tensorboard": False},
    }
    if teacher is not None:
        data["distill"] = {
            "teacher": {"name": TEACHER, "weights": teacher["weights"]},
            "class_means": teacher["means"],
            "losses": losses or KDPP,
        }
    elif losses is not None:
        data["distill"] = {"losses": losses}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return write_yaml(os.path.join(case, "run.yaml"), data)


def _truncated(case, source):
    path = os.path.join(case, "truncated.pth")
    with open(source, "rb") as f:
        head = f.read(os.path.getsize(source) // 2)
    with open(path, "wb") as f:
        f.write(head)
    return path


def _other_architecture(case):
    return save_random_teacher(os.path.join(case, "resnet20.pth"), "resnet20")


def _means_of_five_classes(case):
    path = os.path.join(case, "means5.pth")
    save_class_means(
        path,
        ClassMeans(
            torch.randn(5, 64), torch.ones(5, dtype=torch.int64), {"teacher_model": TEACHER}
        ),
    )
    return path


def _weights_of_another_teacher(case, teacher):
    """The same tensors in a different file (another sha256): the class means do not match."""
    path = os.path.join(case, "retrained.pth")
    shutil.copy(teacher["weights"], path)
    with open(path, "ab") as f:
        f.write(b"\0")
    return path


def _blocker(case):
    path = os.path.join(case, "a_file")
    with open(path, "w") as f:
        f.write("not a folder")
    return path


def _skip_on_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")


def _write(case, name, text):
    path = os.path.join(case, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# name -> (case folder, teacher) -> (tool, argv, fragment of the ERROR line[, environment])
CASES = {
    "config_missing": lambda c, t: (
        TRAIN,
        ["--config", os.path.join(c, "nope.yaml")],
        "nope.yaml not found",
    ),
    "config_not_yaml": lambda c, t: (
        TRAIN,
        ["--config", _write(c, "bad.yaml", "model: [resnet8\n")],
        "is not valid yaml",
    ),
    "config_is_a_weights_file": lambda c, t: (
        TRAIN,
        ["--config", t["weights"]],
        "is not a yaml config",
    ),
    "config_unknown_key": lambda c, t: (
        TRAIN,
        ["--config", _config(c, solver={"epoch": 3})],
        "run.yaml: unknown key 'solver.epoch'; valid keys here: batch_size",
    ),
    "config_value_type": lambda c, t: (
        TRAIN,
        ["--config", _config(c, solver={"epochs": "two"})],
        "solver.epochs='two' must be an integer (the default is 240)",
    ),
    "override_unknown_key": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "solver.lrate=0.1"],
        "override 'solver.lrate=0.1': unknown key 'solver.lrate'",
    ),
    "override_value_type": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "solver.batch_size=big"],
        "override 'solver.batch_size=big': solver.batch_size='big' must be an integer",
    ),
    "override_not_key_value": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "solver.lr"],
        "must look like section.key=value",
    ),
    "override_bad_choice": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "solver.lr_schedule=step"],
        "solver.lr_schedule='step': use one of multistep, cosine",
    ),
    "unknown_model": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "model.name=resnet9"],
        "unknown classifier model.name='resnet9'; available: ",
    ),
    "unknown_teacher_model": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), "distill.teacher.name=resnet99"],
        "unknown classifier distill.teacher.name='resnet99'",
    ),
    "drop_path_without_stochastic_depth": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "model.drop_path_rate=0.1"],
        "model.drop_path_rate=0.1: model.name='resnet8' has no stochastic depth; set it to 0",
    ),
    "deit_augmentation_not_on_an_image_folder": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "data.augment=deit"],
        "data.augment='deit' applies to data.name=image_folder only",
    ),
    "mixed_labels_with_dkd": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t, losses={"ce": {}, "dkd": {}, "nd": {}}), "data.mixup_alpha=0.8"],
        "loss term 'dkd' needs each image's own label, but data.mixup_alpha / "
        "data.cutmix_alpha mix the labels",
    ),
    "unknown_dataset": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "data.name=mnist"],
        "unknown dataset data.name='mnist'; available: cifar100, digits",
    ),
    "unknown_loss_term": lambda c, t: (
        TRAIN,
        ["--config", _config(c, losses={"ce": {}, "fitnet": {}})],
        "unknown loss term 'fitnet' in distill.losses; available: ce, dist",
    ),
    "unknown_loss_parameter": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t, losses={"ce": {}, "kd": {"temp": 4}})],
        "loss term 'kd' has no parameter(s) temp; its parameters are: weight, warm_up, temperature",
    ),
    "loss_parameter_type": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), "distill.losses.kd.temperature=hot"],
        "distill.losses.kd.temperature='hot' must be a number",
    ),
    "loss_weight_zero": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), "distill.losses.nd.weight=0"],
        "distill.losses.nd.weight=0: give a positive value; to train without 'nd', remove it",
    ),
    "term_needs_teacher": lambda c, t: (
        TRAIN,
        ["--config", _config(c, losses={"ce": {}, "kd": {}})],
        "loss term 'kd' needs a teacher: set distill.teacher.name and distill.teacher.weights",
    ),
    "teacher_without_weights": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), "distill.teacher.weights=null"],
        "distill.teacher.weights is empty for teacher 'resnet14'",
    ),
    "teacher_weights_missing": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), f"distill.teacher.weights={c}/nope.pth"],
        "distill.teacher.weights: teacher weights file",
    ),
    "teacher_weights_truncated": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), f"distill.teacher.weights={_truncated(c, t['weights'])}"],
        "cannot read teacher weights",
    ),
    "teacher_weights_other_architecture": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), f"distill.teacher.weights={_other_architecture(c)}"],
        "distill.teacher.weights: teacher weights",
    ),
    "class_means_not_set": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), "distill.class_means=null"],
        "loss term 'nd' needs distill.class_means",
    ),
    "class_means_missing": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), f"distill.class_means={c}/nope.pth"],
        "distill.class_means: class-means file not found",
    ),
    "class_means_truncated": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), f"distill.class_means={_truncated(c, t['means'])}"],
        "distill.class_means: cannot read class-means file",
    ),
    "class_means_wrong_shape": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), f"distill.class_means={_means_of_five_classes(c)}"],
        "holds 5 class rows but 10 are needed",
    ),
    "class_means_of_another_teacher": lambda c, t: (
        TRAIN,
        ["--config", _config(c, t), f"distill.teacher.weights={_weights_of_another_teacher(c, t)}"],
        "were not made with this teacher/dataset (teacher_weights_sha256: file has",
    ),
    "fashion_mnist_not_installed": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "data.name=fashion_mnist", f"data.root={c}/nowhere"],
        "Install it with `apt-get install dataset-fashion-mnist`",
    ),
    "cifar100_missing": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "data.name=cifar100", f"data.root={c}/nowhere"],
        "CIFAR-100 not found",
    ),
    "image_folder_missing": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "data.name=image_folder", f"data.root={c}/nowhere"],
        "image folder",
    ),
    "subset_too_large": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "data.train_subset=100000"],
        "data.train_subset must be between 1 and 1438",
    ),
    "eval_only_without_weights": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "--eval-only"],
        "--eval-only needs the weights",
    ),
    "eval_only_weights_missing": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "--eval-only", "--weights", f"{c}/nope.pth"],
        "--weights: evaluated weights file",
    ),
    "eval_only_weights_truncated": lambda c, t: (
        TRAIN,
        [
            "--config",
            _config(c, model={"name": TEACHER}),
            "--eval-only",
            "--weights",
            _truncated(c, t["weights"]),
        ],
        "cannot read evaluated weights",
    ),
    "weights_without_eval_only": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "--weights", t["weights"]],
        "is only read with --eval-only",
    ),
    "eval_only_with_resume": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "--eval-only", "--weights", t["weights"], "--resume"],
        "--resume and --eval-only together",
    ),
    "resume_missing": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "--resume", f"{c}/nope.pth"],
        "--resume",
    ),
    "output_dir_blocked": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "--output-dir", os.path.join(_blocker(c), "run")],
        "train.output_dir",
    ),
    "batch_not_divisible": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "solver.batch_size=33"],
        "solver.batch_size=33 is the total over the 2 processes",
        {"WORLD_SIZE": "2"},
    ),
    "cuda_without_gpu": lambda c, t: (
        _skip_on_gpu() or TRAIN,
        ["--config", _config(c), "train.device=cuda"],
        "train.device is 'cuda' but torch sees no CUDA device",
    ),
    "unknown_flag": lambda c, t: (
        TRAIN,
        ["--config", _config(c), "--no-such-flag"],
        "unrecognized arguments: --no-such-flag (see train_cls.py --help)",
    ),
    "extract_weights_missing": lambda c, t: (
        EXTRACT,
        ["--task", "classification", "--config", t["config"], "--weights", f"{c}/nope.pth"],
        "--weights: teacher weights file",
    ),
    "extract_weights_truncated": lambda c, t: (
        EXTRACT,
        [
            "--task",
            "classification",
            "--config",
            t["config"],
            "--weights",
            _truncated(c, t["weights"]),
        ],
        "cannot read teacher weights",
    ),
    "extract_weights_other_architecture": lambda c, t: (
        EXTRACT,
        ["--task", "classification", "--config", t["config"], "--weights", _other_architecture(c)],
        "--weights: teacher weights",
    ),
    "extract_output_blocked": lambda c, t: (
        EXTRACT,
        [
            "--task",
            "classification",
            "--config",
            t["config"],
            "--weights",
            t["weights"],
            "--output",
            os.path.join(_blocker(c), "means.pth"),
        ],
        "--output",
    ),
    "extract_batch_size": lambda c, t: (
        EXTRACT,
        [
            "--task",
            "classification",
            "--config",
            t["config"],
            "--weights",
            t["weights"],
            "--batch-size",
            "0",
            "--output",
            f"{c}/means.pth",
        ],
        "--batch-size 0: give 1 or more",
    ),
    "extract_unknown_flag": lambda c, t: (
        EXTRACT,
        [
            "--task",
            "classification",
            "--config",
            t["config"],
            "--weights",
            t["weights"],
            "--ouput",
            "x.pth",
        ],
        "(see tools/extract_class_means.py --task classification --help)",
    ),
}


def _snapshot(*folders):
    """Every file and folder under ``folders`` with its size and modification time."""
    seen = set()
    for folder in folders:
        for where, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(where, name)
                info = os.stat(path)
                seen.add((path, info.st_size, info.st_mtime_ns))
    return seen


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_error_line_and_exit_status_2(case, tmp_path, teacher, monkeypatch):
    spec = CASES[case](str(tmp_path), teacher)
    tool, argv, fragment = spec[:3]
    for key, value in (spec[3] if len(spec) > 3 else {}).items():
        monkeypatch.setenv(key, value)
    before = _snapshot(str(tmp_path), teacher["root"])
    code, err = run_tool_in_process(tool, argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert _snapshot(str(tmp_path), teacher["root"]) == before  # nothing written, not even out/


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """Only UserErrors become one line: any other exception leaves the tool as it was raised
    (Python prints its traceback, exit status 1), with no ERROR line."""
    from nd_det.classification import trainer

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(trainer, "build_distiller", broken)
    with pytest.raises(RuntimeError, match="a bug, not a user mistake"):
        run_tool_in_process(TRAIN, ["--config", _config(str(tmp_path))])
    assert "ERROR: " not in capsys.readouterr().err


# ------------------------------------------------------------------ two processes (torchrun)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, argv, err_path: str) -> None:
    """One process as torchrun starts it: the tool's command line, stderr into ``err_path``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from nd_det.classification.cli import train_cli

    with open(err_path, "w") as err, contextlib.redirect_stderr(err):
        code = train_cli(argv)
    sys.exit(code)


def test_a_mistake_on_one_of_two_processes_stops_both(tmp_path, teacher):
    """Rank 1's teacher file is truncated (on its own disk, say), rank 0's is fine: rank 1 ends
    with its one line and status 2, and rank 0 is not left waiting in a collective: it ends with
    one line naming rank 1's mistake and status 2.  Nothing is written."""
    case = str(tmp_path / "run")
    os.makedirs(case)
    config = _config(case, teacher)
    truncated = _truncated(case, teacher["weights"])
    argvs = [["--config", config], ["--config", config, f"distill.teacher.weights={truncated}"]]
    before = _snapshot(case)
    spawn = multiprocessing.get_context("spawn")
    port = _free_port()
    logs = [str(tmp_path / f"stderr_rank{r}.txt") for r in range(2)]
    procs = [spawn.Process(target=_rank, args=(r, port, argvs[r], logs[r])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a process waited for the one that stopped"
    lines = [open(log).read().strip().splitlines() for log in logs]
    assert [p.exitcode for p in procs] == [2, 2], lines
    assert all(len(ls) == 1 and ls[0].startswith("ERROR: ") for ls in lines), lines
    assert "distill.teacher.weights: cannot read teacher weights" in lines[1][0]
    assert lines[0][0].startswith(
        "ERROR: process 1 of 2 stopped during set-up: "
        "distill.teacher.weights: cannot read teacher weights"
    )
    assert "Traceback" not in "".join(lines[0] + lines[1])
    assert _snapshot(case) == before
