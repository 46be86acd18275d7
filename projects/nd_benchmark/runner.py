"""One benchmark run: build the models, time every step interleaved, measure peak memory,
compare ND implementations, check the loss path for sync ops, time the data loader; one dict
of results (the JSON the tool writes; its fields are described in docs/benchmarks.md)."""
import functools
import gc
import logging
import math
import os
import platform
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage
from fvcore.nn import parameter_count

from nd_det.errors import ConfigError
from nd_det.utils.progress import ProgressClock, format_duration
from .dataloader import loader_throughput
from .dtype_casts import dtype_census
from .memory import MemoryPhase, measure_phase_in_fresh_process
from .models import (build_benchmark_cfg, build_distiller, build_student, loss_sets_by_name, parameter_bytes, prepare_weight_files)
from .nd_reference import NDForwardBackward, compare_nd_implementations, nd_benchmark_inputs
from .steps import (PRECISIONS, TeacherDistillForward, TrainStep, distill_inputs,
                    precision_context, raw_images, reviewkd_alone, sample_rois, teacher_inference,
                    with_student_grad)
from .sync_ops import find_sync_ops
from .synthetic import MIN_IMAGE_SIDE, synthetic_batch, without_annotations
from .timing import device_synchronizer, interleaved_samples, summarize_seconds

__all__ = ["BenchmarkSettings", "run_benchmark", "student_parameter_counts", "SCHEMA"]

logger = logging.getLogger(__name__)

SCHEMA = "nd_det.benchmark/1"
DEFAULT_LOSS_SETS = ("nd", "kd+nd", "dkd+nd", "reviewkd+nd")
CENSUS_ROWS = 40  # largest dtype-change sites kept in the JSON


@dataclass
class BenchmarkSettings:
    config_file: str
    overrides: List[str] = field(default_factory=list)
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 2
    height: int = 320
    width: int = 480
    iters: int = 7
    warmup: int = 2
    losses: List[str] = field(default_factory=lambda: list(DEFAULT_LOSS_SETS))
    dataloader_workers: List[int] = field(default_factory=lambda: [0, 2])
    dataloader_images: int = 32
    dataloader_batches: int = 20
    dataloader_image_size: Tuple[int, int] = (480, 640)
    nd_rois: int = 1024
    nd_dim: int = 1024
    memory: bool = True
    memory_iters: int = 2
    threads: Optional[int] = None
    cudnn_benchmark: Optional[bool] = None
    cast_census: Optional[bool] = None  # None: only for bf16
    seed: int = 0


def _check_settings(s: BenchmarkSettings) -> torch.device:
    if s.precision not in PRECISIONS:
        raise ConfigError(f"--precision {s.precision!r}: use one of {sorted(PRECISIONS)}")
    if s.device not in ("cpu", "cuda") and not s.device.startswith("cuda:"):
        raise ConfigError(f"--device {s.device!r}: use cpu or cuda (cuda:N)")
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {s.device}: no CUDA device is available here; use cpu")
    for name in ("batch_size", "iters", "nd_rois", "nd_dim", "memory_iters"):
        if getattr(s, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(s, name)}")
    if s.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0; got {s.warmup}")
    for name, value in (("--height", s.height), ("--width", s.width)):
        if value < MIN_IMAGE_SIDE:
            raise ConfigError(f"{name} {value}: give {MIN_IMAGE_SIDE} pixels or more")
    if s.dataloader_workers:
        if any(w < 0 for w in s.dataloader_workers):
            raise ConfigError(f"--dataloader-workers {s.dataloader_workers}: give 0 or more "
                                 "workers each")
        for name, value in (("--dataloader-images", s.dataloader_images),
                            ("--dataloader-batches", s.dataloader_batches)):
            if value < 1:
                raise ConfigError(f"{name} {value}: give 1 or more")
        if min(s.dataloader_image_size) < 1:
            raise ConfigError(f"--dataloader-image-size {list(s.dataloader_image_size)}: "
                                 "give a positive height and width")
    if not s.losses:
        raise ConfigError("--losses: give at least one loss set, e.g. nd or reviewkd+nd")
    return torch.device(s.device)


def _machine(device: torch.device) -> Dict[str, object]:
    import detectron2
    from detectron2.utils.collect_env import collect_env_info

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
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
        # detectron2's description of the environment (its table lacks the CPU's model name,
        # read above from /proc/cpuinfo)
        "environment": collect_env_info(),
    }


def _round_progress(what: str):
    """A progress line after every timing round, with the ETA of the rounds left; made right
    before the first round, so that round's time counts too."""
    clock = ProgressClock(0, skip=0)
    clock.start()

    def report(done: int, total: int) -> None:
        clock.total = total
        clock.step()
        logger.info("[%s] timing round %d/%d done, ETA %s", what, done, total,
                    format_duration(clock.eta_seconds() or 0))

    return report


def _teacher_variant(model) -> str:
    parts = ["backbone"]
    if model.teacher_needs.box_head:
        parts.append("box_head")
    if model.teacher_needs.logits:
        parts.append("box_predictor")
    return "teacher_distill_forward[" + "+".join(parts) + "]"


