"""A one-stage student's inference (detectron2's RetinaNet or FCOS) as one module of tensors
in, tensors out: what torch.export and the ONNX exporter see, as :mod:`.graph` does for a
Faster R-CNN.

:class:`ExportableDenseStudent` runs the model's own modules (backbone, head, anchor generator,
box transform) with its weights, and writes in tensor operations only the steps whose
detectron2 code branches in Python on tensor values or sizes:

* normalising and padding the image (:class:`~nd_det.export.graph.ExportableStudent`'s);
* per level, the ``test_topk_candidates`` best (anchor, class) scores above
  ``test_score_thresh``: detectron2 thresholds first and takes the top-k of what is left (a
  data-dependent count); here the top-k of all scores is taken first, then thresholded, which
  keeps the same set, best first;
* NMS per class (the coordinate trick of :mod:`nd_det.export.postprocess`), the
  ``max_detections_per_image`` best kept, then what detectron2's ``detector_postprocess`` does
  at the input's own size: boxes clipped to the image, empty boxes dropped.

It takes one image, float32 (3, H, W), 0..255, channels in ``INPUT.FORMAT``, already resized by
the test transform, and returns ``boxes`` (N, 4, x0 y0 x1 y1 in that image's pixels),
``scores`` (N,) and ``classes`` (N,, int64): what ``model([{"image": image}])`` returns for it.
"""

import torch
from detectron2.modeling import FCOS, RetinaNet
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K

from .graph import ExportableStudent
from .postprocess import clip_boxes, nms_per_class

__all__ = ["ExportableDenseStudent", "is_dense_student", "dense_student_detections"]


def is_dense_student(model: torch.nn.Module) -> bool:
    """A RetinaNet or an FCOS (a distilled one included): what this module exports."""
    return isinstance(model, (RetinaNet, FCOS))


@torch.no_grad()
def dense_student_detections(model: torch.nn.Module, image: torch.Tensor):
    """(boxes, scores, classes) of one image by detectron2's own inference, at the image's size:
    the parity check's reference for a one-stage student."""
    instances = model([{"image": image}])[0]["instances"]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


class ExportableDenseStudent(ExportableStudent):
    """One image -> (boxes, scores, classes) with the weights of a RetinaNet or FCOS ``model``
    (see the module docstring)."""

    def _level_candidates(self, anchors, logits, deltas, centerness):
        """One level's candidates: the top-k (anchor, class) scores above the threshold, their
        decoded boxes and classes."""
        model = self.model
        scores = logits.sigmoid()
        if centerness is not None:  # FCOS: sqrt(classification x centerness)
            scores = torch.sqrt(scores * centerness.sigmoid())
        flat = scores.flatten()
        # torch.sym_min: the number of anchors depends on the image size, a symbol when exported
        top, index = flat.topk(torch.sym_min(model.test_topk_candidates, flat.shape[0]))
        passed = top > model.test_score_thresh
        top, index = top[passed], index[passed]
        num_classes = scores.shape[1]
        anchor = index // num_classes
        boxes = model.box2box_transform.apply_deltas(deltas[anchor], anchors.tensor[anchor])
        return boxes, top, index % num_classes

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        height, width = image.shape[-2:]
        features = model.backbone(self._normalised_padded(image))
        maps = [features[f] for f in model.head_in_features]
        predictions = model.head(maps)
        anchors = model.anchor_generator(maps)
        logits = [permute_to_N_HWA_K(x, model.num_classes)[0] for x in predictions[0]]
        deltas = [permute_to_N_HWA_K(x, 4)[0] for x in predictions[1]]
        centerness = (
            [permute_to_N_HWA_K(x, 1)[0] for x in predictions[2]]
            if len(predictions) > 2
            else [None] * len(maps)
        )
        levels = [
            self._level_candidates(*level) for level in zip(anchors, logits, deltas, centerness)
        ]
        boxes, scores, classes = (torch.cat(parts) for parts in zip(*levels))
        keep = nms_per_class(boxes, scores, classes, model.test_nms_thresh)
        keep = keep[: model.max_detections_per_image]
        boxes, scores, classes = clip_boxes(boxes[keep], height, width), scores[keep], classes[keep]
        sizes = boxes[:, 2:] - boxes[:, :2]
        nonempty = (sizes > 0).all(dim=1)
        return boxes[nonempty], scores[nonempty], classes[nonempty]
