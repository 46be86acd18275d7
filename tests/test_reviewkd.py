"""ReviewKD: ABF fusion shapes and gradients, and hcl_loss against a slow reference."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from nd_det.errors import ConfigError
from nd_det.losses import ABF, ReviewKDFusion, hcl_loss


def _generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ----------------------------------------------------------------------------- reference HCL
def _mean_squared_difference(a, b):
    """Mean over all elements of (a - b)^2, for nested lists of floats of the same shape."""
    flat_a = torch.as_tensor(a, dtype=torch.float64).flatten().tolist()
    flat_b = torch.as_tensor(b, dtype=torch.float64).flatten().tolist()
    return sum((x - y) ** 2 for x, y in zip(flat_a, flat_b)) / len(flat_a)


def _bin(index, size_in, size_out):
    """Rows covered by output cell ``index`` of adaptive average pooling (PyTorch's bins)."""
    return math.floor(index * size_in / size_out), math.ceil((index + 1) * size_in / size_out)


def _adaptive_average_pool(feature, size):
    """(N, C, H, W) nested lists -> (N, C, size, size), averaging each bin cell by cell."""
    out = []
    for sample in feature:
        channels = []
        for plane in sample:
            h, w = len(plane), len(plane[0])
            pooled = []
            for i in range(size):
                r0, r1 = _bin(i, h, size)
                row = []
                for j in range(size):
                    c0, c1 = _bin(j, w, size)
                    cells = [plane[r][c] for r in range(r0, r1) for c in range(c0, c1)]
                    row.append(sum(cells) / len(cells))
                pooled.append(row)
            channels.append(pooled)
        out.append(channels)
    return out


def reference_hcl(student_feats, teacher_feats):
    """Sum over levels of [MSE + sum_k w_k * MSE(pool_l(fs), pool_l(ft))] / (1 + sum_k w_k), where
    l runs over (4, 2, 1) keeping only the sizes smaller than the feature height, and the k-th
    size used gets w_k = 0.5 ** k (0.5, 0.25, 0.125)."""
    total = 0.0
    for fs, ft in zip(student_feats, teacher_feats):
        fs = fs.detach().double().tolist()
        ft = ft.detach().double().tolist()
        h = len(fs[0][0])
        loss = _mean_squared_difference(fs, ft)
        weights_used = [1.0]
        for size in (4, 2, 1):
            if size >= h:
                continue
            w = 0.5 ** len(weights_used)
            loss += w * _mean_squared_difference(
                _adaptive_average_pool(fs, size), _adaptive_average_pool(ft, size)
            )
            weights_used.append(w)
        total += loss / sum(weights_used)
    return total


def _feature_pairs(shapes, seed):
    g = _generator(seed)
    student = [torch.randn(*shape, generator=g) for shape in shapes]
    teacher = [torch.randn(*shape, generator=g) for shape in shapes]
    return student, teacher


@pytest.mark.parametrize(
    "shapes",
    [
        [(2, 3, 1, 1)],
        [(1, 2, 2, 3)],
        [(2, 2, 3, 3)],
        [(1, 3, 4, 6)],
        [(2, 2, 5, 5)],
        [(1, 2, 9, 7)],
        # 5 FPN levels of a 64x96 image (strides 4..64), fewer channels to stay fast
        [(2, 4, 16, 24), (2, 4, 8, 12), (2, 4, 4, 6), (2, 4, 2, 3), (2, 4, 1, 2)],
    ],
)
def test_hcl_loss_matches_reference(shapes):
    student, teacher = _feature_pairs(shapes, seed=len(shapes) * 10 + shapes[0][2])
    got = hcl_loss(student, teacher)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(reference_hcl(student, teacher), rel=1e-5)


def _checkerboard(h, w):
    rows = torch.arange(h)[:, None]
    cols = torch.arange(w)[None, :]
    return ((rows + cols) % 2 * 2 - 1).double().expand(1, 1, h, w)


@pytest.mark.parametrize(
    "h,expected",
    [
        # a +-1 checkerboard difference: MSE 1, every pooled MSE 0 (each bin holds as many +1 as -1,
        # for the bins of even size used here), so the value is 1 / (sum of the weights used)
        (1, 1.0),  # no pooled size below 1
        (2, 1.0 / 1.5),  # pool 1 only, weight 0.5
        (4, 1.0 / 1.75),  # pools 2 and 1 (4 >= 4 skipped): 0.5, 0.25
        (8, 1.0 / 1.875),  # pools 4, 2, 1: 0.5, 0.25, 0.125
    ],
)
def test_hcl_loss_weights_pooled_levels_by_halves_of_the_sizes_used(h, expected):
    teacher = torch.zeros(1, 1, h, 8 if h > 1 else 1, dtype=torch.float64)
    student = _checkerboard(h, teacher.shape[3]) if h > 1 else torch.ones_like(teacher)
    assert hcl_loss([student], [teacher]).item() == pytest.approx(expected, rel=1e-12)


def test_hcl_loss_sums_levels():
    student, teacher = _feature_pairs([(1, 2, 8, 8), (1, 2, 4, 4), (1, 2, 2, 2)], seed=3)
    per_level = sum(hcl_loss([s], [t]) for s, t in zip(student, teacher))
    assert hcl_loss(student, teacher).item() == pytest.approx(per_level.item(), rel=1e-6)


def test_hcl_loss_rejects_mismatched_levels_and_shapes():
    a = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)]
    with pytest.raises(ValueError, match="got 2 student and 1 teacher levels"):
        hcl_loss(a, a[:1])
    with pytest.raises(ValueError, match="got 0 student and 0 teacher levels"):
        hcl_loss([], [])
    with pytest.raises(
        ValueError,
        match=r"level 1 shapes differ: student \(1, 2, 2, 2\) "
        r"vs teacher \(1, 3, 2, 2\)",
    ):
        hcl_loss(a, [a[0], torch.zeros(1, 3, 2, 2)])


