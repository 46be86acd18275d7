"""A quiet log: tools/train_net.py, with Python's default warning settings, prints no warning
of torch, detectron2 or fvcore that a user cannot act on; warnings about the user's own config
still print (nd_det/utils/import_warnings.py holds the filters)."""

import os
import subprocess
import sys

from .test_training_reliability import CONFIG, TRAIN_NET, _setup


def test_train_net_with_default_warnings_prints_no_dependency_warning(tmp_path):
    args = _setup(tmp_path, tmp_path / "out", 2, ["MODEL.BACKBONE.FREEZE_AT", "5"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's defaults
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Evaluation results for bbox" in proc.stdout  # training and evaluation both ran
    noisy = [line for line in proc.stderr.splitlines() if "warn" in line.lower()]
    assert noisy == [], "\n".join(noisy)
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    # a warning about the user's own config still prints (detectron2's, in the run's log)
    assert "SOLVER.STEPS contains values larger than SOLVER.MAX_ITER" in proc.stdout
