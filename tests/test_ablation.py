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


def test_selection_split_holds_out_a_fold_of_the_demo_training_tiles(tmp_path):
    """The split that chooses the demo's settings never holds a demo val tile: its train and
    held-out parts partition the demo's training tiles, the held-out fold is the lattice's
    residue 4 (no two side by side), the two whole images train."""
    from detectron2.data import DatasetCatalog
    from nd_ablation.splits import register_selection_split
    from nd_common.embedded import register_embedded_dataset

    demo_train, demo_val = (
        {r["file_name"] for r in DatasetCatalog.get(n)} for n in register_embedded_dataset()
    )
    train, held_out = (DatasetCatalog.get(n) for n in register_selection_split(str(tmp_path)))
    names = [{r["file_name"] for r in part} for part in (train, held_out)]
    assert names[0] | names[1] == demo_train and not names[0] & names[1]
    assert not (names[0] | names[1]) & demo_val
    assert (len(train), len(held_out)) == (29, 9)
    assert sum(len(r["annotations"]) for r in held_out) == 169
    coco = {p: json.loads((tmp_path / f"{p}.json").read_text()) for p in ("train", "val")}
    residues = {
        part: {(im["window"][1] // 400 + 2 * (im["window"][0] // 400)) % 5 for im in c["images"]}
        for part, c in coco.items()
    }
    assert residues == {"train": {0, 1, 3}, "val": {4}}
    sources = {im["source"] for im in coco["train"]["images"]}
    assert {"OSBS_029.tif", "SOAP_061.png"} <= sources  # the two whole images train


def test_demo_settings_report_applies_the_criterion(tmp_path):
    """--demo-settings: per seed the paired gain; its mean +- sample std, the gap share, and the
    criterion of docs/demo.md (mean >= 2 std and >= 30 % of the gap), both ways."""
    from nd_ablation.demo_settings import render_markdown, summarize
    from nd_common.configs import Recipe

    def report(alone, distilled, teacher=(20.0, 21.0, 22.0)):
        jobs = [
            dict(kind=kind, seed=seed, result={"metrics": {"AP": ap, "AP50": ap, "AP75": ap}})
            for kind, values in (("teacher", teacher), ("alone", alone), ("distilled", distilled))
            for seed, ap in zip((0, 1, 2), values)
        ]
        r = summarize(Recipe(), [0, 1, 2], "val", jobs, str(tmp_path))
        return dict(r, wall_time_s=1.0, jobs_run=9, jobs_cached=0)

    met = report(alone=(10.0, 11.0, 12.0), distilled=(14.0, 14.5, 16.5))
    assert [met["per_seed"][s]["gain"] for s in "012"] == [4.0, 3.5, 4.5]
    assert met["gain"]["mean"] == pytest.approx(4.0) and met["gain"]["std"] == pytest.approx(0.5)
    assert met["gap"] == pytest.approx(10.0) and met["gap_closed_percent"] == pytest.approx(40.0)
    assert met["above_noise"] and met["meets_issue_33"]
    assert "**met** (the gain is above its noise)" in render_markdown(met)
    assert (
        met["settings"]["method_name"] == "ReviewKD++ with KD"
        and met["split_sizes"]["eval"]["tiles"] == 9
    )

    noisy = report(alone=(10.0, 11.0, 12.0), distilled=(16.0, 11.0, 13.0))
    assert noisy["gain"]["mean"] == pytest.approx(7 / 3) and not noisy["above_noise"]
    assert "**not met** (the gain is within its noise)" in render_markdown(noisy)
    small = report(alone=(10.0, 11.0, 12.0), distilled=(11.0, 12.1, 12.9))  # 10 % of the gap
    assert small["above_noise"] and not small["meets_issue_33"]
