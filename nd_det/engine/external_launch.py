"""A tool started by torchrun or by SLURM's srun joins their process group instead of spawning.

detectron2's ``launch`` spawns its own workers and reads neither torchrun's variables nor
SLURM's: under ``torchrun --nproc_per_node 2`` every started process would run its own
single-process training into the same OUTPUT_DIR.  Here each started process is one rank:

* torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
  ``MASTER_PORT``;
* srun sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the tasks per node
  (``SLURM_NTASKS_PER_NODE`` or ``SLURM_TASKS_PER_NODE``); the job script exports ``MASTER_ADDR``
  (its first node) and ``MASTER_PORT``.  One task is not a group: ``srun -n 1 ... --num-gpus 8``
  spawns its 8 workers with detectron2's ``launch`` as before.

The local rank picks the CUDA device, one process per device, as in detectron2's workers; NCCL
when CUDA is available, gloo otherwise (detectron2's rule).  ``--num-gpus`` / ``--num-machines``
left at 1 take the launcher's numbers; other values must equal them.  Rank 0 runs the tool's
checks and tells the other ranks the verdict, so a mistake is one ``ERROR:`` line (exit 2) before
anything is written; then every rank exits with status 2 (torchrun itself then prints its
``ChildFailedError`` summary of the exit statuses).  (detectron2's per-worker set-up,
``_distributed_worker``, is private and takes the rank from a machine rank, hence this module;
it calls what detectron2 documents for workers started without ``launch``:
``comm.create_local_process_group``.)
"""

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm

from ..errors import EXIT_USER_ERROR, ConfigError, UserError, input_stage, report_user_error

__all__ = ["ExternalLaunch", "external_launch", "adopt_launch", "run_in_external_group"]

logger = logging.getLogger(__name__)

_TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_SLURM = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


@dataclass(frozen=True)
class ExternalLaunch:
    """This process's place in a group another launcher started."""

    launcher: str  # "torchrun" or "srun"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int  # processes on this machine

    @property
    def num_machines(self) -> int:
        return self.world_size // self.local_world_size

    @property
    def machine_rank(self) -> int:
        return self.rank // self.local_world_size


def _slurm_tasks_per_node(environ: Mapping[str, str], tasks: int) -> int:
    """SLURM_NTASKS_PER_NODE, else the first count of SLURM_(STEP_)TASKS_PER_NODE ("4(x2)" = 4
    on each of 2 nodes), else all tasks on SLURM_NNODES nodes (default 1)."""
    for name in ("SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if environ.get(name):
            return int(re.match(r"\d+", environ[name]).group())
    return max(1, tasks // int(environ.get("SLURM_NNODES", 1)))


def external_launch(environ: Mapping[str, str] = os.environ) -> Optional[ExternalLaunch]:
    """Where torchrun or srun put this process; None when neither started it (or srun started
    one task only).  Their variables are read as detectron2 would read them: a value that is
    not a number raises ValueError."""
    if all(name in environ for name in _TORCHRUN):
        launch = ExternalLaunch("torchrun", *(int(environ[name]) for name in _TORCHRUN))
    elif all(name in environ for name in _SLURM) and int(environ["SLURM_NTASKS"]) > 1:
        rank, world, local = (int(environ[name]) for name in _SLURM)
        launch = ExternalLaunch("srun", rank, world, local, _slurm_tasks_per_node(environ, world))
    else:
        return None
    r, w, lr, lw = launch.rank, launch.world_size, launch.local_rank, launch.local_world_size
    if w % lw or r % lw != lr:  # what detectron2's per-machine process groups assume
        raise ConfigError(
            f"{launch.launcher} started rank {r} of {w} as local rank {lr} of {lw}: nd-det needs "
            "as many processes on every machine, numbered machine by machine (srun "
            "--ntasks-per-node N --distribution block)"
        )
    return launch


def adopt_launch(args, launch: ExternalLaunch) -> None:
    """Set ``--num-gpus`` / ``--num-machines`` / ``--machine-rank`` from the launcher; values
    the user gave (other than 1, 1, 0) must agree with it."""
    given = (int(args.num_gpus), int(args.num_machines), int(args.machine_rank))
    wanted = (launch.local_world_size, launch.num_machines, launch.machine_rank)
    if given != (1, 1, 0) and given != wanted:
        raise ConfigError(
            f"--num-gpus {given[0]} --num-machines {given[1]} --machine-rank {given[2]} "
            f"({given[0] * given[1]} processes), but {launch.launcher} started "
            f"{launch.world_size} processes, {launch.local_world_size} per machine on "
            f"{launch.num_machines} machine(s): leave out --num-gpus / --num-machines / "
            f"--machine-rank (the launcher's numbers are used)"
        )
    args.num_gpus, args.num_machines, args.machine_rank = wanted


def _join(launch: ExternalLaunch) -> None:
    """This process's rank in the launcher's group (env:// rendezvous), the local group, the
    device of its local rank."""
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"{launch.launcher} started {launch.world_size} processes but "
            f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} not set: export "
            "MASTER_ADDR (the job's first node, from scontrol show hostnames) and MASTER_PORT"
        )
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        torch.cuda.set_device(launch.local_rank)
    logger.info(
        "Joining the %s process group: rank %d of %d (local rank %d of %d) at %s:%s",
        launch.launcher,
        launch.rank,
        launch.world_size,
        launch.local_rank,
        launch.local_world_size,
        os.environ["MASTER_ADDR"],
        os.environ["MASTER_PORT"],
    )
    dist.init_process_group(
        backend="nccl" if has_gpu else "gloo",
        init_method="env://",
        world_size=launch.world_size,
        rank=launch.rank,
        timeout=DEFAULT_TIMEOUT,
    )
    comm.create_local_process_group(launch.local_world_size)
    comm.synchronize()


def _exit_with(error: UserError, printing: bool) -> None:
    """End this rank with the user error's status, printed by one rank only.  A rank in the
    group leaves without tearing the group down: gloo's threads can abort the interpreter
    ("terminate called without an active exception", SIGABRT) when a peer has gone first, and
    the launcher stops the other ranks anyway."""
    if printing:
        report_user_error(error)
    if not dist.is_initialized():
        sys.exit(EXIT_USER_ERROR)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_USER_ERROR)


def run_in_external_group(main, args, precheck=None) -> bool:
    """Run ``main(args)`` as one rank of the torchrun / srun group that started this process.
    Returns False when no such launcher started it, or it started one process only (``args``
    then hold its numbers, and the caller launches as usual)."""
    launch = None
    try:
        with input_stage("the torchrun / srun environment"):
            launch = external_launch()
        if launch is not None:
            adopt_launch(args, launch)
        if launch is None or launch.world_size == 1:
            return False
        with input_stage("joining the torchrun / srun process group"):
            _join(launch)
    except UserError as error:  # the same on every rank (same environment and flags)
        _exit_with(error, printing=launch is None or launch.rank == 0)
    main_rank = launch.rank == 0
    verdict = None
    if main_rank and precheck is not None:
        try:
            # rank 0 checks once: no two ranks race on OUTPUT_DIR or downloads
            with input_stage("checking the run before it starts"):
                precheck(args)
        except UserError as error:
            verdict = ("user", " ".join(str(error).split()))
        except BaseException:
            comm.all_gather(("crash", ""))
            raise
    verdict = comm.all_gather(verdict)[0]
    if verdict is not None:
        if verdict[0] == "crash":
            os._exit(1)  # rank 0 prints the traceback
        _exit_with(UserError(verdict[1]), printing=main_rank)
    try:
        main(args)
    except UserError as error:
        _exit_with(error, printing=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return True
