"""Classification distillation with the ND loss: KD++, DKD++, ReviewKD++ and DIST++.

Torch, torchvision and fvcore's registries only (no detectron2); the losses come from
:mod:`nd_det.losses`.

- ``models``: CIFAR-100 and ImageNet classifiers returning :class:`ClassifierOutput`
  (logits, penultimate embedding, stage features after and before their final ReLU), built by
  name.
- ``data``: CIFAR-100, ImageNet-style folders, Fashion-MNIST (IDX) and scikit-learn digits.
- ``loss_terms`` + :class:`Distiller`: CE plus any of kd / dkd / reviewkd / dist / nd by name.
- ``trainer``: the training loop (torchrun/DDP, AMP, checkpoints, TensorBoard + JSON lines).
- the teacher's class means: :mod:`nd_det.class_means` (one home for both tasks).
"""

from .config import apply_overrides, load_config
from .distiller import Distiller, warm_up_factor
from .loss_terms import TermContext, available_loss_terms, build_loss_terms
from .models import available_classifiers, build_classifier
from .outputs import ClassifierOutput
from .trainer import ClassificationTrainer, TrainingResult, run_evaluation, run_training

__all__ = [
    "ClassifierOutput",
    "build_classifier",
    "available_classifiers",
    "Distiller",
    "warm_up_factor",
    "TermContext",
    "build_loss_terms",
    "available_loss_terms",
    "load_config",
    "apply_overrides",
    "ClassificationTrainer",
    "TrainingResult",
    "run_training",
    "run_evaluation",
]
