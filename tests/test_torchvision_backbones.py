"""build_torchvision_fpn_backbone: torchvision classifiers as FPN students.

Every listed architecture builds from MODEL.TORCHVISION (random init), returns p2..p6 at strides
4..64 with the FPN channels, trains one DistillRCNN step (ReviewKD++ and KD++) and runs an eval
step at toy size; FREEZE_AT and NORM do what the config says; bad keys give one ConfigError
line; the MobileNetV2 configs keep the stage layout of the hand-written MobileNetV2 they used
before.
"""

import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.events import EventStorage
from nd_common.configs import DEFAULT_STUDENT_CONFIG, DEFAULT_TEACHER_CONFIG, load_demo_cfg
from torch import nn

from nd_det.config import add_backbone_config, load_config
from nd_det.errors import ConfigError, input_stage
from nd_det.modeling.backbone import TORCHVISION_DEFAULT_STAGES
from nd_det.modeling.backbone.torchvision_stages import stage_shapes

from .helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .helpers.tiny_distill import REPO, config_path, random_batch, tiny_distill_cfg

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
        k: (32, stride) for k, stride in FPN_STRIDES.items()
    }
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, HEIGHT, WIDTH))
    for name, stride in FPN_STRIDES.items():
        expected = (2, 32, math.ceil(HEIGHT / stride), math.ceil(WIDTH / stride))
        assert tuple(features[name].shape) == expected, name
        assert torch.isfinite(features[name]).all()


@pytest.mark.parametrize(
    "arch, width, stages, expected",
    [
        # a model of another width, stages of its own
        (
            "mobilenet_v2",
            0.5,
            ["features.3", "features.6", "features.13", "features.17"],
            [(16, 4), (16, 8), (48, 16), (160, 32)],
        ),
        # built on the CPU before the meta device (its widths are computed with tensors)
        ("regnet_x_400mf", 1.0, [], [(32, 4), (64, 8), (160, 16), (400, 32)]),
    ],
)
def test_shapes_known_per_architecture_are_the_measured_ones(arch, width, stages, expected):
    """build_torchvision_backbone measures each stage's channels and stride at its first build
    of an architecture and reuses them: every build reports what the bottom-up measuring its own
    body reports, and draws the same initial weights."""
    from nd_det.modeling.backbone import TorchvisionBottomUp, build_torchvision_backbone
    from nd_det.modeling.backbone.torchvision_stages import build_torchvision_classifier

    cfg = torchvision_cfg(arch)
    cfg.MODEL.TORCHVISION.WIDTH_MULT = width
    cfg.MODEL.TORCHVISION.STAGES = stages
    torch.manual_seed(0)
    measured = TorchvisionBottomUp(
        build_torchvision_classifier(arch, width),
        stages=stages or TORCHVISION_DEFAULT_STAGES[arch],
        out_features=["c2", "c3", "c4", "c5"],
        norm="GN",
    )
    after_measured = torch.random.get_rng_state()
    assert [(s.channels, s.stride) for s in measured.output_shape().values()] == expected
    for _ in range(2):  # the first build of this architecture here, then one reusing it
        torch.manual_seed(0)
        built = build_torchvision_backbone(cfg, ShapeSpec(channels=3))
        assert torch.equal(torch.random.get_rng_state(), after_measured)
        assert built.output_shape() == measured.output_shape()
        ours, theirs = built.state_dict(), measured.state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(v, theirs[k]) for k, v in ours.items())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config_file", ["MV3_from_R50_nd.yaml", "MV3_from_R50_kd_nd.yaml"])
