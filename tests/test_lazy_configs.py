"""LazyConfig distillation configs: the R50 <- R101 ReviewKD++ LazyConfig is the yacs one (model,
teacher, terms, optimizer, LR schedule, data, run settings), the LSJ student is detectron2's own
recipe under DistillRCNN, and every mistake of a LazyConfig run is one ERROR line, exit 2, before
anything is written (tools/lazy_train_net.py)."""

from collections.abc import Sequence

import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import build_augmentation
from detectron2.model_zoo import get_config
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.solver import build_lr_scheduler, build_optimizer

from nd_det.class_means import ClassMeanAccumulator, save_class_means
from nd_det.config import load_config
from nd_det.engine import lazy_train_net
from nd_det.engine.lazy_config import build_on_meta, load_run_config, run_view
from nd_det.modeling import DistillRCNN
from nd_det.modeling.shapes import build_on_meta as build_yacs_on_meta
from nd_det.modeling.teacher import TeacherSpec, teacher_identity

from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import config_path

LAZY_R50 = config_path("R50_from_R101_nd.py")
LAZY_LSJ = config_path("R50_LSJ_from_LSJ_R101_nd.py")


def _means(path, spec, classes=80, dim=1024):
    """A class-means table of the teacher ``spec`` (values do not matter here)."""
    acc = ClassMeanAccumulator(classes + 1, dim)
    acc.update(torch.ones(classes + 1, dim), torch.arange(classes + 1))
    save_class_means(str(path), acc.finalize(teacher_identity(spec)))
    return str(path)


def _attributes(model):
    """Every module's plain settings (numbers, strings, flags, and those of the small objects
    it holds: matchers, box transforms, anchor generators' values), by module name."""

    def plain(value, depth=0):
        if isinstance(value, (bool, int, float, str, type(None))):
            return value
        if isinstance(value, Sequence):  # lists, tuples, a LazyConfig's ListConfig
            return [plain(v, depth) for v in value]
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        if depth == 0 and hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
            return {k: plain(v, 1) for k, v in vars(value).items() if not k.startswith("_")}
        return type(value).__name__

    return {
        name: {k: plain(v) for k, v in vars(m).items() if not k.startswith("_")}
        for name, m in model.named_modules()
    }


def _augmentations(mapper):
    """The augmentations' settings; one short-edge size is drawn the same way by either style
    (detectron2's yacs test resize is a "choice" of (800, 800), its LazyConfig's a "range")."""
    settings = []
    for aug in mapper.augmentations.augs:
        values = {k: _attributes_value(v) for k, v in vars(aug).items()}
        if len(set(values.get("short_edge_length", (0, 1)))) == 1:
            values.pop("sample_style"), values.pop("is_range")
        settings.append((type(aug).__name__, values))
    return settings


def _attributes_value(value):
    return tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def test_lazyconfig_r50_from_r101_nd_is_the_yacs_config(tmp_path):
    yacs = load_config(config_path("R50_from_R101_nd.yaml"), ["MODEL.DEVICE", "cpu"], freeze=False)
    means = _means(tmp_path / "means.pth", TeacherSpec.from_cfg(yacs))
    yacs.MODEL.DISTILL.CLASS_MEANS = means
    yacs.freeze()
    lazy = load_run_config(LAZY_R50, [f"model.distill_terms.class_means={means}"])
    view = run_view(lazy)
    ours, theirs = build_on_meta(lazy.model), build_yacs_on_meta(yacs)
    assert type(ours) is type(theirs) is DistillRCNN
    assert str(ours) == str(theirs)  # every module, its sizes and layers, the terms' modules
    assert _attributes(ours) == _attributes(theirs)  # RPN / RoI sampling, matchers, thresholds
    assert ours.teacher.identity == theirs.teacher.identity
    assert str(ours.teacher.model) == str(theirs.teacher.model)
    assert _attributes(ours.teacher.model) == _attributes(theirs.teacher.model)
    assert [t.weight for t in ours.distill_terms] == [1.4, 1.0]
    # MODEL.DISTILL whole (every term's parameters), and the run's settings
    assert view.MODEL.DISTILL == yacs.MODEL.DISTILL
    for key in (
        "MODEL.WEIGHTS",
        "SOLVER.MAX_ITER",
        "SOLVER.IMS_PER_BATCH",
        "SOLVER.BASE_LR",
        "SOLVER.CHECKPOINT_PERIOD",
        "TEST.EVAL_PERIOD",
        "SOLVER.AMP.ENABLED",
        "SEED",
        "DATASETS.TRAIN",
        "DATASETS.TEST",
        "DATALOADER.NUM_WORKERS",
        "INPUT.FORMAT",
        "MODEL.PIXEL_MEAN",
        "MODEL.PIXEL_STD",
    ):
        mine, yours = view, yacs
        for part in key.split("."):
            mine, yours = mine[part], yours[part]
        assert mine == yours, key
    # the optimizer's parameter groups and the LR at the schedule's corners
    optimizer = lazy.optimizer
    optimizer.params.model = ours
    a, b = instantiate(optimizer), build_optimizer(yacs, theirs)
    # (detectron2's yacs builder asks torch for its foreach kernels; the same update)
    settings = [
        [{k: v for k, v in g.items() if k not in ("params", "foreach")} for g in o.param_groups]
        for o in (a, b)
    ]
    assert settings[0] == settings[1]
    assert [len(g["params"]) for g in a.param_groups] == [len(g["params"]) for g in b.param_groups]
    multiplier = instantiate(lazy.lr_multiplier)
    schedule = build_lr_scheduler(yacs, b)._multiplier
    for it in (0, 1, 500, 999, 1000, 119999, 120000, 159999, 160000, 179999):
        assert multiplier(it / 180000) == pytest.approx(schedule(it / 180000)), it
    # the data: the same mapper (augmentations, format, masks) for training and test
    for is_train, node in ((True, lazy.dataloader.train), (False, lazy.dataloader.test)):
        mapper, reference = instantiate(node.mapper), DatasetMapper(yacs, is_train)
        assert _augmentations(mapper) == _augmentations(reference)
        assert len(build_augmentation(yacs, is_train)) == len(reference.augmentations.augs)
        assert {k: v for k, v in vars(mapper).items() if k != "augmentations"} == {
            k: v for k, v in vars(reference).items() if k != "augmentations"
        }


