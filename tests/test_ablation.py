"""tools/ablation.py: the quick run writes every file with every field, a rerun takes every run
from the cache and gives the same tables; the parallel job runner; bad options."""

import json
import os

import pytest
from nd_ablation import OUTPUT_FILES, AblationOptions, run_ablation
from nd_ablation.report import render_markdown
from nd_common.jobs import run_jobs

from nd_det.errors import UserError

from .helpers.jobs import fails, square
from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_distill import REPO


def test_quick_ablation_writes_its_files_and_a_rerun_reuses_every_run(tmp_path):
    out = tmp_path / "ablation"
    lines = []
    first = run_ablation(
        AblationOptions(output_dir=str(out), quick=True, seeds=(0, 1), workers=1), emit=lines.append
    )
    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text() == render_markdown(report)
    assert set(report["domains"]) == {"detection", "classification"}
    for domain, metric in (("detection", "AP"), ("classification", "top1")):
        block = report["domains"][domain]
        assert block["metric"] == metric and metric in block["teacher"]["metrics"]
        assert list(block["methods"]) == ["student alone", "KD", "KD++"]
        for name, row in block["methods"].items():
            assert row["seeds"] == [0, 1]
            assert set(row[metric]) == {"mean", "std", "n"} and row[metric]["n"] == 2
            values = [row["per_seed"][str(s)][metric] for s in (0, 1)]
            assert row[metric]["mean"] == pytest.approx(sum(values) / 2)
            teacher_above = (
                block["teacher"]["metrics"][metric]
                > block["methods"]["student alone"][metric]["mean"]
            )
            assert (row["gap_closed_percent"] is None) == (
                name == "student alone" or not teacher_above
            )
        [pair] = block["pairs"]
        assert pair["pair"] == "KD -> KD++" and len(pair["differences"]) == 2
        per_seed = block["methods"]
        for seed, diff in zip(pair["seeds"], pair["differences"]):
            assert diff == pytest.approx(
                per_seed["KD++"]["per_seed"][str(seed)][metric]
                - per_seed["KD"]["per_seed"][str(seed)][metric]
            )
        assert pair["plus_better"] + pair["plus_worse"] <= 2
        # the embedding geometry of every student run, summarised and paired like the metric
        for name in per_seed:
            geometry = first["domains"][domain]["methods"][name]["geometry"]
            assert geometry["norm_ratio"]["n"] == 2 and geometry["norm_ratio"]["mean"] > 0
            assert -1.0 <= geometry["cosine_to_class_mean"]["mean"] <= 1.0
        cosine = pair["geometry"]["cosine_to_class_mean"]
        assert len(cosine["differences"]) == 2 and cosine["mean"] == pytest.approx(
            sum(cosine["differences"]) / 2
        )
    assert "Embedding geometry" in (out / "results.md").read_text()
    assert first["jobs_run"] == 14 and first["jobs_cached"] == 0
    # progress: a line per run, with the overall ETA
    assert sum("overall ETA" in line for line in lines) == 14
    assert report["domains"]["detection"]["setting"].startswith("embedded tree crowns")

    again = run_ablation(
        AblationOptions(output_dir=str(out), quick=True, seeds=(0, 1), workers=1),
        emit=lambda line: None,
    )
    assert again["jobs_run"] == 0 and again["jobs_cached"] == 14
    assert again["domains"] == report["domains"]  # the same tables from the cache


def test_jobs_run_in_separate_processes_and_a_user_error_keeps_its_message():
    results = dict(run_jobs({f"job{i}": (square, {"x": i}) for i in range(3)}, workers=2))
    assert {k: v["value"] for k, v in results.items()} == {"job0": 0, "job1": 1, "job2": 4}
    assert len({v["pid"] for v in results.values()} | {os.getpid()}) == 4  # fresh processes
    with pytest.raises(UserError, match="MODEL.X is wrong"):
        list(run_jobs({"bad": (fails, {"message": "MODEL.X is wrong"})}, workers=2))


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--seeds", "1", "1"], "--seeds [1, 1]: give distinct seeds"),
        (["--methods", "FitNet"], "--methods ['FitNet']: unknown"),
        (["--workers", "-1"], "--workers -1: give 1 or more"),
        (["--only", "segmentation"], "argument --only: invalid choice: 'segmentation'"),
        (["--split", "selection"], "--split: only with --demo-settings"),
        (["MODEL.DISTILL.ND.WEIGHT", "0.5"], "KEY VALUE overrides: only with --demo-settings"),
        (["--demo-settings", "--quick"], "--demo-settings runs the demo's recipe: drop --quick"),
    ],
)
def test_bad_options_are_one_line(tmp_path, argv, fragment):
    code, stderr = run_tool_in_process(
        os.path.join(REPO, "tools", "ablation.py"), argv + ["--output-dir", str(tmp_path / "out")]
    )
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and fragment in errors[0]
    assert not (tmp_path / "out").exists()


def _toy_report(runs, teacher_top1):
    from nd_ablation.report import summarize

    block = summarize(
        "classification",
        {"metrics": {"top1": teacher_top1}},
        {
            name: {seed: {"metrics": {"top1": v}} for seed, v in by_seed.items()}
            for name, by_seed in runs.items()
        },
    )
    block["setting"] = "toy"
    return block, {
        "title": "t",
        "summary_line": "s",
        "domains": {"classification": block},
        "wall_time_s": 1.0,
        "machine": "m",
        "jobs_run": 1,
        "jobs_cached": 0,
        "runs_seconds_total": 1.0,
    }


def test_report_of_one_seed_no_pair_and_a_teacher_below_the_student():
    block, report = _toy_report(
        {"student alone": {0: 50.0}, "KD": {0: 52.0}, "KD++": {0: 51.0}}, teacher_top1=60.0
    )
    assert block["methods"]["KD"]["top1"] == {"mean": 52.0, "std": None, "n": 1}
    assert block["mean_seed_std"] is None and block["pairs"][0]["std"] is None
    assert block["methods"]["KD"]["gap_closed_percent"] == pytest.approx(20.0)
    text = render_markdown(report)
    assert "| KD | 52.00 (1 seed) | 20% | 52.00 |" in text
    assert "| KD -> KD++ | -1.00 | -1.00 (1 seed) | 0 / 1 of 1 |" in text
    assert "mean over methods: none (one seed)." in text and "± 0.00" not in text

    block, report = _toy_report(
        {"student alone": {0: 50.0, 1: 54.0}, "KD++": {0: 49.0, 1: 53.0}}, teacher_top1=40.0
    )
    assert block["pairs"] == [] and block["methods"]["KD++"]["gap_closed_percent"] is None
    text = render_markdown(report)
    assert "No X / X++ pair among the methods run: nothing to pair." in text
    assert "| pair |" not in text and "the teacher is not above the student alone" in text
    assert "| KD++ | 51.00 ± 2.83 | - |" in text
