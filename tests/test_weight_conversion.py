"""torchvision -> detectron2 ResNet weight converter (nd_det.modeling.weight_conversion and its
CLI); torchvision files of the torchvision builder's students are refused with what to do."""

import importlib.util
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from nd_det.config import add_backbone_config
from nd_det.errors import ConfigError
from nd_det.modeling.weight_conversion import (
    DEFAULT_KEY_PREFIX,
    convert_torchvision_file,
    convert_torchvision_state_dict,
    load_torchvision_state_dict,
)

REPO = os.path.join(os.path.dirname(__file__), "..")
STUDENT_CONFIGS = os.path.join(REPO, "configs", "Base-Students")
CONVERTER = os.path.join(REPO, "tools", "convert_torchvision_to_d2.py")


def detector_cfg(fragment):
    """Faster R-CNN FPN with a student backbone fragment, FrozenBN (as with ImageNet weights)."""
    cfg = get_cfg()
    add_backbone_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    cfg.merge_from_file(os.path.join(STUDENT_CONFIGS, fragment))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    return cfg


class RecordingCheckpointer(DetectionCheckpointer):
    """detectron2's loader, keeping the incompatible keys it reports."""

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def load_and_check_backbone_keys(model, path):
    """Load ``path`` with detectron2's DetectionCheckpointer and assert every bottom-up key of the
    model came from the file (none missing, none unexpected, no shape mismatch, equal values)."""
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(path)
    incompatible = checkpointer.incompatible
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []
    assert [k for k in incompatible.missing_keys if k.startswith(DEFAULT_KEY_PREFIX)] == []
    model_backbone = {
        k: v for k, v in model.state_dict().items() if k.startswith(DEFAULT_KEY_PREFIX)
    }
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            saved = {k: torch.as_tensor(v) for k, v in pickle.load(f)["model"].items()}
    else:
        saved = torch.load(path, map_location="cpu", weights_only=True)["model"]
    assert set(saved) == set(model_backbone)
    for key, value in saved.items():
        assert torch.equal(model_backbone[key], value), key
    return saved


