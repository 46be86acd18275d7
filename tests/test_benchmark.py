"""tools/benchmark.py and nd_benchmark: the tool runs end to end on CPU with a tiny set-up
and writes every documented field; the per-RoI ND reference agrees with the vectorised loss;
the building blocks (interleaved timing, FrozenBN calibration, sync-op and dtype censuses,
teacher preprocessing) do what they claim.  No timing thresholds: timings are only checked for
being present and consistent with the ratios computed from them."""

import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone import build_resnet_backbone
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage
from nd_benchmark.measure import (
    TrainStep,
    compare_nd_implementations,
    interleaved_samples,
    nd_benchmark_inputs,
    nd_loss_per_roi_loop,
)
from nd_benchmark.models import (
    build_benchmark_cfg,
    calibrate_frozen_batchnorm,
    parse_loss_set,
    student_parameter_counts,
    synthetic_batch,
)

from nd_det.config import load_config
from nd_det.errors import ConfigError
from nd_det.modeling import plain_student_cfg

from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_distill import (
    REPO,
    config_path,
    random_batch,
    tiny_distill_cfg,
    tiny_distill_opts,
)

TOOL = os.path.join(REPO, "tools", "benchmark.py")


# ------------------------------------------------------------------------------ the tool
@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    """One tiny CPU run of the tool (ReviewKD++ so that every kind of measurement appears)."""
    tmp = tmp_path_factory.mktemp("benchmark")
    out = tmp / "bench.json"
    cmd = [
        sys.executable,
        TOOL,
        "--config-file",
        config_path("R50_from_R101_nd.yaml"),
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--height",
        "96",
        "--width",
        "128",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--nd-rois",
        "48",
        "--nd-dim",
        "16",
        "--memory-iters",
        "1",
        "--threads",
        "1",
        "--dataloader-images",
        "4",
        "--dataloader-batches",
        "2",
        "--dataloader-image-size",
        "64",
        "96",
        "--output",
        str(out),
        "--losses",
        "reviewkd+nd",
        "--dataloader-workers",
        "0",
        "--",
    ] + tiny_distill_opts(str(tmp))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(tmp))
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out, encoding="utf-8") as f:
        return json.load(f), out, proc.stdout


def test_tool_writes_every_documented_field(tool_run):
    result, _, _ = tool_run
    assert result["schema"] == "nd_det.benchmark/1"
    for key in ("device_name", "cpu", "cpu_count", "torch_threads", "torch", "detectron2"):
        assert key in result["machine"]
    assert result["machine"]["torch_threads"] == 1
    settings = result["settings"]
    assert settings["device"] == "cpu" and settings["precision"] == "fp32"
    assert settings["base_lr"] == 0.0 and settings["threads"] == 1
    assert settings["loss_sets"] == {"reviewkd+nd": ["reviewkd", "nd"]}
    assert settings["teacher_config"] == "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"
    # the tiny set-up samples BATCH_SIZE_PER_IMAGE = 32 RoIs per image
    assert result["rois_per_step"] == 2 * 32

    teacher_variant = "teacher_distill_forward[backbone+box_head]"
    expected = {
        "student_step",
        "teacher_backbone",
        "teacher_inference",
        teacher_variant,
        "reviewkd_abf_hcl",
        "distill_step:reviewkd+nd",
    }
    assert set(result["timings"]) == expected
    for t in result["timings"].values():
        assert set(t) == {"median_ms", "min_ms", "max_ms", "samples_ms", "cpu_median_ms"}
        assert len(t["samples_ms"]) == 1 and t["median_ms"] > 0
    assert set(result["images_per_s"]) == {"student_step", "distill_step:reviewkd+nd"}
    assert result["losses_finite"] == {"student_step": True, "distill_step:reviewkd+nd": True}

    ratio = result["ratios"]["reviewkd+nd"]
    median = {k: v["median_ms"] for k, v in result["timings"].items()}
    assert ratio["baseline"] == f"student_step + {teacher_variant} + reviewkd_abf_hcl"
    assert ratio["baseline_ms"] == pytest.approx(
        median["student_step"] + median[teacher_variant] + median["reviewkd_abf_hcl"]
    )
    assert ratio["ratio"] == pytest.approx(
        median["distill_step:reviewkd+nd"] / ratio["baseline_ms"]
    )
    assert result["reviewkd_abf_hcl"]["share_of_reviewkd_step"] == pytest.approx(
        median["reviewkd_abf_hcl"] / median["distill_step:reviewkd+nd"]
    )

    nd = result["nd_loss"]
    assert (nd["rois"], nd["dim"], nd["classes"]) == (48, 16, 3)
    assert nd["check"]["equal"] is True and nd["check"]["value_abs_diff"] <= 1e-5
    assert nd["speedup"] == pytest.approx(nd["per_roi_loop_ms"] / nd["vectorised_ms"])

    mem = result["memory"]
    assert mem["method"].startswith("cpu:")
    for key in (
        "student_step_peak_bytes",
        "teacher_weight_bytes",
        "teacher_forward_activation_bytes",
    ):
        assert mem[key] > 0, key
    assert mem["teacher_weight_bytes"] == result["teacher_weight_bytes"]
    assert mem["ratios"]["reviewkd+nd"] == pytest.approx(
        mem["distill_step_peak_bytes"]["reviewkd+nd"]
        / (
            mem["student_step_peak_bytes"]
            + mem["teacher_weight_bytes"]
            + mem["teacher_forward_activation_bytes"]
        )
    )

    (loader,) = result["dataloader"]
    assert loader["workers"] == 0 and loader["images_per_s"] > 0
    # the tiny config resizes the 64x96 JPEGs to a 96-pixel short edge
    assert loader["median_output_size"] == [96, 144]

    params = result["student_parameters"]
    assert params["total"] >= params["trainable"] > 0 and params["bottom_up"] < params["backbone"]


