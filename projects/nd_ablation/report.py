"""The ablation's results: per method mean +- std over seeds, per pair X -> X++ the paired
per-seed difference (mean, std, sign count), the share of the teacher-student gap each method
closes; written as results.json (the source), results.md (rendered from it) and results.png."""

import statistics
from collections.abc import Sequence

from nd_det.utils.atomic_file import atomic_write, atomic_write_json, atomic_write_text
from nd_det.utils.text import markdown_table

from .plan import PAIRS

PRIMARY_METRIC = {"detection": "AP", "classification": "top1"}
_METRICS = {"detection": ("AP", "AP50", "AP75"), "classification": ("top1",)}
# the embedding geometry each student run records (docs/ablation.md: what ND acts on)
GEOMETRY = ("norm_ratio", "cosine_to_class_mean")


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std (None for one value: there is no spread to report) and count."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _with_std(stat: dict[str, float], fmt: str = ".2") -> str:
    """``fmt``: the mean's format without its "f" ("+.2": signed, ".3": three decimals)."""
    digits = fmt.lstrip("+")
    if stat["std"] is None:
        return f"{stat['mean']:{fmt}f} (1 seed)"
    return f"{stat['mean']:{fmt}f} ± {stat['std']:{digits}f}"


def summarize(domain: str, teacher: dict, runs: dict[str, dict[int, dict]]) -> dict:
    """``runs[method][seed] = {"metrics": {...}}`` -> the domain's summary."""
    metrics = _METRICS[domain]
    primary = PRIMARY_METRIC[domain]
    methods = {}
    for name, by_seed in runs.items():
        methods[name] = {
            "seeds": sorted(by_seed),
            "per_seed": {str(s): by_seed[s]["metrics"] for s in sorted(by_seed)},
            **{m: _mean_std([by_seed[s]["metrics"][m] for s in sorted(by_seed)]) for m in metrics},
        }
        if all("geometry" in r for r in by_seed.values()):
            methods[name]["geometry"] = {
                g: _mean_std([by_seed[s]["geometry"][g] for s in sorted(by_seed)]) for g in GEOMETRY
            }
    alone = methods.get("student alone", {}).get(primary, {}).get("mean")
    teacher_value = teacher["metrics"][primary]
    # no gap to close when the teacher is not above the student alone (e.g. a toy schedule)
    gap = None if alone is None or teacher_value <= alone else teacher_value - alone
    for name, row in methods.items():
        row["gap_closed_percent"] = (
            None
            if gap is None or name == "student alone"
            else 100.0 * (row[primary]["mean"] - alone) / gap
        )
    pairs = []
    for base, plus in PAIRS:
        if base not in runs or plus not in runs:
            continue
        seeds = sorted(set(runs[base]) & set(runs[plus]))
        diffs = [
            runs[plus][s]["metrics"][primary] - runs[base][s]["metrics"][primary] for s in seeds
        ]
        pair = {
            "pair": f"{base} -> {plus}",
            "metric": primary,
            "seeds": seeds,
            "differences": diffs,
            **_mean_std(diffs),
            "plus_better": sum(d > 0 for d in diffs),
            "plus_worse": sum(d < 0 for d in diffs),
        }
        if all("geometry" in runs[m][s] for m in (base, plus) for s in seeds):
            pair["geometry"] = {}
            for g in GEOMETRY:
                d = [runs[plus][s]["geometry"][g] - runs[base][s]["geometry"][g] for s in seeds]
                pair["geometry"][g] = dict(differences=d, **_mean_std(d))
        pairs.append(pair)
    spread = {name: row[primary]["std"] for name, row in methods.items()}
    known = [std for std in spread.values() if std is not None]
    return {
        "metric": primary,
        "teacher": teacher,
        "methods": methods,
        "pairs": pairs,
        "seed_std": spread,
        "mean_seed_std": statistics.fmean(known) if known else None,
    }


