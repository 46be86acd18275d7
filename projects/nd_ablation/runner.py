"""One ablation: the teachers, then every (domain, method, seed) run, in parallel processes
(one torch thread each), each finished run cached under ``<output>/cache/`` and skipped on a
rerun; a progress line with the overall ETA after every run; the report written atomically."""
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from nd_det.errors import UserError
from nd_det.utils.atomic_file import atomic_write_json
from nd_demo.jobs import default_workers, run_jobs
from nd_det.utils.paths import check_writable
from nd_det.utils.progress import format_duration
from . import classification, detection
from .plan import (CLASSIFICATION_METHODS, DEFAULT_METHODS, DEFAULT_SEEDS, DEFAULT_SIZES,
                   DETECTION_METHODS, QUICK_METHODS, QUICK_SIZES, Sizes)
from .report import PRIMARY_METRIC, summarize, write_report
from .splits import register_splits, split_summary

__all__ = ["AblationOptions", "run_ablation", "DOMAINS", "OUTPUT_FILES"]

DOMAINS = ("detection", "classification")
OUTPUT_FILES = ("results.json", "results.md", "results.png")
# relative cost of one job, for the ETA only (seconds come from the jobs measured so far):
# detection per iteration (student alone = 1), classification per epoch (ResNet-8 alone = 1)
_DETECTION_COST = {"student alone": 1.0, "KD": 1.45, "KD++": 1.5, "DKD": 1.45, "DKD++": 1.5,
                   "ReviewKD": 1.7, "ReviewKD++": 1.75, "teacher": 1.4}
_CLASSIFICATION_COST = {"student alone": 1.0, "teacher": 2.5}
_CLASSIFICATION_DISTILLED = 1.8
# seconds per cost unit before a domain's first job has been measured (two jobs side by side on
# a 2-core machine: a detection iteration ~1 s, a ResNet-8 epoch on 4,000 images ~5 s)
_PRIOR_SECONDS_PER_UNIT = {"detection": 1.0, "classification": 5.0}
# each domain's job functions and its methods, in the order of the plan and the report
_DOMAIN_JOBS = {"detection": (detection, DETECTION_METHODS),
                "classification": (classification, CLASSIFICATION_METHODS)}


@dataclass
class AblationOptions:
    output_dir: str = os.path.join("output", "ablation")
    seeds: Sequence[int] = tuple(DEFAULT_SEEDS)
    workers: int = 0                 # 0: every core this process may use
    quick: bool = False              # toy sizes (the CI smoke test)
    domains: Sequence[str] = DOMAINS
    dataset_root: Optional[str] = None  # the embedded dataset's folder (default: its cache)
    methods: Optional[Sequence[str]] = None  # the methods to run (default: DEFAULT_METHODS;
    # quick: QUICK_METHODS); the student alone always runs


@dataclass
class _Job:
    name: str
    domain: str
    method: str
    seed: Optional[int]
    function: Callable
    kwargs: Dict
    cost: float
    key: str = ""
    result: Optional[Dict] = field(default=None)


def _key(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=lambda o: asdict(o))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check(options: AblationOptions) -> None:
    unknown = [d for d in options.domains if d not in DOMAINS]
    if unknown or not options.domains:
        raise UserError(f"--only {list(options.domains)}: choose among {list(DOMAINS)}")
    if not options.seeds or len(set(options.seeds)) != len(options.seeds):
        raise UserError(f"--seeds {list(options.seeds)}: give distinct seeds, e.g. 0 1 2")
    if options.workers < 0:
        raise UserError(f"--workers {options.workers}: give 1 or more (0: every core)")
    known = {m.name for m in DETECTION_METHODS + CLASSIFICATION_METHODS}
    bad = [m for m in (options.methods or []) if m not in known]
    if bad:
        raise UserError(f"--methods {bad}: unknown; choose among {sorted(known)}")
    check_writable(options.output_dir, "--output-dir", folder=True)
    if "classification" in options.domains and not options.quick:
        from nd_det.classification.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR

        if not os.path.isdir(DEBIAN_FASHION_MNIST_DIR):
            raise UserError(
                f"the classification ablation needs Fashion-MNIST in {DEBIAN_FASHION_MNIST_DIR}: "
                "install it with `apt-get install -y dataset-fashion-mnist` (as root), or run "
                "--only detection")


