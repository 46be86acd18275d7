"""What distillation costs on top of training the student (``tools/benchmark.py``; the method,
the JSON fields and the figures: docs/benchmarks.md)."""
