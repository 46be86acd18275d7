"""nd-det's export-friendly post-processing (nd_det.export.postprocess) and the exportable
student (nd_det.export.graph) give detectron2's own detections in eager mode, bit for bit: the
RPN's proposal selection (find_top_rpn_proposals), the pooler's level of each box
(assign_boxes_to_levels), the box head's threshold + NMS (fast_rcnn_inference_single_image)
and the whole inference (GeneralizedRCNN.inference), in both of torchvision's batched-NMS
regimes (coordinate trick up to 1000 boxes, a loop above)."""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
from detectron2.structures import Boxes

from nd_det.errors import ConfigError
from nd_det.export import export_student
from nd_det.export.contract import load_exported_student, student_detections
from nd_det.export.exportable import check_exportable
from nd_det.export.graph import ExportableStudent, min_image_side
from nd_det.export.postprocess import (
    box_levels,
    detections_per_class,
    nms_per_class,
    top_rpn_proposals,
)

from .helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .helpers.tiny_distill import tiny_distill_cfg


def random_boxes(n, size, generator):
    """``n`` boxes inside and around a ``size`` image, some of them empty or inverted."""
    xy = torch.rand(n, 2, generator=generator) * size * 1.2 - size * 0.1
    wh = torch.rand(n, 2, generator=generator) * size * 0.4 - 2
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("pre_nms_topk", [60, 400])  # 5 levels: <= 1000 and > 1000 boxes
def test_proposal_selection_is_detectron2s(pre_nms_topk):
    g = torch.Generator().manual_seed(pre_nms_topk)
    height, width = 150, 200
    anchors_per_level = [1200, 600, 300, 80, 20]
    proposals = [random_boxes(n, 200, g) for n in anchors_per_level]
    logits = [torch.randn(n, generator=g) for n in anchors_per_level]
    proposals[0][3] = float("nan")  # a diverged box and a diverged score: dropped by both
    logits[1][5] = float("inf")
    for min_box_size in (0.0, 4.0):
        expected = find_top_rpn_proposals(
            [p[None] for p in proposals],
            [s[None] for s in logits],
            [(height, width)],
            0.7,
            pre_nms_topk,
            300,
            min_box_size,
            training=False,
        )[0]
        boxes, scores = top_rpn_proposals(
            proposals, logits, height, width, 0.7, pre_nms_topk, 300, min_box_size
        )
        assert len(boxes) == len(expected) > 100
        assert torch.equal(boxes, expected.proposal_boxes.tensor)
        assert torch.equal(scores, expected.objectness_logits)


@pytest.mark.parametrize("per_class_boxes", [True, False])
@pytest.mark.parametrize("num_proposals", [300, 1000])  # < 1000 and > 1000 candidates
def test_detection_selection_is_detectron2s(per_class_boxes, num_proposals):
    g = torch.Generator().manual_seed(num_proposals + per_class_boxes)
    classes = 3
    boxes = torch.cat(
        [random_boxes(num_proposals, 120, g) for _ in range(classes if per_class_boxes else 1)],
        dim=1,
    )
    probs = torch.softmax(torch.randn(num_proposals, classes + 1, generator=g) * 2, dim=1)
    boxes[7, 1] = float("inf")  # a non-finite box and a non-finite score: dropped by both
    probs[11, 0] = float("nan")
    for threshold, topk in ((0.05, 100), (0.3, -1)):
        expected, _ = fast_rcnn_inference_single_image(
            boxes, probs, (100, 120), threshold, 0.5, topk
        )
        found = detections_per_class(boxes, probs, 100, 120, threshold, 0.5, topk)
        assert len(found[0]) == len(expected) > 20
        assert torch.equal(found[0], expected.pred_boxes.tensor)
        assert torch.equal(found[1], expected.scores)
        assert torch.equal(found[2], expected.pred_classes)


def test_box_levels_are_detectron2s():
    g = torch.Generator().manual_seed(5)
    xy, wh = torch.rand(500, 2, generator=g) * 900, 1 + torch.rand(500, 2, generator=g) * 700
    boxes = torch.cat([xy, xy + wh], dim=1)
    expected = assign_boxes_to_levels([Boxes(boxes)], 2, 5, 224, 4)
    assert torch.equal(box_levels(boxes, 2, 5, 224, 4), expected)
    assert set(expected.tolist()) == {0, 1, 2, 3}


def test_nms_per_class_takes_no_boxes():
    keep = nms_per_class(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("student")
    cfg = tiny_distill_cfg(str(tmp), "R50_from_R101_nd.yaml")
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), str(tmp)).save("model_final")
    export_student(cfg, str(tmp / "model_final.pth"), str(tmp / "deploy"))
    return load_exported_student(str(tmp / "deploy"))


def test_a_torchvision_mobilenet_v3_student_graph_detects_what_it_detects(tmp_path):
    """The exportable graph around torchvision's MobileNetV3 under FPN (hardswish, squeeze-and-
    excitation; the Small one of configs/COCO-Distill/MV3_from_R50_nd.yaml), from its export
    folder: detectron2's detections, bit for bit, at two sizes."""
    opts = ["MODEL.TORCHVISION.ARCH", "mobilenet_v3_small", "MODEL.TORCHVISION.NORM", "GN"]
    cfg = tiny_distill_cfg(str(tmp_path), "MV3_from_R50_nd.yaml", extra_opts=opts)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), str(tmp_path)).save("model_final")
    export_student(cfg, str(tmp_path / "model_final.pth"), str(tmp_path / "deploy"))
    _, model = load_exported_student(str(tmp_path / "deploy"))
    check_exportable(model)
    graph = ExportableStudent(model).eval()
    g = torch.Generator().manual_seed(3)
    for height, width in ((96, 128), (130, 70)):
        image = torch.rand(3, height, width, generator=g) * 255
        with torch.no_grad():
            expected, found = student_detections(model, image), graph(image)
        assert len(found[0]) == len(expected[0]) > 0
        for ours, theirs in zip(found, expected):
            assert torch.equal(ours, theirs)


@pytest.mark.parametrize("pre_nms_topk", [100, 1000])  # RPN NMS over <= 1000 / > 1000 boxes
def test_exportable_student_detects_what_the_student_detects(tiny_student, pre_nms_topk):
    _, model = tiny_student
    model.proposal_generator.pre_nms_topk[False] = pre_nms_topk
    graph = ExportableStudent(model).eval()
    g = torch.Generator().manual_seed(pre_nms_topk)
    for height, width in ((96, 128), (144, 96), (65, 130), (101, 77)):
        image = torch.rand(3, height, width, generator=g) * 255
        with torch.no_grad():
            expected = student_detections(model, image)
            found = graph(image)
        assert len(found[0]) == len(expected[0]) > 0
        for ours, theirs in zip(found, expected):
            assert torch.equal(ours, theirs)
    model.proposal_generator.pre_nms_topk[False] = 100


def test_smallest_side_and_unsupported_students(tiny_student):
    cfg, model = tiny_student
    assert min_image_side(model) == 65  # p6 of the FPN: stride 64
    check_exportable(model)
    heads = model.roi_heads
    heads.mask_on = True
    with pytest.raises(ConfigError, match="is not a Faster R-CNN .*use --format torchscript"):
        check_exportable(model)
    heads.mask_on = False
