"""DistillTrainer: detectron2's DefaultTrainer with COCO evaluation for DistillRCNN runs."""
import logging
import os
import weakref
from collections import OrderedDict
from unittest import mock

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, create_ddp_model as d2_create_ddp_model, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model
from detectron2.utils import comm

from .checkpoint import AtomicCheckpointer
from .finite_losses import FiniteLossAMPTrainer, FiniteLossSimpleTrainer
from .resumable_sampler import ResumableTrainingSampler
from .rng_state import RNGState
from ..modeling.teacher import build_teacher
from ..student_export import plain_student_cfg, student_state_dict

__all__ = ["DistillTrainer", "StudentCheckpointer"]

logger = logging.getLogger(__name__)


def _amp_precision(name: str) -> torch.dtype:
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"SOLVER.AMP.PRECISION={name!r}: use 'float16' or 'bfloat16'")
    return dtypes[name]


def _create_ddp_model(model, **kwargs):
    if comm.get_world_size() > 1 and model.device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return d2_create_ddp_model(model, **kwargs)


class StudentCheckpointer(DetectionCheckpointer):
    """Loads the student part of any checkpoint (DistillRCNN training checkpoints included)
    into a plain GeneralizedRCNN, without "unexpected key" noise about distillation modules."""

    def _load_model(self, checkpoint):
        checkpoint["model"] = student_state_dict(checkpoint["model"])
        return super()._load_model(checkpoint)


class DistillTrainer(DefaultTrainer):
    """DefaultTrainer for DistillRCNN: the optimizer, DDP and checkpoints see the student (and
    the distillation terms' trainable modules) only; the teacher rides along frozen.

    On top of detectron2's trainer:

    * checkpoints are written atomically and never with NaN/inf weights (AtomicCheckpointer);
    * the first non-finite loss stops training before the optimizer step, naming the term and
      the iteration, on every rank (FiniteLoss*Trainer);
    * ``--resume`` continues the data stream where the checkpoint was taken and restores the
      RNG states, so a killed single-process run resumed on CPU ends with the same weights as an
      uninterrupted one (with DATALOADER.NUM_WORKERS 0; worker processes redraw their
      augmentation randomness on restart).
    """

    def __init__(self, cfg):
        self._train_sampler = None
        # detectron2 always gives DDP a CUDA device id; CPU (gloo) runs need none
        with mock.patch.object(d2_defaults, "create_ddp_model", _create_ddp_model):
            super().__init__(cfg)
        plain = self._trainer
        if cfg.SOLVER.AMP.ENABLED:
            precision = _amp_precision(cfg.SOLVER.AMP.PRECISION)
            scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
            self._trainer = FiniteLossAMPTrainer(plain.model, plain.data_loader, plain.optimizer,
                                                 grad_scaler=scaler, precision=precision)
        else:
            self._trainer = FiniteLossSimpleTrainer(plain.model, plain.data_loader,
                                                    plain.optimizer)

    def train(self):
        """Train; returns the last evaluation results (detectron2 returns them only when
        TEST.EXPECTED_RESULTS is set), or None when nothing was evaluated."""
        results = super().train()
        return results if results is not None else getattr(self, "_last_eval_results", None)

    def run_step(self):
        try:
            super().run_step()
        except BaseException:
            self._step_failed = True
            raise

    def after_train(self):
        if getattr(self, "_step_failed", False):
            # a failed step must not produce a "final" checkpoint or evaluation: detectron2 runs
            # them in after_train when the failure hit the last iteration
            self.storage.iter = self.iter
            for h in self._hooks:
                if not isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook)):
                    h.after_train()
            return
        super().after_train()

    def build_train_loader(self, cfg):
        """detectron2's train loader, with a resumable sampler for the default TrainingSampler."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            logger.warning("DATALOADER.SAMPLER_TRAIN=%s: a resumed run restarts that sampler's "
                           "stream (only TrainingSampler resumes exactly)",
                           cfg.DATALOADER.SAMPLER_TRAIN)
            return build_detection_train_loader(cfg)
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        self._train_sampler = ResumableTrainingSampler(
            len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None)
        # a loader-owned generator: creating the loader's iterator (again, after a resume) then
        # draws nothing from torch's global RNG, whose state the checkpoints restore
        return build_detection_train_loader(
            cfg, dataset=dataset, sampler=self._train_sampler,
            seed=self._train_sampler._seed + comm.get_rank(),
        )

    def build_hooks(self):
        checkpointables = {"rng": RNGState()}
        if self._train_sampler is not None:
            checkpointables["data_sampler"] = self._train_sampler
        self.checkpointer = AtomicCheckpointer(
            self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self),
            **checkpointables,
        )
        return super().build_hooks()

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if resume and self.start_iter > 0 and self._train_sampler is not None:
            per_rank = self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
            self._train_sampler.skip = self.start_iter * per_rank
            logger.info("Resumed at iteration %d; the data stream skips %d images per rank",
                        self.start_iter, self._train_sampler.skip)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def evaluate_student(cls, cfg, weights: str) -> OrderedDict:
        """COCO evaluation of the student alone (no teacher, no class means needed)."""
        student_cfg = plain_student_cfg(cfg)
        model = build_model(student_cfg)
        StudentCheckpointer(model, save_dir=cfg.OUTPUT_DIR).load(weights)
        logger.info("Evaluating the student from %s", weights)
        return cls.test_per_dataset(student_cfg, model)

    @classmethod
    def evaluate_teacher(cls, cfg) -> OrderedDict:
        """COCO evaluation of the teacher of MODEL.DISTILL on the same test sets."""
        teacher, teacher_cfg = build_teacher(cfg)
        run_cfg = teacher_cfg.clone()
        run_cfg.defrost()
        run_cfg.DATASETS.TEST = cfg.DATASETS.TEST
        run_cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "teacher")
        run_cfg.DATALOADER.NUM_WORKERS = cfg.DATALOADER.NUM_WORKERS
        run_cfg.freeze()
        return cls.test_per_dataset(run_cfg, teacher)

    @classmethod
    def test_per_dataset(cls, cfg, model) -> OrderedDict:
        """``test`` that always returns {dataset: results} (detectron2 unwraps a single one)."""
        results = cls.test(cfg, model)
        if len(cfg.DATASETS.TEST) == 1:
            results = OrderedDict([(cfg.DATASETS.TEST[0], results)])
        return results
