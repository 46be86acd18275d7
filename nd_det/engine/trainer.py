"""DistillTrainer: detectron2's DefaultTrainer workflow, built explicitly for DistillRCNN runs.

detectron2 documents ``DefaultTrainer`` as an example of the standard workflow to copy when its
assumptions do not hold.  Three of them do not hold here: its ``__init__`` wraps the model in
DDP with a CUDA device id (CPU/gloo runs need none), picks a plain ``SimpleTrainer`` /
``AMPTrainer`` and a plain ``DetectionCheckpointer``.  ``DistillTrainer.__init__`` builds the
same objects in the same order with nd-det's pieces instead, through public names only:

* checkpoints are written atomically and never with NaN/inf weights (AtomicCheckpointer);
* the first non-finite loss stops training before the optimizer step, naming the term and the
  iteration, on every rank (FiniteLoss*Trainer); a failed step writes no "final" checkpoint and
  runs no final evaluation (the hooks below skip theirs after a failure);
* ``--resume`` continues the data stream where the checkpoint was taken and restores every
  rank's RNG states, so a killed or preempted run resumed on CPU ends with the same weights as an
  uninterrupted one (with DATALOADER.NUM_WORKERS 0; worker processes redraw their
  augmentation randomness on restart);
* SIGTERM / SIGUSR1 (a preemption) stops training after the running step with a checkpoint of
  it, exit status 3 (:mod:`.preemption`);
* a checkpoint or metrics file the system refuses to write (a full disk) is one FileError naming
  it, and a user error raised in the training loop is that one line, without detectron2's
  "Exception during training" traceback in the log.

The optimizer, DDP and checkpoints see the student (and the distillation terms' trainable
modules) only; the teacher rides along frozen.
"""

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules

from ..errors import UserError
from ..modeling.student_checkpoint import build_plain_student
from ..modeling.teacher import FrozenTeacher
from ..utils.paths import write_failed
from ..utils.precision import autocast_dtype
from .checkpoint import AtomicCheckpointer, remove_partial_checkpoints, resume_checkpoint
from .evaluators import build_evaluator
from .finite_losses import FiniteLossAMPTrainer, FiniteLossSimpleTrainer
from .preemption import PreemptionHook
from .resumable_sampler import ResumableTrainingSampler
from .rng_state import RNGState

__all__ = ["DistillTrainer", "amp_precision"]

logger = logging.getLogger(__name__)


def amp_precision(name: str) -> torch.dtype:
    """The autocast dtype of ``SOLVER.AMP.PRECISION`` (its names are TEACHER_AUTOCAST's)."""
    return autocast_dtype(name, "SOLVER.AMP.PRECISION")


class _AfterSuccess:
    """Mixin for hooks whose ``after_train`` must not run after a failed step (detectron2 runs
    them when the failure hit the last iteration: a "final" checkpoint of a diverged model)."""

    def after_train(self):
        if not getattr(self.trainer, "step_failed", False):
            super().after_train()


class _CheckpointHook(_AfterSuccess, hooks.PeriodicCheckpointer):
    pass


class _EvalHook(_AfterSuccess, hooks.EvalHook):
    pass


class _WriterHook(hooks.PeriodicWriter):
    """PeriodicWriter whose failed write (metrics.json on a full disk) is one FileError naming
    the file, not a traceback."""

    def _guarded(self, write):
        try:
            write()
        except OSError as e:
            files = [getattr(getattr(w, "_file_handle", None), "name", None) for w in self._writers]
            where = ", ".join(f for f in files if f) or self.trainer.cfg.OUTPUT_DIR
            raise write_failed(
                "training metrics",
                where,
                e,
                "free space or fix OUTPUT_DIR, then "
                "continue from the last checkpoint with --resume",
            ) from None

    def after_step(self):
        self._guarded(super().after_step)

    def after_train(self):
        self._guarded(super().after_train)


