"""One ablation: the teachers, then every (domain, method, seed) run, in parallel processes of
one torch thread each; each finished run is cached under ``<output>/cache/`` (keyed by what it
depends on) and skipped on a rerun; a progress line with the ETA after every run."""

import hashlib
import importlib
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Optional

from detectron2.data import DatasetCatalog
from nd_common.jobs import default_workers, run_jobs

from nd_det.errors import ConfigError
from nd_det.utils.atomic_file import atomic_write_json
from nd_det.utils.paths import check_writable
from nd_det.utils.progress import ProgressClock, format_duration

from .plan import (
    CLASSIFICATION_METHODS,
    DEFAULT_METHODS,
    DEFAULT_SEEDS,
    DEFAULT_SIZES,
    DETECTION_METHODS,
    QUICK_METHODS,
    QUICK_SIZES,
)
from .report import PRIMARY_METRIC, summarize, write_report
from .splits import register_splits

DOMAINS = ("detection", "classification")
OUTPUT_FILES = ("results.json", "results.md", "results.png")
# each domain's methods, in the order of the plan and the report
_DOMAIN_METHODS = {"detection": DETECTION_METHODS, "classification": CLASSIFICATION_METHODS}


def _jobs_module(domain: str):
    """The module of ``domain``'s job functions (imported when that half runs: the detection
    half never needs nd_det.classification)."""
    return importlib.import_module(f".{domain}", __package__)


@dataclass
class AblationOptions:
    output_dir: str = os.path.join("output", "ablation")
    seeds: Sequence[int] = tuple(DEFAULT_SEEDS)
    workers: int = 0  # 0: every core this process may use
    quick: bool = False  # toy sizes (the CI smoke test)
    domains: Sequence[str] = DOMAINS
    dataset_root: Optional[str] = None  # the embedded dataset's folder (default: its cache)
    methods: Optional[Sequence[str]] = None  # default DEFAULT_METHODS (quick: QUICK_METHODS);
    # the student alone always runs


def _check(o: AblationOptions) -> None:
    if not o.seeds or len(set(o.seeds)) != len(o.seeds):
        raise ConfigError(f"--seeds {list(o.seeds)}: give distinct seeds, e.g. 0 1 2")
    if o.workers < 0:
        raise ConfigError(f"--workers {o.workers}: give 1 or more (0: every core)")
    known = {m.name for m in DETECTION_METHODS + CLASSIFICATION_METHODS}
    bad = [m for m in (o.methods or []) if m not in known]
    if bad:
        raise ConfigError(f"--methods {bad}: unknown; choose among {sorted(known)}")
    check_writable(o.output_dir, "--output-dir", folder=True)


def _key(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=lambda o: asdict(o))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _plan(o: AblationOptions, sizes, root: str) -> list[dict]:
    """Every job: the teacher of each domain first, then its students (longest first)."""
    jobs = []
    for domain in (d for d in DOMAINS if d in o.domains):
        module, methods = _jobs_module(domain), _DOMAIN_METHODS[domain]
        extra = {"dataset_root": o.dataset_root} if domain == "detection" else {}
        teacher_key = _key(domain, "teacher", sizes)
        jobs.append(
            dict(
                name=f"{domain} teacher",
                domain=domain,
                method="teacher",
                seed=None,
                key=teacher_key,
                needs=None,
                metric=PRIMARY_METRIC[domain],
                call=(module.teacher_job, dict(root=root, sizes=sizes, **extra)),
            )
        )
        wanted = DEFAULT_METHODS[domain] if o.methods is None else o.methods
        students = [
            dict(
                name=f"{domain} {m.name} seed {s}",
                domain=domain,
                method=m.name,
                seed=s,
                key=_key(domain, m, s, sizes, teacher_key),
                needs=f"{domain} teacher",
                metric=PRIMARY_METRIC[domain],
                call=(module.student_job, dict(root=root, method=m, seed=s, sizes=sizes, **extra)),
            )
            for m in methods
            if m.name in wanted or m.is_baseline
            for s in o.seeds
        ]
        # a rough cost order (distillation runs are the longest): the last to finish is short
        jobs += sorted(students, key=lambda j: (j["method"] == "student alone", j["name"]))
    return jobs


