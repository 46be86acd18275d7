"""The demo's results table: one dict, written as JSON and rendered as Markdown from that dict.

``results.json`` is the source; ``results.md`` is ``render_markdown(json.load(results.json))``
exactly, so the two never disagree (:func:`read_report` re-reads the JSON).

Rows, in this order: ``teacher``, ``student alone``, ``distilled student``; each with ``model``,
``backbone``, ``AP``, ``AP50``, ``AP75`` (COCO box AP in percent on the val split), ``params``
(an integer) and ``inference_ms_per_image``.
"""

import json
import os
from collections.abc import Sequence
from typing import Optional

from nd_det.utils.atomic_file import atomic_write_json, atomic_write_text
from nd_det.utils.text import markdown_table

ROW_NAMES = ("teacher", "student alone", "distilled student")
# (column title, row key, format of the value)
TABLE_COLUMNS = (
    ("model", "model", "{}"),
    ("backbone", "backbone", "{}"),
    ("AP", "AP", "{:.2f}"),
    ("AP50", "AP50", "{:.2f}"),
    ("AP75", "AP75", "{:.2f}"),
    ("params", "params", "{:,}"),
    ("inference ms/image", "inference_ms_per_image", "{:.1f}"),
)
# a difference in AP smaller than this is reported as "about the same"
_SAME_AP = 0.5


def make_row(model: str, backbone: str, score: dict) -> dict:
    """A table row from a score of :func:`nd_demo.evaluation.score_model`."""
    return {
        "model": model,
        "backbone": backbone,
        **{m: float(score[m]) for m in ("AP", "AP50", "AP75")},  # rounded where shown only
        "params": int(score["params"]),
        "inference_ms_per_image": round(score["inference_ms_per_image"], 2),
        "no_detections": bool(score["no_detections"]),
    }


def read_seed_spread(path: str, fingerprint: str) -> Optional[dict]:
    """The seed spread that ``tools/ablation.py --demo-settings --spread-file`` wrote to
    ``path``, if it was measured at the settings of ``fingerprint``
    (:func:`nd_common.configs.recipe_fingerprint`); else None."""
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as stream:
        spread = json.load(stream)
    return spread if spread.get("settings_fingerprint") == fingerprint else None


def distillation_verdict(rows: Sequence[dict], method_name: str, spread=None) -> str:
    """One honest sentence on what distillation did to AP: this run's gain over the student
    alone, with the seed spread of that gain measured at the same settings (``spread``, from
    :func:`read_seed_spread`) when there is one, saying plainly when the gain is within it."""
    teacher, alone, distilled = rows  # in ROW_NAMES order
    gain = distilled["AP"] - alone["AP"]
    gap = teacher["AP"] - alone["AP"]
    if gap <= 0:
        teacher_part = (
            f"the teacher ({teacher['AP']:.2f} AP) is not better than the student "
            f"alone ({alone['AP']:.2f} AP), so this run cannot show distillation"
        )
    else:
        teacher_part = f"the teacher is {gap:.2f} AP above the student alone"
    others = ", ".join(f"{m} {distilled[m] - alone[m]:+.2f}" for m in ("AP50", "AP75"))
    if spread is not None:
        g = spread["gain"]
        seeds = f"{g['n']} seeds: {g['mean']:+.2f} +- {g['std']:.2f} AP"
        if spread.get("gap_closed_percent") is not None:
            seeds += f", {spread['gap_closed_percent']:.0f}% of the teacher-student gap closed"
        if abs(g["mean"]) < 2 * g["std"]:
            effect = (
                f"{method_name}: {gain:+.2f} AP over the student alone in this run ({others}), "
                f"within the seed noise ({seeds}: the mean gain is less than twice its spread)"
            )
        elif g["mean"] > 0:
            effect = (
                f"{method_name} helped: {gain:+.2f} AP over the student alone ({seeds}; {others})"
            )
        else:
            effect = (
                f"{method_name} did not help: {gain:+.2f} AP against the student alone "
                f"({seeds}; {others})"
            )
        return f"{effect}; {teacher_part}."
    one_seed = "one seed; no seed spread measured at these settings"
    if abs(gain) < _SAME_AP:
        effect = f"{method_name} left AP about the same ({gain:+.2f}; {others}; {one_seed})"
    elif gain > 0:
        effect = f"{method_name} helped: {gain:+.2f} AP over the student alone ({others}"
        if gap > 0:
            effect += f"; {100.0 * gain / gap:.0f}% of the teacher-student AP gap closed"
        effect += f"; {one_seed})"
    else:
        effect = (
            f"{method_name} did not help: {gain:+.2f} AP against the student alone "
            f"({others}; {one_seed})"
        )
    return f"{effect}; {teacher_part}."


