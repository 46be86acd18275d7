"""Where a run reports: console lines, a JSON-lines file and TensorBoard (main process only)."""
import json
import os
import sys
import time
from typing import Dict, Optional

__all__ = ["RunLogger"]


class RunLogger:
    """``metrics.jsonl`` gets one JSON object per record (``{"type": "iter"|"epoch", ...}``);
    TensorBoard event files go to ``<output_dir>/tensorboard``.  On other ranks every method
    does nothing."""

    def __init__(self, output_dir: str, enabled: bool = True, tensorboard: bool = True,
                 stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.jsonl_path = os.path.join(output_dir, "metrics.jsonl")
        self._writer = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard is an optional dependency
                raise ImportError(
                    f"train.tensorboard is true but TensorBoard cannot be imported ({e}); "
                    "pip install tensorboard, or set train.tensorboard: false"
                ) from None
            self._writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def info(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=self.stream, flush=True)

    def record(self, kind: str, values: Dict, step: Optional[int] = None) -> None:
        """Append a JSON record and, for numeric values, TensorBoard scalars ``<kind>/<key>``."""
        if not self.enabled:
            return
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": kind, **values}, sort_keys=True) + "\n")
        if self._writer is not None and step is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
