"""The classification package and the distillation terms it shares with detection need no
detectron2: their sources never import it, and tools/train_cls.py trains in a child interpreter
where detectron2 cannot be imported."""

import glob
import os
import re
import subprocess
import sys
import textwrap

from .helpers import write_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = textwrap.dedent(
    """
    import importlib.abc
    import runpy
    import sys


    class BlockDetectron2(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "detectron2" or name.startswith("detectron2."):
                raise ModuleNotFoundError(f"blocked for this test: {name}", name=name)
            return None


    sys.meta_path.insert(0, BlockDetectron2())
    try:
        import detectron2  # noqa: F401
    except ModuleNotFoundError as e:
        assert "blocked for this test" in str(e)
    else:
        raise SystemExit("the blocker did not stop `import detectron2`")

    tool, config = sys.argv[1], sys.argv[2]
    sys.argv = [tool, "--config-file", config]
    try:
        runpy.run_path(tool, run_name="__main__")
    except SystemExit as done:  # the tool ends with sys.exit(status)
        assert done.code == 0, done.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "detectron2")
    assert not loaded, loaded
    assert "nd_det.distill.nd" in sys.modules  # the terms of both tasks
    print("TRAINED-WITHOUT-DETECTRON2")
    """
)


def test_sources_never_import_detectron2():
    files = []
    for package in ("classification", "distill", "losses"):
        files += glob.glob(os.path.join(REPO, "nd_det", package, "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(REPO, "nd_det", "utils", "*.py"))
    files += [os.path.join(REPO, "tools", n) for n in ("train_cls.py", "extract_class_means.py")]
    files += [
        os.path.join(REPO, "nd_det", "class_means", n)
        for n in ("__init__.py", "table.py", "classification.py", "extract_cli.py")
    ]
    assert len(files) > 20
    pattern = re.compile(r"^\s*(import|from)\s+detectron2", re.MULTILINE)
    offenders = [f for f in files if pattern.search(open(f, encoding="utf-8").read())]
    assert not offenders


def test_train_cls_runs_without_detectron2(tmp_path):
    cfg = write_yaml(
        tmp_path / "cfg.yaml",
        {
            "model": {"name": "resnet8"},
            "data": {"name": "digits", "train_subset": 64, "test_subset": 20, "num_workers": 0},
            "solver": {"epochs": 1, "batch_size": 32},
            "train": {"output_dir": str(tmp_path / "out"), "device": "cpu", "tensorboard": False},
        },
    )
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, os.path.join(REPO, "tools", "train_cls.py"), cfg],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TRAINED-WITHOUT-DETECTRON2" in proc.stdout
    assert "epoch 1/1: test top-1" in proc.stdout
    assert os.path.isfile(tmp_path / "out" / "model_final.pth")
