"""tools/one_stage_ablation.py: the teacher, then every (method, seed) student run, one after
another by default (``--workers``: side by side, one thread each); a finished run's result is
kept in its folder (``result.json``, with the sizes it was made at) and reused by a rerun."""

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from typing import Optional

from nd_common.jobs import run_jobs

from nd_det.errors import one_line_usage_errors, run_cli
from nd_det.utils.atomic_file import atomic_write_json, atomic_write_text
from nd_det.utils.progress import format_duration

from . import runs
from .plan import (
    DEFAULT_SEEDS,
    DEFAULT_SIZES,
    METHODS,
    QUICK_SEEDS,
    QUICK_SIZES,
    run_folder,
    teacher_paths,
)
from .report import render_markdown, summarize


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output-dir", default=os.path.join("output", "one_stage_ablation"))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2")
    p.add_argument("--workers", type=int, default=1, help="runs side by side (default 1)")
    p.add_argument("--quick", action="store_true", help="toy sizes: a smoke test")
    return one_line_usage_errors(p)


def _cached(folder: str, sizes, job, **kwargs) -> tuple[dict, bool]:
    """The job's result kept in ``folder``/result.json at these sizes, else run it now."""
    path = os.path.join(folder, "result.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            kept = json.load(f)
        if kept.get("sizes") == asdict(sizes):
            return kept, True
    started = time.time()
    result = dict(job(sizes=sizes, **kwargs), sizes=asdict(sizes))
    result["seconds"] = time.time() - started
    atomic_write_json(result, path)
    return result, False


def _student(root, method, seed, sizes):
    return _cached(
        run_folder(root, method, seed), sizes, runs.student_job, root=root, method=method, seed=seed
    )


def _main(argv: Optional[list[str]]) -> int:
    args = parser().parse_args(argv)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    seeds = tuple(args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS))
    root = os.path.abspath(args.output_dir)
    started = time.time()
    teacher, _ = _cached(teacher_paths(root)["folder"], sizes, runs.teacher_job, root=root)
    print(f"[teacher] AP {teacher['metrics']['AP']:.2f}", flush=True)
    jobs = {
        f"{m.name}|{s}": (_student, dict(root=root, method=m, seed=s, sizes=sizes))
        for s in seeds
        for m in METHODS
    }
    results: dict[str, dict[int, dict]] = {m.name: {} for m in METHODS}
    made = 0
    for done, (name, (result, cached)) in enumerate(run_jobs(jobs, args.workers), 1):
        method, seed = name.split("|")
        results[method][int(seed)] = result
        made += not cached
        print(
            f"[{done}/{len(jobs)}] {method} seed {seed}: AP {result['metrics']['AP']:.2f}, "
            f"norm ratio {result['geometry']['norm_ratio']:.3f}, cosine "
            f"{result['geometry']['cosine_to_class_mean']:.3f} "
            f"({'cached' if cached else format_duration(result['seconds'])})",
            flush=True,
        )
    summary = summarize(teacher, {m: dict(sorted(r.items())) for m, r in results.items()})
    summary.update(
        sizes=asdict(sizes),
        seeds=list(seeds),
        runs_made=made,
        wall_seconds=time.time() - started,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    )
    atomic_write_json(summary, os.path.join(root, "results.json"))
    setting = (
        f"RetinaNet, embedded tree crowns (demo split); MobileNetV2-FPN teacher (ImageNet init, "
        f"{sizes.teacher_iters} iterations) -> half-width MobileNetV2-FPN student (random init, "
        f"{sizes.student_iters} iterations of 4 images); seeds {', '.join(map(str, seeds))}"
    )
    atomic_write_text(render_markdown(summary, setting), os.path.join(root, "results.md"))
    print(render_markdown(summary, setting))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Exit status 0, or 2 with one ERROR line for bad input."""
    return run_cli(_main, argv)
