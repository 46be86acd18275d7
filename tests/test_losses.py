"""The logit/embedding losses of nd_det.losses against slow, obviously-correct references.

Each reference walks the rows one at a time in Python floats (float64) and follows the formula of
METHOD.md / ARCHITECTURE.md literally; the vectorised losses must agree with it on random inputs
of several shapes, on empty batches and on degenerate (zero-norm) rows.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from nd_det.losses import dist_loss, dkd_loss, kd_loss, nd_loss, nd_mechanism


# ----------------------------------------------------------------------------- plain-math helpers
def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _log_sum_exp(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def _log_softmax(values):
    lse = _log_sum_exp(values)
    return [v - lse for v in values]


def _kl(log_p, log_q):
    """KL(p || q) of two distributions given as log-probabilities."""
    return sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))


def _pearson(a, b):
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    da = [x - mean_a for x in a]
    db = [x - mean_b for x in b]
    denominator = _norm(da) * _norm(db)
    # a constant vector has no correlation with anything: count it as 0
    return _dot(da, db) / denominator if denominator > 0 else 0.0


def _rows(t):
    return t.detach().double().tolist()


# ----------------------------------------------------------------------------- references
def reference_nd(student, teacher, labels, class_means, weight=1.0):
    """weight * mean_i (1 - <s_i, c_y / ||c_y||> / max(||s_i||, ||t_i||)), one row at a time.

    Conventions for degenerate rows: a zero class mean has no direction (e = 0, the term is 1);
    when both s and t are zero the ratio is 0 (the term is 1).
    """
    s_rows, t_rows, c_rows = _rows(student), _rows(teacher), _rows(class_means)
    if not s_rows:
        return 0.0
    terms = []
    for s, t, y in zip(s_rows, t_rows, labels.tolist()):
        c = c_rows[y]
        c_norm = _norm(c)
        e = [x / c_norm for x in c] if c_norm > 0 else [0.0] * len(c)
        denominator = max(_norm(s), _norm(t))
        ratio = _dot(s, e) / denominator if denominator > 0 else 0.0
        terms.append(1.0 - ratio)
    return weight * sum(terms) / len(terms)


def reference_kd(student_logits, teacher_logits, temperature=1.0):
    """T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))."""
    T = temperature
    s_rows, t_rows = _rows(student_logits), _rows(teacher_logits)
    if not s_rows:
        return 0.0
    kls = [
        _kl(_log_softmax([v / T for v in t]), _log_softmax([v / T for v in s]))
        for s, t in zip(s_rows, t_rows)
    ]
    return T * T * sum(kls) / len(kls)


def reference_dkd(student_logits, teacher_logits, labels, alpha, beta, temperature):
    """Decoupled KD (Zhao et al. 2022), one row at a time.

    TCKD: KL between the binary distributions (p_target, p_rest) of teacher and student.
    NCKD: KL between the teacher's and student's softmax over the non-target classes only.
    Both times T^2, averaged over rows; the loss is alpha * TCKD + beta * NCKD.
    """
    T = temperature
    s_rows, t_rows = _rows(student_logits), _rows(teacher_logits)
    if not s_rows:
        return 0.0
    tckd, nckd = [], []
    for s, t, y in zip(s_rows, t_rows, labels.tolist()):
        zs = [v / T for v in s]
        zt = [v / T for v in t]
        rest_s = [v for k, v in enumerate(zs) if k != y]
        rest_t = [v for k, v in enumerate(zt) if k != y]
        # log p_target and log p_rest = log sum_{k != y} p_k, both from the full softmax
        binary_s = [zs[y] - _log_sum_exp(zs), _log_sum_exp(rest_s) - _log_sum_exp(zs)]
        binary_t = [zt[y] - _log_sum_exp(zt), _log_sum_exp(rest_t) - _log_sum_exp(zt)]
        tckd.append(_kl(binary_t, binary_s))
        nckd.append(_kl(_log_softmax(rest_t), _log_softmax(rest_s)))
    n = len(s_rows)
    return T * T * (alpha * sum(tckd) / n + beta * sum(nckd) / n)


def reference_dist(student_logits, teacher_logits, beta, gamma, temperature):
    """DIST (Huang et al. 2022): T^2 * (beta * inter + gamma * intra) with
    inter = 1 - mean over rows of Pearson(p_s row, p_t row),
    intra = 1 - mean over classes of Pearson(p_s column, p_t column), p = softmax(logits / T)."""
    T = temperature
    s_rows, t_rows = _rows(student_logits), _rows(teacher_logits)
    if not s_rows:
        return 0.0
    ps = [[math.exp(v) for v in _log_softmax([x / T for x in row])] for row in s_rows]
    pt = [[math.exp(v) for v in _log_softmax([x / T for x in row])] for row in t_rows]
    inter = 1.0 - sum(_pearson(a, b) for a, b in zip(ps, pt)) / len(ps)
    columns_s = list(zip(*ps))
    columns_t = list(zip(*pt))
    intra = 1.0 - sum(_pearson(a, b) for a, b in zip(columns_s, columns_t)) / len(columns_s)
    return T * T * (beta * inter + gamma * intra)


# ----------------------------------------------------------------------------- inputs
def _generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _nd_inputs(n, d, c, seed, dtype=torch.float32):
    g = _generator(seed)
    student = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    # teacher norms vary row to row around the student's, so both branches of the max occur
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2.0
    teacher = (torch.randn(n, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, c, (n,), generator=g)
    means = torch.randn(c, d, generator=g, dtype=torch.float64).mul(3.0).to(dtype)
    return student, teacher, labels, means


def _logit_inputs(n, k, seed, scale=3.0):
    g = _generator(seed)
    student = torch.randn(n, k, generator=g) * scale
    teacher = torch.randn(n, k, generator=g) * scale
    labels = torch.randint(0, k, (n,), generator=g)
    return student, teacher, labels


SHAPES_ND = [(0, 8, 3), (1, 1, 1), (1, 5, 2), (7, 16, 4), (32, 33, 10), (64, 1024, 81)]
SHAPES_LOGITS = [(1, 2), (2, 7), (7, 10), (33, 81), (16, 100)]


# ----------------------------------------------------------------------------- nd_loss
@pytest.mark.parametrize("n,d,c", SHAPES_ND)
@pytest.mark.parametrize("weight", [1.0, 1.5])
def test_nd_loss_matches_reference(n, d, c, weight):
    student, teacher, labels, means = _nd_inputs(n, d, c, seed=n * 1000 + d)
    got = nd_loss(student, teacher, labels, means, weight=weight)
    assert got.dtype == torch.float32 and got.dim() == 0
    want = reference_nd(student, teacher, labels, means, weight)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_nd_loss_float64_matches_reference_tightly():
    student, teacher, labels, means = _nd_inputs(20, 12, 5, seed=3, dtype=torch.float64)
    got = nd_loss(student, teacher, labels, means, weight=0.7)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(
        reference_nd(student, teacher, labels, means, 0.7), rel=1e-12, abs=1e-12
    )


def test_nd_loss_degenerate_rows_match_reference_and_have_finite_gradients():
    student, teacher, labels, means = _nd_inputs(8, 6, 4, seed=11)
    labels[:] = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    student[0] = 0.0  # zero-norm student, non-zero teacher -> term 1
    teacher[1] = 0.0  # zero-norm teacher -> term 1 - cos(s, c)
    student[2] = 0.0  # both zero -> term 1
    teacher[2] = 0.0
    means[3] = 0.0  # zero class mean: no direction -> term 1 (rows 3 and 7)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    means.requires_grad_(True)
    loss = nd_loss(student, teacher, labels, means)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(
        reference_nd(student, teacher, labels, means), rel=1e-5, abs=1e-6
    )
    loss.backward()
    for name, tensor in (("student", student), ("teacher", teacher), ("means", means)):
        assert torch.isfinite(tensor.grad).all(), name

    # per-row values of the degenerate rows, one row at a time
    def row(i):
        return nd_loss(
            student[i : i + 1].detach(),
            teacher[i : i + 1].detach(),
            labels[i : i + 1],
            means.detach(),
        ).item()

    assert row(0) == pytest.approx(1.0)
    assert row(1) == pytest.approx(
        1.0 - F.cosine_similarity(student[1].double(), means[1].double(), dim=0).item(), abs=1e-6
    )
    assert row(2) == pytest.approx(1.0)
    assert row(3) == pytest.approx(1.0)
    assert row(7) == pytest.approx(1.0)


def test_nd_loss_empty_batch_is_zero_and_backwardable():
    student = torch.randn(0, 16, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    loss = nd_loss(student, torch.randn(0, 16), labels, torch.randn(3, 16))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert student.grad is not None and student.grad.shape == (0, 16)


def test_nd_loss_is_one_minus_cosine_when_student_norm_dominates():
    g = _generator(5)
    n, d, c = 50, 24, 6
    student = torch.randn(n, d, generator=g, dtype=torch.float64)
    # teacher norm strictly below the student's, row by row
    teacher = torch.randn(n, d, generator=g, dtype=torch.float64)
    teacher = teacher / teacher.norm(dim=1, keepdim=True) * student.norm(dim=1, keepdim=True)
    teacher = teacher * torch.rand(n, 1, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    means = torch.randn(c, d, generator=g, dtype=torch.float64)
    cos = F.cosine_similarity(student, means[labels], dim=1)
    assert nd_loss(student, teacher, labels, means).item() == pytest.approx(
        (1.0 - cos).mean().item(), rel=1e-12
    )

    # with ||s|| < ||t|| the loss is larger than 1 - cos for rows pointing along their mean
    aligned = means[labels] * 0.5 + 0.1 * torch.randn(n, d, generator=g, dtype=torch.float64)
    direction = teacher / teacher.norm(dim=1, keepdim=True)
    big_teacher = direction * aligned.norm(dim=1, keepdim=True) * 3
    cos_aligned = F.cosine_similarity(aligned, means[labels], dim=1)
    assert (cos_aligned > 0).all()
    larger = nd_loss(aligned, big_teacher, labels, means).item()
    assert larger > (1.0 - cos_aligned).mean().item() + 0.1


def test_nd_loss_minimum_is_zero_for_students_along_the_class_mean():
    g = _generator(6)
    n, d, c = 12, 10, 3
    labels = torch.randint(0, c, (n,), generator=g)
    means = torch.randn(c, d, generator=g, dtype=torch.float64)
    scales = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64) * 4
    student = (means[labels] * scales).requires_grad_(True)
    # ||t|| <= ||s|| row by row
    teacher = student.detach() * torch.rand(n, 1, generator=g, dtype=torch.float64)
    loss = nd_loss(student, teacher, labels, means)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    # at the minimum the gradient along any direction is zero
    loss.backward()
    assert student.grad.abs().max().item() < 1e-12
    # and moving away from the mean direction makes it positive
    perturbed = student.detach() + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    assert nd_loss(perturbed, teacher, labels, means).item() > 0.0


def test_nd_loss_per_row_reduction_matches_the_reference_row_by_row():
    student, teacher, labels, means = _nd_inputs(10, 6, 3, seed=22, dtype=torch.float64)
    student[0] = 0.0
    teacher[1] = 0.0
    rows = nd_loss(student, teacher, labels, means, weight=2.0, reduction="none")
    assert rows.shape == (10,) and rows.dtype == torch.float64
    for i in range(10):
        want = reference_nd(student[i : i + 1], teacher[i : i + 1], labels[i : i + 1], means)
        assert rows[i].item() == pytest.approx(2.0 * want, rel=1e-12, abs=1e-12), i
    assert torch.equal(
        nd_loss(student, teacher, labels, means, weight=2.0), 2.0 * (rows / 2.0).mean()
    )
    assert nd_loss(student[:0], teacher[:0], labels[:0], means, reduction="none").shape == (0,)
    with pytest.raises(ValueError, match="reduction='sum'; use one of"):
        nd_loss(student, teacher, labels, means, reduction="sum")


@pytest.mark.parametrize(
    "student_shape,teacher_shape,label_shape,means_shape,fragment",
    [
        ((4, 8), (4, 9), (4,), (3, 8), "got [(4, 8), (4, 9), (4,), (3, 8)]"),
        ((4, 8), (4, 8), (5,), (3, 8), "got [(4, 8), (4, 8), (5,), (3, 8)]"),
        ((4, 8), (4, 8), (4,), (3, 7), "got [(4, 8), (4, 8), (4,), (3, 7)]"),
        ((8,), (8,), (1,), (3, 8), "student and teacher (N, D), labels (N,), class_means (C, D)"),
    ],
)
def test_nd_loss_rejects_bad_shapes_with_a_clear_message(
    student_shape, teacher_shape, label_shape, means_shape, fragment
):
    with pytest.raises(ValueError, match=r".*" + re.escape(fragment)):
        nd_loss(
            torch.randn(student_shape),
            torch.randn(teacher_shape),
            torch.zeros(label_shape, dtype=torch.long),
            torch.randn(means_shape),
        )


def test_nd_loss_under_bfloat16_autocast_is_finite_float32_and_close_to_fp32():
    student, teacher, labels, means = _nd_inputs(64, 128, 8, seed=31)
    student[0] = 0.0
    teacher[1] = 0.0
    student[2] = 0.0
    teacher[2] = 0.0
    fp32 = nd_loss(student, teacher, labels, means)

    s16 = student.bfloat16().requires_grad_(True)
    t16 = teacher.bfloat16()
    m16 = means.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = nd_loss(s16, t16, labels, m16)
    assert low.dtype == torch.float32
    assert torch.isfinite(low)
    # same value as fp32 on the bf16-rounded inputs, and close to fp32 on the originals
    assert low.item() == pytest.approx(
        nd_loss(s16.detach().float(), t16.float(), labels, m16.float()).item(), abs=1e-6
    )
    assert low.item() == pytest.approx(fp32.item(), abs=1e-2)
    low.backward()
    assert s16.grad.dtype == torch.bfloat16
    assert torch.isfinite(s16.grad.float()).all()
    assert torch.isfinite(s16.grad[:3].float()).all()  # the zero-norm rows


# ----------------------------------------------------------------------------- kd_loss
@pytest.mark.parametrize("n,k", SHAPES_LOGITS)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_matches_reference(n, k, temperature):
    student, teacher, _ = _logit_inputs(n, k, seed=n * 100 + k)
    got = kd_loss(student, teacher, temperature=temperature)
    assert got.dtype == torch.float32
    want = reference_kd(student, teacher, temperature)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_kd_loss_is_zero_for_equal_logits_and_finite_when_saturated():
    student, teacher, _ = _logit_inputs(6, 9, seed=41)
    assert kd_loss(student, student.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = student * 100.0
    teacher = teacher * 100.0
    got = kd_loss(student, teacher)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(reference_kd(student, teacher, 1.0), rel=1e-5)


# ----------------------------------------------------------------------------- dkd_loss
@pytest.mark.parametrize("n,k", SHAPES_LOGITS)
@pytest.mark.parametrize(
    "alpha,beta,temperature", [(1.0, 8.0, 4.0), (1.0, 0.25, 1.0), (2.5, 4.0, 2.0)]
)
def test_dkd_loss_matches_reference(n, k, alpha, beta, temperature):
    student, teacher, labels = _logit_inputs(n, k, seed=n * 100 + k + 7)
    got = dkd_loss(student, teacher, labels, alpha=alpha, beta=beta, temperature=temperature)
    assert got.dtype == torch.float32
    want = reference_dkd(student, teacher, labels, alpha, beta, temperature)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_dkd_loss_parts_separate_target_and_non_target_terms():
    student, teacher, labels = _logit_inputs(10, 6, seed=51)
    tckd_only = dkd_loss(student, teacher, labels, alpha=1.0, beta=0.0, temperature=2.0)
    nckd_only = dkd_loss(student, teacher, labels, alpha=0.0, beta=1.0, temperature=2.0)
    assert tckd_only.item() == pytest.approx(
        reference_dkd(student, teacher, labels, 1.0, 0.0, 2.0), rel=1e-5
    )
    assert nckd_only.item() == pytest.approx(
        reference_dkd(student, teacher, labels, 0.0, 1.0, 2.0), rel=1e-5
    )
    assert dkd_loss(
        student, teacher, labels, alpha=3.0, beta=5.0, temperature=2.0
    ).item() == pytest.approx(3.0 * tckd_only.item() + 5.0 * nckd_only.item(), rel=1e-5)
    # changing only the target logits by the same amount in both leaves NCKD unchanged
    shifted_s = student.clone()
    shifted_t = teacher.clone()
    rows = torch.arange(10)
    shifted_s[rows, labels] += 5.0
    shifted_t[rows, labels] -= 3.0
    assert dkd_loss(
        shifted_s, shifted_t, labels, alpha=0.0, beta=1.0, temperature=2.0
    ).item() == pytest.approx(nckd_only.item(), rel=1e-5)


def test_dkd_loss_is_finite_for_saturated_logits():
    student, teacher, labels = _logit_inputs(8, 12, seed=61)
    rows = torch.arange(8)
    student[rows, labels] = 80.0  # target probability 1 - ~1e-30
    teacher[rows, labels] = -80.0  # target probability ~1e-30
    student = student.requires_grad_(True)
    got = dkd_loss(student, teacher, labels, alpha=1.0, beta=8.0, temperature=1.0)
    assert torch.isfinite(got)
    want = reference_dkd(student, teacher, labels, 1.0, 8.0, 1.0)
    assert got.item() == pytest.approx(want, rel=1e-4)
    got.backward()
    assert torch.isfinite(student.grad).all()


# ----------------------------------------------------------------------------- dist_loss
@pytest.mark.parametrize("n,k", SHAPES_LOGITS)
@pytest.mark.parametrize("beta,gamma,temperature", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_loss_matches_reference(n, k, beta, gamma, temperature):
    student, teacher, _ = _logit_inputs(n, k, seed=n * 100 + k + 13)
    got = dist_loss(student, teacher, beta=beta, gamma=gamma, temperature=temperature)
    assert got.dtype == torch.float32
    want = reference_dist(student, teacher, beta, gamma, temperature)
    assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_dist_loss_is_zero_for_equal_logits():
    student, _, _ = _logit_inputs(8, 5, seed=71)
    assert dist_loss(student, student.clone()).item() == pytest.approx(0.0, abs=1e-5)


# ----------------------------------------------------------------------------- shared behaviour
_LOGIT_LOSSES = {
    "kd_loss": lambda s, t, y: kd_loss(s, t, temperature=4.0),
    "dkd_loss": lambda s, t, y: dkd_loss(s, t, y),
    "dist_loss": lambda s, t, y: dist_loss(s, t),
}


@pytest.mark.parametrize("name", sorted(_LOGIT_LOSSES))
def test_logit_losses_on_an_empty_batch_are_zero_and_backwardable(name):
    student = torch.randn(0, 5, requires_grad=True)
    loss = _LOGIT_LOSSES[name](student, torch.randn(0, 5), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert student.grad is not None and student.grad.shape == (0, 5)


@pytest.mark.parametrize("name", sorted(_LOGIT_LOSSES))
def test_logit_losses_reject_mismatched_shapes(name):
    with pytest.raises(
        ValueError,
        match=r"student and teacher logits must both be \(N, K\); "
        r"got \(4, 5\) and \(4, 6\)",
    ):
        _LOGIT_LOSSES[name](torch.randn(4, 5), torch.randn(4, 6), torch.zeros(4, dtype=torch.long))


def test_dkd_loss_rejects_bad_label_shape():
    with pytest.raises(ValueError, match=r"labels must be \(N,\) = \(4,\); got \(3,\)"):
        dkd_loss(torch.randn(4, 5), torch.randn(4, 5), torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------- gradcheck
def _double(*shape, seed):
    return torch.randn(*shape, generator=_generator(seed), dtype=torch.float64)


def test_gradcheck_nd_loss():
    n, d, c = 6, 5, 3
    student = _double(n, d, seed=81).requires_grad_(True)
    teacher = _double(n, d, seed=82) * torch.linspace(0.3, 2.0, n, dtype=torch.float64)[:, None]
    teacher.requires_grad_(True)
    means = _double(c, d, seed=83).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert gradcheck(
        lambda s, t, m: nd_loss(s, t, labels, m, weight=1.3), (student, teacher, means)
    )


def test_gradcheck_kd_loss():
    student = _double(5, 7, seed=84).requires_grad_(True)
    teacher = _double(5, 7, seed=85).requires_grad_(True)
    assert gradcheck(lambda s, t: kd_loss(s, t, temperature=2.0), (student, teacher))


def test_gradcheck_dkd_loss():
    student = _double(5, 7, seed=86).requires_grad_(True)
    teacher = _double(5, 7, seed=87).requires_grad_(True)
    labels = torch.tensor([0, 6, 3, 3, 1])
    assert gradcheck(
        lambda s, t: dkd_loss(s, t, labels, alpha=1.5, beta=4.0, temperature=2.0),
        (student, teacher),
    )


def test_gradcheck_dist_loss():
    student = _double(6, 5, seed=88).requires_grad_(True)
    teacher = _double(6, 5, seed=89).requires_grad_(True)
    assert gradcheck(
        lambda s, t: dist_loss(s, t, beta=1.0, gamma=2.0, temperature=2.0), (student, teacher)
    )


def test_dist_loss_keeps_the_correlation_of_low_spread_classes():
    # class 2 has probability ~1e-4 in both rows and a spread of ~1e-5 over the batch, so the
    # centred column norms multiply to ~1e-10; over two rows any two non-constant columns still
    # correlate exactly +1 or -1, so the intra term here is 1 - (1 + 1 + 1) / 3 = 0
    student = torch.tensor([[5.0, 0.0, -4.0], [5.0, 0.5, -4.3]])
    teacher = torch.tensor([[4.5, 1.0, -5.0], [4.5, 1.2, -5.1]])
    want = reference_dist(student, teacher, 0.0, 1.0, 1.0)
    assert want == pytest.approx(0.0, abs=1e-9)
    assert dist_loss(student, teacher, beta=0.0, gamma=1.0).item() == pytest.approx(want, abs=1e-4)


# ---------------------------------------------------------------- ND's mechanism, the terms
def test_nd_mechanism_over_the_foreground_rows_equals_its_definition():
    """The norm ratio (mean student norm over mean teacher norm) and the mean cosine to the class
    mean of each row's label, over the foreground rows (background label 3 left out)."""
    g = torch.Generator().manual_seed(0)
    s, t, means = torch.randn(9, 6, generator=g), torch.randn(9, 6, generator=g), torch.randn(4, 6)
    labels = torch.tensor([0, 3, 1, 2, 3, 3, 0, 1, 2])
    fg = labels < 3
    out = nd_mechanism(s, t, labels, means, fg)
    ratio = s[fg].norm(dim=1).mean() / t[fg].norm(dim=1).mean()
    torch.testing.assert_close(out["norm_ratio"], ratio)
    cosine = F.cosine_similarity(s[fg], means[labels[fg]], dim=1).mean()
    torch.testing.assert_close(out["cosine_to_class_mean"], cosine)
    every = nd_mechanism(s, t, labels, means)
    torch.testing.assert_close(every["norm_ratio"], s.norm(dim=1).mean() / t.norm(dim=1).mean())
    none = nd_mechanism(s, t, labels, means, torch.zeros(9, dtype=torch.bool))
    assert float(none["norm_ratio"]) == float(none["cosine_to_class_mean"]) == 0.0
    # without a class-means table (a run without ND): the norm ratio alone
    assert nd_mechanism(s, t, foreground=fg).keys() == {"norm_ratio"}
    torch.testing.assert_close(nd_mechanism(s, t, foreground=fg)["norm_ratio"], ratio)


