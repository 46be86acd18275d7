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

from ..helpers.crafted_files import marker_torch
from ..helpers.run_tool import run_tool_in_process
from .helpers import DIGITS_TEST, DIGITS_TRAIN, save_random_teacher, write_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train_cls.py")
EXTRACT = os.path.join(REPO, "tools", "extract_class_means.py")
TEACHER = "resnet14"
KDPP = {"losses": ["kd", "nd"], "kd": {"temperature": 4.0}}


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
            "solver": {"eval_batch_size": 96},
            "train": {"device": "cpu"},
        },
    )
    means = str(root / "means.pth")
    code, err = run_tool_in_process(
        EXTRACT,
        ["--task", "classification", "--config-file", config, "--output", means]
        + ["model.weights", weights],
    )
    assert code == 0, err
    return {"root": str(root), "weights": weights, "config": config, "means": means}


def _config(case, teacher=None, distill=None, **sections):
    """A tiny digits run (its sections updated by ``sections``); ``teacher`` adds a distillation
    section (KD++ unless ``distill`` says otherwise)."""
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
            **KDPP,
        }
    data.setdefault("distill", {}).update(distill or {})
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


def _crafted(case, teacher):
    """The teacher's weights in a file that would create ``marker`` when unpickled."""
    state = torch.load(teacher["weights"], weights_only=True)
    return marker_torch(os.path.join(case, "crafted.pth"), os.path.join(case, "marker"), state)


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


def _run_of_another_model(case, teacher):
    """An output folder whose last checkpoint holds the teacher's architecture (resnet14)."""
    out = os.path.join(case, "out")
    os.makedirs(out)
    shutil.copy(teacher["weights"], os.path.join(out, "model_last.pth"))
    _write(out, "last_checkpoint", "model_last.pth")
    return out


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


def _extract(t, *opts, output=None):
    """The extraction tool's command line for the fixture's teacher config."""
    flags = ["--output", output] if output else []
    return ["--task", "classification", "--config-file", t["config"], *flags, *opts]


