"""The public names the applications (demo, benchmark, ablation) build on: FrozenTeacher,
DistillRCNN's step pieces, the student checkpointer, the resumable sampler, the config helpers
and the launcher's worker-error path."""

import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data.samplers import TrainingSampler
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from nd_det.config import add_distill_config
from nd_det.engine.resumable_sampler import ResumableTrainingSampler
from nd_det.errors import ConfigError, FileError, UserError, run_cli
from nd_det.modeling import (
    FrozenTeacher,
    TeacherNeeds,
    build_plain_student,
    load_student_checkpoint,
    local_weights_file,
    plain_student_cfg,
)

from .helpers.tiny_distill import REPO, random_batch, tiny_distill_cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    # RGB student, BGR teacher: the teacher must see its own channel order
    cfg = tiny_distill_cfg(
        str(tmp),
        "R50_from_R101_kd_nd.yaml",
        extra_opts=[
            "INPUT.FORMAT",
            "RGB",
            "MODEL.PIXEL_MEAN",
            "[120.0, 110.0, 100.0]",
            "MODEL.PIXEL_STD",
            "[50.0, 55.0, 60.0]",
        ],
    )
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def test_frozen_teacher_builds_freezes_and_loads_exactly(setup):
    cfg, _ = setup
    teacher = FrozenTeacher(cfg)
    assert teacher.weights_loaded and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.model.parameters())
    saved = torch.load(cfg.MODEL.DISTILL.TEACHER_WEIGHTS, weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in teacher.model.state_dict().items())
    assert teacher.flip_channels  # RGB student, BGR (model-zoo style) teacher
    assert teacher.identity["teacher_weights"] == cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    assert teacher.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert teacher.embedding_dim == 64


def test_a_teacher_loaded_at_once_draws_no_random_values(setup):
    """The random values a strict load replaces are not drawn: the generator's state is the
    same before and after; every tensor, the computed buffers (anchors) included, is that of the
    teacher built the long way."""
    cfg, _ = setup
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    teacher = FrozenTeacher(cfg)
    assert torch.equal(torch.random.get_rng_state(), before)
    initializer = torch.nn.init.kaiming_uniform_
    long_way = FrozenTeacher(cfg, load_weights=False)  # random values, then the file
    assert not torch.equal(torch.random.get_rng_state(), before)
    long_way.load_weights()
    assert torch.nn.init.kaiming_uniform_ is initializer  # nothing left patched
    ours, theirs = (
        dict(t.model.named_buffers()) | dict(t.model.named_parameters())
        for t in (teacher, long_way)
    )
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items())


def test_frozen_teacher_preprocess_and_outputs_equal_a_hand_computation(setup):
    cfg, model = setup
    teacher = model.teacher
    batch = random_batch(seed=3)
    raw = [x["image"].float() for x in batch]
    images = teacher.preprocess(raw)
    detector = teacher.model
    for i, x in enumerate(raw):
        expected = (x.flip(0) - detector.pixel_mean) / detector.pixel_std
        h, w = x.shape[-2:]
        torch.testing.assert_close(images.tensor[i, :, :h, :w], expected)
    boxes = [Boxes(torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 20.0, 60.0, 70.0]]))] * 2
    out = teacher.outputs(images, boxes, TeacherNeeds(embeddings=True, logits=True))
    with torch.no_grad():
        features = detector.backbone(images.tensor)
        heads = detector.roi_heads
        pooled = heads.box_pooler([features[f] for f in heads.box_in_features], boxes)
        embeddings = heads.box_head(pooled)
        logits = heads.box_predictor(embeddings)[0]
    assert set(out.features) == set(features)
    torch.testing.assert_close(out.embeddings, embeddings)
    torch.testing.assert_close(out.logits, logits)
    assert not out.embeddings.requires_grad
    only_features = teacher.outputs(images, boxes, TeacherNeeds())
    assert only_features.embeddings is None and only_features.logits is None


def test_distill_step_pieces_compose_to_the_training_step(setup):
    """preprocess_pair + student_box_branch + distill_inputs give the terms what forward() gives
    them: the same loss values, with one seed for the RoI sampling."""
    cfg, model = setup
    batch = random_batch(seed=5)
    model.train()
    with EventStorage(0):
        torch.manual_seed(11)
        losses = model(batch)
        torch.manual_seed(11)
        images, teacher_images = model.preprocess_pair(batch)
        gt = [x["instances"] for x in batch]
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, gt)
        sampled = model.roi_heads.label_and_sample_proposals(proposals, gt)
        embeddings, logits, box_losses = model.student_box_branch(features, sampled)
        inputs = model.distill_inputs(features, embeddings, logits, teacher_images, sampled)
    assert model.teacher_needs == TeacherNeeds(embeddings=True, logits=True)
    for term in model.distill_terms:
        torch.testing.assert_close(term(inputs), losses["loss_" + term.name])
    torch.testing.assert_close(box_losses["loss_cls"], losses["loss_cls"])


