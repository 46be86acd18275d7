"""Training/evaluation entry points shared by tools/ (kept thin)."""

from .args import distill_argument_parser
from .setup import setup_cfg, setup_run
from .trainer import DistillTrainer

__all__ = ["distill_argument_parser", "setup_cfg", "setup_run", "DistillTrainer"]
