"""Validation of ``MODEL.TORCHVISION`` (torchvision classification models as student
backbones): :func:`check_torchvision_config` names the first bad key, its value and the valid
choices in one ConfigError line, before any model is built.

It builds nothing real: the architecture's graph and its stage shapes come from a meta-device
copy (:mod:`.torchvision_stages`), cached per architecture, so the check costs a fraction of a
second the first time and nothing after.
"""

import math

from ...errors import ConfigError
from ...utils.text import short_list
from .norm_conversion import BATCH_NORM_CHOICES
from .torchvision_stages import (
    TORCHVISION_DEFAULT_STAGES,
    WIDTH_MULT_ARCHS,
    graph_node_names,
    is_graph_node,
    stage_shapes,
    torchvision_classifiers,
)

__all__ = ["TORCHVISION_FPN_BUILDER", "check_torchvision_config", "torchvision_stages"]

# the BACKBONE_REGISTRY name whose MODEL.FPN.IN_FEATURES are checked against OUT_FEATURES
TORCHVISION_FPN_BUILDER = "build_torchvision_fpn_backbone"
_KEY = "MODEL.TORCHVISION"


def torchvision_stages(cfg) -> tuple[str, ...]:
    """The stage nodes of the config: MODEL.TORCHVISION.STAGES, or ARCH's defaults when it is
    empty (call :func:`check_torchvision_config` first for a readable error)."""
    tv = cfg.MODEL.TORCHVISION
    return tuple(tv.STAGES) if tv.STAGES else TORCHVISION_DEFAULT_STAGES[tv.ARCH]


def _nodes_near(name: str, nodes) -> str:
    """Node names of the same depth as ``name`` (e.g. features.0 .. features.16), for the
    message."""
    depth = name.count(".")
    prefixes = []
    for node in nodes:
        prefix = ".".join(node.split(".")[: depth + 1])
        if prefix not in prefixes and prefix != "x":
            prefixes.append(prefix)
    return short_list(prefixes, 24)


def _check_keys(cfg) -> None:
    if "TORCHVISION" not in cfg.MODEL:
        raise ConfigError(
            "the config has no MODEL.TORCHVISION node: call nd_det.config.add_backbone_config(cfg)"
            " (or nd_det.add_distill_config) before merging a config with a torchvision backbone"
        )
    tv = cfg.MODEL.TORCHVISION
    listed = sorted(TORCHVISION_DEFAULT_STAGES)
    if tv.ARCH not in torchvision_classifiers():
        raise ConfigError(
            f"{_KEY}.ARCH is {tv.ARCH!r}, not a torchvision classification model; set one of "
            f"{', '.join(listed)} (or any torchvision.models.list_models() classification name "
            f"with {_KEY}.STAGES set)"
        )
    if not tv.STAGES and tv.ARCH not in TORCHVISION_DEFAULT_STAGES:
        raise ConfigError(
            f"{_KEY}.STAGES is empty and ARCH {tv.ARCH!r} has no built-in stages; set STAGES to "
            "graph node names at strides 4, 8, 16, 32 (torchvision.models.feature_extraction."
            f"get_graph_node_names lists them) or use one of {', '.join(listed)}"
        )
    if tv.NORM not in BATCH_NORM_CHOICES:
        raise ConfigError(f"{_KEY}.NORM is {tv.NORM!r}; set one of {list(BATCH_NORM_CHOICES)}")
    width = tv.WIDTH_MULT
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(
            f"{_KEY}.WIDTH_MULT is {width!r}; set a positive number (1.0 for ImageNet weights)"
        )
    if width != 1.0 and tv.ARCH not in WIDTH_MULT_ARCHS:
        raise ConfigError(
            f"{_KEY}.WIDTH_MULT is {width!r}, but torchvision's {tv.ARCH} takes "
            f"no width multiplier; set 1.0 (only {', '.join(WIDTH_MULT_ARCHS)} "
            "take one)"
        )
    stages = torchvision_stages(cfg)
    names = list(tv.OUT_FEATURES)
    if (
        len(names) != len(stages)
        or len(set(names)) != len(names)
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ConfigError(
            f"{_KEY}.OUT_FEATURES is {names!r}; give {len(stages)} distinct names, one per "
            f"stage {list(stages)} (e.g. {['c' + str(i + 2) for i in range(len(stages))]})"
        )
    freeze_at = tv.FREEZE_AT
    if (
        isinstance(freeze_at, bool)
        or not isinstance(freeze_at, int)
        or not (0 <= freeze_at <= len(stages))
    ):
        raise ConfigError(
            f"{_KEY}.FREEZE_AT is {freeze_at!r}; set an integer in "
            f"0..{len(stages)} (0 trains every layer, k freezes up to stage k)"
        )


def _check_graph(cfg) -> None:
    tv = cfg.MODEL.TORCHVISION
    stages = torchvision_stages(cfg)
    nodes = graph_node_names(tv.ARCH, float(tv.WIDTH_MULT))
    for stage in stages:
        if not isinstance(stage, str) or not is_graph_node(stage, nodes):
            raise ConfigError(
                f"{_KEY}.STAGES: {stage!r} is not a graph node of torchvision's {tv.ARCH}; "
                f"nodes at that depth: {_nodes_near(str(stage), nodes)} "
                "(get_graph_node_names lists all)"
            )
    strides = [stride for _, _, stride in stage_shapes(tv.ARCH, stages, float(tv.WIDTH_MULT))]
    doubling = all(b == 2 * a for a, b in zip(strides, strides[1:]))
    if not doubling or not all(math.log2(s).is_integer() for s in strides):
        raise ConfigError(
            f"{_KEY}.STAGES {list(stages)} of {tv.ARCH} have strides {strides}; FPN needs "
            "strides that double from one stage to the next (4, 8, 16, 32 for p2..p5): choose "
            "one node per stride"
        )


def check_torchvision_config(cfg) -> None:
    """Raise a ConfigError naming the first bad ``MODEL.TORCHVISION`` key (value and valid
    choices); with MODEL.BACKBONE.NAME build_torchvision_fpn_backbone also MODEL.FPN.IN_FEATURES
    and the pixel mean's channel count."""
    _check_keys(cfg)
    _check_graph(cfg)
    if len(cfg.MODEL.PIXEL_MEAN) != 3:
        raise ConfigError(
            f"MODEL.PIXEL_MEAN has {len(cfg.MODEL.PIXEL_MEAN)} entries; torchvision backbones "
            "take 3-channel images (e.g. [123.675, 116.28, 103.53] for ImageNet weights)"
        )
    if cfg.MODEL.BACKBONE.NAME == TORCHVISION_FPN_BUILDER:
        names = list(cfg.MODEL.TORCHVISION.OUT_FEATURES)
        in_features = list(cfg.MODEL.FPN.IN_FEATURES)
        if not in_features or any(name not in names for name in in_features):
            raise ConfigError(
                f"MODEL.FPN.IN_FEATURES is {in_features!r}, but the torchvision backbone returns "
                f"{names} ({_KEY}.OUT_FEATURES); set MODEL.FPN.IN_FEATURES to a subset of them"
            )