def student_parameter_counts(model: torch.nn.Module) -> Dict[str, int]:
    """The student's parameters: all, those that train (requires_grad), the backbone's (FPN
    included) and its bottom-up network's."""
    counts = parameter_count(model)  # by module name; "": the whole model
    bottom_up = "backbone.bottom_up" if hasattr(model.backbone, "bottom_up") else "backbone"
    return {"total": counts[""],
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "backbone": counts["backbone"], "bottom_up": counts[bottom_up]}


def run_benchmark(s: BenchmarkSettings) -> Dict[str, object]:
    device = _check_settings(s)
    if s.threads:
        torch.set_num_threads(s.threads)
    loss_sets = loss_sets_by_name(s.losses)
    cfg = build_benchmark_cfg(s.config_file, s.overrides, s.device, s.precision)
    cudnn_benchmark = bool(cfg.CUDNN_BENCHMARK if s.cudnn_benchmark is None else s.cudnn_benchmark)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    batch = synthetic_batch(s.batch_size, s.height, s.width, num_classes, seed=s.seed)
    result: Dict[str, object] = {
        "schema": SCHEMA,
        "machine": _machine(device),
        "settings": dict(asdict(s), cudnn_benchmark=cudnn_benchmark,
                         teacher_config=cfg.MODEL.DISTILL.TEACHER_CONFIG,
                         teacher_autocast=cfg.MODEL.DISTILL.TEACHER_AUTOCAST,
                         base_lr=cfg.SOLVER.BASE_LR,
                         loss_sets=loss_sets),
    }
    with tempfile.TemporaryDirectory(prefix="nd_det_benchmark_") as work_dir:
        files = prepare_weight_files(cfg, work_dir, batch, seed=s.seed)
        with EventStorage(0):
            result.update(_time_steps(s, cfg, files, batch, loss_sets, device))
        gc.collect()  # the timed models are gone: free their memory before the phases run
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if s.memory:
            result["memory"] = _memory(s, cfg, files, loss_sets, result["teacher_weight_bytes"],
                                       cudnn_benchmark)
    result["nd_loss"] = _nd_loss(s, device, num_classes + 1)
    logger.info("data loader with %s workers", s.dataloader_workers)
    result["dataloader"] = [
        loader_throughput(cfg, w, s.batch_size, num_images=s.dataloader_images,
                          image_size=tuple(s.dataloader_image_size),
                          batches=s.dataloader_batches, seed=s.seed)
        for w in s.dataloader_workers
    ]
    return result


def _time_steps(s, cfg, files, batch, loss_sets, device) -> Dict[str, object]:
    student = build_student(cfg, files)
    distillers = {name: build_distiller(cfg, losses, files) for name, losses in loss_sets.items()}
    first = next(iter(distillers.values()))
    sampled = sample_rois(first, batch, s.precision)
    raw = raw_images(first, batch)
    rois = sum(len(p) for p in sampled)

    variants = {
        "student_step": TrainStep(student, build_optimizer(cfg, student), batch, s.precision),
        # the teacher's backbone (FPN levels, under no_grad) on its preprocessed images
        "teacher_backbone": functools.partial(first.teacher.features,
                                              first.teacher.preprocess(raw)),
        "teacher_inference": teacher_inference(first, without_annotations(batch)),
    }
    teacher_variant_of = {name: _teacher_variant(model) for name, model in distillers.items()}
    for name, key in teacher_variant_of.items():
        if key not in variants:
            variants[key] = TeacherDistillForward(distillers[name], raw, sampled)
    reviewkd_owner = next((n for n, l in loss_sets.items() if "reviewkd" in l), None)
    if reviewkd_owner is not None:
        model = distillers[reviewkd_owner]
        term = next(t for t in model.distill_terms if t.name == "reviewkd")
        inputs = distill_inputs(model, batch, s.precision, sampled)
        variants["reviewkd_abf_hcl"] = reviewkd_alone(term, inputs, s.precision)
    for name, model in distillers.items():
        variants["distill_step:" + name] = TrainStep(
            model, build_optimizer(cfg, model), batch, s.precision)

    logger.info("timing %d variants: %d warm-up + %d measured rounds", len(variants), s.warmup,
                s.iters)
    samples = interleaved_samples(variants, s.iters, s.warmup, device_synchronizer(device),
                                  progress=_round_progress("steps"))
    timings = {name: dict(summarize_seconds(samples["wall"][name]),
                          cpu_median_ms=summarize_seconds(samples["cpu"][name])["median_ms"])
               for name in variants}
    median = {name: t["median_ms"] for name, t in timings.items()}
    cpu_median = {name: t["cpu_median_ms"] for name, t in timings.items()}
    steps = {n: v for n, v in variants.items() if isinstance(v, TrainStep)}
    out: Dict[str, object] = {
        "student_parameters": student_parameter_counts(student),
        "rois_per_step": rois,
        "timings": timings,
        "images_per_s": {n: s.batch_size * 1000.0 / median[n] for n in steps},
        "losses_finite": {n: all(math.isfinite(float(x)) for x in v.last_losses.values())
                          for n, v in steps.items()},
        "last_losses": {n: {k: float(x) for k, x in v.last_losses.items()}
                        for n, v in steps.items()},
    }
    ratios = {}
    for name, losses in loss_sets.items():
        parts = ["student_step", teacher_variant_of[name]]
        if "reviewkd" in losses:
            parts.append("reviewkd_abf_hcl")
        step = "distill_step:" + name
        baseline = sum(median[p] for p in parts)
        cpu_baseline = sum(cpu_median[p] for p in parts)
        ratios[name] = {"distill_ms": median[step], "baseline": " + ".join(parts),
                        "baseline_ms": baseline, "ratio": median[step] / baseline,
                        "cpu_ratio": cpu_median[step] / cpu_baseline}
    out["ratios"] = ratios
    if reviewkd_owner is not None:
        step = median["distill_step:" + reviewkd_owner]
        out["reviewkd_abf_hcl"] = {
            "median_ms": median["reviewkd_abf_hcl"],
            "share_of_reviewkd_step": median["reviewkd_abf_hcl"] / step,
            "loss_set": reviewkd_owner,
        }
    out["loss_path_sync_ops"] = {
        name: _loss_path_sync_ops(model, batch, s.precision, sampled)
        for name, model in distillers.items()
    }
    census = s.cast_census if s.cast_census is not None else s.precision != "fp32"
    if census:
        name = reviewkd_owner or next(iter(distillers))
        model = distillers[name]
        step = variants["distill_step:" + name]
        rows = dtype_census(step, {"student": model, "teacher": model.teacher.model})
        totals: Dict[str, int] = defaultdict(int)
        for row in rows:
            totals[f"{row['kind']} {row['from']}->{row['to']}"] += row["elements"]
        out["dtype_census"] = {"loss_set": name, "elements_by_kind": totals,
                               "rows": rows[:CENSUS_ROWS]}
    out["teacher_weight_bytes"] = parameter_bytes(first.teacher.model)
    return out