def _cells(row: dict) -> list[str]:
    return [fmt.format(row[key]) for _, key, fmt in TABLE_COLUMNS]


def seed_spread_note(spread: Optional[dict], fingerprint: Optional[str]) -> str:
    """Where the seed spread of the verdict comes from, or how to measure it."""
    if spread is None:
        return (
            f"seed spread: none measured at these settings (fingerprint {fingerprint}); "
            "`python tools/ablation.py --demo-settings` with this run's options measures it "
            "(docs/demo.md)."
        )
    seeds = ", ".join(str(s) for s in spread["seeds"])
    return (
        f"seed spread: the ablation at these settings (fingerprint {fingerprint}; seeds "
        f"{seeds}, a teacher and two students per seed, {spread['split_description']}), "
        f"measured on {spread['machine']}: student alone {_mean_sd(spread['alone'])}, "
        f"distilled {_mean_sd(spread['distilled'])}, teacher {_mean_sd(spread['teacher'])} AP; "
        f"gain {spread['gain']['mean']:+.2f} +- {spread['gain']['std']:.2f} AP (paired by seed)."
    )


def _mean_sd(stat: dict) -> str:
    return f"{stat['mean']:.2f} +- {stat['std']:.2f}"


def render_markdown(report: dict) -> str:
    """The Markdown page of a report dict (deterministic: same dict, same text)."""
    schedule = report["schedule"]
    lines = [
        f"# {report['title']}",
        "",
        f"COCO box AP on the val split of the embedded dataset ({report['dataset']['val_images']} "
        f"tiles, {report['dataset']['val_boxes']} trees); the students were trained twice with "
        f"seed {schedule['seed']} and the same {schedule['student_iters']} iterations, once alone "
        f"and once with {report['method_name']} (MODEL.DISTILL.LOSSES "
        f"{report['distill_losses']}).",
        "",
    ]
    lines += markdown_table(
        [title for title, _, _ in TABLE_COLUMNS], [_cells(row) for row in report["rows"]]
    )
    lines += [
        "",
        f"**{report['verdict']}**",
        "",
        f"- teacher: {schedule['teacher_iters']} iterations of "
        f"{schedule['teacher_images_per_iter']} images ({schedule['teacher_optimizer']}); "
        f"students: {schedule['student_iters']} iterations of "
        f"{schedule['student_images_per_iter']} images each ({schedule['student_optimizer']}); "
        f"device {schedule['device']}, {schedule['threads']} CPU thread(s) per process, the two "
        f"students side by side in {schedule.get('student_processes', 1)} process(es).",
        "- inference ms/image: one image per call, mean over the val images; it depends on the "
        "machine and its load (every other number is reproducible with the same seed on the "
        "same machine).",
        f"- wall time of the whole demo: {report['wall_time_s']['total']:.0f} s ("
        + ", ".join(
            f"{name} {seconds:.0f} s" for name, seconds in report["wall_time_s"]["stages"].items()
        )
        + ").",
        "- " + seed_spread_note(report.get("seed_spread"), report.get("settings_fingerprint")),
        "",
    ]
    for row in report["rows"]:
        if row.get("no_detections"):
            lines.insert(
                -1,
                f"- {row['model']} made no detection above the score threshold: its "
                "AP is shown as 0.",
            )
    return "\n".join(lines)


def format_table_for_console(report: dict) -> str:
    """The table as aligned plain text, plus the verdict."""
    header = [title for title, _, _ in TABLE_COLUMNS]
    body = [_cells(row) for row in report["rows"]]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    out = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths))
        )
        for line in [header] + body
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out + ["", report["verdict"]])


def write_report(report: dict, json_path: str, markdown_path: str) -> None:
    """Write ``report`` as JSON, then the Markdown rendered from the JSON just written."""
    atomic_write_json(report, json_path, allow_nan=False)
    atomic_write_text(render_markdown(read_report(json_path)), markdown_path)


def read_report(json_path: str) -> dict:
    """Re-read a ``results.json``; checks it has the three rows."""
    with open(json_path, encoding="utf-8") as stream:
        report = json.load(stream)
    names = [row.get("model") for row in report.get("rows", [])]
    if names != list(ROW_NAMES):
        raise ValueError(f"{json_path}: rows {names}, expected {list(ROW_NAMES)}")
    return report
