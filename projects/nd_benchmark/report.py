"""Benchmark results: a markdown summary of the JSON file's content."""
from typing import Dict, List

from nd_det.utils.text import markdown_table

__all__ = ["markdown_summary"]


def _fmt(x, digits=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _millions(n):
    return f"{n / 1e6:.2f}"


def _mib(n):
    return None if n is None else n / 2**20


def markdown_summary(result: Dict) -> str:
    s = result["settings"]
    m = result["machine"]
    lines: List[str] = [
        f"Device: {m['device_name']} ({s['device']}, {m['torch_threads']} torch threads); "
        f"torch {m['torch']}, detectron2 {m['detectron2']}.",
        f"Batch {s['batch_size']} x {s['height']}x{s['width']}, {s['precision']}, "
        f"{s['iters']} measured rounds after {s['warmup']} warm-up (interleaved, medians); "
        f"{result['rois_per_step']} sampled RoIs per step.",
    ]
    params = result.get("student_parameters")
    if params:
        lines.append(
            f"Student parameters: {_millions(params['total'])} M ({_millions(params['trainable'])}"
            f" M trainable); backbone with FPN {_millions(params['backbone'])} M, bottom-up "
            f"{_millions(params['bottom_up'])} M.")
    lines += [""] + markdown_table(
        ["step", "median ms", "min ms", "max ms", "CPU-time median ms", "images/s"],
        [(name, _fmt(t["median_ms"]), _fmt(t["min_ms"]), _fmt(t["max_ms"]),
          _fmt(t["cpu_median_ms"]), _fmt(result["images_per_s"].get(name), 2))
         for name, t in result["timings"].items()])
    lines += [""] + markdown_table(
        ["loss set", "distill step ms", "baseline", "baseline ms", "ratio", "CPU-time ratio"],
        [(name, _fmt(r["distill_ms"]), r["baseline"], _fmt(r["baseline_ms"]),
          _fmt(r["ratio"], 3), _fmt(r["cpu_ratio"], 3)) for name, r in result["ratios"].items()])
    abf = result.get("reviewkd_abf_hcl")
    if abf:
        lines += ["", f"ABF/HCL alone (forward + backward): {_fmt(abf['median_ms'])} ms = "
                  f"{_fmt(100 * abf['share_of_reviewkd_step'])}% of the reviewkd+nd step."]
    nd = result["nd_loss"]
    lines += [
        "",
        f"nd_loss forward+backward, {nd['rois']} RoIs x {nd['dim']}-d, {nd['classes']} classes: "
        f"vectorised {_fmt(nd['vectorised_ms'], 3)} ms, per-RoI loop {_fmt(nd['per_roi_loop_ms'])}"
        f" ms, speed-up {_fmt(nd['speedup'])}x; |value diff| {nd['check']['value_abs_diff']:.2e}, "
        f"max |grad diff| {nd['check']['grad_max_abs_diff']:.2e} "
        f"(equal to {nd['check']['tolerance']:g}: {nd['check']['equal']}).",
    ]
    mem = result.get("memory")
    if mem:
        shared = [_fmt(_mib(mem[k])) for k in ("student_step_peak_bytes", "teacher_weight_bytes",
                                               "teacher_forward_activation_bytes")]
        lines += ["", f"Peak memory ({mem['method']}), MiB:", ""] + markdown_table(
            ["loss set", "distill step peak", "student step peak", "teacher weights",
             "teacher forward activations", "ratio"],
            [(name, _fmt(_mib(mem["distill_step_peak_bytes"][name])), *shared, _fmt(r, 3))
             for name, r in mem["ratios"].items()])
    loaders = result.get("dataloader") or []
    if loaders:
        lines += [""] + markdown_table(
            ["data loader workers", "images/s", "source size", "median output size"],
            [(r["workers"], _fmt(r["images_per_s"]), "x".join(map(str, r["source_image_size"])),
              "x".join(map(str, r["median_output_size"]))) for r in loaders])
    syncs = result.get("loss_path_sync_ops") or {}
    if syncs:
        lines += ["", "Host-device sync ops in the loss path: " + "; ".join(
            f"{k}: {len(v)}" + (f" ({', '.join(sorted({e['op'] for e in v}))})" if v else "")
            for k, v in syncs.items())]
    return "\n".join(lines) + "\n"
