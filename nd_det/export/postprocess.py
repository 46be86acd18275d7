"""Faster R-CNN post-processing without data-dependent Python branches, for torch.export.

detectron2's inference (``find_top_rpn_proposals``, ``fast_rcnn_inference_single_image``,
``batched_nms``) branches in Python on tensor values: ``if not valid_mask.all()``,
``keep.sum().item() != len(boxes)``, torchvision's ``boxes.numel() > 4000`` choice between two
NMS strategies, ``boxes.max()`` of a possibly empty tensor.  ``torch.export`` cannot guard on
such values (``GuardOnDataDependentSymNode``), so these functions compute the same result with
the filtering always applied (a boolean mask whose length is known only at run time) and one
fixed NMS strategy.  They are used only on the export path; in eager mode they give
detectron2's detections (``tests/test_export_postprocess.py``):

* RPN: per level, the ``pre_nms_topk`` best anchors, non-finite and empty boxes dropped, NMS
  within the level, then the ``post_nms_topk`` best of all levels.  detectron2 runs the same
  per-level NMS (torchvision's per-class loop) when the levels hold more than 1000 boxes, and
  the "coordinate trick" (one NMS over boxes shifted apart per level) below that; both keep the
  same boxes up to float rounding of an IoU that lies exactly at the threshold.
* Box head: scores above ``score_thresh`` per class, then NMS per class with the coordinate
  trick, the ``topk_per_image`` best kept: what detectron2 runs for up to 1000 candidate
  (box, class) pairs; above that it loops over classes (same boxes up to the rounding above).
"""

from collections.abc import Sequence

import torch
from torchvision.ops import nms

__all__ = ["clip_boxes", "top_rpn_proposals", "box_levels", "nms_per_class", "detections_per_class"]


def clip_boxes(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """``Boxes.clip`` as a function: x in [0, width], y in [0, height] (its ``assert
    isfinite`` is a data-dependent check; the callers drop non-finite boxes first)."""
    x1 = boxes[:, 0].clamp(min=0, max=width)
    y1 = boxes[:, 1].clamp(min=0, max=height)
    x2 = boxes[:, 2].clamp(min=0, max=width)
    y2 = boxes[:, 3].clamp(min=0, max=height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def top_rpn_proposals(
    proposals: Sequence[torch.Tensor],
    logits: Sequence[torch.Tensor],
    height,
    width,
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's proposals: ``proposals[l]`` (A_l, 4) and ``logits[l]`` (A_l,) per level
    -> (boxes (R, 4), objectness logits (R,)), best first, R <= ``post_nms_topk``."""
    kept_boxes: list[torch.Tensor] = []
    kept_scores: list[torch.Tensor] = []
    for boxes, scores in zip(proposals, logits):
        # torch.sym_min: the number of anchors depends on the image size, a symbol when exported
        scores, index = scores.topk(torch.sym_min(pre_nms_topk, scores.shape[0]))
        boxes = boxes[index]
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes, scores = boxes[valid], scores[valid]
        boxes = clip_boxes(boxes, height, width)
        sizes = boxes[:, 2:] - boxes[:, :2]
        nonempty = (sizes > min_box_size).all(dim=1)
        boxes, scores = boxes[nonempty], scores[nonempty]
        keep = nms(boxes, scores, nms_thresh)
        kept_boxes.append(boxes[keep])
        kept_scores.append(scores[keep])
    boxes, scores = torch.cat(kept_boxes), torch.cat(kept_scores)
    order = scores.sort(descending=True).indices[:post_nms_topk]
    return boxes[order], scores[order]


def box_levels(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_box_size: int,
    canonical_level: int,
) -> torch.Tensor:
    """detectron2's ``assign_boxes_to_levels`` for one image's (R, 4) tensor: the FPN level of
    each box, minus ``min_level`` (its ``Boxes`` wrapper reshapes empty tensors after checking
    ``numel() == 0``, a guard on the number of proposals)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    levels = torch.floor(
        canonical_level + torch.log2(torch.sqrt(areas) / canonical_box_size + 1e-8)
    )
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


def nms_per_class(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """torchvision's ``batched_nms`` by the coordinate trick, also for an empty input (its
    ``boxes.max()`` fails there, and it picks another strategy above 1000 boxes)."""
    # the largest coordinate, 0 for no boxes (boxes are clipped to the image: never negative)
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    shifted = boxes + (classes.to(boxes) * (largest + 1))[:, None]
    return nms(shifted, scores, iou_threshold)


def detections_per_class(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    height,
    width,
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """detectron2's ``fast_rcnn_inference_single_image`` for one image: ``boxes`` (R, K*4) or
    (R, 4) decoded per class, ``probs`` (R, K+1) with background last -> boxes (N, 4), scores
    (N,), classes (N,) int64, best first."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
    boxes, probs = boxes[valid], probs[valid]
    probs = probs[:, :-1]
    rows, per_class = boxes.shape[0], boxes.shape[1] // 4
    # explicit sizes, not -1: with no rows left, -1 is ambiguous (a guard for the exporter)
    boxes = clip_boxes(boxes.reshape(rows * per_class, 4), height, width).view(rows, per_class, 4)
    passed = probs > score_thresh
    index = passed.nonzero()  # (candidate, class)
    boxes = boxes[index[:, 0], 0] if per_class == 1 else boxes[passed]
    scores = probs[passed]
    keep = nms_per_class(boxes, scores, index[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    return boxes[keep], scores[keep], index[keep, 1]
