"""Classification distillation with the ND loss: KD++, DKD++, ReviewKD++ and DIST++.

Torch, torchvision and fvcore only (no detectron2); the distillation terms are those of
:mod:`nd_det.distill`, the losses those of :mod:`nd_det.losses`, as on the detection side.

- ``models``: CIFAR-100 and ImageNet classifiers returning :class:`ClassifierOutput`
  (logits, penultimate embedding, stage features after and before their final ReLU), built by
  name.
- ``data``: CIFAR-100, ImageNet-style folders, Fashion-MNIST (IDX) and scikit-learn digits.
- ``config``: fvcore ``CfgNode`` configs (``get_cfg``, ``load_config``), detectron2's grammar.
- :class:`Distiller`: the cross-entropy plus the configured distillation terms.
- ``trainer``: the training loop (torchrun/DDP, AMP, fvcore checkpoints, TensorBoard + JSON
  lines, the non-finite stop, preemption).
- the teacher's class means: :mod:`nd_det.class_means` (one home for both tasks).
"""

from .config import get_cfg, load_config
from .distiller import Distiller, warm_up_factor
from .models import available_classifiers, build_classifier
from .outputs import ClassifierOutput
from .trainer import ClassificationTrainer, TrainingResult, run_evaluation, run_training

__all__ = [
    "ClassifierOutput",
    "build_classifier",
    "available_classifiers",
    "Distiller",
    "warm_up_factor",
    "get_cfg",
    "load_config",
    "ClassificationTrainer",
    "TrainingResult",
    "run_training",
    "run_evaluation",
]
