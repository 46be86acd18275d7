"""Running a tool's main under detectron2's launcher, with one-line messages for user errors."""
import sys

from detectron2.engine import launch

from ..data import DatasetError
from ..losses import ClassMeansError
from ..modeling import DistillConfigError, TeacherError

__all__ = ["ConfigError", "USER_ERRORS", "launch_main"]


class ConfigError(ValueError):
    """A config file or override is wrong (unknown key, bad value)."""


# Errors caused by the user's input: reported as one "ERROR: ..." line, exit status 2, no traceback.
USER_ERRORS = (ConfigError, DatasetError, ClassMeansError, DistillConfigError, TeacherError,
               FileNotFoundError)


def launch_main(main, args) -> None:
    """``launch(main, ...)`` from the usual detectron2 arguments; user errors end the process
    with one clear line on stderr and exit status 2."""
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except USER_ERRORS as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