def test_distill_train_and_eval_step(tmp_path, arch, config_file):
    cfg = tiny_distill_cfg(
        str(tmp_path),
        config_file,
        extra_opts=[
            "MODEL.TORCHVISION.ARCH",
            arch,
            "MODEL.TORCHVISION.NORM",
            "GN",
            "MODEL.TORCHVISION.FREEZE_AT",
            "0",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    term = "loss_reviewkd" if "reviewkd" in cfg.MODEL.DISTILL.LOSSES else "loss_kd"
    first = model.backbone.bottom_up.body.get_parameter(
        next(name for name, _ in model.backbone.bottom_up.body.named_parameters())
    )
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
    assert all(p.grad is None for p in model.teacher.model.parameters())
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
    bottom_up = build_backbone(
        torchvision_cfg("resnet18", norm="BN", freeze_at=1), ShapeSpec(channels=3)
    ).bottom_up
    names = [name for name, _ in bottom_up.body.named_parameters()]
    frozen = set(names) - _trainable(bottom_up)
    assert frozen == {n for n in names if n.startswith(("conv1.", "bn1.", "layer1."))}
    assert isinstance(bottom_up.body.get_submodule("layer1.0.bn1"), FrozenBatchNorm2d)
    assert type(bottom_up.body.get_submodule("layer2.0.bn1")) is nn.BatchNorm2d
    # mobilenet_v3_large, FREEZE_AT 2: features.0 .. features.6 (up to stride 8)
    bottom_up = build_backbone(
        torchvision_cfg("mobilenet_v3_large", norm="BN", freeze_at=2), ShapeSpec(channels=3)
    ).bottom_up
    names = [name for name, _ in bottom_up.body.named_parameters()]
    early = {n for n in names if int(n.split(".")[1]) <= 6}
    assert set(names) - _trainable(bottom_up) == early
    # convnext_tiny: parameters read directly by the graph (layer_scale) are frozen too
    bottom_up = build_backbone(
        torchvision_cfg("convnext_tiny", freeze_at=1), ShapeSpec(channels=3)
    ).bottom_up
    assert not bottom_up.body.get_parameter("features.1.0.layer_scale").requires_grad
    assert bottom_up.body.get_parameter("features.3.0.layer_scale").requires_grad
    # FREEZE_AT 0 trains everything
    bottom_up = build_backbone(torchvision_cfg("resnet18", norm="BN"), ShapeSpec(3)).bottom_up
    assert _trainable(bottom_up) == {n for n, _ in bottom_up.body.named_parameters()}


def test_norm_replaces_every_batch_norm():
    def norms(norm):
        bottom_up = build_backbone(
            torchvision_cfg("mobilenet_v3_large", norm=norm), ShapeSpec(channels=3)
        ).bottom_up
        return {
            type(m)
            for m in bottom_up.modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, FrozenBatchNorm2d))
        }, bottom_up

    assert norms("BN")[0] == {nn.BatchNorm2d}
    assert norms("FrozenBN")[0] == {FrozenBatchNorm2d}
    assert norms("SyncBN")[0] == {nn.SyncBatchNorm}
    kinds, bottom_up = norms("GN")
    assert kinds == {nn.GroupNorm}
    # 40 channels (features.4's projection): 8 groups, the largest count <= 32 dividing 40
    gn = bottom_up.body.get_submodule("features.4.block.3.1")
    assert (gn.num_groups, gn.num_channels) == (8, 40)


def _build_error(cfg) -> str:
    """The one-line message of building the backbone of ``cfg`` (what the pre-flight does on the
    meta device, its foreign errors turned into one ConfigError line)."""
    with pytest.raises(ConfigError) as error, input_stage("building the student"):
        with torch.device("meta"):
            build_backbone(cfg, ShapeSpec(channels=3))
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("ARCH", "mobilenet_v9", "MODEL.TORCHVISION: ValueError: Unknown model mobilenet_v9"),
        (
            "STAGES",
            ["features.3", "features.6", "features.12", "features.99"],
            "node: 'features.99' is not present in model",
        ),
        (
            "STAGES",
            ["features.3", "features.4", "features.6", "features.15"],
            "Strides 8 8 are not log2 contiguous",
        ),
        ("NORM", "LN", "MODEL.TORCHVISION: ValueError: norm 'LN' is not one of"),
        ("FREEZE_AT", 5, "MODEL.TORCHVISION: ValueError: freeze_at must be in 0..4, got 5"),
        ("OUT_FEATURES", ["c2", "c3"], "give one out_feature per stage"),
        ("WIDTH_MULT", 0.0, "MODEL.TORCHVISION.WIDTH_MULT 0.0: positive"),
    ],
)
def test_bad_keys_are_one_config_error_line(key, value, expected):
    cfg = torchvision_cfg()
    cfg.MODEL.TORCHVISION[key] = value
    assert expected in _build_error(cfg)


