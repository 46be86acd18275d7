"""The one-stage ablation's summaries: per method mean ± sample std over seeds, the paired
ReviewKD++ - ReviewKD differences, the share of the teacher-student gap closed, the mechanism;
rendered as Markdown."""

import statistics

from nd_det.utils.text import markdown_table

from .plan import PAIR

METRICS = ("AP", "AP50", "AP75")
GEOMETRY = ("norm_ratio", "cosine_to_class_mean")


def _mean_std(values) -> dict:
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _text(stats: dict, form: str = ".2") -> str:
    mean = format(stats["mean"], form + "f")
    return mean + (" (1 seed)" if stats["std"] is None else f" ± {stats['std']:.{form[-1]}f}")


def summarize(teacher: dict, runs: dict[str, dict[int, dict]]) -> dict:
    """``runs[method][seed]`` = a student job's result."""
    methods = {}
    alone = statistics.fmean(r["metrics"]["AP"] for r in runs["student alone"].values())
    gap = teacher["metrics"]["AP"] - alone
    for name, by_seed in runs.items():
        row = {m: _mean_std(r["metrics"][m] for r in by_seed.values()) for m in METRICS}
        row["geometry"] = {
            g: _mean_std(r["geometry"][g] for r in by_seed.values()) for g in GEOMETRY
        }
        row["per_seed"] = {str(s): r["metrics"]["AP"] for s, r in by_seed.items()}
        row["gap_closed_percent"] = (
            100 * (row["AP"]["mean"] - alone) / gap if gap > 0 and name != "student alone" else None
        )
        methods[name] = row
    base, plus = (runs.get(name, {}) for name in PAIR)
    seeds = sorted(set(base) & set(plus))
    pair = {"pair": f"{PAIR[0]} -> {PAIR[1]}", "seeds": seeds}
    for key, values in [("AP", lambda r: r["metrics"]["AP"])] + [
        (g, lambda r, g=g: r["geometry"][g]) for g in GEOMETRY
    ]:
        diffs = [values(plus[s]) - values(base[s]) for s in seeds]
        pair[key] = dict(differences=diffs, **_mean_std(diffs)) if diffs else None
    return {"teacher": teacher, "methods": methods, "pair": pair}


def render_markdown(summary: dict, setting: str) -> str:
    teacher = " / ".join(f"{m} {summary['teacher']['metrics'][m]:.2f}" for m in METRICS)
    lines = [f"Setting: {setting}.", "", f"Teacher: {teacher}.", ""]
    rows = []
    for name, row in summary["methods"].items():
        gap = row["gap_closed_percent"]
        rows.append(
            [name, *(_text(row[m]) for m in METRICS), "-" if gap is None else f"{gap:.0f}%"]
            + [", ".join(f"{v:.2f}" for v in row["per_seed"].values())]
            + [_text(row["geometry"][g], ".3") for g in GEOMETRY]
        )
    lines += markdown_table(
        [
            "method",
            *(f"{m} (mean ± std)" for m in METRICS),
            "gap closed",
            "per seed (AP)",
            "norm ratio",
            "cosine to class mean",
        ],
        rows,
    )
    pair = summary["pair"]
    if pair["AP"]:
        lines += ["", f"Paired {pair['pair']} (same seed, data order, initial weights):", ""]
        lines += markdown_table(
            ["figure", "per seed", "mean ± std", "ReviewKD++ better / worse"],
            [
                (
                    key,
                    ", ".join(f"{d:+.3f}" for d in pair[key]["differences"]),
                    _text(pair[key], "+.3"),
                    f"{sum(d > 0 for d in pair[key]['differences'])} / "
                    f"{sum(d < 0 for d in pair[key]['differences'])} of {pair[key]['n']}",
                )
                for key in ("AP", *GEOMETRY)
            ],
        )
    return "\n".join(lines) + "\n"
