"""The stages of ``MODEL.TORCHVISION`` (torchvision classification models as student backbones).

Everything else about the keys is checked by what reads them, on the meta device before a run:
torchvision's ``get_model`` (the architecture), its feature extraction (the stage nodes),
:class:`.TorchvisionBottomUp` (the output names, FREEZE_AT), the BatchNorm conversion (NORM) and
detectron2's FPN (strides), each message prefixed with ``MODEL.TORCHVISION`` by the builder.
"""

from ...errors import ConfigError
from .torchvision_stages import TORCHVISION_DEFAULT_STAGES, WIDTH_MULT_ARCHS

__all__ = ["TORCHVISION_FPN_BUILDER", "torchvision_stages"]

# the BACKBONE_REGISTRY name of the torchvision classifier + FPN student backbone
TORCHVISION_FPN_BUILDER = "build_torchvision_fpn_backbone"


def torchvision_stages(cfg) -> tuple[str, ...]:
    """The stage nodes of the config: MODEL.TORCHVISION.STAGES, or ARCH's built-in ones when it
    is empty.  Also refuses a WIDTH_MULT torchvision would silently ignore."""
    tv = cfg.MODEL.TORCHVISION
    stages = tuple(tv.STAGES) or TORCHVISION_DEFAULT_STAGES.get(tv.ARCH)
    if not stages:
        raise ConfigError(
            f"MODEL.TORCHVISION.STAGES is empty and {tv.ARCH!r} has no built-in "
            f"stages: name its nodes at strides 4-32, or use one of "
            f"{sorted(TORCHVISION_DEFAULT_STAGES)}"
        )
    if tv.WIDTH_MULT <= 0 or (tv.WIDTH_MULT != 1.0 and tv.ARCH not in WIDTH_MULT_ARCHS):
        raise ConfigError(
            f"MODEL.TORCHVISION.WIDTH_MULT {tv.WIDTH_MULT}: positive, and 1.0 but "
            f"for {', '.join(WIDTH_MULT_ARCHS)}"
        )
    return stages
