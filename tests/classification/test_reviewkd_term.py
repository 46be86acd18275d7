"""The ReviewKD term pairs the maps as the reference code does: the student's stage outputs are
fused, the teacher's maps before the final ReLU are the HCL targets (CIFAR/ReviewKD++/
train_reviewkd.py calls the teacher with preact=True); the flags pick the other list per side."""

import pytest
import torch

from nd_det.classification import build_classifier
from nd_det.classification.builders import build_terms
from nd_det.classification.config import get_cfg
from nd_det.distill import DistillInputs
from nd_det.distill import reviewkd as reviewkd_module
from nd_det.errors import ConfigError, input_stage
from nd_det.losses import hcl_loss

from .helpers import terms_config

NUM_CLASSES = 5


def _pair():
    torch.manual_seed(0)
    student = build_classifier("resnet8", NUM_CLASSES).train()
    teacher = build_classifier("resnet14", NUM_CLASSES).eval()
    return student, teacher


def _observe(monkeypatch, term, student_out, teacher_out):
    """Runs the term, recording what its fusion got and what hcl_loss compared."""
    seen = {}
    handle = term.fusion.register_forward_pre_hook(
        lambda m, args, kwargs: seen.__setitem__("fused_inputs", args[0]), with_kwargs=True
    )

    def recording_hcl(fused, targets):
        seen["targets"] = targets
        return hcl_loss(fused, targets)

    monkeypatch.setattr(reviewkd_module, "hcl_loss", recording_hcl)
    inputs = DistillInputs(
        labels=None,
        student_embeddings=student_out.embedding,
        student_logits=student_out.logits,
        student_features=student_out.features,
        teacher_features=teacher_out.features,
        student_preact_features=student_out.preact_features,
        teacher_preact_features=teacher_out.preact_features,
    )
    value = term(inputs)
    handle.remove()
    return value, seen


def test_default_fuses_student_outputs_and_targets_teacher_pre_relu_maps(monkeypatch):
    student, teacher = _pair()
    term = build_terms(terms_config({"reviewkd": {"mid_channels": 16}}), student, teacher)[
        "reviewkd"
    ]
    assert (term.student_preact, term.teacher_preact) == (False, True)
    x = torch.randn(4, 3, 16, 16)
    s_out = student(x)
    with torch.no_grad():
        t_out = teacher(x)
    value, seen = _observe(monkeypatch, term, s_out, t_out)
    assert all(a is b for a, b in zip(seen["fused_inputs"], s_out.features))
    assert all(a is b for a, b in zip(seen["targets"], t_out.preact_features))
    # the targets really are pre-ReLU: negative values a post-ReLU map cannot have
    assert all(t.min() < 0 for t in seen["targets"][:-1])
    assert all(f.min() >= 0 for f in t_out.features[:-1])
    value.backward()
    assert term.fusion.abfs[0].reduce[0].weight.grad is not None


def test_flags_select_the_other_maps(monkeypatch):
    student, teacher = _pair()
    losses = {"reviewkd": {"mid_channels": 16, "student_preact": True, "teacher_preact": False}}
    term = build_terms(terms_config(losses), student, teacher)["reviewkd"]
    x = torch.randn(4, 3, 16, 16)
    s_out = student(x)
    with torch.no_grad():
        t_out = teacher(x)
    _, seen = _observe(monkeypatch, term, s_out, t_out)
    assert all(a is b for a, b in zip(seen["fused_inputs"], s_out.preact_features))
    assert all(a is b for a, b in zip(seen["targets"], t_out.features))
    assert all(f.min() < 0 for f in seen["fused_inputs"][:-1])


def test_mid_channels_is_the_abf_width_and_flags_must_be_booleans():
    student, teacher = _pair()
    term = build_terms(terms_config({"reviewkd": {"mid_channels": 24}}), student, teacher)[
        "reviewkd"
    ]
    assert {abf.reduce[0].out_channels for abf in term.fusion.abfs} == {24}
    with pytest.raises(
        ConfigError,
        match=r"Type mismatch \(<class 'bool'> vs. <class 'str'>\) with values \(True vs. yes\) "
        r"for config key: distill.reviewkd.teacher_preact",
    ):
        with input_stage("overrides"):
            get_cfg().merge_from_list(["distill.reviewkd.teacher_preact", "yes"])
