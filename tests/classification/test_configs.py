"""The shipped configs load, build (models, loss terms, ReviewKD levels) and carry the published
recipe and weights; config errors name the key and the file."""

import glob
import os

import pytest
import torch

from nd_det.classification.builders import build_terms
from nd_det.classification.config import load_config
from nd_det.classification.data import available_datasets
from nd_det.classification.models import available_classifiers, build_classifier
from nd_det.errors import ConfigError

from .helpers import write_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs", "classification")
CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base")
)

# METHOD.md, CIFAR-100: KD++ (kd / nd), DKD++ (alpha / beta / nd), ReviewKD++ (kd / nd);
# DIST++ (dist / nd) from the reference code's DIST++ script (METHOD.md has none).
CIFAR_WEIGHTS = {
    "resnet56_resnet20": ((1.0, 2.0), (2.5, 4.0, 3.5), (1.2, 1.0), (2.0, 1.0)),
    "wrn_40_2_wrn_40_1": ((1.0, 1.5), (1.0, 6.0, 1.0), (5.0, 4.0), (2.5, 3.0)),
    "resnet32x4_resnet8x4": ((3.5, 2.0), (2.0, 8.0, 0.5), (8.0, 1.0), (1.5, 4.0)),
    "resnet50_mobilenet_v2": ((3.0, 0.5), (0.5, 8.0, 1.0), (6.0, 2.0), (7.0, 1.0)),
    "resnet32x4_shufflenet_v1": ((2.5, 1.5), (0.5, 8.0, 4.0), (7.0, 1.0), (2.5, 3.0)),
    "resnet32x4_shufflenet_v2": ((4.0, 0.5), (0.5, 6.0, 0.5), (8.0, 1.5), (3.0, 4.0)),
}
LIGHT_STUDENTS = {"mobilenet_v2_cifar", "shufflenet_v1", "shufflenet_v2"}
_MODELS = {}


def _model(name, num_classes):
    if (name, num_classes) not in _MODELS:
        _MODELS[name, num_classes] = build_classifier(name, num_classes)
    return _MODELS[name, num_classes]


