"""projects/nd_onestage's report: means and sample std over seeds, the paired ReviewKD++ -
ReviewKD differences of AP and of the mechanism, the share of the gap closed, its Markdown."""

import pytest
from nd_onestage.report import render_markdown, summarize


def _run(ap, norm, cosine):
    return {
        "metrics": {"AP": ap, "AP50": 2 * ap, "AP75": ap / 2},
        "geometry": {"norm_ratio": norm, "cosine_to_class_mean": cosine},
    }


def test_summary_pairs_by_seed_and_renders_every_figure():
    runs = {
        "student alone": {0: _run(2.0, 0.5, 0.2), 1: _run(4.0, 0.7, 0.3)},
        "ReviewKD": {0: _run(3.0, 0.6, 0.3), 1: _run(5.0, 0.8, 0.3)},
        "ReviewKD++": {0: _run(3.5, 1.1, 0.8), 1: _run(4.5, 1.3, 0.9)},
    }
    summary = summarize({"metrics": {"AP": 13.0, "AP50": 26.0, "AP75": 6.5}}, runs)
    methods, pair = summary["methods"], summary["pair"]
    assert methods["ReviewKD"]["AP"] == {"mean": 4.0, "std": pytest.approx(2**0.5), "n": 2}
    assert methods["ReviewKD"]["gap_closed_percent"] == pytest.approx(10.0)  # (4-3)/(13-3)
    assert methods["student alone"]["gap_closed_percent"] is None
    assert pair["AP"]["differences"] == [0.5, -0.5] and pair["AP"]["mean"] == 0.0
    assert pair["norm_ratio"]["differences"] == pytest.approx([0.5, 0.5])
    text = render_markdown(summary, "toy")
    assert "| ReviewKD | 4.00 ± 1.41 | 8.00 ± 2.83 | 2.00 ± 0.71 | 10% | 3.00, 5.00 |" in text
    assert "| AP | +0.500, -0.500 | +0.000 ± 0.707 | 1 / 1 of 2 |" in text
    assert "| cosine_to_class_mean | +0.500, +0.600 |" in text