def _cost(domain: str, method: str, sizes: Sizes) -> float:
    if domain == "detection":
        iters = sizes.teacher_iters if method == "teacher" else sizes.student_iters
        return iters * _DETECTION_COST[method]
    return sizes.cls_epochs * _CLASSIFICATION_COST.get(method, _CLASSIFICATION_DISTILLED)


def _plan(options: AblationOptions, sizes: Sizes, root: str):
    teachers, students = [], []
    for domain in (d for d in DOMAINS if d in options.domains):
        module, methods = _DOMAIN_JOBS[domain]
        extra = {"dataset_root": options.dataset_root} if domain == "detection" else {}
        teacher = _Job(f"{domain} teacher", domain, "teacher", None, module.teacher_job,
                       dict(root=root, sizes=sizes, **extra), _cost(domain, "teacher", sizes),
                       key=_key(domain, "teacher", sizes))
        teachers.append(teacher)
        wanted = DEFAULT_METHODS[domain] if options.methods is None else options.methods
        for method in (m for m in methods if m.name in wanted or m.name == "student alone"):
            for seed in options.seeds:
                students.append(_Job(f"{domain} {method.name} seed {seed}", domain, method.name,
                                     seed, module.student_job,
                                     dict(root=root, method=method, seed=seed, sizes=sizes,
                                          **extra), _cost(domain, method.name, sizes),
                                     key=_key(domain, method, seed, sizes, teacher.key)))
    # the longest first, so that the last job to finish is a short one
    students.sort(key=lambda j: -j.cost)
    return teachers, students


class _Progress:
    """Seconds per cost unit measured per domain on the jobs run so far; the ETA of the rest
    divided among the workers."""

    def __init__(self, jobs: List[_Job], workers: int, emit):
        self.total = len(jobs)
        self.left = {j.name: j for j in jobs}
        self.workers = workers
        self.emit = emit
        self.start = time.perf_counter()
        self.spent: Dict[str, float] = {}
        self.units: Dict[str, float] = {}
        self.done = 0

    def finished(self, job: _Job, seconds: Optional[float], line: str) -> None:
        self.left.pop(job.name, None)
        self.done += 1
        if seconds is not None:
            self.spent[job.domain] = self.spent.get(job.domain, 0.0) + seconds
            self.units[job.domain] = self.units.get(job.domain, 0.0) + job.cost
        rates = dict(_PRIOR_SECONDS_PER_UNIT)
        rates.update({d: self.spent[d] / self.units[d] for d in self.spent if self.units[d] > 0})
        left = sum(j.cost * rates[j.domain] for j in self.left.values())
        eta = format_duration(left / self.workers)
        self.emit(f"[ablation {self.done}/{self.total}] {line}  elapsed "
                  f"{format_duration(time.perf_counter() - self.start)}, overall ETA {eta}")


