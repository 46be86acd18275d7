"""Issue 35.1: no tool replaces an output of value without --overwrite, and with it the tool says
what it replaces.  The finding: README's import of the paper's table to the config's
MODEL.DISTILL.CLASS_MEANS, followed by an extraction on one's own data with the same config,
replaced the table without a word."""

import os

from nd_det.class_means import load_class_means
from nd_det.utils.paths import check_overwrite

from .helpers.run_tool import run_tool_in_process
from .helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .helpers.tiny_distill import REPO, config_path, tiny_distill_cfg, tiny_distill_opts
from .test_class_means_extraction import _dataset, _dataset_opts

EXTRACT = os.path.join(REPO, "tools", "extract_class_means.py")


def test_extraction_refuses_to_replace_the_configs_table_without_overwrite(tmp_path, capsys):
    dataset, json_path, images = _dataset(tmp_path, name="overwrite_means")
    cfg = tiny_distill_cfg(str(tmp_path), extra_opts=_dataset_opts(dataset))  # writes a table
    table = cfg.MODEL.DISTILL.CLASS_MEANS
    before = open(table, "rb").read()
    argv = [
        "--config-file",
        config_path("R50_from_R101_nd.yaml"),
        "--dataset",
        dataset,
        str(json_path),
        str(images),
        *tiny_distill_opts(str(tmp_path)),
        *_dataset_opts(dataset),
    ]
    code, err = run_tool_in_process(EXTRACT, argv)
    assert code == 2 and err.strip().splitlines() == [
        f"ERROR: MODEL.DISTILL.CLASS_MEANS (the default --output) {table} exists; pass "
        "--overwrite to replace it, or choose another path"
    ], err
    assert open(table, "rb").read() == before

    capsys.readouterr()
    code, err = run_tool_in_process(EXTRACT, argv + ["--overwrite"])  # a flag after the overrides
    assert code == 0, err[-3000:]
    assert (
        f"--overwrite: replacing MODEL.DISTILL.CLASS_MEANS (the default --output) {table}"
        in capsys.readouterr().out
    )
    replaced = load_class_means(table)
    assert replaced.metadata["protocol"] == "reference" and replaced.metadata["num_images"] == 5


def test_check_overwrite_refuses_or_names_what_it_replaces(tmp_path, capsys):
    check_overwrite(str(tmp_path / "new.pth"), "--output", False)  # nothing there: silent
    check_overwrite(str(tmp_path), "--output", False)  # an empty folder: silent
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.md").write_text("")
    assert capsys.readouterr().out == ""
    for path in (tmp_path / "a.json", tmp_path):
        try:
            check_overwrite(str(path), "--output", False)
        except OSError as e:
            assert str(e) == (
                f"--output {path} exists; pass --overwrite to replace it, or choose another path"
            )
        else:
            raise AssertionError("not refused")
    check_overwrite(str(tmp_path / "a.json"), "--output", True)
    check_overwrite(str(tmp_path), "--output", True)
    assert capsys.readouterr().out.splitlines() == [
        f"--overwrite: replacing --output {tmp_path / 'a.json'}",
        f"--overwrite: replacing --output {tmp_path} (a.json, b.md)",
    ]
