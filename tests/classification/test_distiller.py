"""The distiller adds the distillation terms of nd_det.distill (the losses of nd_det.losses with
weights, warm-up and the ND projection) to the cross-entropy; the teacher stays frozen and outside
the student's state."""

import pytest
import torch

from nd_det.class_means import ClassMeans
from nd_det.classification import Distiller, build_classifier
from nd_det.classification.builders import build_terms
from nd_det.classification.distiller import warm_up_factor
from nd_det.errors import ConfigError
from nd_det.losses import dist_loss, dkd_loss, hcl_loss, kd_loss, nd_loss, nd_mechanism

from .helpers import terms_config

NUM_CLASSES = 5


def _setup(losses, student="resnet8", teacher="wrn_16_2", warm_up=0):
    torch.manual_seed(0)
    s = build_classifier(student, NUM_CLASSES)
    t = build_classifier(teacher, NUM_CLASSES)
    means = ClassMeans(
        torch.randn(NUM_CLASSES, t.embedding_dim), torch.ones(NUM_CLASSES, dtype=torch.int64)
    )
    cfg = terms_config(losses)
    terms = build_terms(cfg, s, t, means.means)
    return Distiller(s, t, terms, warm_up, cfg.model.label_smoothing), means


def _batch(n=6, size=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % NUM_CLASSES


def test_warm_up_factor():
    assert [warm_up_factor(e, 4) for e in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert warm_up_factor(0, 0) == 1.0


def test_each_term_equals_the_loss_core_times_its_weight():
    losses = {
        "ce": {"label_smoothing": 0.1},
        "kd": {"weight": 2.0, "temperature": 3.0},
        "dkd": {"weight": 1.5, "alpha": 0.7, "beta": 5.0, "temperature": 2.0},
        "dist": {"weight": 3.0, "beta": 2.0, "gamma": 0.5, "temperature": 4.0},
        "reviewkd": {"weight": 1.2, "mid_channels": 16},
        "nd": {"weight": 2.5},
    }
    distiller, means = _setup(losses)
    distiller.eval()  # no dropout in the projection, so every value is reproducible
    images, labels = _batch()
    out, logits = distiller(images, labels, epoch=0)
    with torch.no_grad():
        s, t = distiller.student(images), distiller.teacher(images)
        terms = distiller.terms
        projected = terms["nd"].projection(s.embedding)
        # the reference's pairing: student stage outputs fused, teacher pre-ReLU maps as targets
        fused = terms["reviewkd"].fusion(s.features, [f.shape[-2:] for f in t.preact_features])
        expected = {
            "loss_ce": torch.nn.functional.cross_entropy(s.logits, labels, label_smoothing=0.1),
            "loss_kd": 2.0 * kd_loss(s.logits, t.logits, 3.0),
            "loss_dkd": 1.5 * dkd_loss(s.logits, t.logits, labels, 0.7, 5.0, 2.0),
            "loss_dist": 3.0 * dist_loss(s.logits, t.logits, 2.0, 0.5, 4.0),
            "loss_reviewkd": 1.2 * hcl_loss(fused, t.preact_features),
            "loss_nd": nd_loss(projected, t.embedding, labels, means.means, 2.5),
        }
    assert list(out) == list(expected) + ["loss"]
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, msg=key)
    torch.testing.assert_close(out["loss"], sum(expected.values()))
    torch.testing.assert_close(logits, s.logits)


def test_warm_up_scales_only_the_warmed_up_terms():
    losses = {"ce": {}, "kd": {"temperature": 4.0}, "nd": {}, "dist": {"warm_up": False}}
    distiller, _ = _setup(losses, warm_up=4)
    distiller.eval()
    images, labels = _batch()
    at = {e: distiller(images, labels, epoch=e)[0] for e in (0, 2, 4, 7)}
    assert at[0]["loss_kd"].item() == 0.0
    torch.testing.assert_close(at[2]["loss_kd"], 0.5 * at[4]["loss_kd"])
    torch.testing.assert_close(at[7]["loss_kd"], at[4]["loss_kd"])
    for key in ("loss_ce", "loss_nd", "loss_dist"):  # not warmed up
        torch.testing.assert_close(at[0][key], at[7][key])
        assert at[0][key].item() > 0


def test_projection_only_when_embedding_sizes_differ_and_only_for_nd():
    distiller, _ = _setup({"ce": {}, "nd": {}}, student="resnet8", teacher="wrn_16_2")
    projection = distiller.terms["nd"].projection
    assert [type(m).__name__ for m in projection] == ["BatchNorm1d", "Dropout", "Linear"]
    assert (projection[2].in_features, projection[2].out_features) == (64, 128)
    same, _ = _setup({"ce": {}, "nd": {}}, student="resnet8", teacher="resnet14")
    assert isinstance(same.terms["nd"].projection, torch.nn.Identity)
    # the classifier head still sees the student's own 64-d embedding
    assert distiller.student.fc.in_features == 64


def test_teacher_is_frozen_and_outside_the_student_state():
    distiller, _ = _setup({"ce": {}, "kd": {}, "reviewkd": {"mid_channels": 8}, "nd": {}})
    teacher_ids = {id(p) for p in distiller.teacher.parameters()}
    assert teacher_ids and not teacher_ids & {id(p) for p in distiller.parameters()}
    assert not any(k.startswith("teacher") for k in distiller.state_dict())
    distiller.train()
    assert distiller.student.training and not distiller.teacher.training
    images, labels = _batch()
    distiller(images, labels, epoch=1)[0]["loss"].backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())
    fusion_grads = [p.grad for p in distiller.terms["reviewkd"].parameters()]
    assert all(g is not None for g in fusion_grads)
    assert distiller.terms["nd"].projection[2].weight.grad.abs().sum() > 0


