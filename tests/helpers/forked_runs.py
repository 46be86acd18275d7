"""Run tools/train_net.py's main many times, fast: imported once, then one forked process per
run, each killed (SIGKILL) at a chosen moment or given a simulated full disk.

``python -m tests.helpers.forked_runs PLAN.json REPORT.json`` with PLAN::

    {"argv": [the tool's arguments, without its output folder], "seed": 0,
     "tool": "train_net" | "lazy_train_net", "timing": null | REPORT ENTRY,
     "runs": [{"output": DIR, "resume": false, "log": FILE, "signal": 9, "args": [...],
               "kill": null | "setup" | "training" | "during_write",
               "fault": null | "enospc_checkpoint:<name>.pth" | "enospc_metrics"}, ...]}

A run is a real process running the tool's own code (``nd_det.engine.train_net.main``, or
``nd_det.engine.lazy_train_net.main`` with ``"tool": "lazy_train_net"``) from the start; forking
from a process that has only imported the modules saves the ~3 s import per run.  ``kill``
sends SIGKILL at a moment drawn from a seeded generator: ``"setup"``, between the start and the
time the first (unkilled) run needed to start training; ``"training"``, once the run's log says
that training started, after up to an eighth of the first run's training time;
``"during_write"``, as soon as the temporary file of this run's second checkpoint appears in
the output folder (the first one completes: each such run moves the training on).  ``args``:
more arguments of that run.  ``timing``: the report entry of an earlier unkilled run, to time
the kills instead of the first run.  ``signal``: another signal than SIGKILL (e.g. 10, SIGUSR1,
for a preemption).  A
``fault`` makes the run's writes fail with ENOSPC half-way: the temporary file of the named
checkpoint, or metrics.json, as a full disk would.  REPORT lists, per run, its exit
status (negative: the signal), whether it was killed, whether a checkpoint write was under way
then, its seconds, and what the output folder held when it ended: the files, which ``.pth``
files are intact (:func:`nd_det.utils.checkpoint_files.file_problem`) and what
``last_checkpoint`` named.
"""

import errno
import glob
import io
import json
import os
import random
import sys
import time

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()
import torch  # noqa: E402

from nd_det.engine import lazy_train_net, train_net  # noqa: E402
from nd_det.utils.checkpoint_files import file_problem  # noqa: E402

_POLL_S = 0.001


def _full_disk(fault: str) -> None:
    """Make the faulty write fail with ENOSPC after half of its bytes (in this process)."""

    def no_space():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fault.startswith("enospc_checkpoint:"):
        target = fault.split(":", 1)[1]
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            # the file atomic_write opened (os.fdopen: its name is the descriptor)
            name = os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}"))
            if not name.startswith(f".{target}."):
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            raise no_space()

        torch.save = save
    elif fault == "enospc_metrics":
        from detectron2.utils import events

        real_write = events.JSONWriter.write

        def write(self):
            real_write(self)
            raise no_space()

        events.JSONWriter.write = write


# each tool's main and how its output folder is given
TOOLS = {
    "train_net": (train_net.main, lambda output: ["OUTPUT_DIR", output]),
    "lazy_train_net": (lazy_train_net.main, lambda output: [f"train.output_dir={output}"]),
}


def _child(argv, run, tool) -> None:
    code = 1
    try:
        with open(run["log"], "wb", buffering=0) as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        if run.get("fault"):
            _full_disk(run["fault"])
        main, output = TOOLS[tool]
        args = list(argv) + list(run.get("args", ())) + output(run["output"])
        if run.get("resume"):
            args = ["--resume"] + args
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - a bug: its traceback goes to the run's log
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _temporary_checkpoints(output: str):
    return glob.glob(os.path.join(output, ".model_*.tmp"))


def _run(argv, run, delay, tool="train_net"):
    """Fork one run; kill it per ``run["kill"]`` (``delay``: seconds from the start, or from the
    start of training for "training"); returns its report entry."""
    left_before = set(_temporary_checkpoints(run["output"]))  # by a run killed earlier
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(argv, run, tool)
    kill = run.get("kill")
    killed, during_write, started_at = False, False, None

    seen = set()

    def writing():  # the temporary files of this run's checkpoint writes under way
        now_writing = set(_temporary_checkpoints(run["output"])) - left_before
        seen.update(now_writing)
        return now_writing

    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        now = time.perf_counter() - start
        if started_at is None and os.path.exists(run["log"]):
            with open(run["log"], "rb") as f:
                if b"Starting training from iteration" in f.read():
                    started_at = now
        if kill == "setup":
            due = now >= delay
        elif kill == "training":
            due = started_at is not None and now >= started_at + delay
        else:
            due = kill == "during_write" and bool(writing()) and len(seen) >= 2
        if due and not killed:
            os.kill(pid, run.get("signal", 9))
            killed, during_write = True, bool(writing())
        time.sleep(_POLL_S)
    seconds = time.perf_counter() - start
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {
        "status": code,
        "killed": killed,
        "during_write": during_write,
        "seconds": seconds,
        "started_training_after": started_at,
        **_folder(run["output"]),
    }


def _folder(output: str) -> dict:
    files = sorted(os.listdir(output)) if os.path.isdir(output) else []
    tag = os.path.join(output, "last_checkpoint")
    return {
        "files": files,
        "intact": [
            f for f in files if f.endswith(".pth") and file_problem(os.path.join(output, f)) is None
        ],
        "last_checkpoint": open(tag).read() if os.path.isfile(tag) else None,
    }


def execute(plan):
    rng = random.Random(plan.get("seed", 0))
    report, setup, training = [], None, None
    if plan.get("timing"):
        setup = plan["timing"]["started_training_after"]
        training = plan["timing"]["seconds"] - setup
    for run in plan["runs"]:
        delay = None
        if run.get("kill"):
            assert setup is not None, "the first run, unkilled, times the others' kill moments"
            delay = rng.uniform(0.0, setup if run["kill"] == "setup" else training / 8)
        entry = _run(plan["argv"], run, delay, plan.get("tool", "train_net"))
        if setup is None and entry["started_training_after"] is not None:
            setup = entry["started_training_after"]
            training = entry["seconds"] - setup
        report.append(dict(entry, kill=run.get("kill"), kill_delay=delay))
    return report


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        plan = json.load(f)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(execute(plan), f, indent=1)
