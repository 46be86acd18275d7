"""Every registered classifier: logits, embedding and ReviewKD stage features of the documented
shapes, on a CIFAR-sized and an ImageNet-sized input."""

import pytest
import torch

from nd_det.classification.models import available_classifiers, build_classifier, classifier_info
from nd_det.errors import ConfigError

NUM_CLASSES = 7

# documented embedding size and stage features (channels, size) at 32x32 (CIFAR family) or
# 224x224 (ImageNet family); the last level is always the embedding as (D, 1, 1)
DOCUMENTED = {
    "resnet20": (64, [(16, 32), (32, 16), (64, 8), (64, 1)]),
    "resnet56": (64, [(16, 32), (32, 16), (64, 8), (64, 1)]),
    "resnet8x4": (256, [(64, 32), (128, 16), (256, 8), (256, 1)]),
    "resnet32x4": (256, [(64, 32), (128, 16), (256, 8), (256, 1)]),
    "wrn_40_1": (64, [(16, 32), (32, 16), (64, 8), (64, 1)]),
    "wrn_40_2": (128, [(32, 32), (64, 16), (128, 8), (128, 1)]),
    "shufflenet_v1": (960, [(240, 16), (480, 8), (960, 4), (960, 1)]),
    "shufflenet_v2": (1024, [(116, 16), (232, 8), (464, 4), (1024, 1)]),
    "mobilenet_v2_cifar": (1280, [(12, 16), (16, 8), (48, 4), (160, 2), (1280, 1)]),
    "resnet50_cifar": (2048, [(256, 32), (512, 16), (1024, 8), (2048, 4), (2048, 1)]),
    "resnet18": (512, [(64, 56), (128, 28), (256, 14), (512, 7), (512, 1)]),
    "resnet34": (512, [(64, 56), (128, 28), (256, 14), (512, 7), (512, 1)]),
    "resnet50": (2048, [(256, 56), (512, 28), (1024, 14), (2048, 7), (2048, 1)]),
    "resnet101": (2048, [(256, 56), (512, 28), (1024, 14), (2048, 7), (2048, 1)]),
    "resnet152": (2048, [(256, 56), (512, 28), (1024, 14), (2048, 7), (2048, 1)]),
    "mobilenet_v1": (1024, [(128, 56), (256, 28), (512, 14), (1024, 7), (1024, 1)]),
    "regnet_y_16gf": (3024, [(224, 56), (448, 28), (1232, 14), (3024, 7), (3024, 1)]),
}
# the transformers take one input size and have no stage maps: test_paper_models.py


def test_every_published_model_is_registered():
    missing = sorted(set(DOCUMENTED) - set(available_classifiers()))
    assert not missing


def _check(model, out, batch):
    assert out.logits.shape == (batch, NUM_CLASSES)
    assert out.embedding.shape == (batch, model.embedding_dim)
    assert [f.shape[1] for f in out.features] == model.feature_channels
    assert all(f.shape[0] == batch for f in out.features)
    # the last level is the embedding itself, and levels never grow spatially
    assert torch.equal(out.features[-1].flatten(1), out.embedding)
    # the pre-ReLU maps are the same levels (test_preact_features.py checks their values)
    assert [f.shape for f in out.preact_features] == [f.shape for f in out.features]
    sizes = [f.shape[-1] for f in out.features]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    # logits are the linear layer applied to the embedding
    torch.testing.assert_close(out.logits, model.fc(out.embedding))
    return sizes


@pytest.mark.parametrize(
    "name", [n for n in available_classifiers() if classifier_info(n).family != "vit"]
)
def test_shapes_on_cifar_and_imagenet_sized_inputs(name):
    """CIFAR designs at 32x32 (documented shapes) and 64x64 (every map twice as large);
    ImageNet designs at 112x112 (the documented 224x224 maps halved, rounded up; a quarter of the
    cost of 224) and at 32x32."""
    torch.manual_seed(0)
    model = build_classifier(name, NUM_CLASSES).eval()
    cifar = classifier_info(name).family == "cifar"
    with torch.no_grad():
        if cifar:
            small = _check(model, model(torch.randn(2, 3, 32, 32)), 2)
            large = _check(model, model(torch.randn(1, 3, 64, 64)), 1)
            assert large[:-1] == [2 * s for s in small[:-1]]
            documented_sizes = small
        else:
            large = _check(model, model(torch.randn(1, 3, 112, 112)), 1)
            _check(model, model(torch.randn(2, 3, 32, 32)), 2)
            documented_sizes = None
    if name in DOCUMENTED:
        dim, levels = DOCUMENTED[name]
        assert model.embedding_dim == dim
        assert model.feature_channels == [c for c, _ in levels]
        if cifar:
            assert documented_sizes == [s for _, s in levels]
        else:
            assert large == [(s + 1) // 2 for _, s in levels]


def test_grayscale_input_and_unknown_name():
    model = build_classifier("resnet8", 10, in_channels=1)
    assert model(torch.randn(2, 1, 28, 28)).logits.shape == (2, 10)
    with pytest.raises(ConfigError, match=r"unknown classifier 'resnet9'; available: .*resnet8"):
        build_classifier("resnet9", 10)


def test_torchvision_state_dict_loads_into_the_wrapper():
    import torchvision

    reference = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES).eval()
    model = build_classifier("resnet18", NUM_CLASSES).eval()
    model.load_state_dict(reference.state_dict(), strict=True)  # identical key names
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x))


# Parameter counts of the reference code's models, counted from CIFAR/Models/*.py (100 classes:
# resnet_cifar, wrn_cifar, resnetv2_cifar, mobilenetv2_cifar, shufflenetv1, shufflenetv2) and
# ImageNet/Models/{resnet,mobilenet}.py (1000 classes).  ShuffleNetV2's count pins its 1x1 stem.
REFERENCE_PARAMETERS = {
    "resnet20": (100, 278_324),
    "resnet56": (100, 861_620),
    "resnet8x4": (100, 1_233_540),
    "resnet32x4": (100, 7_433_860),
    "wrn_40_1": (100, 569_780),
    "wrn_40_2": (100, 2_255_156),
    "resnet50_cifar": (100, 23_705_252),
    "mobilenet_v2_cifar": (100, 812_836),
    "shufflenet_v1": (100, 949_258),
    "shufflenet_v2": (100, 1_355_528),
    "resnet18": (1000, 11_689_512),
    "resnet34": (1000, 21_797_672),
    "resnet50": (1000, 25_557_032),
    "mobilenet_v1": (1000, 4_231_976),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMETERS))
def test_parameter_count_equals_the_reference_model(name):
    num_classes, expected = REFERENCE_PARAMETERS[name]
    model = build_classifier(name, NUM_CLASSES)
    count = sum(p.numel() for p in model.parameters())
    # the same body; only the final linear layer depends on the class count
    count += (num_classes - NUM_CLASSES) * (model.embedding_dim + 1)
    assert count == expected