def random_resnet18_state_dict(seed=0):
    """A randomly initialised torchvision resnet18 with non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.1
            module.running_mean = torch.randn(n, generator=generator) * 0.1
            module.running_var = torch.rand(n, generator=generator) + 0.5
    return model


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_resnet18_converts_loads_and_matches_torchvision(tmp_path, suffix):
    reference = random_resnet18_state_dict().eval()
    source = str(tmp_path / "resnet18.pth")
    torch.save(reference.state_dict(), source)
    output = str(tmp_path / ("resnet18_d2" + suffix))
    assert convert_torchvision_file("resnet18", source, output) == 100

    model = build_model(detector_cfg("R18-FPN.yaml")).eval()
    load_and_check_backbone_keys(model, output)

    bottom_up = model.backbone.bottom_up
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        torch.testing.assert_close(bottom_up.stem(x), expected, rtol=1e-4, atol=1e-4)
        outputs = bottom_up(x)
        for index, name in enumerate(["res2", "res3", "res4", "res5"], start=1):
            expected = getattr(reference, f"layer{index}")(expected)
            torch.testing.assert_close(outputs[name], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch,depth", [("resnet34", 34), ("resnet50", 50)])
def test_deeper_resnets_map_onto_detectron2_names_and_shapes(arch, depth):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth == 34 else 256
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    with torch.device("meta"):
        torchvision_model = getattr(torchvision.models, arch)()
        detectron2_model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    converted = convert_torchvision_state_dict(torchvision_model.state_dict(), arch, prefix="")
    expected = {k: tuple(v.shape) for k, v in detectron2_model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_classifier_of_any_size_is_dropped():
    model = torchvision.models.resnet18(num_classes=10)
    converted = convert_torchvision_state_dict(model.state_dict(), "resnet18")
    assert not any(".fc." in k or k.endswith("fc.weight") for k in converted)
    assert len(converted) == 100


def test_unknown_architecture_is_rejected(tmp_path):
    with pytest.raises(
        ConfigError, match="Unknown architecture 'vgg16'; supported: resnet18, resnet34, resnet50."
    ):
        convert_torchvision_file("vgg16", str(tmp_path / "a.pth"), str(tmp_path / "b.pkl"))


def test_torchvision_builder_architectures_need_no_conversion(tmp_path):
    source = str(tmp_path / "mobilenet_v2.pth")
    torch.save(torchvision.models.mobilenet_v2().state_dict(), source)
    with pytest.raises(ConfigError) as error:
        convert_torchvision_file("mobilenet_v2", source, str(tmp_path / "b.pkl"))
    assert str(error.value).startswith(
        "torchvision's mobilenet_v2 file needs no conversion: give it as it is as MODEL.WEIGHTS "
        "of a student with MODEL.BACKBONE.NAME build_torchvision_fpn_backbone and "
        "MODEL.TORCHVISION.ARCH mobilenet_v2"
    )
    assert not (tmp_path / "b.pkl").exists()


def test_files_that_are_not_state_dicts_are_rejected(tmp_path):
    missing = str(tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match=r"--input .*absent.pth: FileNotFoundError: .*check the"):
        load_torchvision_state_dict(missing)

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"--input .*notes.pth: UnpicklingError: .*complete and"):
        load_torchvision_state_dict(str(text))

    for name, content in (("list.pth", [torch.zeros(2)]), ("checkpoint.pth", {"epoch": 3})):
        torch.save(content, str(tmp_path / name))
        with pytest.raises(ConfigError, match=rf"--input .*{name} is not a state dict: give"):
            load_torchvision_state_dict(str(tmp_path / name))


def test_keys_of_another_architecture_are_named():
    resnet34 = torchvision.models.resnet34().state_dict()
    with pytest.raises(ConfigError) as error:
        convert_torchvision_state_dict(resnet34, "resnet18")
    message = str(error.value)
    assert message.startswith(
        "The keys of the state dict do not match torchvision's resnet18: "
        "unexpected keys: layer1.2.bn1.bias"
    )
    assert "convert it with arch 'resnet34'" in message

    truncated = torchvision.models.resnet18().state_dict()
    del truncated["layer4.1.conv2.weight"]
    truncated["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    with pytest.raises(ConfigError) as error:
        convert_torchvision_state_dict(truncated, "resnet18")
    message = str(error.value)
    assert "missing keys: layer4.1.conv2.weight" in message
    assert (
        "shape mismatches: layer1.0.conv1.weight (32, 64, 3, 3) in the file vs "
        "(64, 64, 3, 3) in the model"
    ) in message


def test_bad_output_name_is_rejected(tmp_path):
    source = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18().state_dict(), source)
    with pytest.raises(ConfigError, match=r"--output .*out.yaml must end in .pkl .* or .pth"):
        convert_torchvision_file("resnet18", source, str(tmp_path / "out.yaml"))


def test_command_line_tool_writes_the_file_in_a_subprocess(tmp_path):
    source = str(tmp_path / "resnet18.pth")
    torch.save(random_resnet18_state_dict().state_dict(), source)
    output = tmp_path / "out" / "resnet18_d2.pkl"
    done = subprocess.run(
        [
            sys.executable,
            CONVERTER,
            "--arch",
            "resnet18",
            "--input",
            source,
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"Wrote 100 tensors of resnet18 to {output}" in done.stdout
    with open(output, "rb") as f:
        saved = pickle.load(f)
    assert saved["conversion"]["input_format"] == "RGB"
    assert saved["conversion"]["pixel_mean"] == [123.675, 116.28, 103.53]
    assert saved["conversion"]["pixel_std"] == [58.395, 57.12, 57.375]
    assert (
        saved["model"][DEFAULT_KEY_PREFIX + "res2.0.conv1.norm.running_mean"]
        == torch.load(source, weights_only=True)["layer1.0.bn1.running_mean"].numpy()
    ).all()


def load_converter_tool():
    spec = importlib.util.spec_from_file_location("convert_torchvision_to_d2", CONVERTER)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_command_line_tool_reports_bad_input_on_stderr(tmp_path, capsys):
    source = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18().state_dict(), source)
    output = tmp_path / "wrong.pkl"
    status = load_converter_tool().main(
        ["--arch", "resnet34", "--input", source, "--output", str(output)]
    )
    stderr = capsys.readouterr().err
    assert status == 2
    assert stderr.startswith(f"ERROR: The keys of {source} ")
    assert "do not match torchvision's resnet34" in stderr
    assert "convert it with arch 'resnet18'" in stderr
    assert not output.exists()


def test_help_documents_the_input_normalisation(capsys):
    with pytest.raises(SystemExit) as done:
        load_converter_tool().parse_args(["--help"])
    assert done.value.code == 0
    stdout = capsys.readouterr().out
    assert 'INPUT.FORMAT: "RGB"' in stdout
    assert "MODEL.PIXEL_MEAN: [123.675, 116.28, 103.53]" in stdout
    assert "MODEL.PIXEL_STD: [58.395, 57.12, 57.375]" in stdout
    assert (
        "build_torchvision_fpn_backbone (MobileNetV2, MobileNetV3, ...)\nneed no conversion"
        in stdout
    )
