"""Peak memory of one phase (student step, teacher forward, distillation step), each measured in
a fresh process so that no other phase's models or leftovers are counted.

How a peak is measured:

- CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the allocator's cache), with the
  peak statistics reset after the models are built;
- CPU: the resident set size from ``/proc/self/status``.  After the models are built the kernel's
  peak counter (VmHWM) is reset to the current RSS (``/proc/self/clear_refs``, Linux >= 4.0) so
  that transient memory of building (a checkpoint read into a dict before it is copied into the
  model) is not counted; freed heap memory is handed back first (``malloc_trim``).  Where
  clear_refs cannot be written the process's ``ru_maxrss`` is used instead, which includes
  model building (the result says which method was used).

A training-step phase reports its peak above the bare process (imports done, nothing built):
weights, gradients, optimizer state and activations.  The teacher phase reports the increase
over the memory held just before the teacher forward (teacher weights and student already
resident): the teacher's forward activations, its outputs included.
"""
import ctypes
import gc
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from .models import BenchmarkFiles, build_distiller, build_student
from .steps import TeacherDistillForward, TrainStep, raw_images, sample_rois
from .synthetic import synthetic_batch

__all__ = ["MemoryPhase", "measure_phase", "measure_phase_in_fresh_process", "PHASES"]

PHASES = ("student_step", "teacher_distill_forward", "distill_step")
# the teacher phase runs the teacher's box head AND box predictor (what KD/DKD need), the most
# a DistillRCNN step asks of the teacher
TEACHER_PHASE_LOSSES = ["kd", "nd"]


@dataclass
class MemoryPhase:
    """Everything a fresh process needs to rebuild and run one phase (picklable)."""

    phase: str
    cfg: CfgNode
    files: BenchmarkFiles
    batch_size: int
    height: int
    width: int
    precision: str
    iters: int = 2
    losses: List[str] = field(default_factory=list)
    seed: int = 0
    threads: Optional[int] = None
    cudnn_benchmark: bool = False


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not found in /proc/self/status")


def _release_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: freed memory may stay resident, peaks are then upper bounds


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _CpuMeter:
    def __init__(self):
        _release_free_memory()
        self.start = _status_kib("VmRSS") * 1024
        self.method = "cpu: VmHWM - VmRSS (peak reset via /proc/self/clear_refs)"

    def mark(self, from_here: bool) -> None:
        _release_free_memory()
        if from_here:
            self.start = _status_kib("VmRSS") * 1024
        if not _reset_peak_rss():
            self.method = "cpu: ru_maxrss - VmRSS at start (includes model building)"

    def peak(self) -> int:
        if self.method.startswith("cpu: ru_maxrss"):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.start
        return _status_kib("VmHWM") * 1024 - self.start


class _CudaMeter:
    def __init__(self, device):
        self.device = device
        torch.cuda.synchronize(device)
        self.start = torch.cuda.memory_allocated(device)
        self.method = "cuda: torch.cuda.max_memory_allocated"

    def mark(self, from_here: bool) -> None:
        gc.collect()
        torch.cuda.synchronize(self.device)
        if from_here:
            self.start = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self.start


def measure_phase(spec: MemoryPhase) -> Dict[str, object]:
    """Build and run one phase in THIS process; its peak memory in bytes (see module doc)."""
    if spec.phase not in PHASES:
        raise ValueError(f"unknown memory phase {spec.phase!r}; one of {PHASES}")
    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    device = torch.device(spec.cfg.MODEL.DEVICE)
    meter = _CudaMeter(device) if device.type == "cuda" else _CpuMeter()
    num_classes = spec.cfg.MODEL.ROI_HEADS.NUM_CLASSES
    batch = synthetic_batch(spec.batch_size, spec.height, spec.width, num_classes, seed=spec.seed)
    with EventStorage(0):
        if spec.phase == "teacher_distill_forward":
            model = build_distiller(spec.cfg, TEACHER_PHASE_LOSSES, spec.files)
            run = TeacherDistillForward(model, raw_images(model, batch),
                                        sample_rois(model, batch, spec.precision))
        else:
            model = (build_student(spec.cfg, spec.files) if spec.phase == "student_step"
                     else build_distiller(spec.cfg, spec.losses, spec.files))
            run = TrainStep(model, build_optimizer(spec.cfg, model), batch, spec.precision)
        meter.mark(from_here=spec.phase == "teacher_distill_forward")
        for _ in range(spec.iters):
            run()
        peak = meter.peak()
    return {"peak_bytes": int(peak), "method": meter.method, "iters": spec.iters}


def measure_phase_in_fresh_process(spec: MemoryPhase) -> Dict[str, object]:
    """:func:`measure_phase` in a new Python process (``python -m nd_benchmark.memory``)."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # projects/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="nd_det_memory_") as folder:
        spec_path = os.path.join(folder, "phase.pkl")
        out_path = os.path.join(folder, "result.json")
        with open(spec_path, "wb") as f:
            pickle.dump(spec, f)
        proc = subprocess.run(
            [sys.executable, "-m", "nd_benchmark.memory", spec_path, out_path],
            env=env, capture_output=True, text=True, timeout=3600.0,
        )
        if proc.returncode != 0 or not os.path.isfile(out_path):
            raise RuntimeError(
                f"memory phase {spec.phase!r} failed in its process (exit {proc.returncode}):\n"
                + proc.stderr[-3000:]
            )
        with open(out_path, encoding="utf-8") as f:
            return json.load(f)


def _main(argv: List[str]) -> int:
    spec_path, out_path = argv
    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    result = measure_phase(spec)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
