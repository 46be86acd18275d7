"""The pieces of the DeiT recipe (configs/classification/Base-DeiT.yaml) against the reference's
formulas: mixed targets in the cross-entropy and the nd term (the reference's timm Mixup targets
and its mixed class means, computed per sample), hard distillation through the distillation head,
AdamW without weight decay on 1-D parameters, and the batch mixer."""

import pytest
import torch
import torch.nn.functional as F
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from nd_det.classification.builders import build_terms
from nd_det.classification.data import build_batch_mixer
from nd_det.classification.distiller import Distiller
from nd_det.classification.models import build_classifier
from nd_det.classification.outputs import ClassifierOutput
from nd_det.classification.solver import build_optimizer

from .helpers import terms_config

N, C, D = 6, 5, 8


def _output(logits, embedding, distill_logits=None):
    return ClassifierOutput(logits, embedding, [], [], distill_logits)


class _Fixed(nn.Module):
    """A model whose forward returns the given output (the distiller's view of a classifier)."""

    def __init__(self, out: ClassifierOutput):
        super().__init__()
        self.out = out

    def forward(self, images):
        return self.out


def _losses(losses, student, teacher, labels, means=None, student_dim=D):
    """The distiller's losses for fixed student and teacher outputs."""
    s_model = build_classifier("resnet8", C, 1)  # only its sizes are read
    s_model.embedding_dim = student_dim
    t_model = build_classifier("resnet8", C, 1)
    t_model.embedding_dim = D
    cfg = terms_config(losses)
    terms = build_terms(cfg, s_model, t_model, means)
    distiller = Distiller(_Fixed(student), _Fixed(teacher), terms, 0, cfg.model.label_smoothing)
    return distiller(torch.zeros(N, 1, 8, 8), labels)[0]


def test_mixed_targets_in_ce_and_nd_equal_the_reference():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    lam = 0.7
    logits, s_emb, t_emb = torch.randn(N, C), torch.randn(N, D), torch.randn(N, D)
    means = torch.randn(C, D)
    # the reference's targets: timm's mixup_target (partner: the batch flipped), smoothing 0.1
    mixed = mixup_target(labels, C, lam, smoothing=0.0)
    student, teacher = _output(logits, s_emb), _output(torch.randn(N, C), t_emb)
    losses = _losses({"ce": {"label_smoothing": 0.1}, "nd": {}}, student, teacher, mixed, means)
    expected_ce = SoftTargetCrossEntropy()(logits, mixup_target(labels, C, lam, smoothing=0.1))
    torch.testing.assert_close(losses["loss_ce"], expected_ce)
    # the reference's ND (DeiT/utils.py project_center_v2), one sample at a time, on its mixed
    # class means (Dataset/data.py mixup_center without smoothing)
    centres = lam * means[labels] + (1 - lam) * means[labels.flip(0)]
    expected_nd = (
        sum(
            1 - torch.dot(s, c / c.norm()) / max(s.norm(), t.norm())
            for s, t, c in zip(s_emb, t_emb, centres)
        )
        / N
    )
    torch.testing.assert_close(losses["loss_nd"], expected_nd)


def test_hard_distillation_reads_the_distillation_head():
    torch.manual_seed(1)
    logits, distill_logits, teacher_logits = torch.randn(N, C), torch.randn(N, C), torch.randn(N, C)
    student = _output(logits, torch.randn(N, D), distill_logits)
    teacher = _output(teacher_logits, torch.randn(N, D))
    labels = torch.randint(0, C, (N,))
    losses = _losses({"kd": {"hard": True}, "dkd": {}}, student, teacher, labels)
    # DeiT/utils.py KDLoss: cross_entropy(s_out, t_out.argmax(dim=1)) on the distillation head
    expected = F.cross_entropy(distill_logits, teacher_logits.argmax(1))
    torch.testing.assert_close(losses["loss_kd"], expected)
    # the cross-entropy with the labels reads the class-token head
    torch.testing.assert_close(losses["loss_ce"], F.cross_entropy(logits, labels))
    # soft terms read the distillation head too: the same value as for a student whose only
    # logits are those
    alone = _output(distill_logits, student.embedding)
    dkd_alone = _losses({"kd": {"hard": True}, "dkd": {}}, alone, teacher, labels)["loss_dkd"]
    assert torch.equal(losses["loss_dkd"], dkd_alone)


def test_adamw_leaves_biases_and_norm_layers_undecayed():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    solver = {"optimizer": "adamw", "lr": 0.1, "betas": [0.9, 0.95], "weight_decay": 0.5}
    optimizer = build_optimizer(model.parameters(), solver)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    decayed, undecayed = optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [(4, 4)] and decayed["weight_decay"] == 0.5
    assert len(undecayed["params"]) == 3 and undecayed["weight_decay"] == 0.0
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # zero gradients: only weight decay moves a parameter
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert moved == [True, False, False, False]


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_batch_mixer_gives_mixed_one_hot_targets(mixup, cutmix):
    torch.manual_seed(2)
    mixer = build_batch_mixer({"mixup_alpha": mixup, "cutmix_alpha": cutmix}, C)
    images = torch.rand(N, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])  # each differs from its partner (rolled by one)
    mixed_images, targets = mixer(images, labels)
    # one lambda for the batch: every row lam * its own label + (1 - lam) * its partner's
    lam = targets[0, 0]
    own, partner = F.one_hot(labels, C).float(), F.one_hot(labels.roll(1), C).float()
    torch.testing.assert_close(targets, lam * own + (1 - lam) * partner)
    if not cutmix:  # mixup mixes the pixels with the same lambda
        torch.testing.assert_close(mixed_images, lam * images + (1 - lam) * images.roll(1, 0))
    assert build_batch_mixer({"mixup_alpha": 0.0, "cutmix_alpha": 0.0}, C) is None
