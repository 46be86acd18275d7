"""What a teacher is built from, as plain values: :class:`TeacherSpec`.

A yacs distillation config gives them in ``MODEL.DISTILL.TEACHER_*`` and the student's own keys
(:meth:`TeacherSpec.from_cfg`); a LazyConfig names them in its teacher node
(``L(FrozenTeacher.from_values)(config=..., weights=..., ...)``).  Either way
:class:`~nd_det.modeling.teacher.FrozenTeacher` is built from this one record.
"""

from dataclasses import dataclass

from detectron2.config import CfgNode

from ...config import num_classes, plain_meta_architecture

__all__ = ["TeacherSpec", "as_teacher_spec"]


@dataclass(frozen=True)
class TeacherSpec:
    """The teacher's own values (``config`` .. ``device``) and the student's values it is
    checked against (``student_format``, ``num_classes``, ``max_input_size``: the largest image
    side the student trains or is tested on, 0 when unknown; ``one_stage``: the detectron2
    class of a one-stage student, "RetinaNet" or "FCOS", whose teacher must be one too, "" for
    an R-CNN student)."""

    config: str  # a yacs .yaml or LazyConfig .py: a file or a detectron2 model-zoo name
    weights: str = ""  # "": the model-zoo weights of ``config``
    opts: tuple = ()  # KEY VALUE pairs (yacs) or dotted key=value overrides (LazyConfig)
    cascade_stage: int = -1
    autocast: str = ""
    device: str = "cpu"
    student_format: str = "BGR"
    num_classes: int = 80
    max_input_size: int = 0
    one_stage: str = ""

    def __post_init__(self):  # overrides as strings (a LazyConfig gives a ListConfig)
        object.__setattr__(self, "opts", tuple(str(o) for o in self.opts))

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> "TeacherSpec":
        """The values of a yacs distillation config (``MODEL.DISTILL`` and the student's keys)."""
        distill = cfg.MODEL.DISTILL
        plain = plain_meta_architecture(cfg)
        return cls(
            config=distill.TEACHER_CONFIG,
            weights=distill.TEACHER_WEIGHTS,
            opts=distill.TEACHER_OPTS,
            cascade_stage=int(distill.TEACHER_CASCADE_STAGE),
            autocast=distill.TEACHER_AUTOCAST,
            device=str(cfg.MODEL.DEVICE),
            student_format=cfg.INPUT.FORMAT,
            num_classes=num_classes(cfg),
            max_input_size=max(int(cfg.INPUT.MAX_SIZE_TRAIN), int(cfg.INPUT.MAX_SIZE_TEST)),
            one_stage="" if plain == "GeneralizedRCNN" else plain,
        )


def as_teacher_spec(cfg_or_spec) -> TeacherSpec:
    """``cfg_or_spec`` itself, or the spec of a yacs distillation config."""
    return (
        cfg_or_spec if isinstance(cfg_or_spec, TeacherSpec) else TeacherSpec.from_cfg(cfg_or_spec)
    )