def test_tool_writes_a_markdown_summary(tool_run):
    result, out, stdout = tool_run
    with open(out.with_suffix(".md"), encoding="utf-8") as f:
        markdown = f.read()
    assert "| distill_step:reviewkd+nd |" in markdown
    assert "ABF/HCL alone" in markdown and "Peak memory" in markdown
    assert markdown.strip() in stdout


def test_tool_refuses_cuda_without_a_gpu_and_bad_loss_names(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU-only refusal cannot be observed here")
    base = [
        "--config-file",
        config_path("R50_from_R101_nd.yaml"),
        "--output",
        str(tmp_path / "x.json"),
    ]
    # the command line's own code path, in this process (the tool_run fixture starts one)
    code, err = run_tool_in_process(TOOL, base + ["--device", "cuda"])
    assert code == 2
    assert "--device cuda: no CUDA device is available here; use cpu" in err
    code, err = run_tool_in_process(TOOL, base + ["--losses", "kd+fitnet"])
    assert code == 2
    assert "--losses 'kd+fitnet': unknown loss name(s) ['fitnet']" in err
    assert not (tmp_path / "x.json").exists()


def test_bad_settings_give_one_clear_error(tmp_path):
    assert parse_loss_set("reviewkd+nd") == ["reviewkd", "nd"]
    with pytest.raises(ConfigError, match="names a loss twice"):
        parse_loss_set("nd+nd")
    with pytest.raises(ConfigError, match="Override list has odd length"):
        build_benchmark_cfg(config_path("R50_from_R101_nd.yaml"), ["MODEL.DEVICE"], "cpu", "fp32")
    with pytest.raises(ConfigError, match="no_such.yaml not found in "):
        build_benchmark_cfg(str(tmp_path / "no_such.yaml"), [], "cpu", "fp32")
    cfg = build_benchmark_cfg(config_path("R50_from_R101_nd.yaml"), [], "cpu", "bf16")
    assert cfg.MODEL.DISTILL.TEACHER_AUTOCAST == "bfloat16" and cfg.MODEL.WEIGHTS == ""
    assert cfg.SOLVER.BASE_LR == 0.0  # every measured step runs on the same weights
    cfg = build_benchmark_cfg(
        config_path("R50_from_R101_nd.yaml"),
        ["MODEL.DISTILL.TEACHER_AUTOCAST", "float32", "SOLVER.BASE_LR", "0.02"],
        "cpu",
        "bf16",
    )
    assert cfg.MODEL.DISTILL.TEACHER_AUTOCAST == "float32" and cfg.SOLVER.BASE_LR == 0.02


# ------------------------------------------------------------------------------ ND reference
def test_per_roi_loop_reference_equals_vectorised_nd_loss():
    inputs = nd_benchmark_inputs(rois=128, dim=64, num_classes=9, device=torch.device("cpu"))
    check = compare_nd_implementations(inputs)
    assert check["equal"] is True
    assert check["value_abs_diff"] <= 1e-5 and check["grad_max_abs_diff"] <= 1e-5
    # and the loop really is the formula: a hand-computed row matches it
    s, t = inputs["student"][:1], inputs["teacher"][:1]
    label = inputs["labels_list"][0]
    c = torch.tensor(inputs["class_means_list"][label])
    by_hand = 1 - (s[0] @ (c / c.norm())) / torch.max(s[0].norm(), t[0].norm())
    loop = nd_loss_per_roi_loop(s, t, [label], inputs["class_means_list"])
    torch.testing.assert_close(loop, by_hand)


def test_nd_comparison_detects_a_different_result():
    inputs = nd_benchmark_inputs(rois=32, dim=16, num_classes=4, device=torch.device("cpu"))
    inputs["class_means_list"] = [[x * -1.0 for x in row] for row in inputs["class_means_list"]]
    check = compare_nd_implementations(inputs)
    assert check["equal"] is False and check["value_abs_diff"] > 0.1


# ------------------------------------------------------------------------------ timing
def test_interleaved_samples_rotate_the_order_and_drop_warmup_rounds():
    calls = []
    ticks = iter(range(10_000))
    variants = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = interleaved_samples(
        variants, iters=3, warmup=1, clocks={"fake": lambda: float(next(ticks))}
    )
    assert calls == list("abcbcacababc")
    assert set(samples) == {"fake"}
    # every call is one clock tick long (one read before, one after)
    assert samples["fake"] == {"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}
    with pytest.raises(ValueError, match="iters >= 1"):
        interleaved_samples(variants, iters=0, warmup=0)


# ------------------------------------------------------------------------------ random models
def test_frozen_batchnorm_calibration_normalises_every_layer():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    torch.manual_seed(0)
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    # pixels minus the caffe mean, without std scaling: what a detectron2 R50 sees
    x = 60.0 * torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        raw = backbone(x)["res5"]
    count = calibrate_frozen_batchnorm(backbone, lambda: backbone(x))
    layers = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert count == len(layers) > 0
    outputs = []
    # clone: the blocks apply ReLU in place right after the norm
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.clone())) for m in layers]
    with torch.no_grad():
        calibrated = backbone(x)["res5"]
    for h in hooks:
        h.remove()
    for out in outputs:  # each layer's output: per-channel mean 0, variance 1 on that batch
        torch.testing.assert_close(
            out.mean(dim=(0, 2, 3)), torch.zeros(out.shape[1]), atol=1e-3, rtol=0
        )
        torch.testing.assert_close(
            out.var(dim=(0, 2, 3), unbiased=False), torch.ones(out.shape[1]), atol=1e-2, rtol=0
        )
    # identity FrozenBN passes the input scale on and grows it; calibrated layers do not
    assert raw.abs().max() > 100 * calibrated.abs().max()
    assert torch.isfinite(calibrated).all() and 0.1 < calibrated.std() < 10