def _timed(function, **kwargs) -> dict:
    """The job's result with its wall and CPU seconds (its own process, one thread)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function(**kwargs)
    return dict(result, seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu)


def run_cached(jobs: list[dict], cache: str, workers: int, emit, label: str) -> tuple[int, float]:
    """Run every job of ``jobs`` (dicts: ``name``, ``key``, ``call`` = (function, kwargs),
    ``needs`` = the name of a job that must finish first, or None; ``metric``: the metric of its
    progress line) that has no result in ``cache`` yet; each job gets its ``result`` (from the
    cache or run, then cached).  Returns how many ran and the wall seconds."""
    by_name = {j["name"]: j for j in jobs}
    for job in jobs:
        path = os.path.join(cache, job["key"] + ".json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                job["result"] = json.load(f)["result"]
    start = time.perf_counter()
    # the ETA from the mean time between finished runs (workers in parallel included)
    clock = ProgressClock(sum("result" not in j for j in jobs), skip=0)
    clock.start()

    def ready(done: Optional[str]) -> dict:
        """The jobs still to run that wait for ``done`` (None: those that can start now)."""
        return {
            j["name"]: (_timed, dict(j["call"][1], function=j["call"][0]))
            for j in jobs
            if "result" not in j
            and (
                j.get("needs") == done
                or (done is None and "result" in by_name.get(j.get("needs"), {"result": 1}))
            )
        }

    for name, result in run_jobs(ready(None), workers, then=lambda name, _: ready(name)):
        job = by_name[name]
        job["result"] = result
        atomic_write_json(
            {"key": job["key"], "job": name, "result": result},
            os.path.join(cache, job["key"] + ".json"),
        )
        clock.step()
        emit(
            f"[{label} {clock.done}/{clock.total}] {name}: {job['metric']} "
            f"{result['metrics'][job['metric']]:.2f} in {format_duration(result['seconds'])}; "
            f"elapsed {format_duration(time.perf_counter() - start)}, overall ETA "
            f"{format_duration(clock.eta_seconds() or 0)}"
        )
    return clock.total, time.perf_counter() - start


def run_ablation(o: AblationOptions, emit=None) -> dict:
    """Run (or complete from the cache) the ablation and write its report; returns it."""
    emit = emit or (lambda line: print(line, flush=True))
    _check(o)
    sizes = QUICK_SIZES if o.quick else DEFAULT_SIZES
    if o.quick and o.methods is None:
        o.methods = tuple(QUICK_METHODS)
    root = os.path.abspath(o.output_dir)
    cache = os.path.join(root, "cache")
    os.makedirs(cache, exist_ok=True)
    workers = default_workers(o.workers)
    jobs = _plan(o, sizes, root)
    emit(
        f"nd-det ablation: {len(jobs)} runs ({', '.join(o.domains)}; seeds {list(o.seeds)}) in "
        f"{workers} process(es) of one thread; output in {root}"
    )
    ran, seconds = run_cached(jobs, cache, workers, emit, "ablation")
    report = _report(o, sizes, jobs, workers, ran, seconds)
    write_report(report, *(os.path.join(root, name) for name in OUTPUT_FILES))
    emit(f"wrote {', '.join(os.path.join(root, n) for n in OUTPUT_FILES)}")
    return report


def _report(o, sizes, jobs, workers, ran, seconds) -> dict:
    domains = {}
    for domain in (d for d in DOMAINS if d in o.domains):
        teacher = next(j for j in jobs if j["domain"] == domain and j["method"] == "teacher")
        runs: dict[str, dict] = {m.name: {} for m in _DOMAIN_METHODS[domain]}  # plan order
        for job in jobs:
            if job["domain"] == domain and job is not teacher:
                runs[job["method"]][job["seed"]] = job["result"]
        block = summarize(domain, teacher["result"], {k: v for k, v in runs.items() if v})
        block["setting"] = _jobs_module(domain).setting(sizes)
        if domain == "detection":
            names = register_splits(os.path.join(o.output_dir, "detection"), o.dataset_root)
            block["splits"] = {
                split: {
                    "tiles": len(records),
                    "boxes": sum(len(r.get("annotations", [])) for r in records),
                }
                for split, records in zip(("train", "val"), map(DatasetCatalog.get, names))
            }
            block["setting"] += "; train {} tiles / {} boxes, val {} tiles / {} boxes".format(
                *(block["splits"][s][k] for s in ("train", "val") for k in ("tiles", "boxes"))
            )
        domains[domain] = block
    pairs = [
        f"{d} {p['pair']} {p['mean']:+.2f} {b['metric']}"
        for d, b in domains.items()
        for p in b["pairs"]
    ]
    return {
        "title": "nd-det ablation: what ND adds to KD, DKD, DIST and ReviewKD",
        "summary_line": (
            "Mean paired difference X++ - X over seeds: " + "; ".join(pairs) + "."
            if pairs
            else "No X / X++ pair among the methods run."
        ),
        "options": {
            "seeds": list(o.seeds),
            "quick": o.quick,
            "domains": list(o.domains),
            "workers": workers,
        },
        "sizes": asdict(sizes),
        "domains": domains,
        "wall_time_s": round(seconds, 1),
        # the runs' own wall seconds, summed (the same on a rerun from the cache)
        "runs_seconds_total": round(sum(j["result"].get("seconds", 0.0) for j in jobs), 1),
        "jobs_run": ran,
        "jobs_cached": len(jobs) - ran,
        "machine": f"{platform.machine()}, {default_workers()} core(s) usable, "
        f"Python {platform.python_version()}",
    }
