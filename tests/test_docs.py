"""Every Python code block of README.md and docs/*.md runs, as written, in a folder laid out as
the docs assume (``configs/``, an export at ``deploy/R50_from_R101_nd``, the demo's exported
student at ``output/demo/distilled_student_export``, an ``image.jpg``), against the suite's small
models: the blocks of one file share one namespace, in order (Sybil).  After a file's blocks
ran, what they computed is checked against the library (:data:`CHECKS`).

A block that needs what the suite lacks (COCO, model-zoo weights, a GPU, a LazyConfig run's
export) is marked in its Markdown with ``<!-- skip: next "needs ...: <why>" -->`` (Sybil's skip;
the file's other blocks still run), its imports and config lines in a block of their own."""

import contextlib
import glob
import io
import os
import re
import unittest
from pathlib import Path

import pytest
import torch
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

from nd_det.export.contract import deploy_image, load_exported_student, student_detections

from .helpers.run_tool import run_tool_in_process
from .helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .helpers.tiny_distill import REPO
from .helpers.toy_export import shared_export, write_image

DOCS = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(f"{REPO}/docs/*.md"))
SYBIL = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The folder the docs' blocks run in, as the repository root with a user's files."""
    root = tmp_path_factory.mktemp("docs")
    os.symlink(os.path.join(REPO, "configs"), root / "configs")
    exports = {name: shared_export(tmp_path_factory, name) for name in ("r50", "demo")}
    (root / "deploy").mkdir()
    os.symlink(exports["r50"].deploy, root / "deploy" / "R50_from_R101_nd")
    (root / "output" / "demo").mkdir(parents=True)
    os.symlink(exports["demo"].deploy, root / "output" / "demo" / "distilled_student_export")
    write_image(root / "image.jpg", 150, 200, seed=5)
    return root, exports


def check_deploy(namespace, root, exports):
    """deploy.md: the torch.export / ONNX block's input is the tool's own, for the BGR export it
    ran on and for the demo's RGB student; its detections are the student's."""
    for name, export in exports.items():
        cfg, model = load_exported_student(export.deploy)
        tensor, scale = namespace["deploy_input"](
            "image.jpg", os.path.join(export.deploy, "model.pt2.json")
        )
        assert torch.equal(tensor, deploy_image(cfg, "image.jpg")), name
        if name == "r50":  # the block's own run: the ONNX file's boxes, scaled back
            assert cfg.INPUT.FORMAT == "BGR"
            with torch.no_grad():
                boxes, scores, _ = student_detections(model, tensor)
            assert len(boxes) > 0
            expected = boxes * torch.tensor([scale[0], scale[1]] * 2)
            torch.testing.assert_close(
                torch.from_numpy(namespace["boxes"]), expected, atol=2e-3, rtol=1e-4
            )
            torch.testing.assert_close(
                torch.from_numpy(namespace["scores"]), scores, atol=1e-3, rtol=0
            )
        else:
            assert cfg.INPUT.FORMAT == "RGB" and tuple(tensor.shape[1:]) == (300, 400)
    assert type(namespace["predictor"].model.backbone.bottom_up).__module__.startswith("nd_det")


def check_readme(namespace, root, exports):
    assert type(namespace["model"]).__name__ == "DistillRCNN"


def check_classification(namespace, root, exports):
    from nd_det.classification.models.registry import CLASSIFIER_REGISTRY

    assert "my_net" in CLASSIFIER_REGISTRY
    CLASSIFIER_REGISTRY._obj_map.pop("my_net")  # the block registered it in this process


def check_lazyconfig(namespace, root, exports):
    model = namespace["model"]  # a LazyConfig node: written, not built
    assert model.distill_terms.losses == ["reviewkd", "nd"]
    assert model.teacher.max_input_size == 1333


CHECKS = {
    "README.md": check_readme,
    "docs/lazyconfig.md": check_lazyconfig,
    "docs/deploy.md": check_deploy,
    "docs/classification.md": check_classification,
}


@pytest.mark.parametrize("doc", DOCS)
def test_python_blocks_run(doc, workspace, monkeypatch):
    root, exports = workspace
    monkeypatch.chdir(root)
    document = SYBIL.parse(Path(REPO, doc))
    examples = list(document)
    for example in examples:
        try:
            example.evaluate()
        except unittest.SkipTest:  # marked in the Markdown, with what it needs
            continue
    if doc in CHECKS:
        CHECKS[doc](document.namespace, root, exports)
    else:
        assert not examples, f"{doc} has Python blocks: check what they compute in CHECKS"


def _commands():
    """(doc, tool, flags) of every ``tools/<tool>.py ...`` command in a code block of the docs
    (continuation lines joined; up to a ``#``, ``;``, ``&&`` or ``|``)."""
    found = []
    for doc in DOCS:
        text = Path(REPO, doc).read_text(encoding="utf-8")
        for block in re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", text, flags=re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                for tool, rest in re.findall(r"tools/(\w+)\.py([^#;|&]*)", line):
                    flags = sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)))
                    found.append((doc, tool, flags, "--task classification" in rest))
    return found


def _tool_flags(tool, classification):
    out = io.StringIO()
    argv = ["--task", "classification", "--help"] if classification else ["--help"]
    with contextlib.redirect_stdout(out):
        code, err = run_tool_in_process(os.path.join(REPO, "tools", f"{tool}.py"), argv)
    assert code == 0, err
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out.getvalue()))


def test_documented_commands_name_real_tools_and_flags():
    """Issue 35: every doc command runs as written; here at least each tool it names exists and
    takes every flag it gives (a removed tool or a renamed flag fails here, not on a user)."""
    commands = _commands()
    assert len(commands) > 30
    tools = {tool for _, tool, _, _ in commands}
    missing = sorted(t for t in tools if not os.path.isfile(os.path.join(REPO, "tools", f"{t}.py")))
    assert missing == []
    known = {}
    wrong = []
    for doc, tool, flags, classification in commands:
        if (tool, classification) not in known:
            known[tool, classification] = _tool_flags(tool, classification)
        wrong += [
            f"{doc}: tools/{tool}.py {f}" for f in flags if f not in known[tool, classification]
        ]
    assert wrong == []
