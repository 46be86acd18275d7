"""Peak memory of one phase (student step, teacher forward, distillation step), each in a fresh
process so that no other phase's models or allocator leftovers are counted.

CUDA: ``torch.cuda.max_memory_allocated`` (tensors, not the allocator's cache), reset once the
models are built.  CPU: the resident set size from ``/proc/self/status``; once the models are
built, freed heap is handed back (``malloc_trim``) and the kernel's peak counter VmHWM is reset
to the current RSS (``/proc/self/clear_refs``), so that building (a checkpoint read into a dict)
is not counted; where clear_refs cannot be written, ``ru_maxrss`` (building included) is used
and the result says so.  (psutil reads the same counters and cannot reset the peak.)

A training phase reports its peak above the bare process; the teacher phase the increase over
what is held just before the teacher's forward (its activations and outputs).
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
from typing import Dict

import torch
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from .measure import TrainStep, student_step_inputs, teacher_distill_forward
from .models import build_distiller, synthetic_batch

# the teacher phase runs the box head AND the predictor (KD/DKD): the most a step asks of it
TEACHER_PHASE_LOSSES = ["kd", "nd"]


def _kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _settle(device: torch.device, from_here: bool, start: int):
    """Free what can be freed, reset the peak counter; returns (start, method)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return (torch.cuda.memory_allocated(device) if from_here else start,
                "cuda: torch.cuda.max_memory_allocated")
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: freed memory may stay resident, peaks are then upper bounds
    start = _kib("VmRSS") * 1024 if from_here else start
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return start, "cpu: VmHWM - VmRSS (peak reset via /proc/self/clear_refs)"
    except OSError:
        return start, "cpu: ru_maxrss - VmRSS at start (includes model building)"


def _peak(device: torch.device, method: str) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    if "ru_maxrss" in method:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return _kib("VmHWM") * 1024


def measure_phase(spec: Dict) -> Dict:
    """Build and run one phase in THIS process (``spec``: see :func:`run.memory_phases`)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    cfg, device = spec["cfg"], torch.device(spec["cfg"].MODEL.DEVICE)
    torch.backends.cudnn.benchmark = spec["cudnn_benchmark"]
    start = torch.cuda.memory_allocated(device) if device.type == "cuda" else _kib("VmRSS") * 1024
    batch = synthetic_batch(spec["batch_size"], spec["height"], spec["width"],
                            cfg.MODEL.ROI_HEADS.NUM_CLASSES, seed=spec["seed"])
    teacher_phase = spec["phase"] == "teacher_distill_forward"
    losses = TEACHER_PHASE_LOSSES if teacher_phase else spec["losses"]
    model = build_distiller(cfg, losses, spec["student_file"])
    with EventStorage(0):
        if teacher_phase:
            _, sampled, _ = student_step_inputs(model, batch, spec["precision"])
            run = teacher_distill_forward(model, batch, sampled)
        else:
            run = TrainStep(model, build_optimizer(cfg, model), batch, spec["precision"])
        start, method = _settle(device, teacher_phase, start)
        for _ in range(spec["iters"]):
            run()
        return {"peak_bytes": int(_peak(device, method) - start), "method": method}


def measure_phase_in_fresh_process(spec: Dict) -> Dict:
    """:func:`measure_phase` in a new Python process (``python -m nd_benchmark.memory``)."""
    env = dict(os.environ)
    projects = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (projects, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="nd_det_memory_") as folder:
        spec_path, out_path = os.path.join(folder, "phase.pkl"), os.path.join(folder, "out.json")
        with open(spec_path, "wb") as f:
            pickle.dump(spec, f)
        proc = subprocess.run([sys.executable, "-m", "nd_benchmark.memory", spec_path, out_path],
                              env=env, capture_output=True, text=True, timeout=3600.0)
        if proc.returncode != 0 or not os.path.isfile(out_path):
            raise RuntimeError(f"memory phase {spec['phase']!r} failed in its process (exit "
                               f"{proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(out_path, encoding="utf-8") as f:
            return json.load(f)


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as spec_file:
        result = measure_phase(pickle.load(spec_file))
    with open(sys.argv[2], "w", encoding="utf-8") as out_file:
        json.dump(result, out_file)