def test_gradcheck_hcl_loss():
    g = _generator(7)
    shapes = [(1, 2, 5, 4), (1, 2, 3, 3), (1, 2, 1, 2)]
    student = [
        torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True) for s in shapes
    ]
    teacher = [
        torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True) for s in shapes
    ]
    assert gradcheck(lambda *x: hcl_loss(list(x[:3]), list(x[3:])), (*student, *teacher))


# ----------------------------------------------------------------------------- ABF / fusion
FPN_SIZES = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # a 64x96 image at strides 4, 8, ..., 64


def test_fusion_over_five_fpn_levels_keeps_shapes():
    torch.manual_seed(0)
    fusion = ReviewKDFusion([256] * 5, [256] * 5, mid_channels=256)
    feats = [torch.randn(2, 256, h, w) for h, w in FPN_SIZES]
    outs = fusion(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 256, h, w) for h, w in FPN_SIZES]
    assert all(torch.isfinite(o).all() for o in outs)
    # the deepest level has nothing to fuse with; all the others fuse
    assert fusion.abfs[4].attention is None
    assert all(abf.attention is not None for abf in fusion.abfs[:4])


@pytest.mark.parametrize(
    "out_sizes,expected_sizes",
    [
        (None, [(32, 32), (16, 16), (8, 8)]),
        ([(16, 16), (8, 8), (4, 4)], [(16, 16), (8, 8), (4, 4)]),  # teacher at half resolution
        ([(32, 32), (16, 16), (4, 4)], [(32, 32), (16, 16), (4, 4)]),  # only the deepest differs
        ([(7, 5), (3, 2), (1, 1)], [(7, 5), (3, 2), (1, 1)]),  # odd, non-square sizes
    ],
)
def test_fusion_over_cifar_stages_maps_student_widths_to_teacher_widths_and_sizes(
    out_sizes, expected_sizes
):
    torch.manual_seed(0)
    fusion = ReviewKDFusion([16, 32, 64], [32, 64, 128], mid_channels=64)
    feats = [torch.randn(3, 16, 32, 32), torch.randn(3, 32, 16, 16), torch.randn(3, 64, 8, 8)]
    outs = fusion(feats, out_sizes=out_sizes)
    assert [tuple(o.shape) for o in outs] == [
        (3, c, h, w) for c, (h, w) in zip([32, 64, 128], expected_sizes)
    ]


