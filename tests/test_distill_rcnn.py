"""DistillRCNN: training steps of every COCO-Distill config on CPU, teacher isolation, eval
equivalence with a plain GeneralizedRCNN, teacher input format, early validation errors."""

import copy
import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from nd_det.class_means import ClassMeanAccumulator, save_class_means
from nd_det.errors import ConfigError, DataError, UserError
from nd_det.modeling import DistillRCNN, plain_student_cfg, student_state_dict

from .helpers.tiny_distill import random_batch, tiny_distill_cfg

CONFIGS = {
    "R50_from_R101_nd.yaml": ["loss_reviewkd", "loss_nd"],
    "R50_from_R101_kd_nd.yaml": ["loss_kd", "loss_nd"],
    "R50_from_R101_dkd_nd.yaml": ["loss_dkd", "loss_nd"],
    "R50_from_R101_reviewkd.yaml": ["loss_reviewkd"],
    "R50_student_only.yaml": [],
    "R18_from_R101_nd.yaml": ["loss_reviewkd", "loss_nd"],
    "R18_from_R101_kd_nd.yaml": ["loss_kd", "loss_nd"],
    "MV2_from_R50_nd.yaml": ["loss_reviewkd", "loss_nd"],
    "MV2_from_R50_kd_nd.yaml": ["loss_kd", "loss_nd"],
}
# GroupNorm for the MobileNetV2 student, so a random init gives sane losses
MV2_OPTS = ["MODEL.TORCHVISION.NORM", "GN", "MODEL.TORCHVISION.FREEZE_AT", "0"]
DETECTOR_KEYS = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}


def _train_steps(model, cfg, steps=2, empty=(1,)):
    optimizer = build_optimizer(cfg, model)
    model.train()
    history = []
    with EventStorage(0):
        for it in range(steps):
            losses = model(random_batch(seed=it, empty=empty))
            history.append({k: v.detach() for k, v in losses.items()})
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    return history


@pytest.mark.parametrize("config_file", sorted(CONFIGS))
def test_two_training_steps_then_eval(tmp_path, config_file):
    extra = MV2_OPTS if config_file.startswith("MV2") else []
    cfg = tiny_distill_cfg(str(tmp_path), config_file, extra_opts=extra)
    model = build_model(cfg)
    assert isinstance(model, DistillRCNN)
    teacher = None if model.teacher is None else model.teacher.model
    teacher_before = (
        {k: v.clone() for k, v in teacher.state_dict().items()} if teacher is not None else None
    )
    student_before = {k: v.clone() for k, v in model.state_dict().items()}

    history = _train_steps(model, cfg)

    for losses in history:
        assert set(losses) == DETECTOR_KEYS | set(CONFIGS[config_file])
        for key, value in losses.items():
            assert torch.isfinite(value), f"{key} is not finite: {value}"
    if teacher is None:
        assert not cfg.MODEL.DISTILL.LOSSES
    else:
        assert not teacher.training
        for k, v in teacher.state_dict().items():
            assert torch.equal(v, teacher_before[k]), f"teacher {k} changed"
        assert all(p.grad is None for p in teacher.parameters())
        teacher_ids = {id(p) for p in teacher.parameters()}
        assert not teacher_ids & {id(p) for p in model.parameters()}
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any(k.startswith("backbone.bottom_up.") for k in changed)
    assert any(k.startswith("roi_heads.") for k in changed)

    model.eval()
    with torch.no_grad():
        outputs = model(
            [{k: v for k, v in x.items() if k != "instances"} for x in random_batch(seed=9)]
        )
    assert len(outputs) == 2
    for out in outputs:
        inst = out["instances"]
        assert inst.image_size == (96, 128)
        assert torch.isfinite(inst.pred_boxes.tensor).all() and torch.isfinite(inst.scores).all()


