"""Peak memory of one phase (student step, teacher forward, distillation step), each in a fresh
(spawned) process so that no other phase's models or allocator leftovers are counted.  How a
peak is read (CUDA allocator; on CPU the RSS with the kernel's peak counter reset once the models
are built, which psutil cannot do): docs/benchmarks.md.  A training phase reports its peak above
the bare process; the teacher phase the increase over what is held just before the teacher's
forward (its activations and outputs).
"""

import ctypes
import gc
import resource
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

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
        return (
            torch.cuda.memory_allocated(device) if from_here else start,
            "cuda: torch.cuda.max_memory_allocated",
        )
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


def measure_phase(spec: dict) -> dict:
    """Build and run one phase in THIS process (``spec``: see :func:`.run._memory`)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    cfg, device = spec["cfg"], torch.device(spec["cfg"].MODEL.DEVICE)
    torch.backends.cudnn.benchmark = spec["cudnn_benchmark"]
    start = torch.cuda.memory_allocated(device) if device.type == "cuda" else _kib("VmRSS") * 1024
    batch = synthetic_batch(
        spec["batch_size"],
        spec["height"],
        spec["width"],
        cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        seed=spec["seed"],
    )
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


def measure_phase_in_fresh_process(spec: dict) -> dict:
    """:func:`measure_phase` in a new Python process."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure_phase, spec).result()