@pytest.mark.parametrize("norm", ["bn", "gn", "none"])
def test_gradient_reaches_every_fusion_parameter(norm):
    torch.manual_seed(1)
    fusion = ReviewKDFusion([16, 32, 64], [32, 64, 128], mid_channels=32, norm=norm)
    feats = [torch.randn(2, 16, 16, 12), torch.randn(2, 32, 8, 6), torch.randn(2, 64, 4, 3)]
    out_sizes = [(8, 8), (4, 4), (2, 2)]
    teacher = [torch.randn(2, c, h, w) for c, (h, w) in zip([32, 64, 128], out_sizes)]
    for f in feats:
        f.requires_grad_(True)
    loss = hcl_loss(fusion(feats, out_sizes=out_sizes), teacher)
    loss.backward()
    params = dict(fusion.named_parameters())
    assert params, "the fusion has parameters"
    for name, p in params.items():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
    for level, f in enumerate(feats):
        assert f.grad is not None and f.grad.abs().sum() > 0, f"student level {level}"
    # attention convs exist on the fused levels and were among the parameters checked
    assert {n for n in params if ".attention." in n} == {
        "abfs.0.attention.0.weight",
        "abfs.0.attention.0.bias",
        "abfs.1.attention.0.weight",
        "abfs.1.attention.0.bias",
    }


def test_abf_returns_output_and_residual_and_fuses_a_coarser_residual():
    torch.manual_seed(2)
    abf = ABF(in_channels=8, mid_channels=6, out_channels=10, fuse=True)
    x = torch.randn(2, 8, 6, 4)
    residual = torch.randn(2, 6, 3, 2)  # the coarser level, upsampled inside
    out, new_residual = abf(x, residual)
    assert out.shape == (2, 10, 6, 4)
    assert new_residual.shape == (2, 6, 6, 4)
    out, new_residual = abf(x, residual, out_size=(12, 8))
    assert out.shape == (2, 10, 12, 8) and new_residual.shape == (2, 6, 12, 8)
    with pytest.raises(ValueError, match="needs the residual of the deeper level"):
        abf(x)


def test_fusion_rejects_bad_configuration_and_inputs():
    with pytest.raises(ValueError, match=r"in_channels=\[16, 32\], out_channels=\[32\]"):
        ReviewKDFusion([16, 32], [32], mid_channels=8)
    with pytest.raises(ValueError, match="norm must be one of 'bn', 'gn', 'none'; got 'layer'"):
        ReviewKDFusion([16], [32], mid_channels=8, norm="layer")
    fusion = ReviewKDFusion([4, 4], [4, 4], mid_channels=4)
    with pytest.raises(ValueError, match="expects 2 levels, got 1"):
        fusion([torch.zeros(1, 4, 2, 2)])


def test_hcl_loss_and_fusion_on_an_empty_batch():
    fusion = ReviewKDFusion([2, 3], [4, 5], mid_channels=4)
    student = [
        torch.randn(0, 2, 4, 4, requires_grad=True),
        torch.randn(0, 3, 2, 2, requires_grad=True),
    ]
    outs = fusion(student, out_sizes=[(8, 8), (4, 4)])
    assert [tuple(o.shape) for o in outs] == [(0, 4, 8, 8), (0, 5, 4, 4)]
    loss = hcl_loss(outs, [torch.randn(0, 4, 8, 8), torch.randn(0, 5, 4, 4)])
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert student[0].grad is not None and student[0].grad.shape == (0, 2, 4, 4)


