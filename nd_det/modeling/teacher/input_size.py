"""Whether the teacher can take the student's images: a backbone that pads every image to a
fixed square (ViTDet's ``SimpleFeaturePyramid(square_pad=1024)``) crops an image larger than that
square without a word, so such a teacher is refused when the student's images can be larger
(INPUT.MAX_SIZE_TRAIN: the training step; INPUT.MAX_SIZE_TEST: the gt-boxes class means)."""

from ...errors import ConfigError

__all__ = ["check_input_size"]


def check_input_size(size: int, backbone, teacher_name: str) -> None:
    """``size``: the largest image side of the student (0: unknown, nothing checked)."""
    square = int(backbone.padding_constraints.get("square_size", 0) or 0)
    if 0 < square < size:
        raise ConfigError(
            f"the teacher ({teacher_name}) pads images to {square} px squares but INPUT.MAX_SIZE_"
            f"TRAIN/TEST reach {size}: set both to {square} or less, or use another teacher"
        )
