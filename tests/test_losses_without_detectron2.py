"""nd_det.losses and the distillation terms of both tasks (nd_det.distill) must import and work
in an environment without detectron2.

A child interpreter (the same Python that runs the tests) installs an import blocker for
detectron2 before anything else, proves the blocker works, then imports nd_det.losses and
nd_det.distill and computes every loss and every term once.
"""

import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent(
    """
    import importlib.abc
    import sys


    class BlockDetectron2(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "detectron2" or name.startswith("detectron2."):
                raise ModuleNotFoundError(f"blocked for this test: {name}", name=name)
            return None


    sys.meta_path.insert(0, BlockDetectron2())

    # the blocker must really make detectron2 unimportable, or this test proves nothing
    try:
        import detectron2  # noqa: F401
    except ModuleNotFoundError as e:
        assert "blocked for this test: detectron2" in str(e), e
        print("BLOCKER-WORKS")
    else:
        raise SystemExit("the blocker did not stop `import detectron2`")

    import torch
    import nd_det.distill as D
    import nd_det.losses as L
    from nd_det.class_means import ClassMeanAccumulator

    torch.manual_seed(0)
    s, t = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    means = torch.randn(3, 8)
    logits_s, logits_t = torch.randn(6, 3), torch.randn(6, 3)
    fusion = L.ReviewKDFusion([4, 8], [8, 16], mid_channels=8)
    fused = fusion([torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)])
    acc = ClassMeanAccumulator(3, 8)
    acc.update(s, labels)
    values = {
        "nd": L.nd_loss(s, t, labels, means, weight=1.5),
        "nd_rows": L.nd_loss(s, t, labels, means, reduction="none").mean(),
        "kd": L.kd_loss(logits_s, logits_t, temperature=4.0),
        "dkd": L.dkd_loss(logits_s, logits_t, labels),
        "dist": L.dist_loss(logits_s, logits_t),
        "hcl": L.hcl_loss(fused, [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]),
        "projection": L.EmbeddingProjection(8, 16)(s).square().mean(),
        "class_means": acc.finalize().means.abs().sum(),
        "mechanism": L.nd_mechanism(s, t, labels, means)["cosine_to_class_mean"],
    }
    context = D.TermContext(
        "distill", 8, 8, {0: 4, 1: 8}, {0: 8, 1: 16}, class_means=means, num_classes=3
    )
    nodes = {n: {} for n in D.available_distill_terms()}
    terms = D.build_distill_terms(["nd", "kd", "dkd", "dist", "reviewkd"], nodes, context)
    inputs = D.DistillInputs(
        labels, s, logits_s, [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)],
        [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)], t, logits_t,
    )
    values.update({f"term_{term.name}": term(inputs) for term in terms})
    for name, value in values.items():
        assert value.dim() == 0 and bool(torch.isfinite(value)), (name, value)
        print(f"{name}={value.item():.6f}")
    loaded = sorted(m for m in sys.modules if m == "detectron2" or m.startswith("detectron2."))
    assert not loaded, loaded
    print("LOSSES-OK")
    """
)


def test_nd_det_losses_import_and_compute_without_detectron2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    report = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert "BLOCKER-WORKS" in result.stdout, report
    terms = ("term_nd", "term_kd", "term_dkd", "term_dist", "term_reviewkd")
    for name in ("nd", "nd_rows", "kd", "dkd", "dist", "hcl", "projection", "class_means", *terms):
        assert f"\n{name}=" in result.stdout, report
    assert result.stdout.rstrip().endswith("LOSSES-OK"), report