# name -> (case folder, teacher) -> (tool, argv, fragment of the ERROR line)
CASES = {
    "config_file_not_given": lambda c, t: (
        TRAIN,
        [],
        "the following arguments are required: --config-file",
    ),
    "config_missing": lambda c, t: (
        TRAIN,
        ["--config-file", os.path.join(c, "nope.yaml")],
        "nope.yaml: FileNotFoundError: [Errno 2] No such file or directory",
    ),
    "config_not_yaml": lambda c, t: (
        TRAIN,
        ["--config-file", _write(c, "bad.yaml", "model: [resnet8\n")],
        "bad.yaml: not a yaml config (ParserError",
    ),
    "config_is_a_weights_file": lambda c, t: (
        TRAIN,
        ["--config-file", t["weights"]],
        "teacher.pth: not a yaml config (UnicodeDecodeError",
    ),
    "config_unknown_key": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, solver={"epoch": 3})],
        "run.yaml: KeyError: Non-existent config key: solver.epoch",
    ),
    "config_value_type": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, solver={"epochs": "two"})],
        "with values (240 vs. two) for config key: solver.epochs",
    ),
    "override_unknown_key": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "solver.lrate", "0.1"],
        "the KEY VALUE overrides: AssertionError: Non-existent key: solver.lrate",
    ),
    "override_value_type": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "solver.batch_size", "big"],
        "with values (32 vs. big) for config key: solver.batch_size",
    ),
    "override_without_value": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "solver.lr"],
        "Override list has odd length",
    ),
    "flag_after_the_overrides": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "solver.epochs", "2", "--resume"],
        "--resume comes after the KEY VALUE overrides: put flags first",
    ),
    "unknown_schedule": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "solver.lr_schedule", "step"],
        "solver.lr_schedule 'step': use multistep, cosine or warmup_cosine",
    ),
    "unknown_optimizer": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "solver.optimizer", "adam"],
        "solver.optimizer 'adam': use sgd or adamw",
    ),
    "negative_learning_rate": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "solver.lr", "-0.1"],
        "the config: ValueError: Invalid learning rate: -0.1",
    ),
    "unknown_model": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "model.name", "resnet9"],
        "unknown classifier 'resnet9'; available: ",
    ),
    "unknown_teacher_model": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.teacher.name", "resnet99"],
        "unknown classifier 'resnet99'",
    ),
    "drop_path_without_stochastic_depth": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "model.drop_path_rate", "0.1"],
        "model.drop_path_rate 0.1: 'resnet8' has none; set it to 0",
    ),
    "mixed_labels_with_dkd": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t, {"losses": ["dkd", "nd"]}), "data.mixup_alpha", "0.8"],
        "distill.losses 'dkd' needs each image's own label, but data.mixup_alpha / "
        "data.cutmix_alpha mix the labels",
    ),
    "unknown_dataset": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "data.name", "mnist"],
        "unknown dataset data.name='mnist'; available: cifar100, digits",
    ),
    "unknown_loss_term": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t, {"losses": ["fitnet"]})],
        "distill.losses has unknown name(s) ['fitnet']; choose from ['dist', 'dkd', 'kd', 'nd'",
    ),
    "unknown_loss_parameter": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.kd.temp", "4.0"],
        "Non-existent key: distill.kd.temp",
    ),
    "loss_parameter_type": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.kd.temperature", "hot"],
        "with values (4.0 vs. hot) for config key: distill.kd.temperature",
    ),
    "loss_weight_zero": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.nd.weight", "0.0"],
        "distill.nd.weight 0.0: 'nd' is in distill.losses, so give it a positive weight",
    ),
    "loss_temperature_zero": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.kd.temperature", "0.0"],
        "distill.kd.temperature 0.0: give a positive temperature",
    ),
    "term_needs_teacher": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, distill={"losses": ["kd"]})],
        "distill.losses ['kd'] need a teacher: set distill.teacher.name and "
        "distill.teacher.weights",
    ),
    "teacher_without_weights": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.teacher.weights", ""],
        "distill.losses ['kd', 'nd'] need a teacher",
    ),
    "teacher_weights_missing": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.teacher.weights", f"{c}/nope.pth"],
        "nope.pth: AssertionError: Checkpoint",
    ),
    "teacher_weights_truncated": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.teacher.weights", _truncated(c, t["weights"])],
        "truncated.pth: RuntimeError: PytorchStreamReader failed",
    ),
    "teacher_weights_other_architecture": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.teacher.weights", _other_architecture(c)],
        "resnet20.pth does not fit CifarResNet (unexpected keys",
    ),
    "teacher_weights_that_run_code": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.teacher.weights", _crafted(c, t)],
        "crafted.pth asks to load",
    ),
    "class_means_not_set": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.class_means", ""],
        "distill.class_means is empty: ND needs the teacher's class means",
    ),
    "class_means_missing": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.class_means", f"{c}/nope.pth"],
        "class-means file not found",
    ),
    "class_means_truncated": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.class_means", _truncated(c, t["means"])],
        "cannot read class-means file",
    ),
    "class_means_wrong_shape": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t), "distill.class_means", _means_of_five_classes(c)],
        "holds 5 class rows but 10 are needed",
    ),
    "class_means_of_another_teacher": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, t)]
        + ["distill.teacher.weights", _weights_of_another_teacher(c, t)],
        "was not made with this teacher/dataset (teacher_weights_sha256: file has",
    ),
    "fashion_mnist_not_installed": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "data.name", "fashion_mnist", "data.root", f"{c}/nowhere"],
        "Install it with `apt-get install dataset-fashion-mnist`",
    ),
    "cifar100_missing": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "data.name", "cifar100", "data.root", f"{c}/nowhere"],
        "is missing or not the official CIFAR-100 file",
    ),
    "image_folder_missing": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "data.name", "image_folder", "data.root", f"{c}/nowhere"],
        "nowhere/train",
    ),
    "subset_too_large": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "data.train_subset", "100000"],
        "data.train_subset 100000: give 1 to 1438",
    ),
    "eval_only_without_weights": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "--eval-only"],
        "--eval-only evaluates model.weights: give it",
    ),
    "eval_only_weights_missing": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "--eval-only", "model.weights", f"{c}/nope.pth"],
        "model.weights",
    ),
    "eval_only_weights_truncated": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c, model={"name": TEACHER}), "--eval-only"]
        + ["model.weights", _truncated(c, t["weights"])],
        "truncated.pth: RuntimeError: PytorchStreamReader failed",
    ),
    "resume_a_run_of_another_model": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "--resume", "train.output_dir", _run_of_another_model(c, t)],
        "--resume ",
    ),
    "output_dir_blocked": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "train.output_dir", os.path.join(_blocker(c), "run")],
        "train.output_dir",
    ),
    "cuda_without_gpu": lambda c, t: (
        _skip_on_gpu() or TRAIN,
        ["--config-file", _config(c), "train.device", "cuda"],
        "train.device cuda: ",
    ),
    "unknown_flag": lambda c, t: (
        TRAIN,
        ["--config-file", _config(c), "--no-such-flag"],
        "unrecognized arguments: --no-such-flag (see train_cls.py --help)",
    ),
    "extract_without_weights": lambda c, t: (
        EXTRACT,
        _extract(t),
        "model.weights is empty: give the trained teacher's weights",
    ),
    "extract_weights_missing": lambda c, t: (
        EXTRACT,
        _extract(t, "model.weights", f"{c}/nope.pth"),
        "model.weights ",
    ),
    "extract_weights_truncated": lambda c, t: (
        EXTRACT,
        _extract(t, "model.weights", _truncated(c, t["weights"])),
        "truncated.pth: RuntimeError: PytorchStreamReader failed",
    ),
    "extract_weights_other_architecture": lambda c, t: (
        EXTRACT,
        _extract(t, "model.weights", _other_architecture(c)),
        "resnet20.pth does not fit CifarResNet",
    ),
    "extract_output_blocked": lambda c, t: (
        EXTRACT,
        _extract(t, "model.weights", t["weights"], output=os.path.join(_blocker(c), "m.pth")),
        "--output",
    ),
    "extract_output_exists": lambda c, t: (
        EXTRACT,
        _extract(t, "model.weights", t["weights"], output=t["means"]),
        "means.pth exists; pass --overwrite to replace it",
    ),
    "extract_unknown_flag": lambda c, t: (
        EXTRACT,
        ["--task", "classification", "--config-file", t["config"], "--ouput", "x.pth"],
        "(see tools/extract_class_means.py --task classification --help)",
    ),
}


