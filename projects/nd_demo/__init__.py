"""The embedded demo (``tools/demo.py``): train a teacher, distil a student, compare, all offline
on the CPU, on real tree-crown images; the steps are :mod:`nd_demo.pipeline`."""
