"""Where a run reports: console lines, a JSON-lines file and TensorBoard (main process only)."""

import json
import os
import sys
import time
from typing import Optional

from ..errors import MissingDependencyError
from ..utils.values import is_number

__all__ = ["RunLogger"]


class RunLogger:
    """``metrics.jsonl`` gets one JSON object per record (``{"type": "iter"|"epoch", ...}``);
    TensorBoard event files go to ``<output_dir>/tensorboard``.  On other ranks every method
    does nothing.  Nothing is written (not even the folder) before the first record, so a run
    that stops during set-up leaves its output folder as it was."""

    def __init__(
        self, output_dir: str, enabled: bool = True, tensorboard: bool = True, stream=None
    ):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.output_dir = output_dir
        self.jsonl_path = os.path.join(output_dir, "metrics.jsonl")
        self._writer = None
        self._writer_class = None
        self._opened = False
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard is an optional dependency
                raise MissingDependencyError(
                    f"train.tensorboard is true but TensorBoard cannot be imported ({e}); "
                    "pip install tensorboard, or set train.tensorboard: false"
                ) from None
            self._writer_class = SummaryWriter

    def start(self) -> None:
        """Create the output folder and the TensorBoard writer (done by the first record too)."""
        if not self._opened:
            os.makedirs(self.output_dir, exist_ok=True)
            if self._writer_class is not None:
                self._writer = self._writer_class(os.path.join(self.output_dir, "tensorboard"))
            self._opened = True

    def info(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=self.stream, flush=True)

    def record(self, kind: str, values: dict, step: Optional[int] = None) -> None:
        """Append a JSON record and, for numeric values, TensorBoard scalars ``<kind>/<key>``."""
        if not self.enabled:
            return
        self.start()
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": kind, **values}, sort_keys=True) + "\n")
        if self._writer is not None and step is not None:
            for key, value in values.items():
                if is_number(value):
                    self._writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
