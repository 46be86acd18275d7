#!/usr/bin/env python
"""CPU latency of a student as PyTorch eager, as the exported program (``model.pt2``) and in
ONNX Runtime (``model.onnx``), measured side by side in one run (see README.md here).

  python projects/deploy_latency/latency.py --output latency.md

For each student (the demo's MobileNetV2 x0.5 FPN at 400 px; an R50-FPN at 800 px, both with
random weights, the R50's FrozenBN statistics calibrated on the image) it exports both files
with nd-det's own export code and compares their detections with eager's (the table gives the
largest box difference); then, for each thread count, it runs the three side by side: every
round runs each of them once on the same image, in a rotating order, and the table reports
the median milliseconds per image and the ratio to eager.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from nd_det.config import add_distill_config  # noqa: E402
from nd_det.export import onnx_export, program  # noqa: E402
from nd_det.export.contract import student_detections  # noqa: E402
from nd_det.export.graph import exporting  # noqa: E402
from nd_det.modeling.student_checkpoint import plain_student_cfg  # noqa: E402
from nd_det.utils.atomic_file import atomic_write, atomic_write_text  # noqa: E402
from nd_det.utils.text import markdown_table  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# name -> (config file, what the table calls it); each is measured at its config's test size
STUDENTS = {
    "demo": (
        os.path.join(REPO, "projects", "nd_common", "configs", "student_MV2x0.5_FPN.yaml"),
        "demo student (MobileNetV2 x0.5 FPN, GN, 1 class)",
    ),
    "r50": (
        os.path.join(REPO, "configs", "COCO-Distill", "R50_student_only.yaml"),
        "R50-FPN student (FrozenBN, 80 classes)",
    ),  # FrozenBN calibrated: see below
}


def calibrate_frozen_bn(model, image) -> None:
    """Toy weights that behave: each FrozenBatchNorm gets the mean and variance of its input on
    ``image`` (in one pass, layer after layer).  With random convolutions and FrozenBN's
    identity statistics the R50's features reach ~1e4 and every box degenerates."""

    def calibrate(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + module.eps)

    hooks = [
        m.register_forward_pre_hook(calibrate)
        for m in model.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    with torch.no_grad():
        student_detections(model, image)
    for hook in hooks:
        hook.remove()


def student(name: str, opts):
    """The eval-mode student of ``STUDENTS[name]`` with random weights (seed 0), and its cfg."""
    cfg = add_distill_config(get_cfg())
    cfg.set_new_allowed(True)  # the demo's yaml carries its own DEMO node
    cfg.merge_from_file(STUDENTS[name][0])
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(opts))
    cfg = plain_student_cfg(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    calibrate_frozen_bn(model, test_image(cfg))
    return cfg, model


def test_image(cfg) -> torch.Tensor:
    """A seeded random 0..255 image at the config's test size, 4:3 (as the test transform
    would give: shortest side MIN_SIZE_TEST, longest at most MAX_SIZE_TEST)."""
    short = cfg.INPUT.MIN_SIZE_TEST
    long = min(round(short * 4 / 3), cfg.INPUT.MAX_SIZE_TEST)
    return torch.rand(3, short, long, generator=torch.Generator().manual_seed(0)) * 255


def export_both(model, image, folder):
    """Write model.pt2 and model.onnx with nd-det's export code; their loaders."""
    paths = {}
    for kind in (program, onnx_export):
        built, _, _ = kind.build(model, image)
        paths[kind] = os.path.join(folder, kind.FILE_NAME)
        atomic_write(paths[kind], lambda f, kind=kind, built=built: kind.save(built, f))
    return program.load(paths[program], "cpu"), paths[onnx_export]


def difference(expected, found) -> str:
    """How far ``found`` is from the eager detections: the largest box difference in pixels,
    or what differs more (random weights make no trained network: ONNX Runtime's summation
    order shows more in their boxes than in a trained student's, see README.md)."""
    if len(found[0]) != len(expected[0]) or not torch.equal(found[2], expected[2]):
        return f"{len(found[0])} detections or other classes"
    if not len(found[0]):
        return "0"
    return f"{float((found[0] - expected[0]).abs().max()):.1g}"


def measure(runners, image, runs: int, warmup: int):
    """Median ms per image of each runner, run side by side (rotating order each round)."""
    times = {name: [] for name in runners}
    names = list(runners)
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                runners[name](image)
        for round_index in range(runs):
            for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                start = time.perf_counter()
                runners[name](image)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument(
        "--opts",
        nargs="*",
        default=[],
        help="KEY VALUE overrides for every student (e.g. INPUT.MIN_SIZE_TEST "
        "128 INPUT.MAX_SIZE_TEST 160 for a quick try)",
    )
    parser.add_argument("--output", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)

    import onnxruntime  # optional dependency of nd-det (pip install -e '.[onnx]')

    rows = []
    for name in args.students:
        cfg, model = student(name, args.opts)
        image = test_image(cfg)
        with tempfile.TemporaryDirectory() as folder:
            with exporting():
                run_pt2, onnx_path = export_both(model, image, folder)
            for threads in args.threads:
                torch.set_num_threads(threads)
                session = onnx_export.onnx_session(onnx_path, threads)

                def run_onnx(x, session=session):
                    return [torch.from_numpy(a) for a in session.run(None, {"image": x.numpy()})]

                runners = {
                    "eager": lambda x, model=model: student_detections(model, x),
                    "pt2": run_pt2,
                    "onnx": run_onnx,
                }
                with torch.no_grad():
                    expected = student_detections(model, image)
                    differences = [
                        difference(expected, runners[other](image)) for other in ("pt2", "onnx")
                    ]
                median = measure(runners, image, args.runs, args.warmup)
                rows.append(
                    [
                        STUDENTS[name][1],
                        f"{image.shape[1]}x{image.shape[2]}",
                        threads,
                        len(expected[0]),
                        f"{median['eager']:.1f}",
                        f"{median['pt2']:.1f} ({median['pt2'] / median['eager']:.2f}x)",
                        f"{median['onnx']:.1f} ({median['onnx'] / median['eager']:.2f}x)",
                        " / ".join(differences),
                    ]
                )
                print(" | ".join(str(cell) for cell in rows[-1]), flush=True)

    lines = [
        f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; median of {args.runs} rounds after "
        f"{args.warmup} warm-up rounds; command: python projects/deploy_latency/latency.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "",
    ]
    lines += markdown_table(
        [
            "student",
            "input",
            "threads",
            "detections",
            "PyTorch eager ms",
            "exported program ms (ratio)",
            "ONNX Runtime ms (ratio)",
            "max box diff px (pt2 / onnx)",
        ],
        rows,
    )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.output:
        atomic_write_text(text, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
