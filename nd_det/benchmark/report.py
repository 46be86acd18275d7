"""Benchmark results: the JSON file and a markdown summary of it."""
from typing import Dict, List

from ..utils.atomic_file import atomic_write_json, atomic_write_text

__all__ = ["write_json", "markdown_summary", "write_markdown"]


def write_json(path: str, result: Dict) -> None:
    """Write ``result`` to ``path`` atomically."""
    atomic_write_json(result, path, sort_keys=False)


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
    lines += [
        "",
        "| step | median ms | min ms | max ms | CPU-time median ms | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in result["timings"].items():
        ips = result["images_per_s"].get(name)
        lines.append(f"| {name} | {_fmt(t['median_ms'])} | {_fmt(t['min_ms'])} | "
                     f"{_fmt(t['max_ms'])} | {_fmt(t['cpu_median_ms'])} | {_fmt(ips, 2)} |")
    lines += ["", "| loss set | distill step ms | baseline | baseline ms | ratio | "
              "CPU-time ratio |", "|---|---|---|---|---|---|"]
    for name, r in result["ratios"].items():
        lines.append(f"| {name} | {_fmt(r['distill_ms'])} | {r['baseline']} | "
                     f"{_fmt(r['baseline_ms'])} | {_fmt(r['ratio'], 3)} | "
                     f"{_fmt(r['cpu_ratio'], 3)} |")
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
        lines += ["", f"Peak memory ({mem['method']}), MiB:", "",
                  "| loss set | distill step peak | student step peak | teacher weights | "
                  "teacher forward activations | ratio |", "|---|---|---|---|---|---|"]
        for name, r in mem["ratios"].items():
            lines.append(
                f"| {name} | {_fmt(_mib(mem['distill_step_peak_bytes'][name]))} | "
                f"{_fmt(_mib(mem['student_step_peak_bytes']))} | "
                f"{_fmt(_mib(mem['teacher_weight_bytes']))} | "
                f"{_fmt(_mib(mem['teacher_forward_activation_bytes']))} | {_fmt(r, 3)} |")
    loaders = result.get("dataloader") or []
    if loaders:
        lines += ["", "| data loader workers | images/s | source size | median output size |",
                  "|---|---|---|---|"]
        for r in loaders:
            lines.append(f"| {r['workers']} | {_fmt(r['images_per_s'])} | "
                         f"{r['source_image_size'][0]}x{r['source_image_size'][1]} | "
                         f"{r['median_output_size'][0]}x{r['median_output_size'][1]} |")
    syncs = result.get("loss_path_sync_ops") or {}
    if syncs:
        lines += ["", "Host-device sync ops in the loss path: " + "; ".join(
            f"{k}: {len(v)}" + (f" ({', '.join(sorted({e['op'] for e in v}))})" if v else "")
            for k, v in syncs.items())]
    return "\n".join(lines) + "\n"


def write_markdown(path: str, result: Dict) -> None:
    atomic_write_text(markdown_summary(result), path)