def test_synthetic_batch_is_a_detectron2_training_batch():
    batch = synthetic_batch(3, 64, 80, num_classes=5, boxes_per_image=4, seed=1)
    assert len(batch) == 3
    for x in batch:
        assert x["image"].shape == (3, 64, 80) and x["image"].dtype == torch.uint8
        boxes = x["instances"].gt_boxes.tensor
        assert boxes.shape == (4, 4)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 64).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert int(x["instances"].gt_classes.max()) < 5
    with pytest.raises(ValueError, match="at least 32x32"):
        synthetic_batch(1, 16, 16, 2)


# ------------------------------------------------------------------------------ DistillRCNN parts
def test_teacher_image_list_is_what_distill_rcnn_builds(tmp_path):
    """The timed teacher preprocessing equals DistillRCNN's own (RGB student, BGR teacher)."""
    cfg = tiny_distill_cfg(
        str(tmp_path),
        "R50_from_R101_kd_nd.yaml",
        extra_opts=[
            "INPUT.FORMAT",
            "RGB",
            "MODEL.PIXEL_MEAN",
            "[123.675, 116.28, 103.53]",
            "MODEL.PIXEL_STD",
            "[58.395, 57.12, 57.375]",
        ],
    )
    model = build_model(cfg)
    assert model.teacher.flip_channels
    batch = random_batch(seed=2)
    _, expected = model.preprocess_pair(batch)
    ours = model.teacher.preprocess([x["image"] for x in batch])
    assert torch.equal(ours.tensor, expected.tensor)
    assert ours.image_sizes == expected.image_sizes


