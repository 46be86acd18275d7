"""One benchmark run -> the dict the JSON file holds (fields: docs/benchmarks.md), the data-loader
throughput, and the markdown summary."""

import gc
import json
import logging
import math
import os
import platform
import tempfile
import uuid

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.benchmark import iter_benchmark
from detectron2.solver import build_optimizer
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.events import EventStorage
from PIL import Image

from nd_det.data import register_coco_dataset
from nd_det.utils.text import markdown_table

from .measure import (
    TrainStep,
    compare_nd_implementations,
    interleaved_samples,
    nd_benchmark_inputs,
    nd_forward_backward,
    student_step_inputs,
    summarize_ms,
    teacher_distill_forward,
    teacher_inference,
    term_alone,
)
from .memory import measure_phase_in_fresh_process
from .models import (
    build_benchmark_cfg,
    build_distiller,
    parameter_bytes,
    parse_loss_set,
    prepare_weight_files,
    student_parameter_counts,
    synthetic_batch,
)

logger = logging.getLogger(__name__)
SCHEMA = "nd_det.benchmark/1"


def _machine(device: torch.device) -> dict:
    import detectron2

    cpu = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):  # detectron2's environment table lacks the CPU model
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
    return {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "detectron2": detectron2.__version__,
        "environment": collect_env_info(),
    }


def run_benchmark(s) -> dict:
    """``s``: the settings (cli.BenchmarkSettings), already checked."""
    device = torch.device(s.device)
    if s.threads:
        torch.set_num_threads(s.threads)
    loss_sets = {"+".join(parse_loss_set(t)): parse_loss_set(t) for t in s.losses}
    cfg = build_benchmark_cfg(s.config_file, s.overrides, s.device, s.precision)
    cudnn = bool(cfg.CUDNN_BENCHMARK if s.cudnn_benchmark is None else s.cudnn_benchmark)
    torch.backends.cudnn.benchmark = cudnn
    classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    batch = synthetic_batch(s.batch_size, s.height, s.width, classes, seed=s.seed)
    result = {
        "schema": SCHEMA,
        "machine": _machine(device),
        "settings": dict(
            vars(s),
            cudnn_benchmark=cudnn,
            teacher_config=cfg.MODEL.DISTILL.TEACHER_CONFIG,
            teacher_autocast=cfg.MODEL.DISTILL.TEACHER_AUTOCAST,
            base_lr=cfg.SOLVER.BASE_LR,
            loss_sets=loss_sets,
        ),
    }
    with tempfile.TemporaryDirectory(prefix="nd_det_benchmark_") as work_dir:
        student_file = prepare_weight_files(cfg, work_dir, batch, seed=s.seed)
        with EventStorage(0):
            result.update(_time_steps(s, cfg, student_file, batch, loss_sets, device))
        gc.collect()  # the timed models are gone before the memory phases start
        if s.memory:
            result["memory"] = _memory(
                s, cfg, student_file, loss_sets, result["teacher_weight_bytes"], cudnn
            )
    result["nd_loss"] = _nd_loss(s, device, classes + 1)
    result["dataloader"] = [loader_throughput(cfg, w, s) for w in s.dataloader_workers]
    return result


