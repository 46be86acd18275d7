"""Whether the teacher can take the student's images: a backbone that pads every image to a
fixed square (ViTDet's ``SimpleFeaturePyramid(square_pad=1024)``) crops an image larger than that
square without a word, so such a teacher is refused when the student's images can be larger."""

from detectron2.config import CfgNode

from ...errors import ConfigError

__all__ = ["check_input_size"]


def check_input_size(cfg: CfgNode, backbone, teacher_name: str) -> None:
    """One ConfigError when the longer side of the student's images (INPUT.MAX_SIZE_TRAIN: the
    training step; INPUT.MAX_SIZE_TEST: the class-mean extraction's gt-boxes protocol) exceeds
    the teacher's square padding."""
    square = int(backbone.padding_constraints.get("square_size", 0) or 0)
    if square <= 0:
        return
    for key in ("MAX_SIZE_TRAIN", "MAX_SIZE_TEST"):
        size = int(cfg.INPUT[key])
        if size > square:
            raise ConfigError(
                f"the teacher ({teacher_name}) pads every image to a {square} x {square} square, "
                f"but the student's images reach {size} pixels on their longer side (INPUT.{key} "
                f"{size}): the teacher would see them cropped. Set INPUT.MAX_SIZE_TRAIN and "
                f"INPUT.MAX_SIZE_TEST to {square} or less, or use a teacher without square "
                "padding"
            )