def test_train_step_at_the_benchmark_learning_rate_keeps_the_weights(tmp_path):
    """The benchmark's zero learning rate: the optimizer runs (momentum buffers appear, weight
    decay and the update are computed) yet the weights stay put, so every step is the same."""
    tiny = tiny_distill_cfg(str(tmp_path))
    cfg = build_benchmark_cfg(
        config_path("R50_from_R101_nd.yaml"), tiny_distill_opts(str(tmp_path)), "cpu", "fp32"
    )
    assert cfg.MODEL.DISTILL.TEACHER_WEIGHTS == tiny.MODEL.DISTILL.TEACHER_WEIGHTS
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = TrainStep(model.train(), optimizer, random_batch(seed=4), "fp32")
    with EventStorage(0):
        step()
        first = dict(step.last_losses)
        step()
    assert all(torch.isfinite(v) for v in first.values())
    assert set(first) >= {"loss_reviewkd", "loss_nd", "loss_cls"}
    for key, value in model.state_dict().items():
        if "running_" not in key and "num_batches" not in key:
            assert torch.equal(value, before[key]), key
    buffers = [optimizer.state[p].get("momentum_buffer") for p in model.parameters()]
    assert all(b is not None for b in buffers)
    assert any(float(b.abs().sum()) > 0 for b in buffers)


def test_round_progress_counts_the_first_round_in_its_eta(caplog):
    """The ETA after round 1 of 3 rounds of 0.3 s is 0.6 s (it printed 0:00:00 when the clock
    started only at the end of the first round)."""
    import logging
    import time

    with caplog.at_level(logging.INFO, logger="nd_benchmark.measure"):
        interleaved_samples({"sleep": lambda: time.sleep(0.3)}, iters=3, warmup=0)
    lines = [r.getMessage() for r in caplog.records if "timing round" in r.getMessage()]
    assert lines[0] == "[steps] timing round 1/3 done, ETA 0:00:01"
    assert lines[-1] == "[steps] timing round 3/3 done, ETA 0:00:00"


def test_student_parameter_counts_against_torchvisions_published_count(tmp_path):
    """MobileNetV3-Large has 5,483,032 parameters (torchvision's model card); the bottom-up is
    its features without features.16 (960 x 160 conv + 2 x 960 norm = 155,520) and without the
    classifier (960 x 1280 + 1280 + 1280 x 1000 + 1000 = 2,511,080): 2,816,432 with GN norms,
    which keep a weight and a bias per channel as BatchNorm does."""

    def counts(freeze_at):
        opts = tiny_distill_opts(str(tmp_path)) + [
            "MODEL.TORCHVISION.NORM",
            "GN",
            "MODEL.TORCHVISION.FREEZE_AT",
            str(freeze_at),
        ]
        cfg = load_config(config_path("MV3_from_R50_nd.yaml"), opts)
        return student_parameter_counts(build_model(plain_student_cfg(cfg)))

    frozen, trained = counts(1), counts(0)
    assert frozen["bottom_up"] == trained["bottom_up"] == 5_483_032 - 155_520 - 2_511_080
    assert trained["trainable"] == trained["total"] > frozen["trainable"]
    assert frozen["total"] == trained["total"] > frozen["backbone"] > frozen["bottom_up"]