def _snapshot(*folders):
    """Every folder under ``folders``, and every file with its size and modification time (a
    folder's own time changes when a write check probes it)."""
    seen = set()
    for folder in folders:
        for where, dirs, files in os.walk(folder):
            seen.update(os.path.join(where, name) for name in dirs)
            for name in files:
                info = os.stat(os.path.join(where, name))
                seen.add((os.path.join(where, name), info.st_size, info.st_mtime_ns))
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
    assert not os.path.exists(tmp_path / "marker")  # nothing a crafted file carries ran


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """Only UserErrors, and the foreign exceptions of nd_det.errors.FOREIGN_INPUT_ERRORS while
    the input is read, become one line: any other exception leaves the tool as it was raised
    (Python prints its traceback, exit status 1), with no ERROR line."""
    from nd_det.classification import trainer

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug, not a user mistake")

    monkeypatch.setattr(trainer, "build_distiller", broken)
    with pytest.raises(ZeroDivisionError, match="a bug, not a user mistake"):
        run_tool_in_process(TRAIN, ["--config-file", _config(str(tmp_path))])
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
    argvs = [
        ["--config-file", config],
        ["--config-file", config, "distill.teacher.weights", truncated],
    ]
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
    assert f"distill.teacher.weights {truncated}: RuntimeError: " in lines[1][0]
    assert lines[0][0].startswith(
        f"ERROR: process 1 of 2 stopped during set-up: distill.teacher.weights {truncated}: "
    )
    assert "Traceback" not in "".join(lines[0] + lines[1])
    assert _snapshot(case) == before
