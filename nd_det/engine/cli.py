"""Running a detection tool's main under detectron2's launcher, with one-line messages for
user errors (in this process or in any worker), exit status 2.

A worker that hits a :class:`~nd_det.errors.UserError` writes its message into a folder the
parent created (one file per rank) and exits with status 2; the parent, told by torch that a
worker exited with 2, prints the distinct messages.  Nothing is recognised by parsing
traceback text.
"""

import os
import sys
import tempfile
from pathlib import Path

from detectron2.engine import default_argument_parser, launch
from detectron2.utils import comm
from torch.multiprocessing import ProcessExitedException

from ..errors import EXIT_USER_ERROR, UserError, input_stage, report_user_error
from .external_launch import run_in_external_group
from .preemption import EXIT_PREEMPTED, PREEMPTION_SIGNALS, forward_signals

__all__ = ["launch_main", "PRECHECK_STAGE"]

# how a foreign error of the checks before the run is named (nd_det.errors.input_stage)
PRECHECK_STAGE = "checking the run before it starts"

_MESSAGES_ENV = "ND_DET_WORKER_ERRORS"
_D2_DIST_URL = default_argument_parser().get_default("dist_url")


def _worker(main, args):
    """Runs ``main(args)`` in a worker process; a user error ends it with status 2."""
    try:
        return main(args)
    except UserError as error:
        folder = os.environ.get(_MESSAGES_ENV)
        if not folder:
            raise
        path = Path(folder, f"rank{comm.get_rank()}.txt")
        path.write_text(" ".join(str(error).split()), encoding="utf-8")
        sys.exit(EXIT_USER_ERROR)


def _worker_messages(folder: str):
    """The distinct messages, in rank order."""
    lines = (path.read_text(encoding="utf-8").strip() for path in sorted(Path(folder).iterdir()))
    return list(dict.fromkeys(line for line in lines if line))


def launch_main(main, args, precheck=None) -> None:
    """``launch(main, ...)`` from the usual detectron2 arguments.

    ``precheck(args)``, if given, runs first in this process, so that set-up mistakes are
    reported before any worker starts or anything is written.  User errors, here or in a
    worker, end the process with one ``ERROR: ...`` line per distinct message and status 2.
    Started by torchrun or srun, the process joins their group instead (external_launch.py).
    """
    if run_in_external_group(main, args, precheck):
        return
    try:
        if precheck is not None:
            with input_stage(PRECHECK_STAGE):
                precheck(args)
        world_size = args.num_gpus * args.num_machines
        # detectron2's default URL is one port per user: two runs of one user on one machine
        # (tests side by side, two students) would collide; "auto" takes a free port instead
        one_machine_default = args.num_machines == 1 and args.dist_url == _D2_DIST_URL
        dist_url = "auto" if one_machine_default else args.dist_url
        if world_size == 1:  # no worker processes: a user error surfaces here directly
            launch(
                main,
                1,
                num_machines=1,
                machine_rank=args.machine_rank,
                dist_url=dist_url,
                args=(args,),
            )
            return
        with tempfile.TemporaryDirectory(prefix="nd_det_errors_") as folder:
            os.environ[_MESSAGES_ENV] = folder
            try:
                with forward_signals():  # a preemption reaches the workers, which train
                    launch(
                        _worker,
                        args.num_gpus,
                        num_machines=args.num_machines,
                        machine_rank=args.machine_rank,
                        dist_url=dist_url,
                        args=(main, args),
                    )
            except ProcessExitedException as e:
                if e.exit_code == EXIT_PREEMPTED or -e.exit_code in PREEMPTION_SIGNALS:
                    sys.exit(EXIT_PREEMPTED)  # the workers saved what there was (preemption.py)
                lines = _worker_messages(folder)
                if e.exit_code != EXIT_USER_ERROR or not lines:
                    raise
                for line in lines:
                    report_user_error(UserError(line))
                sys.exit(EXIT_USER_ERROR)
            finally:
                os.environ.pop(_MESSAGES_ENV, None)
    except UserError as error:
        sys.exit(report_user_error(error))