class _NoTracebackForUserErrors(logging.Filter):
    """detectron2's training loop logs every exception with its traceback before re-raising it;
    a user error (a full disk, a NaN loss) is reported as its one ERROR line instead."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, UserError)


_LOOP_LOGGER = logging.getLogger("detectron2.engine.train_loop")
if not any(isinstance(f, _NoTracebackForUserErrors) for f in _LOOP_LOGGER.filters):
    _LOOP_LOGGER.addFilter(_NoTracebackForUserErrors())


class _DistilledFrom:
    """A checkpoint's record of the teacher its student was distilled from: the teacher's
    pre-flight refuses such a file as the weights of that same teacher (issue: the student's own
    checkpoint given as the teacher's trained without a word)."""

    def __init__(self, identity: dict):
        self.identity = dict(identity)

    def state_dict(self) -> dict:
        return self.identity

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: the record describes the run's teacher, which the config names."""


class DistillTrainer(DefaultTrainer):
    """DefaultTrainer's workflow for DistillRCNN (see the module docstring)."""

    ddp_options: dict = {}  # DistributedDataParallel's options beyond broadcast_buffers=False
    log_period = 20  # iterations between metrics.json / console lines

    def __init__(self, cfg):
        TrainerBase.__init__(self)  # the objects DefaultTrainer.__init__ makes are built below
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.step_failed = False
        self.train_sampler = None
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        ddp_options = {"broadcast_buffers": False, **self.ddp_options}
        if model.device.type == "cpu":
            ddp_options["device_ids"] = None  # gloo: DDP on CPU takes no device ids
        model = create_ddp_model(model, **ddp_options)
        if cfg.SOLVER.AMP.ENABLED:
            precision = amp_precision(cfg.SOLVER.AMP.PRECISION)
            scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
            self._trainer = FiniteLossAMPTrainer(
                model, data_loader, optimizer, grad_scaler=scaler, precision=precision
            )
        else:
            self._trainer = FiniteLossSimpleTrainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        checkpointables = {"rng": RNGState()}
        if getattr(model, "teacher", None) is not None:
            checkpointables["distilled_from"] = _DistilledFrom(model.teacher.identity)
        if self.train_sampler is not None:
            checkpointables["data_sampler"] = self.train_sampler
        self.checkpointer = AtomicCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), **checkpointables
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def train(self):
        """Train; returns the last evaluation results (detectron2 returns them only when
        TEST.EXPECTED_RESULTS is set), or None when nothing was evaluated."""
        results = super().train()
        return results if results is not None else getattr(self, "_last_eval_results", None)

    def run_step(self):
        try:
            super().run_step()
        except BaseException:
            self.step_failed = True
            raise

    def after_step(self):
        try:
            super().after_step()
        except BaseException:  # a failed checkpoint write, a preemption: no "final" step
            self.step_failed = True
            raise

    def build_hooks(self):
        """DefaultTrainer's hooks, with a final checkpoint and a final evaluation that happen
        only after a successful last step."""
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model):
            loader_cfg = cfg.clone()
            loader_cfg.defrost()
            loader_cfg.DATALOADER.NUM_WORKERS = 0  # save some memory and time for PreciseBN
            # a loader of its own (detectron2's stock one): the training stream is not touched
            ret.append(
                hooks.PreciseBN(
                    cfg.TEST.EVAL_PERIOD,
                    self.model,
                    build_detection_train_loader(loader_cfg),
                    cfg.TEST.PRECISE_BN.NUM_ITER,
                )
            )
        # on every rank: a checkpoint gathers every rank's RNG states (rank 0 writes it)
        ret.append(_CheckpointHook(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        ret.append(PreemptionHook(self.checkpointer))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(_EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            try:
                writers = self.build_writers()  # opens metrics.json
            except OSError as e:
                raise write_failed(
                    "training metrics", cfg.OUTPUT_DIR, e, "free space or fix OUTPUT_DIR"
                ) from None
            ret.append(_WriterHook(writers, period=self.log_period))
        return ret

    def build_train_loader(self, cfg):
        """detectron2's train loader, with a resumable sampler for the default TrainingSampler."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            logger.warning(
                "DATALOADER.SAMPLER_TRAIN=%s: a resumed run restarts that sampler's "
                "stream (only TrainingSampler resumes exactly)",
                cfg.DATALOADER.SAMPLER_TRAIN,
            )
            return build_detection_train_loader(cfg)
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        self.train_sampler = ResumableTrainingSampler(
            len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None
        )
        # a loader-owned generator: creating the loader's iterator (again, after a resume) then
        # draws nothing from torch's global RNG, whose state the checkpoints restore
        return build_detection_train_loader(
            cfg,
            dataset=dataset,
            sampler=self.train_sampler,
            mapper=DatasetMapper(cfg, True),
            seed=self.train_sampler.seed + comm.get_rank(),
        )

    def resume_or_load(self, resume=True):
        """``resume``: continue from the checkpoint :func:`resume_checkpoint` picks (the tagged
        one, else the newest intact one; a folder without any run is an error, not a silent fresh
        start; a run stopped before its first checkpoint starts again from iteration 0).
        Otherwise: a new run, initialised from MODEL.WEIGHTS (detectron2's loading)."""
        checkpoint = resume_checkpoint(self.cfg.OUTPUT_DIR) if resume else None
        if resume and comm.is_main_process():
            remove_partial_checkpoints(self.cfg.OUTPUT_DIR)
        if checkpoint is None:
            self.checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[])
            return
        self.checkpointer.load(checkpoint)
        # the checkpoint stores the iteration that just finished: start at the next one
        self.start_iter = self.iter + 1
        if self.start_iter > 0 and self.train_sampler is not None:
            per_rank = self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
            self.train_sampler.skip = self.start_iter * per_rank
            logger.info(
                "Resumed at iteration %d; the data stream skips %d images per rank",
                self.start_iter,
                self.train_sampler.skip,
            )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The dataset's evaluator by its ``evaluator_type`` (:mod:`.evaluators`)."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def evaluate_student(cls, cfg, weights: str) -> OrderedDict:
        """COCO evaluation of the student alone (no teacher, no class means needed); the
        weights must fit the student exactly."""
        student_cfg, model = build_plain_student(cfg, weights)
        logger.info("Evaluating the student from %s", weights)
        return cls.test_per_dataset(student_cfg, model)

    @classmethod
    def evaluate_teacher(cls, cfg) -> OrderedDict:
        """COCO evaluation of the teacher of MODEL.DISTILL on the same test sets."""
        teacher = FrozenTeacher(cfg)
        return cls.test_per_dataset(teacher.evaluation_cfg(cfg), teacher.model)

    @classmethod
    def test_per_dataset(cls, cfg, model) -> OrderedDict:
        """``test`` that always returns {dataset: results} (detectron2 unwraps a single one)."""
        results = cls.test(cfg, model)
        if len(cfg.DATASETS.TEST) == 1:
            results = OrderedDict([(cfg.DATASETS.TEST[0], results)])
        return results
