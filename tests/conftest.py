"""Suite-wide settings.

- The applications (demo, ablation, benchmark) live in projects/, outside the library; their
  tests import them as the tools/ launchers do, with projects/ on the path.
- Under pytest-xdist (pytest.ini runs one worker per core) every worker and the processes it
  starts use one torch / OpenMP thread: two workers of two threads each on two cores would
  oversubscribe them (OpenMP threads then wait for each other).
- The image-scan cache (nd_det.data.image_scan) of the test datasets lives in a temporary
  folder, not in the user's ~/.cache (subprocesses inherit the setting).
"""

import os
import shutil
import sys
import tempfile

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, inherited by subprocesses
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "projects")
)
_CACHE_HOME = tempfile.mkdtemp(prefix="nd_det_tests_cache_")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_HOME, ignore_errors=True)
