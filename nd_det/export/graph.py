"""The student's inference as one module of tensors in, tensors out: what torch.export and the
ONNX exporter see.

:class:`ExportableStudent` wraps a detectron2 Faster R-CNN (``GeneralizedRCNN`` with an RPN and
``StandardROIHeads``, box head only) and runs its own modules (backbone, RPN head, anchor
generator, box pooler, box head, box predictor) with its weights; only the steps whose
detectron2 code branches in Python on tensor values or sizes are nd-det's own:

* normalise and pad the image to the backbone's size divisibility with the image size as a
  (symbolic) integer: detectron2's ``ImageList.from_tensors`` computes the padding through
  tensors and ``.item()``, which torch.export turns into unknown sizes;
* proposal selection and the box head's score threshold + NMS
  (:mod:`nd_det.export.postprocess`).

It takes one image, float32 (3, H, W), 0..255, channels in ``INPUT.FORMAT``, already resized
by the test transform, and returns ``boxes`` (N, 4, x0 y0 x1 y1 in that image's pixels),
``scores`` (N,) and ``classes`` (N,, int64): the same as ``model.inference(...,
do_postprocess=False)``.
"""

import contextlib

import torch
import torch.nn.functional as F

from .postprocess import box_levels, detections_per_class, top_rpn_proposals

__all__ = [
    "ExportableStudent",
    "min_image_side",
    "dynamic_image_shapes",
    "exporting",
]


def min_image_side(model: torch.nn.Module) -> int:
    """The smallest input height and width the exported graph takes: one more than the
    coarsest FPN stride.  Below that the coarsest level has a single cell, where broadcasting
    and GroupNorm take other code paths than the traced ones (torch.export refuses a range
    that includes them)."""
    return max(shape.stride for shape in model.backbone.output_shape().values()) + 1


def _nms_fake(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """What torch.export assumes of ``torchvision::nms``: any number of kept boxes, 0 included.
    torchvision's own fake kernel (``create_unbacked_symint()``, whose default minimum is 2)
    makes the exported graph assert that every NMS keeps at least 2 boxes, so a file would fail
    on an image with one detection, or a level with one proposal left."""
    return boxes.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


@contextlib.contextmanager
def exporting():
    """No autograd, and ``torchvision::nms`` traced with :func:`_nms_fake` (torchvision's fake
    kernel is back in place afterwards)."""
    library = torch.library.Library("torchvision", "FRAGMENT")
    try:
        torch.library.register_fake("torchvision::nms", _nms_fake, lib=library)
        with torch.no_grad():
            yield
    finally:
        library._destroy()


def dynamic_image_shapes(model: torch.nn.Module) -> dict:
    """``dynamic_shapes`` for torch.export / torch.onnx.export: height and width free from
    :func:`min_image_side` up."""
    side = min_image_side(model)
    return {
        "image": {1: torch.export.Dim("height", min=side), 2: torch.export.Dim("width", min=side)}
    }


class ExportableStudent(torch.nn.Module):
    """One image -> (boxes, scores, classes) with the weights of ``model`` (see the module
    docstring); ``model`` must pass :func:`check_exportable`."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def _normalised_padded(self, image: torch.Tensor) -> torch.Tensor:
        model = self.model
        image = (image - model.pixel_mean) / model.pixel_std
        stride = model.backbone.size_divisibility
        height, width = image.shape[-2:]
        if stride > 1:  # pad bottom/right with 0 (after normalising), as ImageList does
            # written as stride * ceil(size / stride) so that the exporter can prove the sizes
            # of the FPN levels (each twice the next) for every image size
            image = F.pad(
                image,
                [
                    0,
                    stride * ((width + stride - 1) // stride) - width,
                    0,
                    stride * ((height + stride - 1) // stride) - height,
                ],
            )
        return image.unsqueeze(0)

    def _proposals(self, features, height, width) -> torch.Tensor:
        rpn = self.model.proposal_generator
        maps = [features[name] for name in rpn.in_features]
        logits, deltas = rpn.rpn_head(maps)
        anchors = rpn.anchor_generator(maps)
        box_dim = rpn.anchor_generator.box_dim
        # RPN.forward's reshapes for image 0: (A, Hi, Wi) -> (Hi*Wi*A,), (A*B, Hi, Wi) -> (.., B)
        logits = [x[0].permute(1, 2, 0).flatten() for x in logits]
        deltas = [
            x[0]
            .view(-1, box_dim, x.shape[-2], x.shape[-1])
            .permute(2, 3, 0, 1)
            .reshape(-1, box_dim)
            for x in deltas
        ]
        proposals = [
            rpn.box2box_transform.apply_deltas(d, a.tensor) for d, a in zip(deltas, anchors)
        ]
        boxes, _ = top_rpn_proposals(
            proposals,
            logits,
            height,
            width,
            rpn.nms_thresh,
            rpn.pre_nms_topk[False],
            rpn.post_nms_topk[False],
            rpn.min_box_size,
        )
        return boxes

    def _pooled(self, maps, boxes: torch.Tensor) -> torch.Tensor:
        """ROIPooler.forward for one image (its box-format helper turns the box count into a
        tensor through ``torch.as_tensor``, which torch.export cannot size)."""
        pooler = self.model.roi_heads.box_pooler
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)  # image index 0
        if len(pooler.level_poolers) == 1:
            return pooler.level_poolers[0](maps[0], rois)
        levels = box_levels(
            boxes,
            pooler.min_level,
            pooler.max_level,
            pooler.canonical_box_size,
            pooler.canonical_level,
        )
        size = pooler.output_size
        pooled = maps[0].new_zeros(boxes.shape[0], maps[0].shape[1], size[0], size[1])
        for level, level_pooler in enumerate(pooler.level_poolers):
            index = (levels == level).nonzero()[:, 0]
            pooled.index_put_((index,), level_pooler(maps[level], rois[index]))
        return pooled

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        features = self.model.backbone(self._normalised_padded(image))
        proposals = self._proposals(features, height, width)
        heads = self.model.roi_heads
        pooled = self._pooled([features[f] for f in heads.box_in_features], proposals)
        predictor = heads.box_predictor
        scores, deltas = predictor(heads.box_head(pooled))
        probs = scores.sigmoid() if predictor.use_sigmoid_ce else F.softmax(scores, dim=-1)
        boxes = predictor.box2box_transform.apply_deltas(deltas, proposals)
        return detections_per_class(
            boxes,
            probs,
            height,
            width,
            predictor.test_score_thresh,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