# ----------------------------------------------------------------------------- ABF statistics
# over a group of processes (MODEL.DISTILL.REVIEWKD.BN_IMAGES): 2 gloo processes with one image
# each must give what one process gives with both images, forward and backward.
_LEVELS = [(8, 6, 10), (8, 3, 5)]  # (channels, height, width), shallow -> deep


def _fusion_and_batch(seed=0):
    torch.manual_seed(seed)
    fusion = ReviewKDFusion([c for c, _, _ in _LEVELS], [6, 6], mid_channels=4)
    feats = [
        torch.randn(2, c, h, w, generator=_generator(seed + i)) * (1 + i)
        for i, (c, h, w) in enumerate(_LEVELS)
    ]
    return fusion, feats


def _fused_loss(fusion, feats):
    outs = fusion(feats)
    # the same weight for each image's outputs, wherever the image is in the batch
    return sum(
        (o * torch.arange(o[0].numel()).reshape(o.shape[1:]).sin()).sum() for o in outs
    ), outs


def _group_bn_worker(rank, init_file, out_dir):
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        plain, feats = _fusion_and_batch()
        group = dist.new_group([0, 1])
        synced = ReviewKDFusion([c for c, _, _ in _LEVELS], [6, 6], mid_channels=4, bn_group=group)
        synced.load_state_dict(plain.state_dict())
        mine = [f[rank : rank + 1].clone().requires_grad_(True) for f in feats]
        loss, outs = _fused_loss(synced, mine)
        loss.backward()
        torch.save(
            {
                "outs": [o.detach() for o in outs],
                "input_grads": [f.grad for f in mine],
                "param_grads": {k: p.grad for k, p in synced.named_parameters()},
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_abf_batch_norm_over_two_processes_equals_one_process_with_both_images(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_group_bn_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    fusion, feats = _fusion_and_batch()
    feats = [f.clone().requires_grad_(True) for f in feats]
    loss, outs = _fused_loss(fusion, feats)
    loss.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r, got in enumerate(ranks):
        for level, out in enumerate(outs):
            torch.testing.assert_close(
                got["outs"][level], out[r : r + 1].detach(), rtol=1e-5, atol=1e-5
            )
            torch.testing.assert_close(
                got["input_grads"][level], feats[level].grad[r : r + 1], rtol=1e-4, atol=1e-5
            )
    # each rank holds its images' share of the parameter gradients; DDP sums them
    for name, param in fusion.named_parameters():
        total = ranks[0]["param_grads"][name] + ranks[1]["param_grads"][name]
        torch.testing.assert_close(total, param.grad, rtol=1e-4, atol=1e-5)
    # a plain BatchNorm per process (one image each) would normalise differently
    per_image, _ = _fusion_and_batch()
    alone = per_image([f[:1].detach() for f in feats])
    assert not torch.allclose(alone[0], outs[0][:1].detach(), atol=1e-3)


def test_bn_group_size_reproduces_two_images_per_batch_norm():
    from nd_det.modeling.bn_groups import bn_group_size

    assert bn_group_size(2, ims_per_batch=8, world_size=8) == 2  # 8 GPUs x 1 image -> pairs
    assert bn_group_size(2, ims_per_batch=8, world_size=4) == 1  # 4 x 2: the reference itself
    assert bn_group_size(2, ims_per_batch=8, world_size=1) == 1
    assert bn_group_size(0, ims_per_batch=8, world_size=8) == 1
    assert bn_group_size(4, ims_per_batch=8, world_size=8) == 4
    with pytest.raises(ConfigError, match=r"BN_IMAGES 2: .* groups the 3 processes evenly"):
        bn_group_size(2, ims_per_batch=3, world_size=3)
    with pytest.raises(ConfigError, match="BN_IMAGES 3: give 0 or a multiple of the 2 image"):
        bn_group_size(3, ims_per_batch=16, world_size=8)