def test_state_dict_and_optimizer_hold_no_teacher(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    model = build_model(cfg)
    teacher_keys = set(model.teacher.model.state_dict())
    keys = set(model.state_dict())
    # the student's keys are exactly a plain GeneralizedRCNN's, plus the ABF modules
    plain = build_model(plain_student_cfg(cfg))
    assert set(student_state_dict(model.state_dict())) == set(plain.state_dict())
    assert keys - set(plain.state_dict()) == {k for k in keys if k.startswith("distill_terms.")}
    assert any(k.startswith("distill_terms.0.fusion.abfs") for k in keys)
    assert not any("teacher" in k for k in keys)
    # the teacher's parameter tensors are nowhere among the trainable ones
    optimizer = build_optimizer(cfg, model)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in model.teacher.model.parameters()}
    assert len(teacher_keys) > 0


def test_teacher_stays_in_eval_and_follows_dtype(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    model = build_model(cfg)
    model.train()
    assert model.training and not model.teacher.model.training
    model.double()
    assert next(model.teacher.model.parameters()).dtype == torch.float64
    assert all(not p.requires_grad for p in model.teacher.model.parameters())


def test_student_box_head_runs_once_per_step(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path), "R50_from_R101_kd_nd.yaml")
    model = build_model(cfg)
    calls = {"student": 0, "teacher": 0}
    model.roi_heads.box_head.register_forward_hook(
        lambda *a: calls.__setitem__("student", calls["student"] + 1)
    )
    model.teacher.model.roi_heads.box_head.register_forward_hook(
        lambda *a: calls.__setitem__("teacher", calls["teacher"] + 1)
    )
    _train_steps(model, cfg, steps=1)
    assert calls == {"student": 1, "teacher": 1}


def test_teacher_sees_the_sampled_boxes_and_its_own_input_format(tmp_path):
    """Student reads RGB with torchvision-style normalisation, teacher expects BGR with caffe
    means: the teacher embeddings DistillRCNN computes equal the teacher's own preprocessing +
    box head on the same boxes."""
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
    captured = {}
    model.teacher.model.roi_heads.box_head.register_forward_hook(
        lambda m, i, o: captured.__setitem__("emb", o)
    )
    model.teacher.model.roi_heads.box_pooler.register_forward_hook(
        lambda m, i, o: captured.__setitem__("boxes", [b.tensor.clone() for b in i[1]])
    )
    batch = random_batch(seed=3)
    model.train()
    with EventStorage(0):
        model(batch)

    teacher = model.teacher.model
    bgr = [dict(x, image=x["image"].flip(0)) for x in batch]  # what the teacher expects
    with torch.no_grad():
        images = teacher.preprocess_image(bgr)
        feats = teacher.backbone(images.tensor)
        from detectron2.structures import Boxes

        pooled = teacher.roi_heads.box_pooler(
            [feats[f] for f in teacher.roi_heads.box_in_features],
            [Boxes(b) for b in captured["boxes"]],
        )
        expected = teacher.roi_heads.box_head(pooled)
    torch.testing.assert_close(captured["emb"], expected)
    assert sum(len(b) for b in captured["boxes"]) == len(expected)


def test_eval_equals_plain_generalized_rcnn(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    model = build_model(cfg)
    _train_steps(model, cfg, steps=1)  # move the weights away from their init
    plain = build_model(plain_student_cfg(cfg))
    plain.load_state_dict(student_state_dict(model.state_dict()))
    model.eval()
    plain.eval()
    batch = [{k: v for k, v in x.items() if k != "instances"} for x in random_batch(seed=7)]
    with torch.no_grad():
        ours = model(copy.deepcopy(batch))
        theirs = plain(copy.deepcopy(batch))
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=0)
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)
        assert torch.equal(a.pred_classes, b.pred_classes)