def _loss_path_sync_ops(model, batch, precision, sampled) -> List[Dict[str, str]]:
    inputs = with_student_grad(distill_inputs(model, batch, precision, sampled))

    def loss_path():
        with precision_context(model.device, precision):
            total = sum(term(inputs) for term in model.distill_terms)
        total.backward()

    return find_sync_ops(loss_path)


def _memory(s, cfg, files, loss_sets, teacher_weights: int,
            cudnn_benchmark: bool) -> Dict[str, object]:
    def phase(name, losses=()):
        spec = MemoryPhase(phase=name, cfg=cfg, files=files, batch_size=s.batch_size,
                           height=s.height, width=s.width, precision=s.precision,
                           iters=s.memory_iters, losses=list(losses), seed=s.seed,
                           threads=s.threads, cudnn_benchmark=cudnn_benchmark)
        logger.info("peak memory of %s %s (fresh process)", name, "+".join(losses))
        return measure_phase_in_fresh_process(spec)

    student = phase("student_step")
    teacher = phase("teacher_distill_forward")
    distill = {name: phase("distill_step", losses) for name, losses in loss_sets.items()}
    denominator = student["peak_bytes"] + teacher_weights + teacher["peak_bytes"]
    return {
        "method": student["method"],
        "iters_per_phase": s.memory_iters,
        "student_step_peak_bytes": student["peak_bytes"],
        "teacher_weight_bytes": teacher_weights,
        "teacher_forward_activation_bytes": teacher["peak_bytes"],
        "distill_step_peak_bytes": {n: d["peak_bytes"] for n, d in distill.items()},
        "ratios": {n: d["peak_bytes"] / denominator for n, d in distill.items()},
        "ratio_baseline": "student_step_peak + teacher_weights + teacher_forward_activations",
    }


def _nd_loss(s, device, num_classes) -> Dict[str, object]:
    logger.info("nd_loss: vectorised vs per-RoI loop")
    inputs = nd_benchmark_inputs(s.nd_rois, s.nd_dim, num_classes, device, seed=s.seed)
    check = compare_nd_implementations(inputs)
    variants = {name: NDForwardBackward(inputs, name) for name in ("vectorised", "per_roi_loop")}
    samples = interleaved_samples(variants, s.iters, s.warmup, device_synchronizer(device),
                                  progress=_round_progress("nd_loss"))
    vec = summarize_seconds(samples["wall"]["vectorised"])
    loop = summarize_seconds(samples["wall"]["per_roi_loop"])
    return {
        "rois": s.nd_rois,
        "dim": s.nd_dim,
        "classes": num_classes,
        "vectorised_ms": vec["median_ms"],
        "per_roi_loop_ms": loop["median_ms"],
        "speedup": loop["median_ms"] / vec["median_ms"],
        "timings": {"vectorised": vec, "per_roi_loop": loop},
        "check": check,
    }