def test_one_term_registry_and_the_nd_term_of_a_detector():
    """Detection and classification share nd_det.distill's registry; ND's term of a detector
    (background rows left out) gives the masked mean of nd_loss and the foreground mechanism."""
    from nd_det.distill import DISTILL_TERM_REGISTRY, DistillInputs, TermContext
    from nd_det.distill.nd import NDTerm
    from nd_det.modeling import DISTILL_TERM_REGISTRY as detection_registry

    assert detection_registry is DISTILL_TERM_REGISTRY
    assert DISTILL_TERM_REGISTRY.get("nd") is NDTerm
    means = torch.randn(4, 6)
    context = TermContext("MODEL.DISTILL", 6, 6, class_means=means, num_classes=3)
    term = NDTerm(context, weight=2.0, include_background=False)
    s, t = torch.randn(5, 6), torch.randn(5, 6)
    labels = torch.tensor([0, 3, 2, 3, 1])
    inputs = DistillInputs(labels, s, torch.randn(5, 4), {}, {}, t)
    fg = labels < 3
    torch.testing.assert_close(term(inputs), nd_loss(s[fg], t[fg], labels[fg], means, 2.0))
    for key, value in term.mechanism(inputs).items():
        torch.testing.assert_close(value, nd_mechanism(s, t, labels, means, fg)[key])
    with pytest.raises(ValueError, match=r"MODEL.DISTILL.ND.WEIGHT 0.0: 'nd' is in "):
        NDTerm(context, weight=0.0)
