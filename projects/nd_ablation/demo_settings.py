"""The ablation at the demo's settings (``tools/ablation.py --demo-settings``; docs/demo.md): per
seed, the demo's whole recipe (its teacher trained with that seed, the teacher's class means, the
student alone and the student distilled with the demo's method, all with that seed) and the
paired gain of the distilled student over the student alone: its mean and seed spread, the share
of the teacher-student gap it closes, and whether it stands above its noise.

Splits: ``val`` is the demo's own (train on its training tiles, report on its val tiles: the
figures the demo quotes); ``selection`` holds out a fold of the demo's training tiles
(:func:`nd_ablation.splits.register_selection_split`), for choosing settings without the val
tiles.  Every run is cached under ``--cache-dir`` by what it depends on (a run shared by two
settings, e.g. the student alone of two methods, runs once).
"""

import hashlib
import json
import os
import platform
import statistics
from typing import Optional

from detectron2.data import DatasetCatalog
from nd_common.configs import (
    DISTILL_METHODS,
    Recipe,
    recipe_cfgs,
    recipe_fingerprint,
    settings_dump,
    without_demo_keys,
)
from nd_common.embedded import register_embedded_dataset
from nd_common.evaluation import box_metrics
from nd_common.jobs import default_workers
from nd_common.trainer import log_to_file, train_detector

from nd_det.class_means.detection import extract_class_means
from nd_det.modeling import FrozenTeacher, build_plain_student
from nd_det.utils.atomic_file import atomic_write_json, atomic_write_text
from nd_det.utils.text import markdown_table

from .runner import run_cached
from .splits import register_selection_split

SPLITS = {
    "val": "the demo's split: train on its training tiles, AP on its val tiles",
    "selection": "the selection split: train on the demo's training tiles but a held-out fold "
    "((row + 2 col) mod 5 == 4), AP on that fold; no demo val tile",
}
# the gain stands above its noise when its mean is at least this many seed std's (docs/demo.md)
NOISE_FACTOR = 2.0
# and the recipe does what issue 33 asks when it also closes this share of the gap
GAP_SHARE = 30.0
OUTPUT_FILES = ("results.json", "results.md")
KINDS = ("teacher", "alone", "distilled")


def register_split(split: str, cache: str, dataset_root=None) -> tuple[str, str]:
    """Register ``split`` in this process; its two dataset names."""
    if split == "val":
        return register_embedded_dataset(dataset_root)
    return register_selection_split(os.path.join(cache, "selection_split"), dataset_root)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:16]


def plan_seed(recipe: Recipe, seed: int, split: str, cache: str, dataset_root=None) -> dict:
    """The three runs of one seed: kind -> dict(key, folder); keyed by what each depends on (the
    student alone does not depend on the teacher or the method; the teacher not on the method)."""
    names = register_split(split, cache, dataset_root)
    teacher, students = recipe_cfgs(recipe, seed, _placeholder_folders(), names)
    dumps = {
        "teacher": settings_dump(teacher),
        **{k: settings_dump(c) for k, c in students.items()},
    }
    keys = {"teacher": _key("teacher", dumps["teacher"], dumps["alone"], seed)}
    keys["alone"] = _key("alone", dumps["alone"], seed)
    keys["distilled"] = _key("distilled", dumps["distilled"], keys["teacher"], seed)
    return {
        k: dict(key=keys[k], folder=os.path.join(cache, "runs", f"{k}-{keys[k]}")) for k in KINDS
    }


def _placeholder_folders() -> dict[str, str]:
    return {k: k for k in ("teacher", "alone", "distilled", "class_means")}


def _cfgs(recipe, seed, runs, names):
    folders = {k: runs[k]["folder"] for k in KINDS}
    folders["class_means"] = os.path.join(runs["teacher"]["folder"], "class_means.pth")
    return recipe_cfgs(recipe, seed, folders, names)


def teacher_job(
    recipe: Recipe, seed: int, split: str, cache: str, runs: dict, dataset_root=None
) -> dict:
    """Train the teacher with ``seed``, extract its class means as the demo does (every
    training image), evaluate it; its metrics."""
    names = register_split(split, cache, dataset_root)
    teacher, students = _cfgs(recipe, seed, runs, names)
    with log_to_file(os.path.join(teacher.OUTPUT_DIR, "log.txt"), f"[teacher seed {seed}] "):
        train_detector(teacher, seed, log_period=1000)
        # the demo extracts with its distilled student's config; the student alone's has the
        # same data, input and teacher (the method does not enter the extraction)
        plain = without_demo_keys(students["alone"])
        extract_class_means(plain, max_images=len(DatasetCatalog.get(names[0])), num_workers=0)
        frozen = FrozenTeacher(plain)
        metrics, _ = box_metrics(frozen.cfg, frozen.model)
    return {"metrics": metrics}


