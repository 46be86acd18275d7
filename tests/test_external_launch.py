"""torchrun and srun: a tool they start joins their process group (one run on world size 2, the
ranks' weights bit-identical, one set of files) instead of spawning its own; their numbers against
--num-gpus / --num-machines; a mistake is one ERROR line from rank 0, exit 2, nothing written."""

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from nd_det.engine.external_launch import ExternalLaunch, adopt_launch, external_launch
from nd_det.errors import ConfigError

from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_distill import REPO
from .test_training_reliability import CONFIG, ENV, _setup

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
HELPER = ["-m", "tests.helpers.ddp_train"]
TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra):
    """The test environment without any launcher variable of the machine running the tests."""
    env = {
        k: v
        for k, v in ENV.items()
        if not k.startswith("SLURM_") and k not in (*TORCHRUN_ENV, "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(extra)
    return env


def _args(num_gpus=1, num_machines=1, machine_rank=0):
    return SimpleNamespace(num_gpus=num_gpus, num_machines=num_machines, machine_rank=machine_rank)


def test_launcher_environments_are_read_and_checked():
    torchrun = external_launch({**TORCHRUN_ENV, "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert torchrun == ExternalLaunch("torchrun", 3, 4, 1, 2)
    assert (torchrun.num_machines, torchrun.machine_rank) == (2, 1)
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_TASKS_PER_NODE": "4(x2)",
    }
    assert external_launch(slurm) == ExternalLaunch("srun", 5, 8, 1, 4)
    assert external_launch(
        {**slurm, "SLURM_NTASKS_PER_NODE": "8", "SLURM_PROCID": "1"}
    ) == ExternalLaunch("srun", 1, 8, 1, 8)
    # one task is not a group: detectron2's launch spawns --num-gpus workers as before
    assert (
        external_launch({**slurm, "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
        is None
    )
    assert external_launch({}) is None
    layout = "needs as many processes on every machine, numbered machine by machine"
    with pytest.raises(ConfigError, match=layout):  # 4 tasks on one node, 3 on the other
        external_launch({**slurm, "SLURM_NTASKS": "7", "SLURM_TASKS_PER_NODE": "4,3"})
    with pytest.raises(ConfigError, match=layout):
        external_launch({**slurm, "SLURM_PROCID": "4"})  # cyclic: rank 4 as local rank 1
    with pytest.raises(ValueError, match="invalid literal for int"):  # input_stage's one line
        external_launch({**TORCHRUN_ENV, "RANK": "zero"})


def test_num_gpus_left_at_one_follows_the_launcher_and_a_conflict_is_refused():
    launch = ExternalLaunch("torchrun", 3, 4, 1, 2)
    args = _args()
    adopt_launch(args, launch)
    assert (args.num_gpus, args.num_machines, args.machine_rank) == (2, 2, 1)
    agreeing = _args(2, 2, 1)
    adopt_launch(agreeing, launch)
    with pytest.raises(
        ConfigError,
        match=r"--num-gpus 4 --num-machines 1 --machine-rank 0 \(4 "
        r"processes\), but torchrun started 4 processes, 2 per machine",
    ):
        adopt_launch(_args(4), launch)


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_torchrun_world_size_conflicting_with_num_gpus_is_one_line(
    tmp_path, monkeypatch, rank, printed
):
    for key, value in {**TORCHRUN_ENV, "RANK": rank, "LOCAL_RANK": rank}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    code, stderr = run_tool_in_process(
        TRAIN_NET, ["--config-file", CONFIG, "--num-gpus", "4", "OUTPUT_DIR", str(out)]
    )
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == int(printed), stderr[-2000:]  # rank 0 speaks for the group
    if printed:
        assert (
            "--num-gpus 4 --num-machines 1 --machine-rank 0 (4 processes), but torchrun "
            "started 2 processes, 2 per machine on 1 machine(s)"
        ) in errors[0]
    assert "Traceback" not in stderr
    assert not out.exists()


def test_srun_without_master_address_is_one_line(tmp_path, monkeypatch):
    for key, value in {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(key, value)
    for key in ("MASTER_ADDR", "MASTER_PORT", *TORCHRUN_ENV):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "out"
    code, stderr = run_tool_in_process(TRAIN_NET, ["--config-file", CONFIG, "OUTPUT_DIR", str(out)])
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert (
        len(errors) == 1
        and "srun started 2 processes but MASTER_ADDR and MASTER_PORT are "
        "not set: export MASTER_ADDR"
        in errors[0]
    ), stderr[-2000:]
    assert not out.exists()


def _assert_one_run_on_two_ranks(log, out, dump):
    assert "World size: 2" in log and "World size: 1" not in log, log[-3000:]
    rank0 = torch.load(dump / "rank0.pth", weights_only=True)
    rank1 = torch.load(dump / "rank1.pth", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # one set of files: rank 0 writes the checkpoint and the config, one metrics line per step
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth")) == ["model_final.pth"]
    final = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(final[k], rank0[k]) for k in rank0)
    lines = (out / "metrics.json").read_text().splitlines()  # written once, at the last step
    assert [json.loads(line)["iteration"] for line in lines] == [1]
    assert sorted(n for n in os.listdir(out) if n.startswith("config")) == ["config.yaml"]


def test_torchrun_trains_one_run_on_world_size_two(tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    out = tmp_path / "run"
    args = _setup(tmp_path, out, 2, ["DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "100"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # its rendezvous port from the OS: no race with other tests
            *HELPER,
            "--dump",
            str(dump),
            "--config-file",
            CONFIG,
            *args,
        ],
        cwd=REPO,
        env={k: v for k, v in _clean_env().items() if k != "PYTHONWARNINGS"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    _assert_one_run_on_two_ranks(log, out, dump)
    # the ReviewKD BatchNorms synchronise pairs of ranks: no deprecated torch call of ours warns
    # (issue 35.8: 8 of 10 FutureWarning lines came from nd_det/losses/group_batch_norm.py)
    assert [line for line in log.splitlines() if "Warning" in line and "nd_det" in line] == []


def _srun(tmp_path, argv, port):
    """Two processes with the variables srun gives two tasks on one node; (exit status, stdout,
    stderr) of each (written to files: a full pipe would stall a rank inside a collective)."""
    procs = []
    for rank in (0, 1):
        env = _clean_env(
            SLURM_PROCID=str(rank),
            SLURM_NTASKS="2",
            SLURM_LOCALID=str(rank),
            SLURM_NNODES="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        with (
            open(tmp_path / f"out{rank}.txt", "w") as out,
            open(tmp_path / f"err{rank}.txt", "w") as err,
        ):
            procs.append(
                subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=out, stderr=err)
            )
    codes = [p.wait(timeout=300) for p in procs]
    return [
        (code, (tmp_path / f"out{r}.txt").read_text(), (tmp_path / f"err{r}.txt").read_text())
        for r, code in enumerate(codes)
    ]


def test_simulated_srun_trains_one_run_on_world_size_two(tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    out = tmp_path / "run"
    args = _setup(tmp_path, out, 2, ["DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "100"])
    results = _srun(
        tmp_path, [*HELPER, "--dump", str(dump), "--config-file", CONFIG, *args], _free_port()
    )
    log = "".join(o + e for _, o, e in results)
    assert [code for code, _, _ in results] == [0, 0], log[-4000:]
    _assert_one_run_on_two_ranks(log, out, dump)


def test_simulated_srun_mistake_is_one_line_from_rank_zero(tmp_path):
    out = tmp_path / "run"
    args = _setup(tmp_path, out, 2, ["MODEL.DISTILL.LOSSES", "['fitnet']"])
    results = _srun(tmp_path, [TRAIN_NET, "--config-file", CONFIG, *args], _free_port())
    assert [code for code, _, _ in results] == [2, 2], results[0][2][-3000:]
    errors = [
        [line for line in err.splitlines() if line.startswith("ERROR: ")] for _, _, err in results
    ]
    assert len(errors[0]) == 1 and not errors[1], errors
    assert "MODEL.DISTILL.LOSSES has unknown name(s) ['fitnet']" in errors[0][0]
    assert not out.exists()


def test_torchrun_class_mean_extraction_equals_one_process(tmp_path):
    from nd_det.class_means import load_class_means
    from nd_det.class_means.detection import extract_class_means

    from .helpers.tiny_distill import config_path, tiny_distill_opts
    from .test_class_means_extraction import TOOL, _cfg, _dataset, _dataset_opts

    dataset, json_path, images = _dataset(tmp_path, name="torchrun_means")
    one = extract_class_means(_cfg(tmp_path, dataset), output=str(tmp_path / "one.pth"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # its rendezvous port from the OS: no race with other tests
            TOOL,
            "--config-file",
            config_path("R50_from_R101_nd.yaml"),
            "--dataset",
            dataset,
            str(json_path),
            str(images),
            "--output",
            str(tmp_path / "two.pth"),
            *tiny_distill_opts(str(tmp_path)),
            *_dataset_opts(dataset),
        ],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "from 5 of 5 images" in log and "(3 on this rank)" in log  # rank 0's shard of 2
    two = load_class_means(str(tmp_path / "two.pth"), num_classes=3, dim=64)
    assert torch.equal(one.counts, two.counts)
    torch.testing.assert_close(one.means, two.means, rtol=1e-5, atol=1e-5)


def test_torchrun_user_error_is_one_line_and_nothing_else_of_ours(tmp_path):
    """Issue 35.8: under torchrun a mistake is rank 0's one ERROR line, every rank exits with 2,
    and nothing else comes from nd-det (no traceback, no abort of a rank leaving its gloo group,
    no FutureWarning: warnings are not silenced here); what follows is torchrun's own report of
    the exit statuses (ChildFailedError, docs/reliability.md)."""
    out = tmp_path / "run"
    args = _setup(tmp_path, out, 2, ["MODEL.DISTILL.LOSSES", "['fitnet']"])
    env = {k: v for k, v in _clean_env().items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # its rendezvous port from the OS: no race with other tests
            TRAIN_NET,
            "--config-file",
            CONFIG,
            *args,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    errors = [line for line in log.splitlines() if line.startswith("ERROR: ")]
    assert proc.returncode == 1 and len(errors) == 1, log[-4000:]
    assert "MODEL.DISTILL.LOSSES has unknown name(s) ['fitnet']" in errors[0]
    ours = [line for line in log.splitlines() if "nd_det" in line or f'File "{REPO}/tools' in line]
    assert ours == [], log[-4000:]  # torchrun names the script once: "<script> FAILED"
    assert "Warning" not in log and "terminate called" not in log, log[-4000:]
    assert "ChildFailedError" in log and "exitcode  : 2" in log and "exitcode  : -6" not in log
    assert not out.exists()
