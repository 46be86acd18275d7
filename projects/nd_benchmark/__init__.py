"""Benchmarks of the distillation step (``tools/benchmark.py`` is the command line).

- :mod:`.runner`: one run, all measurements -> a dict (the JSON file's content);
- :mod:`.models`: the student and the DistillRCNN variants with shared random weights;
- :mod:`.synthetic`: synthetic batches, FrozenBatchNorm calibration of random models;
- :mod:`.steps`: what is timed; :mod:`.timing`: interleaved medians;
- :mod:`.memory`: per-phase peak memory in fresh processes;
- :mod:`.nd_reference`: the per-RoI loop ND reference;
- :mod:`.sync_ops`, :mod:`.dtype_casts`: host-device syncs and dtype changes in a code path;
- :mod:`.dataloader`: data-loader throughput; :mod:`.report`: JSON + markdown.
"""
from .runner import DEFAULT_LOSS_SETS, SCHEMA, BenchmarkSettings, run_benchmark

__all__ = ["BenchmarkSettings", "run_benchmark", "SCHEMA", "DEFAULT_LOSS_SETS"]