def test_teacher_follows_to_and_stays_in_eval_mode(setup):
    _, model = setup
    model.train()
    assert not model.teacher.model.training
    model.to(torch.float64)
    assert next(model.teacher.model.parameters()).dtype == torch.float64
    model.to(torch.float32)
    assert not any(k.startswith("teacher") for k in model.state_dict())


def test_student_checkpoint_loads_exactly_or_names_the_mismatch(setup, tmp_path):
    cfg, model = setup
    path = tmp_path / "student.pth"
    torch.save({"model": model.state_dict(), "iteration": 3}, path)
    student = build_model(plain_student_cfg(cfg))
    loaded = load_student_checkpoint(student, str(path))
    assert loaded.training_only_keys == []  # KD++ trains no extra module
    assert loaded.extra["iteration"] == 3
    state = model.state_dict()
    del state["roi_heads.box_predictor.cls_score.bias"]
    torch.save({"model": state}, path)
    with pytest.raises(
        ConfigError,
        match=r"MODEL.WEIGHTS .*student.pth does not fit the "
        r"student of the config \(missing keys: "
        r"roi_heads.box_predictor.cls_score.bias\)",
    ):
        load_student_checkpoint(build_model(plain_student_cfg(cfg)), str(path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="is not a detectron2 checkpoint"):
        load_student_checkpoint(build_model(plain_student_cfg(cfg)), str(path))


def test_plain_student_is_built_loaded_strictly_and_in_eval_mode(setup, tmp_path):
    cfg, model = setup
    path = tmp_path / "student.pth"
    torch.save({"model": model.state_dict()}, path)
    student_cfg, student = build_plain_student(cfg, str(path))
    assert student_cfg == plain_student_cfg(cfg)
    assert student_cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert not student.training
    loaded = student.state_dict()
    assert loaded.keys() == {k for k in model.state_dict() if not k.startswith("distill_terms.")}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.items())
    state = model.state_dict()
    del state["roi_heads.box_predictor.cls_score.bias"]
    torch.save({"model": state}, path)
    with pytest.raises(
        ConfigError,
        match=r"MODEL.WEIGHTS .*student.pth does not fit the "
        r"student of the config \(missing keys: "
        r"roi_heads.box_predictor.cls_score.bias\); give the checkpoint trained "
        r"with this config",
    ):
        build_plain_student(cfg, str(path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="is not a detectron2 checkpoint"):
        build_plain_student(cfg, str(path))


def test_weights_files_missing_or_not_downloadable_name_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileError, match=r"MODEL.WEIGHTS .*nope.pkl: file not found"):
        local_weights_file("MODEL.WEIGHTS", str(tmp_path / "nope.pkl"))
    url = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    with pytest.raises(FileError) as error:
        local_weights_file("MODEL.WEIGHTS", "http://127.0.0.1:9/R-50.pkl")
    assert "could not download" in str(error.value) and "a network failure" in str(error.value)
    # the manual fix names the real https address behind a detectron2:// URL
    from nd_det.modeling.weights import https_url

    assert https_url(url) == (
        "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    )


def test_resumable_sampler_is_detectron2s_stream_and_skips():
    ours = ResumableTrainingSampler(7, seed=3)
    theirs = TrainingSampler(7, seed=3)
    first = [i for _, i in zip(range(30), iter(ours))]
    assert first == [i for _, i in zip(range(30), iter(theirs))]
    ours.skip = 12
    assert [i for _, i in zip(range(18), iter(ours))] == first[12:]
    restored = ResumableTrainingSampler(7, seed=99)
    restored.load_state_dict(ours.state_dict())
    assert restored.seed == 3
    with pytest.raises(ValueError, match="covered 7 images but the training set now has 8"):
        ResumableTrainingSampler(8).load_state_dict(ours.state_dict())


def test_add_distill_config_adds_every_missing_node():
    cfg = get_cfg()
    add_distill_config(cfg)
    del cfg.SOLVER.AMP["PRECISION"]  # a config that has MODEL.DISTILL but lacks the AMP key
    add_distill_config(cfg)
    assert cfg.SOLVER.AMP.PRECISION == "float16"
    assert "TORCHVISION" in cfg.MODEL


def test_run_cli_turns_a_user_error_into_one_line(capsys):
    def failing(argv):
        raise UserError("MODEL.X is wrong:\n  set it to 1")

    assert run_cli(failing) == 2
    assert capsys.readouterr().err == "ERROR: MODEL.X is wrong: set it to 1\n"


def test_a_one_process_run_makes_no_worker_message_folder(tmp_path, monkeypatch, capsys):
    """Only multi-process runs need the folder workers report user errors in (a killed
    one-process run would leave it behind in the temporary directory)."""
    import tempfile
    from types import SimpleNamespace

    from nd_det.engine.cli import launch_main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    args = SimpleNamespace(num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto")
    seen = []
    launch_main(lambda a: seen.append((a, os.listdir(tmp_path))), args)  # nothing made meanwhile
    assert seen == [(args, [])] and os.listdir(tmp_path) == []

    def fails(_):
        raise UserError("MODEL.X is wrong")

    with pytest.raises(SystemExit) as stop:
        launch_main(fails, args)
    assert stop.value.code == 2 and capsys.readouterr().err == "ERROR: MODEL.X is wrong\n"
    assert os.listdir(tmp_path) == []


def test_one_machine_takes_a_free_port_unless_a_url_is_given(monkeypatch):
    """detectron2's default --dist-url is one port per user: two runs of one user on one machine
    at once (two students side by side, tests in parallel) collided on it (EADDRINUSE). On one
    machine that default becomes detectron2's "auto" (a free port); a given URL, or several
    machines, keep the URL as it is."""
    from types import SimpleNamespace

    from detectron2.engine import default_argument_parser

    from nd_det.engine import cli

    default = default_argument_parser().parse_args([]).dist_url
    calls = []
    monkeypatch.setattr(cli, "launch", lambda *a, **k: calls.append(k["dist_url"]))
    for machines, url in ((1, default), (1, "tcp://127.0.0.1:23456"), (2, default)):
        args = SimpleNamespace(num_gpus=2, num_machines=machines, machine_rank=0, dist_url=url)
        cli.launch_main(lambda a: None, args)
    assert calls == ["auto", "tcp://127.0.0.1:23456", default]


WORKER_FAILS = r"""
import sys
from nd_det.engine.cli import launch_main
from nd_det.errors import UserError


class Args:
    num_gpus, num_machines, machine_rank, dist_url = 2, 1, 0, "auto"


def main(args):
    from detectron2.utils import comm
    if comm.get_rank() == 1:
        raise UserError("rank 1 found MODEL.BAD=3: set it to 1")
    comm.synchronize()


if __name__ == "__main__":
    launch_main(main, Args())
"""


def test_a_user_error_in_a_worker_is_one_line_and_exit_2(tmp_path):
    script = tmp_path / "worker_fails.py"
    script.write_text(WORKER_FAILS)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == ["ERROR: rank 1 found MODEL.BAD=3: set it to 1"]


EVERY_TOOL = sorted(
    name[:-3] for name in os.listdir(os.path.join(REPO, "tools")) if name.endswith(".py")
)


@pytest.mark.parametrize("tool", EVERY_TOOL)
def test_every_tool_silences_its_dependencies_warnings_first(tool):
    import ast

    tree = ast.parse(open(os.path.join(REPO, "tools", f"{tool}.py"), encoding="utf-8").read())
    order = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module.startswith("nd_det"):
            order.append(node.module)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            order.append(getattr(node.value.func, "id", ""))
    assert order[:2] == ["nd_det.utils.import_warnings", "ignore_detectron2_import_warnings"], order


def test_a_mistake_is_the_only_line_on_stderr_with_warnings_on(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            os.path.join(REPO, "configs", "COCO-Distill", "R50_from_R101_nd.yaml"),
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "MODEL.DISTILL.NO_SUCH_KEY",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=300,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), lines
    assert "MODEL.DISTILL.NO_SUCH_KEY" in proc.stderr and not (tmp_path / "out").exists()


def test_import_nd_det_registers_distill_rcnn_as_a_detectron2_project(tmp_path):
    """The README's use as a detectron2 project, in a fresh interpreter: ``import nd_det``,
    ``nd_det.add_distill_config(cfg)``, detectron2's ``build_model`` -> a DistillRCNN (the
    package imported only lazily before: the registry had no DistillRCNN)."""
    import subprocess
    import sys

    code = (
        "import nd_det; from detectron2.config import get_cfg; "
        "from detectron2.modeling import build_model; cfg=get_cfg(); "
        "nd_det.add_distill_config(cfg); "
        "cfg.merge_from_file('configs/COCO-Distill/R50_student_only.yaml'); "
        "cfg.MODEL.DEVICE='cpu'; cfg.MODEL.WEIGHTS=''; print(type(build_model(cfg)).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "DistillRCNN"