def test_the_nd_mechanism_is_recorded_in_training():
    """Each training forward leaves ND's mechanism of its batch (the projected student embedding
    against the teacher's), the numbers the trainer logs."""
    distiller, means = _setup({"nd": {}}, student="resnet8", teacher="resnet14")
    images, labels = _batch()
    distiller.train()
    distiller(images, labels)
    with torch.no_grad():
        s, t = distiller.student(images).embedding, distiller.teacher(images).embedding
    expected = nd_mechanism(s, t, labels, means.means)
    assert set(distiller.mechanism) == {"norm_ratio", "cosine_to_class_mean"}
    for key, value in expected.items():
        torch.testing.assert_close(distiller.mechanism[key], value)
    ratio = s.norm(dim=1).mean() / t.norm(dim=1).mean()
    torch.testing.assert_close(distiller.mechanism["norm_ratio"], ratio)


def test_bad_term_lists_and_parameters_are_explained():
    s, t = build_classifier("resnet8", NUM_CLASSES), build_classifier("resnet18", NUM_CLASSES)
    with pytest.raises(
        ConfigError,
        match=r"distill.losses has unknown name\(s\) \['kd\+\+'\]; choose from "
        r"\['dist', 'dkd', 'kd', 'nd', 'reviewkd'\]",
    ):
        build_terms(terms_config({"kd++": {}}), s, t)
    with pytest.raises(ConfigError, match=r"distill.losses lists a loss twice"):
        cfg = terms_config({"kd": {}})
        cfg.distill.losses = ["kd", "kd"]
        build_terms(cfg, s, t)
    with pytest.raises(
        ConfigError, match=r"distill.kd.weight 0.0: 'kd' is in distill.losses, so give it a"
    ):
        build_terms(terms_config({"kd": {"weight": 0.0}}), s, t)
    with pytest.raises(ConfigError, match=r"distill.dist.temperature -1.0: give a positive"):
        build_terms(terms_config({"dist": {"temperature": -1.0}}), s, t)
    with pytest.raises(
        ConfigError,
        match=r"distill.reviewkd.in_features=\[0, 1, 2, 3, 4\]: the student backbone has no "
        r"level\(s\) \[4\] \(it has \[0, 1, 2, 3\]\)",
    ):
        build_terms(terms_config({"reviewkd": {}}), s, t)
    with pytest.raises(ConfigError, match=r"distill.reviewkd.norm='ln': use 'bn'"):
        s14 = build_classifier("resnet14", NUM_CLASSES)
        build_terms(terms_config({"reviewkd": {"norm": "ln"}}), s, s14)
