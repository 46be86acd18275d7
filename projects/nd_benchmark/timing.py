"""Timing with warm-up, interleaving and medians.

Variants are measured round-robin: every round runs each variant once, starting one variant
further along each round, so slow drifts of a shared machine (other jobs, clock changes) hit
all variants alike.  The first ``warmup`` rounds are not recorded.  On CUDA the device is
synchronised before the clock starts and before it stops, so a time covers the whole work
(host launch overhead included), not just its enqueueing.

Two clocks are read around every call: wall-clock time (``time.perf_counter``, what a user
waits for) and the process's CPU time (``time.process_time``, all threads; on a CPU run shared
with other jobs it counts only the work done by this process, so it is steadier than the wall
clock when other processes compete for the cores; on a GPU run it is host time only).
"""
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = ["device_synchronizer", "interleaved_samples", "summarize_seconds", "CLOCKS"]

CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def device_synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for all queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleaved_samples(variants: Dict[str, Callable[[], object]], iters: int, warmup: int,
                        synchronize: Callable[[], None] = lambda: None,
                        clocks: Dict[str, Callable[[], float]] = None,
                        progress: Optional[Callable[[int, int], None]] = None,
                        ) -> Dict[str, Dict[str, List[float]]]:
    """Seconds per call of each variant by each clock (``{clock: {variant: [s, ...]}}``),
    ``iters`` samples each, after ``warmup`` unrecorded rounds.  ``progress(done, total)`` is
    called after every round."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0; got iters={iters}, warmup={warmup}")
    if not variants:
        raise ValueError("nothing to time: no variants given")
    clocks = CLOCKS if clocks is None else clocks
    names = list(variants)
    samples = {c: {n: [] for n in names} for c in clocks}
    for round_index in range(warmup + iters):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            synchronize()
            before = {c: clock() for c, clock in clocks.items()}
            variants[name]()
            synchronize()
            after = {c: clock() for c, clock in clocks.items()}
            if round_index >= warmup:
                for c in clocks:
                    samples[c][name].append(after[c] - before[c])
        if progress is not None:
            progress(round_index + 1, warmup + iters)
    return samples


def summarize_seconds(samples: Sequence[float]) -> Dict[str, object]:
    """Median, min and max in milliseconds, plus every sample."""
    ms = [s * 1000.0 for s in samples]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": [round(x, 3) for x in ms],
    }
