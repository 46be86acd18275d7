"""The demo's PNG figure (matplotlib's Agg canvas, no display needed; its panels: docs/demo.md):
loss curves and ND's mechanism from the students' ``metrics.json``, AP bars, and the val tiles
with the most trees with the detections the evaluation wrote (COCO results files) over the
ground truth.
"""

import json
from collections import defaultdict
from collections.abc import Sequence

from nd_det.utils.atomic_file import atomic_write

DETECTION_LOSSES = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")
MECHANISM = ("norm_ratio", "cosine_to_class_mean")
_ALONE_COLOUR = "tab:blue"
_DISTILLED_COLOUR = "tab:orange"
_TEACHER_COLOUR = "tab:green"


def read_loss_curves(metrics_file: str) -> dict[str, list]:
    """{"iteration": [...], "detection": [...], "<loss name>": [...] for every other loss} from
    a detectron2 ``metrics.json`` (one JSON object per line; lines without losses skipped)."""
    curves: dict[str, list] = defaultdict(list)
    with open(metrics_file, encoding="utf-8") as stream:
        for record in map(json.loads, stream):
            if "total_loss" not in record:
                continue
            curves["iteration"].append(record["iteration"] + 1)
            curves["detection"].append(sum(record.get(k, 0.0) for k in DETECTION_LOSSES))
            for key, value in record.items():
                if key.startswith("loss_") and key not in DETECTION_LOSSES:
                    curves[key].append(value)
    return dict(curves)


def read_mechanism_curves(metrics_file: str) -> dict[str, list]:
    """{"iteration": [...], "norm_ratio": [...], "cosine_to_class_mean": [...]}: ND's mechanism
    as a distillation run logs it (``nd/*`` in ``metrics.json`` every
    MODEL.DISTILL.MECHANISM_PERIOD iterations); empty lists for a run without a teacher."""
    curves: dict[str, list] = {"iteration": [], **{k: [] for k in MECHANISM}}
    with open(metrics_file, encoding="utf-8") as stream:
        for record in map(json.loads, stream):
            if all(f"nd/{k}" in record for k in MECHANISM):
                curves["iteration"].append(record["iteration"] + 1)
                for key in MECHANISM:
                    curves[key].append(record[f"nd/{key}"])
    return curves


def pick_val_images(dataset_dicts: Sequence[dict], count: int) -> list[dict]:
    """The ``count`` val images with the most ground-truth boxes (ties: lower image id)."""
    ranked = sorted(dataset_dicts, key=lambda d: (-len(d.get("annotations", [])), d["image_id"]))
    return ranked[:count]


def _detections_by_image(results_file: str, score_threshold: float) -> dict[int, list]:
    with open(results_file, encoding="utf-8") as stream:
        results = json.load(stream)
    by_image: dict[int, list] = defaultdict(list)
    for det in results:
        if det["score"] >= score_threshold:
            by_image[det["image_id"]].append(det["bbox"])  # XYWH, image pixels
    return by_image


def _draw_tile(ax, record: dict, boxes: list, colour: str, title: str) -> None:
    from detectron2.structures import BoxMode
    from matplotlib.patches import Rectangle
    from PIL import Image

    with Image.open(record["file_name"]) as image:
        ax.imshow(image.convert("RGB"))
    for annotation in record.get("annotations", []):
        x, y, w, h = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYWH_ABS)
        ax.add_patch(
            Rectangle((x, y), w, h, fill=False, edgecolor="white", linewidth=0.8, linestyle="--")
        )
    for x, y, w, h in boxes:
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.6))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_demo_figure(
    path: str,
    curves_alone: dict,
    curves_distilled: dict,
    rows: Sequence[dict],
    val_records: Sequence[dict],
    detections_alone: str,
    detections_distilled: str,
    method_name: str,
    mechanism: dict,
    score_threshold: float = 0.5,
) -> str:
    """Write the figure (see the module docstring) to ``path``; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(3, len(val_records))
    figure = Figure(figsize=(4.6 * columns, 13.5), dpi=90)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, columns, height_ratios=[1.0, 1.25, 1.25])
    top = grid[0, :].subgridspec(1, 4)

    ax = figure.add_subplot(top[0, 0])
    ax.plot(
        curves_alone["iteration"],
        curves_alone["detection"],
        color=_ALONE_COLOUR,
        label="student alone",
    )
    ax.plot(
        curves_distilled["iteration"],
        curves_distilled["detection"],
        color=_DISTILLED_COLOUR,
        label=f"distilled student ({method_name})",
    )
    ax.set(title="(a) detection loss (RPN + box head)", xlabel="iteration", ylabel="loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = figure.add_subplot(top[0, 1])
    distill_terms = [k for k in curves_distilled if k.startswith("loss_") and k != "detection"]
    for name in distill_terms:
        ax.plot(curves_distilled["iteration"], curves_distilled[name], label=name)
    ax.set(
        title="(b) distillation terms of the distilled student",
        xlabel="iteration",
        ylabel="weighted loss",
    )
    if distill_terms:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = figure.add_subplot(top[0, 2])
    ax.plot(mechanism["iteration"], mechanism["norm_ratio"], color=_DISTILLED_COLOUR, marker=".")
    ax.set(
        title="(c) ND's mechanism in the distilled student",
        xlabel="iteration",
        ylabel="RoI embedding norm: student / teacher",
    )
    ax.grid(alpha=0.3)
    cosine = ax.twinx()
    cosine.plot(
        mechanism["iteration"],
        mechanism["cosine_to_class_mean"],
        color="tab:purple",
        marker=".",
        linestyle="--",
    )
    cosine.set_ylabel("cosine to the teacher's class mean (dashed)", color="tab:purple")

    ax = figure.add_subplot(top[0, 3])
    metrics = ("AP", "AP50", "AP75")
    width = 0.26
    for offset, row, colour in zip(
        (-width, 0.0, width), rows, (_TEACHER_COLOUR, _ALONE_COLOUR, _DISTILLED_COLOUR)
    ):
        positions = [i + offset for i in range(len(metrics))]
        bars = ax.bar(positions, [row[m] for m in metrics], width, color=colour, label=row["model"])
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set(title="(d) COCO box AP on the val split", ylabel="AP (%)")
    ax.legend(fontsize=8)

    alone = _detections_by_image(detections_alone, score_threshold)
    distilled = _detections_by_image(detections_distilled, score_threshold)
    for column, record in enumerate(val_records):
        trees = len(record.get("annotations", []))
        for row_index, (name, by_image, colour) in enumerate(
            (
                ("student alone", alone, _ALONE_COLOUR),
                (f"distilled student ({method_name})", distilled, _DISTILLED_COLOUR),
            ),
            start=1,
        ):
            boxes = by_image.get(record["image_id"], [])
            _draw_tile(
                figure.add_subplot(grid[row_index, column]),
                record,
                boxes,
                colour,
                f"{name}: {len(boxes)} boxes (score >= {score_threshold:g}), {trees} trees",
            )
    figure.suptitle(
        "nd-det demo: teacher, student alone and distilled student on the embedded "
        "tree-crown data (dashed white: ground truth)",
        fontsize=12,
    )
    figure.tight_layout()
    atomic_write(path, lambda f: figure.savefig(f, format="png"))
    return path
