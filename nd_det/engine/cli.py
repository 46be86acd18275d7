"""Running a tool's main under detectron2's launcher, with one-line messages for user errors."""
import sys

from detectron2.engine import launch

from ..config import ConfigError
from ..data import DatasetError
from ..losses import ClassMeansError
from ..modeling import DistillConfigError, TeacherError
from .checkpoint import NonFiniteWeightsError
from .finite_losses import NonFiniteLossError

__all__ = ["ConfigError", "USER_ERRORS", "launch_main"]


# Errors caused by the user's input or set-up (including a diverging run): reported as one
# "ERROR: ..." line, exit status 2, no traceback.
USER_ERRORS = (ConfigError, DatasetError, ClassMeansError, DistillConfigError, TeacherError,
               FileNotFoundError, NonFiniteLossError, NonFiniteWeightsError)


def _user_error_line(worker_message: str):
    """The "<Error>: message" line of a user error raised in a spawned worker, if any."""
    names = {f"{e.__module__}.{e.__qualname__}" for e in USER_ERRORS} | {
        e.__qualname__ for e in USER_ERRORS}
    for line in reversed(worker_message.strip().splitlines()):
        head, sep, rest = line.partition(": ")
        if sep and head.strip() in names:
            return rest.strip()
    return None


def launch_main(main, args, precheck=None) -> None:
    """``launch(main, ...)`` from the usual detectron2 arguments.

    ``precheck(args)``, if given, runs first in this process (e.g. building the config), so that
    set-up mistakes are reported before any worker starts.  User errors, here or in a worker,
    end the process with one ``ERROR: ...`` line on stderr and exit status 2.
    """
    try:
        if precheck is not None:
            precheck(args)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except USER_ERRORS as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - only user errors from workers are rewritten
        from torch.multiprocessing import ProcessRaisedException

        line = _user_error_line(str(e)) if isinstance(e, ProcessRaisedException) else None
        if line is None:
            raise
        _fail(line)


def _fail(message: str) -> None:
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