def test_bad_keys_name_the_fix():
    cfg = torchvision_cfg("resnet18")
    cfg.MODEL.TORCHVISION.WIDTH_MULT = 0.5
    assert "1.0 but for mobilenet_v2" in _build_error(cfg)
    cfg = torchvision_cfg()
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    assert "MODEL.FPN.IN_FEATURES ['res2', 'res3', 'res4', 'res5']: take them from " in (
        _build_error(cfg)
    )
    cfg = torchvision_cfg("shufflenet_v2_x0_5")
    assert "STAGES is empty and 'shufflenet_v2_x0_5' has no built-in stages" in _build_error(cfg)


def test_any_torchvision_classifier_with_explicit_stages():
    cfg = torchvision_cfg("shufflenet_v2_x0_5")
    cfg.MODEL.TORCHVISION.STAGES = ["maxpool", "stage2", "stage3", "stage4"]
    shapes = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up.output_shape()
    assert [(s.channels, s.stride) for s in shapes.values()] == [
        (24, 4),
        (48, 8),
        (96, 16),
        (192, 32),
    ]


# The hand-written MobileNetV2 these configs used before (stages m2..m5, removed): channels and
# stride of each stage, and its parameter count, as it measured them with each config's norm.
OLD_MV2_STAGES = {
    1.0: [(24, 4), (32, 8), (96, 16), (320, 32)],
    0.5: [(16, 4), (16, 8), (48, 16), (160, 32)],
}
OLD_MV2_PARAMETERS = {(1.0, "FrozenBN"): 1_780_160, (0.5, "GN"): 480_320}
# its FREEZE_AT 2 (stem + m2) froze these many parameters: torchvision's features.0 .. features.3
OLD_MV2_STEM_AND_M2_PARAMETERS = 14_576
MV2_CONFIGS = {
    "COCO MV2_from_R50_nd": lambda: load_config(config_path("MV2_from_R50_nd.yaml")),
    "COCO MV2_from_R50_kd_nd": lambda: load_config(config_path("MV2_from_R50_kd_nd.yaml")),
    "Base-Students/MV2-FPN": lambda: load_config(f"{REPO}/configs/Base-Students/MV2-FPN.yaml"),
    "demo teacher": lambda: load_demo_cfg(DEFAULT_TEACHER_CONFIG),
    "demo student": lambda: load_demo_cfg(DEFAULT_STUDENT_CONFIG),
}
# how many stages each config freezes (0: every layer trains, as the reference's MV2 runs)
MV2_FREEZE_AT = {
    "COCO MV2_from_R50_nd": 0,
    "COCO MV2_from_R50_kd_nd": 0,
    "Base-Students/MV2-FPN": 1,
    "demo teacher": 1,
    "demo student": 0,
}


@pytest.mark.parametrize("name", MV2_CONFIGS)
def test_mobilenet_v2_configs_keep_the_old_stage_layout(name):
    cfg = MV2_CONFIGS[name]()
    tv = cfg.MODEL.TORCHVISION
    assert cfg.MODEL.BACKBONE.NAME == "build_torchvision_fpn_backbone" and tv.ARCH == "mobilenet_v2"
    assert list(cfg.MODEL.FPN.IN_FEATURES) == list(tv.OUT_FEATURES) == ["c2", "c3", "c4", "c5"]
    assert tv.FREEZE_AT == MV2_FREEZE_AT[name]
    bottom_up = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up
    width = float(tv.WIDTH_MULT)
    assert [(s.channels, s.stride) for s in bottom_up.output_shape().values()] == OLD_MV2_STAGES[
        width
    ]
    parameters = list(bottom_up.parameters())
    assert sum(p.numel() for p in parameters) == OLD_MV2_PARAMETERS[(width, tv.NORM)]
    frozen = sum(p.numel() for p in parameters if not p.requires_grad)
    assert frozen == (OLD_MV2_STEM_AND_M2_PARAMETERS if tv.FREEZE_AT == 1 else 0)
    if tv.FREEZE_AT == 1:
        assert {
            n.split(".")[1] for n, p in bottom_up.body.named_parameters() if not p.requires_grad
        } == {"0", "1", "2", "3"}
    norms = {
        type(m)
        for m in bottom_up.modules()
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, FrozenBatchNorm2d))
    }
    assert norms == {FrozenBatchNorm2d if tv.NORM == "FrozenBN" else nn.GroupNorm}