def test_there_is_a_config_per_published_pair_and_method():
    names = {os.path.relpath(p, CONFIG_DIR) for p in CONFIGS}
    for pair in CIFAR_WEIGHTS:
        for method in ("kdpp", "dkdpp", "reviewkdpp", "distpp"):
            assert f"cifar100/{pair}/{method}.yaml" in names
    for pair in ("resnet34_resnet18", "resnet50_mobilenet_v1"):
        for method in ("kdpp", "dkdpp", "reviewkdpp"):
            assert f"imagenet/{pair}/{method}.yaml" in names
    assert {"quick/teacher.yaml", "quick/student.yaml", "quick/student_kdpp.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, CONFIG_DIR))
def test_config_loads_and_builds(path):
    cfg = load_config(path)
    assert cfg["model"]["name"] in available_classifiers()
    assert cfg["data"]["name"] in available_datasets()
    assert cfg["train"]["output_dir"].startswith("output/classification/")
    num_classes = {"cifar100": 100, "image_folder": 1000}.get(cfg["data"]["name"], 10)
    teacher_name = cfg["distill"]["teacher"]["name"]
    student = _model(cfg["model"]["name"], num_classes)
    teacher = _model(teacher_name, num_classes) if teacher_name else None
    if teacher is None:
        assert not cfg.distill.losses
        return
    assert cfg["distill"]["teacher"]["weights"] and cfg["distill"]["class_means"]
    means = torch.randn(num_classes, teacher.embedding_dim)
    terms = build_terms(cfg, student, teacher, means)
    assert list(terms) == list(cfg.distill.losses) and "nd" in terms
    if "reviewkd" in terms:  # every pair's stage levels line up
        assert len(student.feature_channels) == len(teacher.feature_channels)
    if "nd" in terms and student.embedding_dim != teacher.embedding_dim:
        assert isinstance(terms["nd"].projection[2], torch.nn.Linear)


@pytest.mark.parametrize("pair", sorted(CIFAR_WEIGHTS))
def test_cifar_configs_carry_the_published_recipe(pair):
    kdpp, dkdpp, rkdpp, distpp = CIFAR_WEIGHTS[pair]
    cfgs = {
        m: load_config(os.path.join(CONFIG_DIR, "cifar100", pair, f"{m}.yaml"))
        for m in ("kdpp", "dkdpp", "reviewkdpp", "distpp")
    }
    for cfg in cfgs.values():
        solver = cfg["solver"]
        light = cfg["model"]["name"] in LIGHT_STUDENTS
        assert solver["lr"] == (0.02 if light else 0.1)
        assert (
            solver["epochs"],
            solver["batch_size"],
            solver["lr_milestones"],
            solver["weight_decay"],
            solver["nesterov"],
            solver["momentum"],
        ) == (240, 128, [150, 180, 210], 5e-4, True, 0.9)
        assert cfg["distill"]["warm_up_epochs"] == 20
        assert cfg.model.label_smoothing == 0.0
    losses = {m: {n: c.distill[n] for n in c.distill.losses} for m, c in cfgs.items()}
    assert (losses["kdpp"]["kd"]["weight"], losses["kdpp"]["nd"]["weight"]) == kdpp
    assert losses["kdpp"]["kd"]["temperature"] == 4.0
    dkd = losses["dkdpp"]["dkd"]
    assert (dkd["alpha"], dkd["beta"], losses["dkdpp"]["nd"]["weight"]) == dkdpp
    assert (dkd["weight"], dkd["temperature"]) == (1.0, 4.0)
    assert (
        losses["reviewkdpp"]["reviewkd"]["weight"],
        losses["reviewkdpp"]["nd"]["weight"],
    ) == rkdpp
    assert "kd" not in losses["reviewkdpp"]  # ReviewKD++ has no logit KD
    assert (losses["distpp"]["dist"]["weight"], losses["distpp"]["nd"]["weight"]) == distpp


def test_imagenet_configs_carry_the_published_recipe():
    # (the DeiT pair has the DeiT recipe: test_new_imagenet_configs_carry_the_reference_numbers)
    for path in glob.glob(os.path.join(CONFIG_DIR, "imagenet", "*_*", "*pp.yaml")):
        if "deit" in path:
            continue
        cfg = load_config(path)
        s = cfg["solver"]
        assert (s["epochs"], s["batch_size"], s["lr"], s["lr_milestones"], s["weight_decay"]) == (
            100,
            512,
            0.2,
            [30, 60, 90],
            1e-4,
        )
        assert cfg["distill"]["warm_up_epochs"] == 5
        for name in cfg.distill.losses:
            assert cfg.distill[name].get("temperature", 1.0) == 1.0


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    """fvcore's checks, each one ConfigError line naming the key (or the file)."""
    cases = {
        "unknown key": (
            {"solver": {"epoch": 3}},
            [],
            r"--config-file .*bad\.yaml: KeyError: Non-existent config key: solver\.epoch",
        ),
        "wrong type": (
            {"solver": {"epochs": "two"}},
            [],
            r"Type mismatch .* with values \(240 vs. two\) for config key: solver.epochs",
        ),
        "unknown override": ({}, ["solver.lrate", "0.1"], r"Non-existent key: solver.lrate"),
        "odd overrides": ({}, ["solver.lr"], r"the KEY VALUE overrides: .*odd length"),
    }
    for data, opts, message in cases.values():
        path = write_yaml(tmp_path / "bad.yaml", data)
        with pytest.raises(ConfigError, match=message):
            load_config(path, opts)
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(write_yaml(tmp_path / "child.yaml", {"_BASE_": "missing.yaml"}))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: not a yaml config"):
        load_config(str(tmp_path / "list.yaml"))


def test_base_chain_overrides_and_term_nodes(tmp_path):
    """As detectron2's configs: _BASE_ relative to the file, sections and term nodes merge key by
    key, a list (distill.losses) is replaced, overrides are KEY VALUE pairs."""
    os.makedirs(tmp_path / "sub")
    write_yaml(
        tmp_path / "base.yaml",
        {
            "solver": {"lr": 0.5, "epochs": 3},
            "distill": {"losses": ["kd", "nd"], "kd": {"weight": 2.0, "temperature": 1.0}},
        },
    )
    child = write_yaml(
        tmp_path / "sub" / "child.yaml",
        {
            "_BASE_": "../base.yaml",
            "solver": {"epochs": 7},
            "distill": {"losses": ["dkd", "nd"], "kd": {"weight": 3.0}, "dkd": {"alpha": 2.0}},
        },
    )
    cfg = load_config(child)
    assert (cfg.solver.lr, cfg.solver.epochs, cfg.solver.weight_decay) == (0.5, 7, 5e-4)
    assert cfg.distill.losses == ["dkd", "nd"]  # replaced, not merged
    assert (cfg.distill.kd.weight, cfg.distill.kd.temperature) == (3.0, 1.0)  # merged
    assert (cfg.distill.dkd.alpha, cfg.distill.dkd.beta) == (2.0, 8.0)
    cfg = load_config(
        child,
        ["solver.lr", "1e-3", "distill.dkd.beta", "2.0", "solver.lr_milestones", "[1, 2]"],
    )
    assert cfg.solver.lr == 1e-3 and cfg.solver.lr_milestones == [1, 2]
    assert cfg.distill.dkd.beta == 2.0


# The reference code's KD++ numbers of the ImageNet pairs added for the paper's rows, as
# (teacher, its weights file, student, KD weight, ND weight): ImageNet/train.sh's KD++ table
# (r50 / r101 / r152 -> r18), ImageNet/ViT/train.sh's (ViT-S / ViT-B -> r18), ImageNet/DeiT/
# train.sh (RegNetY-16GF -> DeiT-B); the ResNet-152 -> ResNet-101 / 50 / 34 rows have no weights
# in the reference's scripts, and their configs take those of ResNet-152 -> ResNet-18.
REFERENCE_KDPP = {
    "resnet152_resnet101": ("resnet152", "resnet152-394f9c45.pth", "resnet101", 4.0, 2.0),
    "resnet152_resnet50": ("resnet152", "resnet152-394f9c45.pth", "resnet50", 4.0, 2.0),
    "resnet152_resnet34": ("resnet152", "resnet152-394f9c45.pth", "resnet34", 4.0, 2.0),
    "resnet152_resnet18": ("resnet152", "resnet152-394f9c45.pth", "resnet18", 4.0, 2.0),
    "resnet101_resnet18": ("resnet101", "resnet101-63fe2227.pth", "resnet18", 3.5, 4.0),
    "resnet50_resnet18": ("resnet50", "resnet50-0676ba61.pth", "resnet18", 4.0, 1.0),
    "vit_b_16_resnet18": ("vit_b_16", "vit_b_16-c867db91.pth", "resnet18", 2.0, 1.0),
    "vit_s_16_resnet18": (
        "vit_s_16",
        "vit_small_patch16_224.augreg_in21k_ft_in1k.pth",
        "resnet18",
        1.5,
        1.0,
    ),
    "regnet_y_16gf_deit_b_distilled": (
        "regnet_y_16gf",
        "regnet_y_16gf-3e4a00f9.pth",
        "deit_b_distilled",
        0.5,
        1.5,
    ),
}


@pytest.mark.parametrize("pair", sorted(REFERENCE_KDPP))
def test_new_imagenet_configs_carry_the_reference_numbers(pair):
    teacher, weights, student, kd, nd = REFERENCE_KDPP[pair]
    cfg = load_config(os.path.join(CONFIG_DIR, "imagenet", pair, "kdpp.yaml"))
    t = cfg["distill"]["teacher"]
    assert (t["name"], t["weights"], cfg["model"]["name"]) == (
        teacher,
        f"pretrained/{weights}",
        student,
    )
    assert os.path.isfile(os.path.join(REPO, t["config"]))
    losses = cfg.distill
    assert cfg.distill.losses == ["kd", "nd"]
    assert (losses["kd"]["weight"], losses["nd"]["weight"]) == (kd, nd)
    assert cfg["distill"]["warm_up_epochs"] == 5
    s, data = cfg["solver"], cfg["data"]
    if student != "deit_b_distilled":
        assert losses["kd"]["temperature"] == 1.0 and not losses["kd"].get("hard", False)
        return
    # ImageNet/DeiT: train.sh and the defaults of train_launch_distilled.py
    assert losses["kd"]["hard"] and cfg.model.label_smoothing == 0.1
    assert (s["optimizer"], s["betas"], s["weight_decay"], s["batch_size"], s["epochs"]) == (
        "adamw",
        [0.9, 0.95],
        0.3,
        2048,
        300,
    )
    assert s["lr"] == pytest.approx(1e-4 * 2048 / 256)
    assert (s["lr_schedule"], s["warmup_epochs"], s["min_lr"]) == ("warmup_cosine", 20, 1e-6)
    assert (data["augment"], data["mixup_alpha"], data["cutmix_alpha"]) == ("deit", 0.8, 1.0)
    assert cfg["model"]["drop_path_rate"] == 0.1


# The reference code's ReviewKD++ numbers, as (ReviewKD weight, ND weight, ABF mid channels,
# student maps before the ReLU?, teacher maps before the ReLU?):
# - CIFAR: weights from CIFAR/ReviewKD++/train_reviewkd.sh; mid channels from
#   CIFAR/ReviewKD++/models/reviewkd.py (mid_channel = min(512, in_channels[-1]) with the
#   student's deepest level 64, 256, 64, 1280, 960, 1024); CIFAR/ReviewKD++/train_reviewkd.py
#   calls the student with is_feat=True and the teacher with is_feat=True, preact=True.
# - ImageNet: weights from the table of ImageNet/ReviewKD++/train_reviewkd.sh; mid channels 512
#   (resnet18) and 256 (mobilenetv1) from ImageNet/ReviewKD++/models/reviewkd.py; the maps its
#   models/resnet.py returns are post-ReLU (an in-place ReLU follows), its models/mobilenet.py
#   returns extract_feature(preReLU=True).
REFERENCE_REVIEWKDPP = {
    "cifar100/resnet56_resnet20": (1.2, 1.0, 64, False, True),
    "cifar100/resnet32x4_resnet8x4": (8.0, 1.0, 256, False, True),
    "cifar100/wrn_40_2_wrn_40_1": (5.0, 4.0, 64, False, True),
    "cifar100/resnet50_mobilenet_v2": (6.0, 2.0, 512, False, True),
    "cifar100/resnet32x4_shufflenet_v1": (7.0, 1.0, 512, False, True),
    "cifar100/resnet32x4_shufflenet_v2": (8.0, 1.5, 512, False, True),
    "imagenet/resnet34_resnet18": (1.0, 3.0, 512, False, False),
    "imagenet/resnet50_mobilenet_v1": (8.0, 4.0, 256, True, False),
}
# The reference code's DKD++ numbers, as (alpha, beta, temperature, ND weight, ND warmed up?):
# - CIFAR: the DKD table of CIFAR/train_cifar.sh; CIFAR/train_cifar_dkd.py (--t default 4)
#   warms up only the DKD term.
# - ImageNet: the DKD++ table of ImageNet/train.sh; ImageNet/train_dkd.py (--t default 1)
#   multiplies the ND term by min(1, epoch / warm_up) too.
REFERENCE_DKDPP = {
    "cifar100/resnet56_resnet20": (2.5, 4.0, 4.0, 3.5, False),
    "cifar100/resnet32x4_resnet8x4": (2.0, 8.0, 4.0, 0.5, False),
    "cifar100/wrn_40_2_wrn_40_1": (1.0, 6.0, 4.0, 1.0, False),
    "cifar100/resnet50_mobilenet_v2": (0.5, 8.0, 4.0, 1.0, False),
    "cifar100/resnet32x4_shufflenet_v1": (0.5, 8.0, 4.0, 4.0, False),
    "cifar100/resnet32x4_shufflenet_v2": (0.5, 6.0, 4.0, 0.5, False),
    "imagenet/resnet34_resnet18": (0.8, 0.5, 1.0, 1.0, True),
    "imagenet/resnet50_mobilenet_v1": (0.8, 1.0, 1.0, 1.0, True),
}
# warm-up epochs of both reference scripts' --warm_up defaults (CIFAR 20, ImageNet 5)
REFERENCE_WARM_UP = {"cifar100": 20, "imagenet": 5}


def _built_terms(pair, method):
    cfg = load_config(os.path.join(CONFIG_DIR, pair, f"{method}.yaml"))
    num_classes = 100 if pair.startswith("cifar100") else 1000
    student = _model(cfg["model"]["name"], num_classes)
    teacher = _model(cfg["distill"]["teacher"]["name"], num_classes)
    terms = build_terms(cfg, student, teacher, torch.randn(num_classes, teacher.embedding_dim))
    return cfg, terms


@pytest.mark.parametrize("pair", sorted(REFERENCE_REVIEWKDPP))
def test_reviewkdpp_configs_build_the_reference_terms(pair):
    weight, nd_weight, mid, student_preact, teacher_preact = REFERENCE_REVIEWKDPP[pair]
    cfg, terms = _built_terms(pair, "reviewkdpp")
    assert list(terms) == ["reviewkd", "nd"]
    review = terms["reviewkd"]
    assert (review.weight, review.warm_up) == (weight, True)
    assert {abf.reduce[0].out_channels for abf in review.fusion.abfs} == {mid}
    assert (review.student_preact, review.teacher_preact) == (student_preact, teacher_preact)
    assert (terms["nd"].weight, terms["nd"].warm_up) == (nd_weight, False)
    assert cfg["distill"]["warm_up_epochs"] == REFERENCE_WARM_UP[pair.split("/")[0]]


@pytest.mark.parametrize("pair", sorted(REFERENCE_DKDPP))
def test_dkdpp_configs_build_the_reference_terms(pair):
    alpha, beta, temperature, nd_weight, nd_warm_up = REFERENCE_DKDPP[pair]
    cfg, terms = _built_terms(pair, "dkdpp")
    assert list(terms) == ["dkd", "nd"]
    dkd = terms["dkd"]
    assert (dkd.weight, dkd.alpha, dkd.beta, dkd.temperature, dkd.warm_up) == (
        1.0,
        alpha,
        beta,
        temperature,
        True,
    )
    assert (terms["nd"].weight, terms["nd"].warm_up) == (nd_weight, nd_warm_up)
    assert cfg["distill"]["warm_up_epochs"] == REFERENCE_WARM_UP[pair.split("/")[0]]
