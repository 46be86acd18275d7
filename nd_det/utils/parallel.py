"""Independent jobs in parallel processes, one torch thread each, results as they finish.

Used by the demo (its two student runs) and the ablation (its many runs): on a machine with N
cores, N single-threaded processes train N models at once.  A job's numbers do not depend on
how many jobs run beside it: each job runs in a fresh process (spawned, never reused), with one
intra-op thread, and seeds itself.  (``torch.multiprocessing`` and detectron2's launcher serve
one distributed job, not a queue of independent ones; concurrent.futures does that.)
"""
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Callable, Dict, Iterator, Tuple

__all__ = ["default_workers", "run_jobs"]


def default_workers(limit: int = 0) -> int:
    """The cores this process may use (``limit`` caps it when > 0)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, limit) if limit > 0 else cores)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def run_jobs(jobs: Dict[str, Tuple[Callable, dict]], workers: int
             ) -> Iterator[Tuple[str, object]]:
    """Run ``{name: (function, kwargs)}`` (module-level functions) in ``workers`` processes;
    yields ``(name, result)`` as each finishes.  The first job that raises stops the others and
    its exception is raised here (a ``UserError`` keeps its one-line message)."""
    if not jobs:
        return
    if workers <= 1:  # in this process, one after another (same numbers: one thread each)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for name, (function, kwargs) in jobs.items():
                yield name, function(**kwargs)
        finally:
            torch.set_num_threads(threads)
        return
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread,
                             max_tasks_per_child=1) as pool:
        pending = {pool.submit(function, **kwargs): name
                   for name, (function, kwargs) in jobs.items()}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    name = pending.pop(future)
                    yield name, future.result()
        finally:
            for future in pending:
                future.cancel()
