"""The shipped configs load, build (models, loss terms, ReviewKD levels) and carry the published
recipe and weights; config errors name the key and the file."""
import glob
import os

import pytest
import torch

from nd_det.classification.config import ConfigError, apply_overrides, load_config
from nd_det.classification.data import available_datasets
from nd_det.classification.loss_terms import TermContext, build_loss_terms
from nd_det.classification.models import available_classifiers, build_classifier
from nd_det.losses import ClassMeans

from .helpers import write_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs", "classification")
CONFIGS = sorted(p for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True)
                 if not os.path.basename(p).startswith("Base"))

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
    means = None
    if teacher is not None:
        assert cfg["distill"]["teacher"]["weights"] and cfg["distill"]["class_means"]
        means = ClassMeans(torch.randn(num_classes, teacher.embedding_dim),
                           torch.ones(num_classes, dtype=torch.int64))
    terms = build_loss_terms(cfg["distill"]["losses"], TermContext(student, teacher, means))
    assert list(terms)[0] == "ce"
    if "reviewkd" in terms:  # every pair's stage levels line up
        assert len(student.feature_channels) == len(teacher.feature_channels)
    if "nd" in terms and student.embedding_dim != teacher.embedding_dim:
        assert isinstance(terms["nd"].projection[2], torch.nn.Linear)


@pytest.mark.parametrize("pair", sorted(CIFAR_WEIGHTS))
def test_cifar_configs_carry_the_published_recipe(pair):
    kdpp, dkdpp, rkdpp, distpp = CIFAR_WEIGHTS[pair]
    cfgs = {m: load_config(os.path.join(CONFIG_DIR, "cifar100", pair, f"{m}.yaml"))
            for m in ("kdpp", "dkdpp", "reviewkdpp", "distpp")}
    for cfg in cfgs.values():
        solver = cfg["solver"]
        light = cfg["model"]["name"] in LIGHT_STUDENTS
        assert solver["lr"] == (0.02 if light else 0.1)
        assert (solver["epochs"], solver["batch_size"], solver["lr_milestones"],
                solver["weight_decay"], solver["nesterov"], solver["momentum"]) == (
            240, 128, [150, 180, 210], 5e-4, True, 0.9)
        assert cfg["distill"]["warm_up_epochs"] == 20
        assert cfg["distill"]["losses"]["ce"]["weight"] == 1.0
    losses = {m: c["distill"]["losses"] for m, c in cfgs.items()}
    assert (losses["kdpp"]["kd"]["weight"], losses["kdpp"]["nd"]["weight"]) == kdpp
    assert losses["kdpp"]["kd"]["temperature"] == 4.0
    dkd = losses["dkdpp"]["dkd"]
    assert (dkd["alpha"], dkd["beta"], losses["dkdpp"]["nd"]["weight"]) == dkdpp
    assert (dkd["weight"], dkd["temperature"]) == (1.0, 4.0)
    assert (losses["reviewkdpp"]["reviewkd"]["weight"], losses["reviewkdpp"]["nd"]["weight"]) == rkdpp
    assert "kd" not in losses["reviewkdpp"]   # ReviewKD++ has no logit KD
    assert (losses["distpp"]["dist"]["weight"], losses["distpp"]["nd"]["weight"]) == distpp


def test_imagenet_configs_carry_the_published_recipe():
    for path in glob.glob(os.path.join(CONFIG_DIR, "imagenet", "*_*", "*pp.yaml")):
        cfg = load_config(path)
        s = cfg["solver"]
        assert (s["epochs"], s["batch_size"], s["lr"], s["lr_milestones"], s["weight_decay"]) == (
            100, 512, 0.2, [30, 60, 90], 1e-4)
        assert cfg["distill"]["warm_up_epochs"] == 5
        for term in cfg["distill"]["losses"].values():
            assert term.get("temperature", 1.0) == 1.0


def test_unknown_keys_and_bad_files_are_named(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"solver": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'solver\.epoch'; valid keys "
                                          r"here: batch_size, clip_grad_norm, epochs"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml not found \(the _BASE_ of .*child\.yaml\)"):
        load_config(write_yaml(tmp_path / "child.yaml", {"_BASE_": "missing.yaml"}))
    write_yaml(tmp_path / "a.yaml", {"_BASE_": "b.yaml"})
    write_yaml(tmp_path / "b.yaml", {"_BASE_": "a.yaml"})
    with pytest.raises(ConfigError, match=r"_BASE_ cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(str(tmp_path / "a.yaml"))
    cfg = load_config(write_yaml(tmp_path / "ok.yaml", {"model": {"name": "resnet8"}}))
    with pytest.raises(ConfigError, match=r"unknown key 'solver\.lrate'; valid keys here: "):
        apply_overrides(cfg, ["solver.lrate=0.1"])
    with pytest.raises(ConfigError, match=r"override 'solver\.lr' must look like section\.key=value"):
        apply_overrides(cfg, ["solver.lr"])


def test_base_chain_overrides_and_loss_lists(tmp_path):
    write_yaml(tmp_path / "base.yaml", {
        "solver": {"lr": 0.5, "epochs": 3},
        "distill": {"losses": {"ce": {"weight": 1.0}, "kd": {"weight": 2.0}}}})
    child = write_yaml(tmp_path / "child.yaml", {
        "_BASE_": "base.yaml", "solver": {"epochs": 7},
        "distill": {"losses": {"ce": {"weight": 1.0}, "dkd": {"alpha": 1.0}}}})
    cfg = load_config(child)
    assert (cfg["solver"]["lr"], cfg["solver"]["epochs"]) == (0.5, 7)
    assert cfg["solver"]["weight_decay"] == 5e-4                    # from DEFAULTS
    assert list(cfg["distill"]["losses"]) == ["ce", "dkd"]          # replaced, not merged
    cfg = apply_overrides(cfg, ["solver.lr=0.01", "distill.losses.dkd.beta=2",
                                "solver.lr_milestones=[1, 2]"])
    assert cfg["solver"]["lr"] == 0.01 and cfg["solver"]["lr_milestones"] == [1, 2]
    assert cfg["distill"]["losses"]["dkd"] == {"alpha": 1.0, "beta": 2}