def student_job(
    recipe: Recipe, seed: int, split: str, cache: str, runs: dict, kind: str, dataset_root=None
) -> dict:
    """Train the student alone or distilled (``kind``) with ``seed``; its metrics."""
    names = register_split(split, cache, dataset_root)
    cfg = _cfgs(recipe, seed, runs, names)[1][kind]
    with log_to_file(cfg.OUTPUT_DIR + ".log", f"[{kind} seed {seed}] "):
        weights = train_detector(cfg, seed, log_period=1000)
        plain_cfg, model = build_plain_student(without_demo_keys(cfg), weights)
        metrics, _ = box_metrics(plain_cfg, model)
    return {"metrics": metrics}


def plan(recipe: Recipe, seeds, split: str, cache: str, dataset_root=None) -> list[dict]:
    """The jobs of :func:`nd_ablation.runner.run_cached`: per seed its teacher, the distilled
    student after it, and the student alone."""
    jobs = []
    for seed in seeds:
        runs = plan_seed(recipe, seed, split, cache, dataset_root)
        common = dict(recipe=recipe, seed=seed, split=split, cache=cache, runs=runs)
        common["dataset_root"] = dataset_root
        jobs += [
            dict(
                name=f"teacher seed {seed}",
                kind="teacher",
                seed=seed,
                key=runs["teacher"]["key"],
                needs=None,
                metric="AP",
                call=(teacher_job, common),
            ),
            dict(
                name=f"distilled seed {seed}",
                kind="distilled",
                seed=seed,
                key=runs["distilled"]["key"],
                needs=f"teacher seed {seed}",
                metric="AP",
                call=(student_job, dict(common, kind="distilled")),
            ),
            dict(
                name=f"alone seed {seed}",
                kind="alone",
                seed=seed,
                key=runs["alone"]["key"],
                needs=None,
                metric="AP",
                call=(student_job, dict(common, kind="alone")),
            ),
        ]
    return jobs


def _stat(values) -> dict:
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def summarize(recipe: Recipe, seeds, split: str, jobs: list[dict], cache: str, dataset_root=None):
    """The report dict: per seed the three APs and the gain; means, sample std's, the gap
    closed and the verdict against the criterion of docs/demo.md."""
    ap = {(j["kind"], j["seed"]): j["result"]["metrics"] for j in jobs}
    per_seed = {
        str(s): {
            **{k: ap[(k, s)]["AP"] for k in KINDS},
            "gain": ap[("distilled", s)]["AP"] - ap[("alone", s)]["AP"],
            "gain_AP50": ap[("distilled", s)]["AP50"] - ap[("alone", s)]["AP50"],
            "gain_AP75": ap[("distilled", s)]["AP75"] - ap[("alone", s)]["AP75"],
        }
        for s in seeds
    }
    stats = {k: _stat(per_seed[str(s)][k] for s in seeds) for k in KINDS + ("gain",)}
    gap = stats["teacher"]["mean"] - stats["alone"]["mean"]
    gain = stats["gain"]
    share = 100.0 * gain["mean"] / gap if gap > 0 else None
    above_noise = gain["std"] is not None and gain["mean"] >= NOISE_FACTOR * gain["std"]
    names = register_split(split, cache, dataset_root)
    teacher, students = recipe_cfgs(recipe, seeds[0], _placeholder_folders(), names)
    records = {n: DatasetCatalog.get(n) for n in names}
    return {
        "title": "nd-det ablation at the demo's settings: the distilled student's gain over the "
        "student alone, over seeds",
        "settings": {
            "teacher_config": os.path.basename(recipe.teacher_config),
            "student_config": os.path.basename(recipe.student_config),
            "method": recipe.method,
            "method_name": DISTILL_METHODS[recipe.method][1],
            "teacher_iters": teacher.SOLVER.MAX_ITER,
            "student_iters": students["alone"].SOLVER.MAX_ITER,
            "opts": list(recipe.opts),
            "device": recipe.device,
        },
        # the demo quotes this spread only when its own settings have this fingerprint
        "settings_fingerprint": recipe_fingerprint(teacher, students, None),
        "split": split,
        "split_description": SPLITS[split],
        "split_sizes": {
            part: {
                "tiles": len(records[n]),
                "boxes": sum(len(r.get("annotations", [])) for r in records[n]),
            }
            for part, n in zip(("train", "eval"), names)
        },
        "seeds": list(seeds),
        "per_seed": per_seed,
        **stats,
        "gap": gap,
        "gap_closed_percent": share,
        "above_noise": above_noise,
        "meets_issue_33": above_noise and share is not None and share >= GAP_SHARE,
        "criterion": f"mean gain >= {NOISE_FACTOR:g} x its std over seeds (above noise) and "
        f">= {GAP_SHARE:g}% of the teacher-student gap",
        "machine": f"{platform.machine()}, {default_workers()} core(s) usable, Python "
        f"{platform.python_version()}",
    }