def test_batch_of_images_without_boxes_trains_finite(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    model = build_model(cfg)
    history = _train_steps(model, cfg, steps=2, empty=(0, 1))
    for losses in history:
        assert all(math.isfinite(float(v)) for v in losses.values()), losses


def test_nd_foreground_only_option(tmp_path):
    cfg = tiny_distill_cfg(
        str(tmp_path),
        "R50_from_R101_kd_nd.yaml",
        extra_opts=["MODEL.DISTILL.ND.INCLUDE_BACKGROUND", "False"],
    )
    model = build_model(cfg)
    history = _train_steps(model, cfg, steps=1, empty=(0, 1))
    # no foreground RoI at all: the masked mean is exactly 0, not NaN
    assert float(history[0]["loss_nd"]) == 0.0


def test_bad_class_means_shape_stops_before_training(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path), write_class_means=False)
    wrong = ClassMeanAccumulator(5, 64)  # 5 rows but the model needs NUM_CLASSES + 1 = 3
    wrong.update(torch.rand(10, 64), torch.arange(5).repeat(2))
    save_class_means(cfg.MODEL.DISTILL.CLASS_MEANS, wrong.finalize())
    with pytest.raises(
        DataError,
        match=r"MODEL.DISTILL.CLASS_MEANS: .* holds 5 class rows "
        r"but 3 are needed",
    ):
        build_model(cfg)


def test_class_means_of_wrong_dimension(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path), write_class_means=False)
    wrong = ClassMeanAccumulator(3, 32)
    wrong.update(torch.rand(6, 32), torch.arange(3).repeat(2))
    save_class_means(cfg.MODEL.DISTILL.CLASS_MEANS, wrong.finalize())
    with pytest.raises(DataError, match="embedding dimension 32 but the teacher's"):
        build_model(cfg)


def test_missing_teacher_weights_stops_before_training(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = str(tmp_path / "no_such_teacher.pth")
    with pytest.raises(
        UserError, match=r"MODEL.DISTILL.TEACHER_WEIGHTS .*no_such_teacher.pth: file not found"
    ):
        build_model(cfg)


def test_teacher_with_other_number_of_classes_is_refused(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    cfg.MODEL.DISTILL.TEACHER_OPTS = list(cfg.MODEL.DISTILL.TEACHER_OPTS) + [
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "5",
    ]
    with pytest.raises(
        ConfigError, match=r"the teacher .* has 5 classes, MODEL.ROI_HEADS.NUM_CLASSES 2"
    ):
        build_model(cfg)


def test_unknown_loss_name_is_refused(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    cfg.MODEL.DISTILL.LOSSES = ["nd", "fitnet"]
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['fitnet'\]"):
        build_model(cfg)


@pytest.mark.parametrize("losses", [["kd"], ["kd", "nd"]])
def test_nd_mechanism_is_logged_every_period_with_or_without_nd(tmp_path, losses):
    """ND's mechanism goes into the EventStorage every MECHANISM_PERIOD iterations: the norm ratio
    (the teacher's box head run for it when no term needs its embeddings) for any distillation,
    the cosine to the class means only with the ND term (the run's table); the values against
    nd_mechanism on the step's own inputs."""
    from nd_det.losses import nd_mechanism

    cfg = tiny_distill_cfg(str(tmp_path))
    cfg.MODEL.DISTILL.LOSSES = losses
    cfg.MODEL.DISTILL.MECHANISM_PERIOD = 2
    model = build_model(cfg).train()
    batch = random_batch()
    with EventStorage(0) as storage:
        model(batch)  # iteration 0: nothing logged
        assert not any(k.startswith("nd/") for k in storage.latest())
        storage.iter = 1
        torch.manual_seed(0)
        model(batch)
        logged = {k: v for k, (v, _) in storage.latest().items() if k.startswith("nd/")}
        torch.manual_seed(0)
        _, sampled, inputs = model.distill_step_inputs(batch)
    boxes = [p.proposal_boxes for p in sampled]
    teacher = model.teacher.box_embeddings(inputs.teacher_features, boxes)
    foreground = inputs.labels < cfg.MODEL.ROI_HEADS.NUM_CLASSES
    means = model.distill_terms[-1].class_means if "nd" in losses else None
    expected = nd_mechanism(inputs.student_embeddings, teacher, inputs.labels, means, foreground)
    assert sorted(logged) == sorted(f"nd/{k}" for k in expected)
    for key, value in expected.items():
        assert logged[f"nd/{key}"] == pytest.approx(float(value), rel=1e-5)
    assert logged["nd/norm_ratio"] > 0