def test_lsj_lazyconfig_student_is_detectron2s_recipe_under_the_lsj_r101_teacher(tmp_path):
    lazy = load_run_config(LAZY_LSJ, [])
    values = dict(lazy.model.teacher, student_format="BGR", num_classes=80)
    values.pop("_target_")
    means = _means(tmp_path / "means.pth", TeacherSpec(**values))
    lazy = load_run_config(LAZY_LSJ, [f"model.distill_terms.class_means={means}"])
    model = build_on_meta(lazy.model)
    recipe = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    with torch.device("meta"):
        alone = instantiate(recipe.model)
    # the recipe's model, then the terms
    assert str(model).replace("DistillRCNN", "GeneralizedRCNN", 1).startswith(str(alone)[:-2])
    mine, recipes = _attributes(model), _attributes(alone)
    assert {name: {k: mine[name][k] for k in values} for name, values in recipes.items()} == recipes
    assert isinstance(model.roi_heads, StandardROIHeads) and model.roi_heads.mask_on
    assert (
        model.teacher.identity["teacher_config"] == "new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py"
    )
    assert [t.name for t in model.distill_terms] == ["reviewkd", "nd"]
    view = run_view(lazy)  # the recipe's own schedule, batch and precision
    assert (view.SOLVER.IMS_PER_BATCH, view.SOLVER.MAX_ITER, view.SOLVER.BASE_LR) == (
        64,
        184375,
        0.1,
    )
    assert view.SOLVER.AMP.ENABLED and view.MODEL.WEIGHTS == ""


# ---------------------------------------------------------------------- mistakes: one line each
@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    """--dataset entries of two tiny sets and the overrides naming them (2 classes, CPU)."""
    root = tmp_path_factory.mktemp("sets")
    args = []
    for name, seed in (("lazy_bad_train", 1), ("lazy_bad_val", 2)):
        json_file, images = write_tiny_coco(root / name, num_images=2, seed=seed)
        args += ["--dataset", name, str(json_file), str(images)]
    return args + [
        "dataloader.train.dataset.names=lazy_bad_train",
        "dataloader.test.dataset.names=lazy_bad_val",
        "model.roi_heads.num_classes=2",
        "train.device=cpu",
    ]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["train.max_itr=10"],
            f"--config-file {LAZY_R50} has no key 'train.max_itr'; fix the override or the file",
        ),
        (
            ["model.distill_terms.nd.weigth=2"],
            f"--config-file {LAZY_R50} has no key 'model.distill_terms.nd.weigth'",
        ),
        (["model.teacher=null"], "DistillRCNN: distillation terms need a teacher; give teacher="),
        (["train.max_iter=0"], "train.max_iter 0: give 1 or more"),
        (
            ["train.max_iter"],  # hydra's parse error: before, a traceback
            "Error parsing override 'train.max_iter' missing EQUAL at '<EOF>'; write each "
            "override as key=value",
        ),
        (
            ["dataloader.train.dataset.names=my_set"],
            "dataloader.train.dataset.names 'my_set' is not registered: add --dataset my_set",
        ),
        (
            ["--eval-only", "train.init_checkpoint="],
            "--eval-only needs train.init_checkpoint (the student checkpoint to evaluate)",
        ),
    ],
    ids=[
        "unknown_key",
        "unknown_term_key",
        "no_teacher",
        "run_key",
        "override_syntax",
        "dataset",
        "eval_weights",
    ],
)
def test_lazyconfig_mistake_is_one_line_before_anything_is_written(
    tmp_path, capsys, tiny_sets, extra, expected
):
    output = tmp_path / "out"
    flags = [e for e in extra if e.startswith("--")]
    overrides = [e for e in extra if not e.startswith("--")]
    argv = ["--config-file", LAZY_R50, *flags, *tiny_sets, f"train.output_dir={output}"]
    with pytest.raises(SystemExit) as stop:
        lazy_train_net.main(argv + overrides)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    errors = [line for line in err.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and expected in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert not output.exists()


def test_a_distillrcnn_lazyconfig_without_teacher_node_is_one_line(tmp_path, capsys):
    config = tmp_path / "no_teacher.py"
    config.write_text(
        f"from detectron2.config import LazyConfig\n"
        f"_cfg = LazyConfig.load({LAZY_R50!r})\n"
        "model, dataloader, optimizer, train, lr_multiplier = (_cfg.model, _cfg.dataloader, "
        "_cfg.optimizer, _cfg.train, _cfg.lr_multiplier)\n"
        "del model.teacher\n"
    )
    with pytest.raises(SystemExit) as stop:
        lazy_train_net.main(["--config-file", str(config), f"train.output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.strip().splitlines()[-1] == (
        "ERROR: model is a DistillRCNN without model.teacher: give model.teacher = "
        "L(FrozenTeacher.from_values)(...) and model.distill_terms = distill_terms(...) "
        "(nd_det.modeling.lazy; configs/COCO-Distill/*.py)"
    )
    assert not (tmp_path / "o").exists()