def _synchronizer(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _time_steps(s, cfg, student_file, batch, loss_sets, device) -> dict:
    student = build_distiller(cfg, [], student_file)
    models = {
        name: build_distiller(cfg, losses, student_file) for name, losses in loss_sets.items()
    }
    first = next(iter(models.values()))
    teacher_images, sampled, _ = student_step_inputs(first, batch, s.precision)
    variants = {
        "student_step": TrainStep(student, build_optimizer(cfg, student), batch, s.precision),
        "teacher_backbone": lambda: first.teacher.features(teacher_images),
        "teacher_inference": teacher_inference(first, batch),
    }
    teacher_key = {}
    for name, model in models.items():
        needs = model.teacher_needs
        parts = ["backbone"] + ["box_head"] * needs.box_head + ["box_predictor"] * needs.logits
        teacher_key[name] = "teacher_distill_forward[" + "+".join(parts) + "]"
        variants.setdefault(teacher_key[name], teacher_distill_forward(model, batch, sampled))
    review = next((n for n, losses in loss_sets.items() if "reviewkd" in losses), None)
    if review is not None:
        model = models[review]
        term = next(t for t in model.distill_terms if t.name == "reviewkd")
        variants["reviewkd_abf_hcl"] = term_alone(
            term, student_step_inputs(model, batch, s.precision)[2], s.precision
        )
    for name, model in models.items():
        variants["distill_step:" + name] = TrainStep(
            model, build_optimizer(cfg, model), batch, s.precision
        )
    logger.info(
        "timing %d variants: %d warm-up + %d measured rounds", len(variants), s.warmup, s.iters
    )
    samples = interleaved_samples(variants, s.iters, s.warmup, _synchronizer(device))
    timings = {
        n: dict(
            summarize_ms(samples["wall"][n]),
            cpu_median_ms=summarize_ms(samples["cpu"][n])["median_ms"],
        )
        for n in variants
    }
    wall = {n: t["median_ms"] for n, t in timings.items()}
    cpu = {n: t["cpu_median_ms"] for n, t in timings.items()}
    steps = {n: v for n, v in variants.items() if isinstance(v, TrainStep)}
    ratios = {}
    for name, losses in loss_sets.items():
        parts = ["student_step", teacher_key[name]] + ["reviewkd_abf_hcl"] * ("reviewkd" in losses)
        step = "distill_step:" + name
        ratios[name] = {
            "distill_ms": wall[step],
            "baseline": " + ".join(parts),
            "baseline_ms": sum(wall[p] for p in parts),
            "ratio": wall[step] / sum(wall[p] for p in parts),
            "cpu_ratio": cpu[step] / sum(cpu[p] for p in parts),
        }
    out = {
        "student_parameters": student_parameter_counts(student),
        "rois_per_step": sum(len(p) for p in sampled),
        "timings": timings,
        "images_per_s": {n: s.batch_size * 1000.0 / wall[n] for n in steps},
        "losses_finite": {
            n: all(math.isfinite(float(x)) for x in v.last_losses.values())
            for n, v in steps.items()
        },
        "last_losses": {
            n: {k: float(x) for k, x in v.last_losses.items()} for n, v in steps.items()
        },
        "ratios": ratios,
        "teacher_weight_bytes": parameter_bytes(first.teacher.model),
    }
    if review is not None:
        out["reviewkd_abf_hcl"] = {
            "median_ms": wall["reviewkd_abf_hcl"],
            "loss_set": review,
            "share_of_reviewkd_step": wall["reviewkd_abf_hcl"] / wall["distill_step:" + review],
        }
    return out


def _memory(s, cfg, student_file, loss_sets, teacher_weights: int, cudnn: bool) -> dict:
    def phase(name, losses=()):
        logger.info("peak memory of %s %s (fresh process)", name, "+".join(losses))
        return measure_phase_in_fresh_process(
            dict(
                phase=name,
                cfg=cfg,
                student_file=student_file,
                losses=list(losses),
                batch_size=s.batch_size,
                height=s.height,
                width=s.width,
                precision=s.precision,
                iters=s.memory_iters,
                seed=s.seed,
                threads=s.threads,
                cudnn_benchmark=cudnn,
            )
        )

    student, teacher = phase("student_step"), phase("teacher_distill_forward")
    distill = {
        name: phase("distill_step", losses)["peak_bytes"] for name, losses in loss_sets.items()
    }
    base = student["peak_bytes"] + teacher_weights + teacher["peak_bytes"]
    return {
        "method": student["method"],
        "iters_per_phase": s.memory_iters,
        "student_step_peak_bytes": student["peak_bytes"],
        "teacher_weight_bytes": teacher_weights,
        "teacher_forward_activation_bytes": teacher["peak_bytes"],
        "distill_step_peak_bytes": distill,
        "ratios": {n: peak / base for n, peak in distill.items()},
        "ratio_baseline": "student_step_peak + teacher_weights + teacher_forward_activations",
    }


def _nd_loss(s, device, classes: int) -> dict:
    inputs = nd_benchmark_inputs(s.nd_rois, s.nd_dim, classes, device, seed=s.seed)
    check = compare_nd_implementations(inputs)
    samples = interleaved_samples(
        {n: nd_forward_backward(inputs, n) for n in ("vectorised", "per_roi_loop")},
        s.iters,
        s.warmup,
        _synchronizer(device),
        what="nd_loss",
    )["wall"]
    vec, loop = summarize_ms(samples["vectorised"]), summarize_ms(samples["per_roi_loop"])
    return {
        "rois": s.nd_rois,
        "dim": s.nd_dim,
        "classes": classes,
        "vectorised_ms": vec["median_ms"],
        "per_roi_loop_ms": loop["median_ms"],
        "speedup": loop["median_ms"] / vec["median_ms"],
        "timings": {"vectorised": vec, "per_roi_loop": loop},
        "check": check,
    }


def write_synthetic_coco(
    folder: str, count: int, height: int, width: int, classes: int, seed: int = 0
):
    """``count`` JPEG files (smooth colour fields with filled boxes, quality 90, so that they
    decode at a realistic cost) and their COCO JSON; returns (json path, image folder)."""
    rng = np.random.RandomState(seed)
    image_dir = os.path.join(folder, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        coarse = rng.randint(0, 256, size=(max(2, height // 16), max(2, width // 16), 3))
        pixels = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height)))
        canvas = np.clip(pixels + rng.randint(-20, 21, size=pixels.shape), 0, 255).astype(np.uint8)
        for _ in range(4):
            w, h = (
                int(rng.randint(width // 10, width // 2)),
                int(rng.randint(height // 10, height // 2)),
            )
            x, y = int(rng.randint(0, width - w)), int(rng.randint(0, height - h))
            canvas[y : y + h, x : x + w] = rng.randint(0, 256, size=3)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": int(rng.randint(1, classes + 1)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        Image.fromarray(canvas).save(os.path.join(image_dir, f"{index:05d}.jpg"), quality=90)
        images.append(
            {"id": index + 1, "file_name": f"{index:05d}.jpg", "height": height, "width": width}
        )
    json_path = os.path.join(folder, "instances.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": c, "name": f"class_{c}"} for c in range(1, classes + 1)],
            },
            f,
        )
    return json_path, image_dir


def loader_throughput(cfg, workers: int, s) -> dict:
    """Images/s of detectron2's training loader for ``cfg`` (its DatasetMapper: decoding, the
    config's resize and flip) with ``workers`` processes, timed by detectron2's
    ``iter_benchmark`` after the warm-up and the batches the workers prefetched."""
    height, width = s.dataloader_image_size
    name = f"nd_det_benchmark_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="nd_det_loader_") as folder:
        register_coco_dataset(
            name,
            *write_synthetic_coco(
                folder,
                s.dataloader_images,
                height,
                width,
                max(1, min(cfg.MODEL.ROI_HEADS.NUM_CLASSES, 80)),
                seed=s.seed,
            ),
        )
        loader_cfg = cfg.clone()
        loader_cfg.defrost()
        loader_cfg.DATASETS.TRAIN, loader_cfg.DATALOADER.NUM_WORKERS = (name,), workers
        loader_cfg.SOLVER.IMS_PER_BATCH = s.batch_size
        sizes: list = []

        def seen(source):
            for batch in source:
                sizes.extend(tuple(x["image"].shape[-2:]) for x in batch)
                yield batch

        warmup = 2 + 2 * workers
        iterator = iter(build_detection_train_loader(loader_cfg))
        try:
            seconds_per_batch, times = iter_benchmark(
                seen(iterator), s.dataloader_batches, warmup=warmup
            )
        finally:
            del iterator  # stops the worker processes
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    timed = sizes[warmup * s.batch_size :]
    return {
        "workers": workers,
        "batch_size": s.batch_size,
        "timed_batches": len(times),
        "images_per_s": s.batch_size / seconds_per_batch,
        "source_image_size": [height, width],
        "median_output_size": [
            int(np.median([x[0] for x in timed])),
            int(np.median([x[1] for x in timed])),
        ],
    }


def _f(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown_summary(r: dict) -> str:
    s, m, p = r["settings"], r["machine"], r["student_parameters"]
    lines = (
        [
            f"Device: {m['device_name']} ({s['device']}, {m['torch_threads']} torch threads); "
            f"torch {m['torch']}, detectron2 {m['detectron2']}.",
            f"Batch {s['batch_size']} x {s['height']}x{s['width']}, {s['precision']}, {s['iters']} "
            f"measured rounds after {s['warmup']} warm-up (interleaved, medians); "
            f"{r['rois_per_step']} sampled RoIs per step.",
            f"Student parameters: {p['total'] / 1e6:.2f} M "
            f"({p['trainable'] / 1e6:.2f} M trainable); "
            f"backbone with FPN {p['backbone'] / 1e6:.2f} M, "
            f"bottom-up {p['bottom_up'] / 1e6:.2f} M.",
            "",
        ]
        + markdown_table(
            ["step", "median ms", "min ms", "max ms", "CPU-time median ms", "images/s"],
            [
                (
                    n,
                    _f(t["median_ms"]),
                    _f(t["min_ms"]),
                    _f(t["max_ms"]),
                    _f(t["cpu_median_ms"]),
                    _f(r["images_per_s"].get(n), 2),
                )
                for n, t in r["timings"].items()
            ],
        )
        + [""]
    )
    lines += markdown_table(
        ["loss set", "distill step ms", "baseline", "baseline ms", "ratio", "CPU-time ratio"],
        [
            (
                n,
                _f(x["distill_ms"]),
                x["baseline"],
                _f(x["baseline_ms"]),
                _f(x["ratio"], 3),
                _f(x["cpu_ratio"], 3),
            )
            for n, x in r["ratios"].items()
        ],
    )
    if "reviewkd_abf_hcl" in r:
        abf = r["reviewkd_abf_hcl"]
        lines += [
            "",
            f"ABF/HCL alone (forward + backward): {_f(abf['median_ms'])} ms = "
            f"{_f(100 * abf['share_of_reviewkd_step'])}% of the {abf['loss_set']} step.",
        ]
    nd, check = r["nd_loss"], r["nd_loss"]["check"]
    lines += [
        "",
        f"nd_loss forward+backward, {nd['rois']} RoIs x {nd['dim']}-d, {nd['classes']} "
        f"classes: vectorised {_f(nd['vectorised_ms'], 3)} ms, per-RoI loop "
        f"{_f(nd['per_roi_loop_ms'])} ms, speed-up {_f(nd['speedup'])}x; |value diff| "
        f"{check['value_abs_diff']:.2e}, max |grad diff| {check['grad_max_abs_diff']:.2e} "
        f"(equal to {check['tolerance']:g}: {check['equal']}).",
    ]
    mem = r.get("memory")
    if mem:
        mib = [
            _f(mem[k] / 2**20)
            for k in (
                "student_step_peak_bytes",
                "teacher_weight_bytes",
                "teacher_forward_activation_bytes",
            )
        ]
        lines += ["", f"Peak memory ({mem['method']}), MiB:", ""] + markdown_table(
            [
                "loss set",
                "distill step peak",
                "student step peak",
                "teacher weights",
                "teacher forward activations",
                "ratio",
            ],
            [
                (n, _f(mem["distill_step_peak_bytes"][n] / 2**20), *mib, _f(x, 3))
                for n, x in mem["ratios"].items()
            ],
        )
    if r["dataloader"]:
        lines += [""] + markdown_table(
            ["data loader workers", "images/s", "source size", "median output size"],
            [
                (
                    d["workers"],
                    _f(d["images_per_s"]),
                    "x".join(map(str, d["source_image_size"])),
                    "x".join(map(str, d["median_output_size"])),
                )
                for d in r["dataloader"]
            ],
        )
    return "\n".join(lines) + "\n"
