"""Suite-wide settings.

- The applications (demo, ablation, benchmark) live in projects/, outside the library; their
  tests import them as the tools/ launchers do, with projects/ on the path.
- The image-scan cache (nd_det.data.image_scan) of the test datasets lives in a temporary
  folder, not in the user's ~/.cache (subprocesses inherit the setting).
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "projects"))
_CACHE_HOME = tempfile.mkdtemp(prefix="nd_det_tests_cache_")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_HOME, ignore_errors=True)