def render_markdown(report: dict) -> str:
    s = report["settings"]
    opts = " ".join(s["opts"]) or "none"
    sizes = report["split_sizes"]
    lines = [
        f"# {report['title']}",
        "",
        f"{s['method_name']} ({s['method']}); teacher {s['teacher_config']} "
        f"({s['teacher_iters']} iterations), students {s['student_config']} "
        f"({s['student_iters']} iterations); overrides: {opts}; settings fingerprint "
        f"{report['settings_fingerprint']}.  Split: {report['split_description']} "
        f"(train {sizes['train']['tiles']} tiles / {sizes['train']['boxes']} boxes, AP on "
        f"{sizes['eval']['tiles']} tiles / {sizes['eval']['boxes']} boxes).",
        "",
    ]
    rows = [
        [str(seed)] + [f"{v[k]:.2f}" for k in KINDS] + [f"{v['gain']:+.2f}"]
        for seed, v in report["per_seed"].items()
    ]

    def cell(stat, sign=""):
        std = "-" if stat["std"] is None else f"{stat['std']:.2f}"
        return f"{stat['mean']:{sign}.2f} ± {std}"

    rows.append(["mean ± std"] + [cell(report[k]) for k in KINDS] + [cell(report["gain"], "+")])
    lines += markdown_table(
        ["seed", "teacher AP", "student alone AP", "distilled AP", "gain (paired)"], rows
    )
    share = report["gap_closed_percent"]
    lines += [
        "",
        f"Gap (teacher - student alone, means): {report['gap']:.2f} AP; the mean gain closes "
        + ("-" if share is None else f"{share:.0f}%")
        + " of it.  Criterion: "
        + report["criterion"]
        + ": "
        + ("**met**" if report["meets_issue_33"] else "**not met**")
        + (
            " (the gain is above its noise)"
            if report["above_noise"]
            else " (the gain is within its noise)"
        )
        + ".",
        "",
        f"Machine: {report['machine']}; wall time {report['wall_time_s']:.0f} s, "
        f"{report['jobs_run']} runs made, {report['jobs_cached']} from the cache.",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict, root: str, spread_file: Optional[str]) -> list[str]:
    """results.json and results.md under ``root``; the same JSON to ``spread_file`` if given
    (the file the demo reads)."""
    paths = [os.path.join(root, name) for name in OUTPUT_FILES]
    atomic_write_json(report, paths[0], allow_nan=False)
    atomic_write_text(render_markdown(report), paths[1])
    if spread_file:
        atomic_write_json(report, spread_file, allow_nan=False)
        paths.append(spread_file)
    return paths


def run_demo_settings(
    recipe: Recipe,
    seeds,
    split: str,
    output_dir: str,
    cache_dir: Optional[str] = None,
    workers: int = 0,
    dataset_root: Optional[str] = None,
    spread_file: Optional[str] = None,
    emit=None,
) -> dict:
    """Run (or complete from the cache) the ablation at ``recipe``'s settings and write its
    report; returns it."""
    emit = emit or (lambda line: print(line, flush=True))
    root = os.path.abspath(output_dir)
    cache = os.path.abspath(cache_dir or os.path.join(root, "cache"))
    os.makedirs(cache, exist_ok=True)
    os.makedirs(root, exist_ok=True)
    workers = default_workers(workers)
    jobs = plan(recipe, seeds, split, cache, dataset_root)
    emit(
        f"nd-det ablation at the demo's settings: {len(jobs)} runs (seeds {list(seeds)}, split "
        f"{split}) in {workers} process(es) of one thread; output in {root}, runs in {cache}"
    )
    ran, seconds = run_cached(jobs, cache, workers, emit, "demo settings")
    report = summarize(recipe, list(seeds), split, jobs, cache, dataset_root)
    report.update(wall_time_s=round(seconds, 1), jobs_run=ran, jobs_cached=len(jobs) - ran)
    emit("wrote " + ", ".join(write_report(report, root, spread_file)))
    return report