def render_markdown(report: dict) -> str:
    lines = [f"# {report['title']}", "", report["summary_line"], ""]
    for domain, block in report["domains"].items():
        metrics = _METRICS[domain]
        teacher = " / ".join(f"{m} {block['teacher']['metrics'][m]:.2f}" for m in metrics)
        rows = []
        for name, row in block["methods"].items():
            per_seed = ", ".join(
                f"{row['per_seed'][str(s)][block['metric']]:.2f}" for s in row["seeds"]
            )
            gap = row["gap_closed_percent"]
            rows.append(
                [
                    name,
                    *(_with_std(row[m]) for m in metrics),
                    "-" if gap is None else f"{gap:.0f}%",
                    per_seed,
                ]
            )
        lines += [
            f"## {domain.capitalize()}: {block['setting']}",
            "",
            f"Teacher: {teacher}.",
            "",
        ] + markdown_table(
            [
                "method",
                *(f"{m} (mean ± std)" for m in metrics),
                "gap closed",
                f"per seed ({block['metric']})",
            ],
            rows,
        )
        if all(row["gap_closed_percent"] is None for row in block["methods"].values()):
            lines += ["", "(gap closed: none, the teacher is not above the student alone.)"]
        if block["pairs"]:
            lines += [
                "",
                f"Paired difference X++ - X in {block['metric']} (same seed, same "
                "data order, same initial weights):",
                "",
            ] + markdown_table(
                ["pair", "per seed", "mean ± std", "X++ better / worse"],
                [
                    (
                        pair["pair"],
                        ", ".join(f"{d:+.2f}" for d in pair["differences"]),
                        _with_std(pair, "+.2"),
                        f"{pair['plus_better']} / {pair['plus_worse']} of {pair['n']}",
                    )
                    for pair in block["pairs"]
                ],
            )
        else:
            lines += ["", "No X / X++ pair among the methods run: nothing to pair."]
        with_geometry = [(n, r) for n, r in block["methods"].items() if "geometry" in r]
        if with_geometry:
            lines += [
                "",
                "Embedding geometry (what ND acts on; protocol in docs/ablation.md): "
                "student norm / teacher norm, and cosine to the teacher's class mean:",
                "",
            ] + markdown_table(
                ["method", "norm ratio (mean ± std)", "cosine (mean ± std)"],
                [
                    (
                        n,
                        _with_std(r["geometry"]["norm_ratio"], ".3"),
                        _with_std(r["geometry"]["cosine_to_class_mean"], ".3"),
                    )
                    for n, r in with_geometry
                ],
            )
            paired = [p for p in block["pairs"] if "geometry" in p]
            if paired:
                lines += [
                    "",
                    "Paired X++ - X of the geometry (per seed; mean ± std):",
                    "",
                ] + markdown_table(
                    ["pair", "norm ratio", "cosine"],
                    [
                        (
                            p["pair"],
                            *(
                                ", ".join(f"{d:+.3f}" for d in p["geometry"][g]["differences"])
                                + f" ({_with_std(p['geometry'][g], '+.3')})"
                                for g in GEOMETRY
                            ),
                        )
                        for p in paired
                    ],
                )
        spread = block["mean_seed_std"]
        lines += [
            "",
            f"Seed-to-seed std of {block['metric']}, mean over methods: "
            + ("none (one seed)" if spread is None else f"{spread:.2f}")
            + ".",
            "",
        ]
    lines += [
        f"Wall time of this invocation: {report['wall_time_s'] / 60:.1f} min "
        f"({report['machine']}); {report['jobs_run']} runs made, {report['jobs_cached']} "
        f"taken from the cache; the runs' own wall times add up to "
        f"{report['runs_seconds_total'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def draw_figure(report: dict, path: str) -> None:
    """Per domain: mean ± std per method (teacher as a line); paired X++ - X per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(report["domains"].items())
    fig, axes = plt.subplots(len(domains), 2, figsize=(13, 4.2 * len(domains)), squeeze=False)
    for row, (domain, block) in enumerate(domains):
        metric = block["metric"]
        names = list(block["methods"])
        means = [block["methods"][n][metric]["mean"] for n in names]
        stds = [block["methods"][n][metric]["std"] or 0.0 for n in names]  # None: one seed
        ax = axes[row][0]
        ax.bar(
            range(len(names)),
            means,
            yerr=stds,
            capsize=4,
            color=[
                "0.6"
                if n == "student alone"
                else ("tab:blue" if n.endswith("++") else "tab:orange")
                for n in names
            ],
        )
        ax.axhline(
            block["teacher"]["metrics"][metric], color="tab:green", linestyle="--", label="teacher"
        )
        low = min(m - s for m, s in zip(means, stds))
        if metric == "top1":  # accuracies sit high: show the range where they differ
            ax.set_ylim(max(0.0, low - 3.0), 100.0 if low > 90 else None)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(f"{metric} (mean ± std over seeds)")
        ax.set_title(f"({'ac'[row]}) {domain}: {metric} per method")
        ax.legend(loc="lower right")
        ax = axes[row][1]
        for i, pair in enumerate(block["pairs"]):
            ax.scatter(
                [i] * len(pair["differences"]), pair["differences"], color="tab:blue", zorder=3
            )
            ax.errorbar(
                [i + 0.15],
                [pair["mean"]],
                yerr=[pair["std"] or 0.0],
                fmt="s",
                color="black",
                capsize=4,
            )
        ax.axhline(0.0, color="0.4", linewidth=1)
        ax.set_xticks(range(len(block["pairs"])))
        ax.set_xticklabels([p["pair"] for p in block["pairs"]], rotation=20, ha="right")
        ax.set_ylabel(f"{metric}: X++ - X (per seed; mean ± std)")
        ax.set_title(f"({'bd'[row]}) {domain}: what ND adds, paired by seed")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_report(report: dict, json_path: str, markdown_path: str, figure_path: str) -> None:
    """results.json first (the source), then the Markdown and the figure rendered from it."""
    atomic_write_json(report, json_path, allow_nan=False)
    atomic_write_text(render_markdown(report), markdown_path)
    draw_figure(report, figure_path)