def _timed(function, **kwargs):
    """The job's result with its wall and CPU seconds (this process; one thread)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function(**kwargs)
    return dict(result, seconds=time.perf_counter() - start,
                cpu_seconds=time.process_time() - cpu)


def _cached(job: _Job, cache_dir: str) -> bool:
    path = os.path.join(cache_dir, f"{job.key}.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("key") == job.key:
            job.result = cached["result"]
            return True
    return False


def _run(teachers: List[_Job], students: List[_Job], cache_dir: str, workers: int,
         progress: _Progress) -> int:
    """Runs every job not in the cache, each domain's students as soon as its teacher is there;
    returns how many ran."""
    by_name = {job.name: job for job in teachers + students}
    waiting = {t.domain: [s for s in students if s.domain == t.domain] for t in teachers}

    def calls(jobs: List[_Job]):
        todo = {}
        for job in jobs:
            if _cached(job, cache_dir):
                progress.finished(job, None, f"{job.name}: cached")
            else:
                todo[job.name] = (_timed, dict(job.kwargs, function=job.function))
        return todo

    def then(name: str, result) -> Dict:
        job = by_name[name]
        return calls(waiting.pop(job.domain, [])) if job.method == "teacher" else {}

    first = calls(teachers)
    for teacher in teachers:  # a cached teacher's students can start at once
        if teacher.name not in first:
            first.update(calls(waiting.pop(teacher.domain)))
    ran = 0
    for name, result in run_jobs(first, workers, then=then):
        job = by_name[name]
        job.result = result
        ran += 1
        atomic_write_json({"key": job.key, "job": job.name, "result": result},
                          os.path.join(cache_dir, f"{job.key}.json"))
        metric = PRIMARY_METRIC[job.domain]
        progress.finished(job, result["seconds"], f"{job.name}: {metric} "
                          f"{result['metrics'][metric]:.2f} in {format_duration(result['seconds'])}")
    return ran


def run_ablation(options: AblationOptions, emit=None) -> Dict:
    """Run (or complete) the ablation and write its report; returns the report dict."""
    emit = emit or (lambda line: print(line, flush=True))
    _check(options)
    sizes = QUICK_SIZES if options.quick else DEFAULT_SIZES
    root = os.path.abspath(options.output_dir)
    cache_dir = os.path.join(root, "cache")
    os.makedirs(cache_dir, exist_ok=True)
    workers = default_workers(options.workers)
    if options.quick and options.methods is None:
        options.methods = tuple(QUICK_METHODS)
    teachers, students = _plan(options, sizes, root)
    emit(f"nd-det ablation: {len(teachers)} teacher(s) and {len(students)} student runs "
         f"({', '.join(options.domains)}; seeds {list(options.seeds)}) in {workers} process(es) "
         f"of one thread; output in {root}")
    start = time.perf_counter()
    progress = _Progress(teachers + students, workers, emit)
    ran = _run(teachers, students, cache_dir, workers, progress)
    report = _report(options, sizes, teachers, students, workers, ran,
                     time.perf_counter() - start)
    write_report(report, *(os.path.join(root, name) for name in OUTPUT_FILES))
    emit(f"wrote {', '.join(os.path.join(root, n) for n in OUTPUT_FILES)}")
    return report


def _report(options, sizes, teachers, students, workers, ran, seconds) -> Dict:
    domains = {}
    for teacher in teachers:
        order = _DOMAIN_JOBS[teacher.domain][1]
        runs: Dict[str, Dict[int, Dict]] = {m.name: {} for m in order}  # the plan's order
        for job in students:
            if job.domain == teacher.domain:
                runs[job.method][job.seed] = job.result
        runs = {name: by_seed for name, by_seed in runs.items() if by_seed}
        block = summarize(teacher.domain, teacher.result, runs)
        block["setting"] = _setting(teacher.domain, sizes, teacher.result)
        if teacher.domain == "detection":
            register_splits(os.path.join(options.output_dir, "detection"), options.dataset_root)
            block["splits"] = split_summary()
            block["setting"] += (f"; train {block['splits']['train']['tiles']} tiles / "
                                 f"{block['splits']['train']['boxes']} boxes, val "
                                 f"{block['splits']['val']['tiles']} tiles / "
                                 f"{block['splits']['val']['boxes']} boxes")
        domains[teacher.domain] = block
    pairs = [f"{d} {p['pair']} {p['mean']:+.2f} {b['metric']}" for d, b in domains.items()
             for p in b["pairs"]]
    return {
        "title": "nd-det ablation: what ND adds to KD, DKD, DIST and ReviewKD",
        "summary_line": ("Mean paired difference X++ - X over seeds: " + "; ".join(pairs) + "."
                         if pairs else "No X / X++ pair among the methods run."),
        "options": {"seeds": list(options.seeds), "quick": options.quick,
                    "domains": list(options.domains), "workers": workers},
        "sizes": asdict(sizes),
        "domains": domains,
        "wall_time_s": round(seconds, 1),
        # the runs' own wall seconds, summed (the same on a rerun from the cache)
        "runs_seconds_total": round(sum(j.result.get("seconds", 0.0)
                                        for j in teachers + students), 1),
        "jobs_run": ran,
        "jobs_cached": len(teachers) + len(students) - ran,
        "machine": f"{platform.machine()}, {default_workers()} core(s) usable, "
                   f"Python {platform.python_version()}",
    }


def _setting(domain: str, sizes: Sizes, teacher: Dict) -> str:
    if domain == "detection":
        return (f"embedded tree crowns, ablation split; MobileNetV2-FPN teacher (ImageNet init, "
                f"{sizes.teacher_iters} iterations) -> half-width MobileNetV2-FPN student "
                f"(random init, {sizes.student_iters} iterations of 4 images)")
    return (f"{sizes.cls_dataset}, {sizes.cls_train_images} training images, "
            f"{sizes.cls_epochs} epochs; {classification.TEACHER_MODEL} teacher -> "
            f"{classification.STUDENT_MODEL} student")
