"""The bad-input matrix of docs/reliability.md, run as a user runs the tools (each tool's own
command-line code, in this process): every case exits with status 2 and ONE ``ERROR:`` line
naming the key / flag / file and the fix, without a traceback, before any model is built, and
OUTPUT_DIR (or the tool's output) holds nothing new."""

import json
import os
import pickle
import socket

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from nd_det.config import load_config
from nd_det.modeling import plain_student_cfg

from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import (
    REPO,
    config_path,
    tiny_distill_opts,
    write_random_class_means,
    write_teacher_checkpoint,
)

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
EXPORT = os.path.join(REPO, "tools", "export_student.py")
CONFIG = config_path("R50_from_R101_nd.yaml")


def _closed_port_url(name):
    with socket.socket() as s:  # a port nobody listens on: the download fails at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/{name}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny distillation set-up (teacher checkpoint, class means, train/val sets) and a
    trained-looking student checkpoint; shared by every case."""
    root = tmp_path_factory.mktemp("matrix")
    train_json, train_dir = write_tiny_coco(root / "train", num_images=4, seed=1)
    val_json, val_dir = write_tiny_coco(root / "val", num_images=2, seed=2)
    opts = tiny_distill_opts(str(root)) + [
        "DATASETS.TRAIN",
        "('matrix_train',)",
        "DATASETS.TEST",
        "('matrix_val',)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "1",
    ]
    cfg = load_config(CONFIG, opts)
    write_teacher_checkpoint(cfg)
    write_random_class_means(cfg)
    torch.manual_seed(0)
    student = build_model(plain_student_cfg(cfg))
    DetectionCheckpointer(student, str(root)).save("student_final")
    datasets = [
        "--dataset",
        "matrix_train",
        str(train_json),
        str(train_dir),
        "--dataset",
        "matrix_val",
        str(val_json),
        str(val_dir),
    ]
    return {
        "root": root,
        "opts": opts,
        "datasets": datasets,
        "cfg": cfg,
        "student": str(root / "student_final.pth"),
        "train_dir": train_dir,
        "train_json": train_json,
    }


def _prepare(world, tmp_path, case):
    """Files some cases need; returns extra argv and overrides."""
    world["root"]
    if case == "truncated_weights":
        data = open(world["student"], "rb").read()
        path = tmp_path / "truncated.pth"
        path.write_bytes(data[: len(data) // 2])
        return [], ["MODEL.WEIGHTS", str(path)]
    if case == "foreign_weights":
        state = torch.load(world["student"], weights_only=True)
        del state["model"]["roi_heads.box_predictor.cls_score.bias"]
        path = tmp_path / "foreign.pth"
        torch.save(state, path)
        return [], ["MODEL.WEIGHTS", str(path)]
    if case == "teacher_arch":
        other = world["cfg"].clone()
        other.defrost()
        other.MODEL.DISTILL.TEACHER_OPTS = list(other.MODEL.DISTILL.TEACHER_OPTS) + [
            "MODEL.RESNETS.DEPTH",
            "34",
        ]
        other.MODEL.DISTILL.TEACHER_WEIGHTS = str(tmp_path / "r34_teacher.pth")
        write_teacher_checkpoint(other)
        return [], ["MODEL.DISTILL.TEACHER_WEIGHTS", other.MODEL.DISTILL.TEACHER_WEIGHTS]
    if case == "means_json":
        path = tmp_path / "R101_emb.json"
        path.write_text(json.dumps({str(i): [0.5] * 64 for i in range(3)}))
        return [], ["MODEL.DISTILL.CLASS_MEANS", str(path)]
    if case == "resume_truncated":
        out = tmp_path / "out"
        out.mkdir()
        (out / "model_0000001.pth").write_bytes(open(world["student"], "rb").read()[:1000])
        (out / "last_checkpoint").write_text("model_0000001.pth")
        return ["--resume"], []
    if case == "bad_image":
        json_path, image_dir = write_tiny_coco(tmp_path / "broken", num_images=2, seed=5)
        first = sorted(os.listdir(image_dir))[0]
        (image_dir / first).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        return (
            ["--dataset", "broken_train", str(json_path), str(image_dir)],
            ["DATASETS.TRAIN", "('broken_train',)"],
        )
    if case == "image_size":
        json_path, image_dir = write_tiny_coco(tmp_path / "sizes", num_images=2, seed=5)
        data = json.loads(json_path.read_text())
        data["images"][1]["height"] = 100  # the file is 96 pixels high
        json_path.write_text(json.dumps(data))
        return (
            ["--dataset", "sizes_train", str(json_path), str(image_dir)],
            ["DATASETS.TRAIN", "('sizes_train',)"],
        )
    if case == "output_dangling_link":
        os.symlink(tmp_path / "gone", tmp_path / "link")  # a link to a folder that is not there
        return [], ["OUTPUT_DIR", str(tmp_path / "link" / "run")]
    if case == "output_name_too_long":
        return [], ["OUTPUT_DIR", str(tmp_path / ("r" * 300))]
    if case == "output_blocked":
        (tmp_path / "a_file").write_text("x")
        return [], ["OUTPUT_DIR", str(tmp_path / "a_file" / "run")]
    if case == "builtin_dataset_missing":
        return [], ["DATASETS.TRAIN", "('coco_2017_train',)"]
    if case == "teacher_is_own_student":  # a checkpoint DistillTrainer wrote for this config
        from nd_det.data import register_coco_dataset
        from nd_det.engine import DistillTrainer

        register_coco_dataset("matrix_own", str(world["train_json"]), str(world["train_dir"]))
        cfg = world["cfg"].clone()
        cfg.defrost()
        cfg.DATASETS.TRAIN, cfg.OUTPUT_DIR = ("matrix_own",), str(tmp_path / "run")
        DistillTrainer(cfg).checkpointer.save("model_final")
        return [], ["MODEL.DISTILL.TEACHER_WEIGHTS", str(tmp_path / "run" / "model_final.pth")]
    if case in ("student_url", "teacher_url"):
        key = "MODEL.WEIGHTS" if case == "student_url" else "MODEL.DISTILL.TEACHER_WEIGHTS"
        return [], [key, _closed_port_url("model.pkl")]
    return [], []


# case id -> (flags, overrides, a fragment of the one ERROR line)
TRAIN_CASES = {
    "unknown_loss": (
        [],
        ["MODEL.DISTILL.LOSSES", "['fitnet', 'nd']"],
        "MODEL.DISTILL.LOSSES has unknown name(s) ['fitnet']; choose from",
    ),
    "loss_twice": (
        [],
        ["MODEL.DISTILL.LOSSES", "['nd', 'nd']"],
        "MODEL.DISTILL.LOSSES lists a loss twice",
    ),
    "reviewkd_level": (
        [],
        ["MODEL.DISTILL.REVIEWKD.IN_FEATURES", "['p2', 'p7']"],
        "REVIEWKD.IN_FEATURES=['p2', 'p7']: the student backbone has no level(s) ['p7']",
    ),
    "reviewkd_norm": (
        [],
        ["MODEL.DISTILL.REVIEWKD.NORM", "'ln'"],
        "MODEL.DISTILL.REVIEWKD.NORM='ln': use 'bn'",
    ),
    "zero_weight": (
        [],
        ["MODEL.DISTILL.ND.WEIGHT", "0.0"],
        "MODEL.DISTILL.ND.WEIGHT 0.0: 'nd' is in MODEL.DISTILL.LOSSES, so give it a "
        "positive weight",
    ),
    "kd_temperature": (
        [],
        ["MODEL.DISTILL.LOSSES", "['kd', 'nd']", "MODEL.DISTILL.KD.TEMPERATURE", "0.0"],
        "MODEL.DISTILL.KD.TEMPERATURE 0.0: give a positive temperature",
    ),
    "fc_dim": (
        [],
        ["MODEL.ROI_BOX_HEAD.FC_DIM", "48"],
        "student box head gives 48 (MODEL.ROI_BOX_HEAD.FC_DIM), teacher 64",
    ),
    "teacher_opts_typo": (
        [],
        ["MODEL.DISTILL.TEACHER_OPTS", "['MODEL.ROI_HEADS.NUM_CLASSE', '2']"],
        "MODEL.DISTILL.TEACHER_OPTS: Non-existent key: MODEL.ROI_HEADS.NUM_CLASSE",
    ),
    "teacher_opts_odd": (
        [],
        ["MODEL.DISTILL.TEACHER_OPTS", "['MODEL.ROI_HEADS.NUM_CLASSES']"],
        "MODEL.DISTILL.TEACHER_OPTS: Override list has odd length",
    ),
    "teacher_config_name": (
        [],
        ["MODEL.DISTILL.TEACHER_CONFIG", "COCO-Detection/nope.yaml"],
        "MODEL.DISTILL.TEACHER_CONFIG 'COCO-Detection/nope.yaml' (neither a file nor a model-zoo "
        "config name): RuntimeError: COCO-Detection/nope.yaml not available in Model Zoo!",
    ),
    "teacher_autocast": (
        [],
        ["MODEL.DISTILL.TEACHER_AUTOCAST", "fp8"],
        "MODEL.DISTILL.TEACHER_AUTOCAST 'fp8': use one of",
    ),
    "teacher_weights_missing": (
        [],
        ["MODEL.DISTILL.TEACHER_WEIGHTS", "no/teacher.pth"],
        "MODEL.DISTILL.TEACHER_WEIGHTS no/teacher.pth: file not found",
    ),
    "teacher_arch": (
        [],
        [],
        "r34_teacher.pth does not fit the teacher of TEACHER_CONFIG "
        "(unexpected keys: backbone.bottom_up.res2.2",
    ),
    "teacher_is_own_student": ([], [], "is a student distilled from this very teacher"),
    "teacher_classes": (
        [],
        ["MODEL.ROI_HEADS.NUM_CLASSES", "3"],
        "dataset 'matrix_train' has 2 classes: set MODEL.ROI_HEADS.NUM_CLASSES 2",
    ),
    "means_missing": (
        [],
        ["MODEL.DISTILL.CLASS_MEANS", "no/means.pth"],
        "class-means file not found: no/means.pth",
    ),
    "means_json": ([], [], "tools/import_class_means.py"),
    "train_unregistered": (
        [],
        ["DATASETS.TRAIN", "('no_such_set',)"],
        "DATASETS.TRAIN 'no_such_set' is not registered: add --dataset no_such_set JSON",
    ),
    "test_unregistered": (
        [],
        ["DATASETS.TEST", "('no_such_val',)"],
        "DATASETS.TEST 'no_such_val' is not registered",
    ),
    "train_empty": ([], ["DATASETS.TRAIN", "()"], "DATASETS.TRAIN is empty"),
    "builtin_dataset_missing": (
        [],
        [],
        "does not exist (builtin sets are under $DETECTRON2_DATASETS",
    ),
    "batch_not_divisible": (
        ["--num-gpus", "2"],
        ["SOLVER.IMS_PER_BATCH", "3"],
        "SOLVER.IMS_PER_BATCH 3: give a multiple of the 2 processes",
    ),
    "amp_on_cpu": (
        [],
        ["SOLVER.AMP.ENABLED", "True"],
        "SOLVER.AMP.ENABLED True needs MODEL.DEVICE cuda",
    ),
    "amp_precision": (
        [],
        ["SOLVER.AMP.PRECISION", "fp8"],
        "SOLVER.AMP.PRECISION='fp8': use one of ['bfloat16', 'float16']",
    ),
    "cuda_without_gpu": (
        [],
        ["MODEL.DEVICE", "cuda"],
        "MODEL.DEVICE cuda: torch sees 0 CUDA device(s) for --num-gpus 1; add MODEL.DEVICE cpu",
    ),
    "cuda_without_gpu_2": (
        ["--num-gpus", "2"],
        ["MODEL.DEVICE", "cuda"],
        "MODEL.DEVICE cuda: torch sees 0 CUDA device(s) for --num-gpus 2",
    ),
    "device_name": ([], ["MODEL.DEVICE", "tpu"], "device type at start of device string: tpu"),
    "output_blocked": ([], [], "cannot be created"),
    "max_iter": ([], ["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER 0: give 1 or more"),
    "checkpoint_period": (
        [],
        ["SOLVER.CHECKPOINT_PERIOD", "0"],
        "SOLVER.CHECKPOINT_PERIOD 0: give 1 or more",
    ),
    "base_lr": ([], ["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR -0.1: give a positive"),
    "eval_period": ([], ["TEST.EVAL_PERIOD", "-5"], "TEST.EVAL_PERIOD -5"),
    "workers": ([], ["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS -1"),
    "input_format": ([], ["INPUT.FORMAT", "RGBA"], "INPUT.FORMAT 'RGBA' / MODEL.PIXEL_STD"),
    "pixel_mean": (
        [],
        ["MODEL.PIXEL_MEAN", "[100.0, 100.0]"],
        "size=(2, 1, 1)) and tensor(..., device='meta', size=(3, 1, 1)) have different shapes!",
    ),
    "pixel_std": ([], ["MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]"], "MODEL.PIXEL_STD [1.0, 0.0, 1.0]"),
    "machine_rank": (
        ["--num-machines", "1", "--machine-rank", "1"],
        [],
        "--machine-rank 1: give 1 or more of each and a rank below --num-machines",
    ),
    "num_gpus": (["--num-gpus", "0"], [], "--num-gpus 0 --num-machines 1 --machine-rank 0: give 1"),
    "unknown_flag": (["--no-such-flag"], [], "unrecognized arguments: --no-such-flag"),
    "value_type": ([], ["SOLVER.BASE_LR", "fast"], "command-line overrides:"),
    "unknown_key": (
        [],
        ["MODEL.DISTILL.NO_SUCH_KEY", "1"],
        "Non-existent key: MODEL.DISTILL.NO_SUCH_KEY",
    ),
    "roi_heads": (
        [],
        ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads"],
        "DistillRCNN students need MODEL.ROI_HEADS.NAME StandardROIHeads",
    ),
    "pred_boxes": (
        [],
        ["MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", "True"],
        "and MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES False",
    ),
    "not_distill_rcnn": (
        [],
        ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"],
        "MODEL.META_ARCHITECTURE GeneralizedRCNN trains no distillation (MODEL.DISTILL.LOSSES "
        "is set)",
    ),
    "seed_range": (
        ["--num-gpus", "2"],
        ["SEED", "4294967295"],
        "SEED 4294967295: give 0 .. 4294967294, or -1 (random)",
    ),
    "resnet_basic": (
        [],
        ["MODEL.RESNETS.RES2_OUT_CHANNELS", "256"],
        "Must set MODEL.RESNETS.RES2_OUT_CHANNELS = 64 for R18/R34",
    ),
    "bn_images": (
        ["--num-gpus", "2"],
        ["MODEL.DISTILL.REVIEWKD.BN_IMAGES", "3"],
        "BN_IMAGES 3: give 0 or a multiple of the 1 image(s) per process that groups the 2",
    ),
    "student_url": ([], [], "MODEL.WEIGHTS http://127.0.0.1:"),
    "teacher_url": ([], [], "could not download"),
    "resume_empty": (["--resume"], [], "--resume: OUTPUT_DIR"),
    "resume_truncated": ([], [], "holds no intact checkpoint to resume from"),
    "bad_image": ([], [], "1 of 2 images cannot be decoded: "),
    "image_size": ([], [], "1 of 2 images are not the size the JSON gives them (width x height): "),
    "output_dangling_link": ([], [], "/link/run cannot be created: [Errno 17] File exists"),
    "output_name_too_long": ([], [], " cannot be created: [Errno 36] File name too long"),
}
EVAL_CASES = {
    "eval_no_weights": (["--eval-only"], ["MODEL.WEIGHTS", ""], "--eval-only needs MODEL.WEIGHTS"),
    "eval_missing_weights": (
        ["--eval-only"],
        ["MODEL.WEIGHTS", "no/model_final.pth"],
        "MODEL.WEIGHTS no/model_final.pth: file not found",
    ),
    "truncated_weights": (["--eval-only"], [], "truncated.pth is not a detectron2 checkpoint"),
    "foreign_weights": (
        ["--eval-only"],
        [],
        "does not fit the student of the config (missing "
        "keys: roi_heads.box_predictor.cls_score.bias)",
    ),
    "eval_teacher_alone": (["--eval-teacher"], [], "--eval-teacher works with --eval-only"),
    "eval_teacher_missing": (
        ["--eval-only", "--eval-teacher"],
        ["MODEL.DISTILL.TEACHER_WEIGHTS", "no/teacher.pth"],
        "MODEL.DISTILL.TEACHER_WEIGHTS no/teacher.pth: file not found",
    ),
}
ALL_CASES = {**TRAIN_CASES, **EVAL_CASES}


def _assert_one_error(code, stderr, fragment):
    assert code == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", sorted(ALL_CASES))
def test_train_net_case(world, tmp_path, monkeypatch, case):
    flags, overrides, fragment = ALL_CASES[case]
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    extra_flags, extra_overrides = _prepare(world, tmp_path, case)
    out = tmp_path / "out"
    before = sorted(os.listdir(out)) if out.exists() else None
    weights = [] if "--eval-only" not in flags else ["MODEL.WEIGHTS", world["student"]]
    argv = (
        ["--config-file", CONFIG]
        + flags
        + extra_flags
        + world["datasets"]
        + world["opts"]
        + ["OUTPUT_DIR", str(out)]
        + weights
        + overrides
        + extra_overrides
    )
    code, stderr = run_tool_in_process(TRAIN_NET, argv)
    _assert_one_error(code, stderr, fragment)
    assert (sorted(os.listdir(out)) if out.exists() else None) == before  # nothing new


def test_resume_skips_a_damaged_newest_checkpoint_and_names_it(world, tmp_path, caplog):
    from nd_det.engine.checkpoint import resume_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    good = out / "model_0000001.pth"
    good.write_bytes(open(world["student"], "rb").read())
    newest = out / "model_0000003.pth"
    newest.write_bytes(good.read_bytes()[:5000])
    os.utime(good, (1, 1))  # older than the damaged one
    (out / "last_checkpoint").write_bytes(b"\xff\xfe not text")
    with caplog.at_level("WARNING"):
        assert resume_checkpoint(str(out)) == str(good)
    assert f"skipping {newest}: it is truncated or not a checkpoint" in caplog.text
    assert f"continuing from {good}, the newest intact checkpoint" in caplog.text


@pytest.mark.parametrize(
    "case, fragment",
    [
        (
            "teacher_checkpoint",
            "is the teacher's checkpoint (MODEL.DISTILL.TEACHER_WEIGHTS), not a distilled student",
        ),
        (
            "no_abf_tensors",
            "holds no distillation-module tensors (distill_terms.*), but a run of "
            "this config (reviewkd+nd) trains them",
        ),
        ("output_is_a_file", "exists and is not a folder"),
        ("unknown_flag", "unrecognized arguments: --zap"),
    ],
)
def test_export_case(world, tmp_path, case, fragment):
    teacher = world["cfg"].MODEL.DISTILL.TEACHER_WEIGHTS
    weights = {"teacher_checkpoint": teacher}.get(case, world["student"])
    out = tmp_path / "export"
    if case == "output_is_a_file":
        out.write_text("x")
    flags = ["--zap"] if case == "unknown_flag" else []
    argv = (
        ["--config-file", CONFIG, "--weights", weights, "--output", str(out)]
        + flags
        + world["datasets"]
        + world["opts"]
    )
    code, stderr = run_tool_in_process(EXPORT, argv)
    _assert_one_error(code, stderr, fragment)
    assert out.is_file() if case == "output_is_a_file" else not out.exists()


def test_export_accepts_the_training_command_and_the_flag_that_means_it(world, tmp_path):
    """The training command (with --dataset and --num-gpus) works for export as it is; the
    student-only checkpoint of a ReviewKD++ config (no ABF tensors) exports only when asked."""
    out = tmp_path / "export"
    argv = (
        [
            "--config-file",
            CONFIG,
            "--num-gpus",
            "2",
            "--weights",
            world["student"],
            "--output",
            str(out),
            "--allow-non-distilled-weights",
        ]
        + world["datasets"]
        + world["opts"]
    )
    code, stderr = run_tool_in_process(EXPORT, argv)
    assert code == 0, stderr[-3000:]
    assert sorted(os.listdir(out)) == ["config.yaml", "model_final.pth"]


def test_a_pkl_student_for_eval_is_read_without_building_a_model(world, tmp_path):
    """The eval check reads detectron2 .pkl files (numpy arrays) as detectron2 does."""
    from nd_det.modeling import load_student_checkpoint
    from nd_det.modeling.shapes import build_on_meta

    state = torch.load(world["student"], weights_only=True)["model"]
    path = tmp_path / "student.pkl"
    with open(path, "wb") as f:
        # a detectron2 .pkl names its author (without it detectron2 reads a Caffe2 blob file)
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "me"}, f)
    cfg = world["cfg"].clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(path)
    # what the eval pre-flight does: the student on the meta device, names and shapes checked
    load_student_checkpoint(build_on_meta(plain_student_cfg(cfg)), str(path))  # fits: no error


BENCHMARK = os.path.join(REPO, "tools", "benchmark.py")
CONVERTER = os.path.join(REPO, "tools", "convert_torchvision_to_d2.py")
DEMO = os.path.join(REPO, "tools", "demo.py")
ABLATION = os.path.join(REPO, "tools", "ablation.py")
EXTRACT = os.path.join(REPO, "tools", "extract_class_means.py")
_SEED_RANGE = "give a seed between 0 and 4294967295"


@pytest.mark.parametrize(
    "case, tool, argv, fragment",
    [
        (
            "benchmark_output",
            BENCHMARK,
            ["--config-file", CONFIG, "--output", "{file}/bench.json"],
            "--output {file}/bench.json cannot be created: {file} is a file",
        ),
        (
            "benchmark_flag",
            BENCHMARK,
            ["--config-file", CONFIG, "--output", "x.json", "--itres", "3"],
            "unrecognized arguments: --itres",
        ),
        (
            "converter_mobilenet_v2",
            CONVERTER,
            ["--arch", "mobilenet_v2", "--input", "mobilenet_v2-b0353104.pth", "--output", "o.pkl"],
            "torchvision's mobilenet_v2 file needs no conversion: "
            "give it as it is as MODEL.WEIGHTS",
        ),
        (
            "demo_threads",
            DEMO,
            ["--threads", "-1", "--output-dir", "{tmp}/demo"],
            "--threads -1: give 0 or more",
        ),
        (
            "demo_method",
            DEMO,
            ["--method", "fitnet", "--output-dir", "{tmp}/demo"],
            "argument --method: invalid choice: 'fitnet'",
        ),
        (
            "demo_seed",
            DEMO,
            ["--seed", "-1", "--output-dir", "{tmp}/demo"],
            f"argument --seed: '-1': {_SEED_RANGE}",
        ),
        (
            "ablation_seeds",
            ABLATION,
            ["--quick", "--seeds", "0", "5000000000", "--output-dir", "{tmp}/ablation"],
            f"argument --seeds: '5000000000': {_SEED_RANGE}",
        ),
        (
            "benchmark_seed",
            BENCHMARK,
            ["--config-file", CONFIG, "--output", "x.json", "--seed", "-2"],
            f"argument --seed: '-2': {_SEED_RANGE}",
        ),
        (
            "extraction_seed",
            EXTRACT,
            ["--config-file", CONFIG, "--seed", "x"],
            f"argument --seed: 'x': {_SEED_RANGE}",
        ),
        (
            "demo_output_under_a_file",
            DEMO,
            ["--output-dir", "{file}/demo"],
            "--output-dir {file}/demo cannot be created: {file} is a file",
        ),
        (
            "benchmark_height",
            BENCHMARK,
            ["--config-file", CONFIG, "--output", "x.json", "--height", "0"],
            "--height 0: give 32 pixels or more",
        ),
        (
            "benchmark_loader_workers",
            BENCHMARK,
            ["--config-file", CONFIG, "--output", "x.json", "--dataloader-workers", "-1"],
            "--dataloader-workers [-1]: give 0 or more workers each",
        ),
        # the flag's value is checked before the config's datasets (COCO is not there)
        (
            "extraction_max_images",
            EXTRACT,
            ["--config-file", CONFIG, "--max-images", "0"],
            "--max-images '0': give a positive number of images, or 'all'",
        ),
    ],
)
def test_other_tools_case(tmp_path, case, tool, argv, fragment):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = [a.format(file=blocker, tmp=tmp_path) for a in argv]
    code, stderr = run_tool_in_process(tool, argv)
    _assert_one_error(code, stderr, fragment.format(file=blocker))
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # nothing written


@pytest.mark.parametrize(
    "tool", sorted(f for f in os.listdir(os.path.join(REPO, "tools")) if f.endswith(".py"))
)
def test_every_tool_reports_a_bad_flag_in_one_line(tool, tmp_path, monkeypatch):
    """The same style for every tool: an unknown flag is one ERROR line naming it, exit 2."""
    monkeypatch.chdir(tmp_path)
    code, stderr = run_tool_in_process(os.path.join(REPO, "tools", tool), ["--no-such-flag"])
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), stderr[-2000:]
    assert f"(see {tool}" in lines[0] or f"(see tools/{tool}" in lines[0], lines[0]
    assert os.listdir(tmp_path) == []
