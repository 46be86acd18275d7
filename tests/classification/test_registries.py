"""The classification registries are fvcore registries keyed by config names: unknown names get
one message listing the known ones, a name registered twice is refused, and a new entry works
through the public functions."""

import pytest
import torch
from fvcore.common.registry import Registry

from nd_det.classification.config import get_cfg
from nd_det.classification.data import available_datasets, build_dataset
from nd_det.classification.data.registry import DATASET_REGISTRY
from nd_det.classification.models import (
    available_classifiers,
    build_classifier,
    classifier_info,
    register_classifier,
)
from nd_det.classification.models.cifar_resnet import CifarResNet
from nd_det.classification.models.registry import CLASSIFIER_REGISTRY
from nd_det.distill import (
    DISTILL_TERM_REGISTRY,
    DistillTerm,
    available_distill_terms,
    register_distill_term,
)
from nd_det.errors import ConfigError


def test_the_registries_are_fvcore_registries_with_every_entry():
    for registry in (CLASSIFIER_REGISTRY, DISTILL_TERM_REGISTRY, DATASET_REGISTRY):
        assert isinstance(registry, Registry)
    # one registry of distillation terms for both tasks; the config has a node for each term
    assert available_distill_terms() == ["dist", "dkd", "kd", "nd", "reviewkd"]
    assert all(name in get_cfg().distill for name in available_distill_terms())
    assert available_datasets() == ["cifar100", "digits", "fashion_mnist", "image_folder"]
    assert {"resnet20", "wrn_40_2", "shufflenet_v2", "resnet50", "mobilenet_v1"} <= set(
        available_classifiers()
    )
    assert available_classifiers() == sorted(name for name, _ in CLASSIFIER_REGISTRY)
    info = classifier_info("wrn_40_2")
    assert (info.family, info.description) == ("cifar", "Wide ResNet-40-2")


def test_unknown_names_list_the_available_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown classifier 'resnet9'; available: "
        r"deit_b_distilled, mobilenet_v1, mobilenet_v2_cifar, "
        r"regnet_y_16gf, resnet101, ",
    ):
        build_classifier("resnet9", 10)
    with pytest.raises(ConfigError, match=r"unknown classifier 'vgg'; available: .*, wrn_40_2"):
        classifier_info("vgg")
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset data.name='mnist'; available: cifar100, "
        r"digits, fashion_mnist, image_folder",
    ):
        cfg = get_cfg()
        cfg.data.name = "mnist"
        build_dataset(cfg.data, True, False)


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match=r"classifier 'resnet20' is registered twice"):
        register_classifier("resnet20", "cifar", "again")(lambda num_classes, in_channels: None)

    class Twice(DistillTerm):
        name = "kd"

    with pytest.raises(ValueError, match=r"distillation term 'kd' is registered twice"):
        register_distill_term(Twice)

    class Nameless(DistillTerm):
        pass

    with pytest.raises(ValueError, match=r"distillation term needs a non-empty name"):
        register_distill_term(Nameless)


def test_a_registered_classifier_builds_by_name():
    name = "resnet8_test_registry"

    @register_classifier(name, "cifar", "a ResNet-8 registered by a test")
    def build(num_classes, in_channels=3):
        return CifarResNet(8, (16, 16, 32, 64), num_classes, in_channels)

    try:
        model = build_classifier(name, 4, in_channels=1)
        assert model(torch.randn(2, 1, 16, 16)).logits.shape == (2, 4)
        assert classifier_info(name).builder is build and name in available_classifiers()
    finally:
        CLASSIFIER_REGISTRY._obj_map.pop(name)  # leave the registry as the package built it
