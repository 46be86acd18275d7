"""What distillation costs on top of training the student (``tools/benchmark.py``; the method
and the figures: docs/benchmarks.md).

- :mod:`.models`: the config, synthetic batches, random-weight models that stay sane;
- :mod:`.measure`: what is timed, interleaved timing, the per-RoI ND reference;
- :mod:`.memory`: peak memory of each phase in a fresh process;
- :mod:`.run`: one run -> the JSON dict, the data loader, the markdown summary;
- :mod:`.cli`: the command line.
"""
