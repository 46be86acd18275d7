"""Independent jobs in parallel processes, one torch thread each, results as they finish.

Used by the demo (its two student runs) and the ablation (its many runs).  A job's numbers do
not depend on how many jobs run beside it: each runs in a fresh process (spawned, never reused)
with one intra-op thread, and seeds itself.  (``torch.multiprocessing`` and detectron2's
launcher serve one distributed job, not a queue of independent ones; concurrent.futures does.)
"""

import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Callable, Optional

import torch

Jobs = dict[str, tuple[Callable, dict]]


def default_workers(limit: int = 0) -> int:
    """The cores this process may use (``limit`` caps it when > 0)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, limit) if limit > 0 else cores)


def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def run_jobs(
    jobs: Jobs, workers: int, then: Optional[Callable[[str, object], Jobs]] = None
) -> Iterator[tuple[str, object]]:
    """Run ``{name: (function, kwargs)}`` (module-level functions) in ``workers`` processes;
    yields ``(name, result)`` as each finishes.  ``then(name, result)`` may return more jobs to
    run once that one is done (jobs that need its result: a teacher's students).  The first job
    that raises stops the others and its exception is raised here (a ``UserError`` keeps its
    one-line message)."""
    follow = then or (lambda name, result: {})
    if workers <= 1:  # in this process, one after another (same numbers: one thread each)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        queue = list(jobs.items())
        try:
            while queue:
                name, (function, kwargs) = queue.pop(0)
                result = function(**kwargs)
                yield name, result
                queue.extend(follow(name, result).items())
        finally:
            torch.set_num_threads(threads)
        return
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_one_thread,
        max_tasks_per_child=1,
    ) as pool:
        pending = {
            pool.submit(function, **kwargs): name for name, (function, kwargs) in jobs.items()
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    name = pending.pop(future)
                    result = future.result()
                    yield name, result
                    for new, (function, kwargs) in follow(name, result).items():
                        pending[pool.submit(function, **kwargs)] = new
        finally:
            for future in pending:
                future.cancel()
