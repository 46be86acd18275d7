"""Printing evaluation results of several models side by side."""

from collections.abc import Mapping

from ..utils.text import markdown_table

__all__ = ["side_by_side_table", "print_side_by_side"]

_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def side_by_side_table(results: Mapping[str, Mapping[str, dict]]) -> str:
    """Markdown table: one row per (model, dataset), COCO bbox metrics as columns.

    ``results`` maps a model name ("student", "teacher") to detectron2's evaluation output
    ({dataset: {"bbox": {"AP": ...}}}).
    """
    rows = []
    for model, per_dataset in results.items():
        for dataset, tasks in per_dataset.items():
            bbox = tasks.get("bbox", {}) if isinstance(tasks, Mapping) else {}
            rows.append(
                [model, dataset] + [f"{bbox[m]:.2f}" if m in bbox else "-" for m in _METRICS]
            )
    return "\n".join(markdown_table(["model", "dataset", *_METRICS], rows))


def print_side_by_side(results) -> None:
    from detectron2.utils import comm

    if comm.is_main_process():
        print(side_by_side_table(results), flush=True)
