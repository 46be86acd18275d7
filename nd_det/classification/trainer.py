"""Training loop of the classification package: one process or many (torchrun + DDP).

``run_training(cfg, resume=False)`` trains the config's student (alone when ``distill.losses``
is empty), evaluates top-1/top-5 on the test split and writes into ``train.output_dir``:
``model_last.pth`` after every epoch and ``model_final.pth`` at the end (fvcore checkpoints,
tagged in ``last_checkpoint``, written all or nothing), ``model_best.pth`` (the student's
weights), ``config.yaml``, ``metrics.jsonl`` and TensorBoard events; progress lines carry an ETA.

As detectron2's trainer does: every step stops on a non-finite loss before the optimizer step
(one ``ERROR:`` line naming the term); SIGTERM / SIGUSR1 end the run after the running step with
a checkpoint of it and exit status 3 (:mod:`nd_det.utils.preemption`); ``--resume`` continues
from the tagged checkpoint.  Each epoch re-seeds the generators, and a checkpoint within an epoch
holds every rank's RNG states and the data position, so a resumed run repeats the uninterrupted
one (exactly with ``data.num_workers`` 0; loader workers draw their own augmentations).
"""

import json
import math
import os
import signal
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import ConfigError, input_stage
from ..utils.atomic_file import atomic_torch_save, atomic_write_text
from ..utils.finite_losses import check_finite_losses
from ..utils.paths import check_writable
from ..utils.precision import AUTOCAST_DTYPES
from ..utils.preemption import EXIT_PREEMPTED, PreemptionSignals
from ..utils.progress import ProgressClock, format_duration
from ..utils.rng_state import RNGState
from ..utils.seed import seed_everything
from .builders import build_distiller, build_student
from .checkpoint import ClassifierCheckpointer
from .data import ShardSampler, build_batch_mixer, build_dataset
from .distiller import Distiller
from .distributed import all_reduce_sum, average_buffers, init_distributed, stop_if_any_rank_fails
from .metrics import evaluate
from .run_logger import RunLogger
from .solver import build_optimizer, learning_rate_at, set_learning_rate

__all__ = [
    "ClassificationTrainer",
    "TrainingResult",
    "run_training",
    "run_evaluation",
    "amp_dtype_for",
]

LAST, BEST, FINAL = "model_last", "model_best.pth", "model_final"


@dataclass
class TrainingResult:
    distiller: Distiller
    output_dir: str
    epochs_done: int
    best_top1: Optional[float]
    last_eval: dict = field(default_factory=dict)


def amp_dtype_for(device: torch.device, enabled: bool):
    """float16 on CUDA (with a GradScaler), bfloat16 on CPU; None when AMP is off."""
    if not enabled:
        return None
    return AUTOCAST_DTYPES["float16" if device.type == "cuda" else "bfloat16"]


def _plain(cfg) -> dict:
    """The config as plain dicts and lists (what a weights-only torch.load reads back)."""
    return json.loads(json.dumps(cfg))


class ClassificationTrainer:
    """``ClassificationTrainer(cfg, resume=False)`` builds a run; ``fit()`` trains it.

    Each process builds its pieces (datasets, student, teacher, terms, optimizer, the checkpoint
    to resume); a mistake there is a UserError, and one collective then tells every process
    whether any of them failed (:func:`~.distributed.stop_if_any_rank_fails`), so no process
    waits for one that stopped.  Nothing is written before ``fit()``."""

    def __init__(self, cfg, stream=None, resume: bool = False):
        self.cfg = cfg
        with input_stage(f"train.device {cfg.train.device}"):
            self.ctx = init_distributed(cfg.train.device)
        self.output_dir, self.seed = cfg.train.output_dir, cfg.train.seed
        self.start_epoch, self.start_iter, self.best_top1 = 0, 0, None
        self.resumed: dict = {}
        with stop_if_any_rank_fails(self.ctx), input_stage("the config"):
            self._build(stream)
            if resume and self.checkpointer.has_checkpoint():
                self._resume(self.checkpointer.get_checkpoint_file())
        self.model = self.distiller
        if self.ctx.distributed:
            device = self.ctx.device
            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.distiller, device_ids=ids)

    # ------------------------------------------------------------------ set-up
    def _build(self, stream) -> None:
        cfg, world = self.cfg, self.ctx.world_size
        if self.ctx.is_main:  # the only process that writes (a probe on several would race)
            check_writable(self.output_dir, "train.output_dir", folder=True)
        self.logger = RunLogger(
            self.output_dir, self.ctx.is_main, cfg.train.tensorboard, stream=stream
        )
        if cfg.solver.batch_size % world:
            raise ConfigError(
                f"solver.batch_size {cfg.solver.batch_size} is the total over the {world} "
                f"processes torchrun started: give a multiple of {world}"
            )
        self.batch = cfg.solver.batch_size // world
        self.train_set, self.info = build_dataset(cfg.data, train=True, augment=True)
        self.test_set, _ = build_dataset(cfg.data, train=False, augment=False)
        if math.ceil(len(self.train_set) / world) < self.batch:
            raise ConfigError(
                f"the training set gives each process fewer samples than one batch of "
                f"{self.batch}: lower solver.batch_size or use more data (data.train_subset)"
            )
        seed_everything(self.seed)  # identical initial weights on every rank
        self.distiller, self.facts = build_distiller(cfg, self.info)
        self.mixer = build_batch_mixer(cfg.data, self.info.num_classes)
        self.distiller.to(self.ctx.device)
        self.distiller.teacher_to(self.ctx.device)
        self.optimizer = build_optimizer(self.distiller.parameters(), cfg.solver)
        learning_rate_at(0, cfg.solver)  # an unknown schedule stops here
        self.amp_dtype = amp_dtype_for(self.ctx.device, cfg.train.amp)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.ctx.device.type == "cuda"
        )
        extra = {"scaler": self.scaler} if self.scaler.is_enabled() else {}
        self.checkpointer = ClassifierCheckpointer(
            self.distiller.student,
            self.output_dir,
            what="--resume",
            save_to_disk=self.ctx.is_main,
            terms=self.distiller.terms,
            optimizer=self.optimizer,
            rng=RNGState(),
            **extra,
        )
        self.sampler = DistributedSampler(
            self.train_set, world, self.ctx.rank, shuffle=True, seed=self.seed
        )
        self.iters = len(self.sampler) // self.batch  # drop_last: a batch of 1 breaks BatchNorm
        self.test_loader = self._loader(
            self.test_set,
            ShardSampler(len(self.test_set), self.ctx.rank, world),
            cfg.solver.eval_batch_size,
        )

    def _loader(self, dataset, sampler, batch_size: int, drop_last: bool = False) -> DataLoader:
        pin = self.ctx.device.type == "cuda"
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset,
            batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            drop_last=drop_last,
        )

    def _resume(self, path: str) -> None:
        """Continue from the checkpoint ``path``: weights, terms, optimizer and scaler now; the
        RNG states when its epoch's data loader exists (:meth:`train_one_epoch`)."""
        keys = [k for k in self.checkpointer.checkpointables if k != "rng"]
        self.resumed = self.checkpointer.load(path, checkpointables=keys)
        self.start_epoch = self.resumed["epoch"]
        self.start_iter = self.resumed["iteration"]
        self.best_top1 = self.resumed["best_top1"]
        self.logger.info(
            f"resumed from {path}: epoch {self.start_epoch + 1}, iteration {self.start_iter}"
        )

    def _prepare_output(self) -> None:
        """The output folder, TensorBoard writer and ``config.yaml`` (main process)."""
        if self.ctx.is_main:
            self.logger.start()
            atomic_write_text(self.cfg.dump(), os.path.join(self.output_dir, "config.yaml"))

    # ------------------------------------------------------------------ steps
    def train_one_epoch(
        self,
        epoch: int,
        clock: ProgressClock,
        signals: Optional[PreemptionSignals] = None,
        start_iter: int = 0,
    ) -> dict[str, float]:
        """One epoch from iteration ``start_iter``; the mean of each loss (and of ND's
        mechanism) over the epoch's training images."""
        cfg_train, solver = self.cfg.train, self.cfg.solver
        device = self.ctx.device
        self.sampler.set_epoch(epoch)
        seed_everything(self.seed * 100_003 + epoch * 1_009 + self.ctx.rank)
        indices = list(self.sampler)[start_iter * self.batch :]
        batches = iter(self._loader(self.train_set, indices, self.batch, drop_last=True))
        partial = self.resumed.pop("partial", None) if start_iter else None
        if start_iter:  # the generators as they were after that iteration
            RNGState().load_state_dict(self.resumed.pop("rng"))
        lr = learning_rate_at(epoch, solver)
        set_learning_rate(self.optimizer, lr)
        self.model.train()
        sums = {
            k: torch.tensor(v, dtype=torch.float64, device=device)
            for k, v in (partial or {}).items()
        }
        clock.start()
        for it, (images, labels) in enumerate(batches, start_iter):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if self.mixer is not None:
                images, labels = self.mixer(images, labels)
            if solver.lr_schedule == "warmup_cosine":
                lr = learning_rate_at(epoch + it / self.iters, solver)
                set_learning_rate(self.optimizer, lr)
            with torch.autocast(
                device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                losses, _ = self.model(images, labels, epoch)
            check_finite_losses(losses, epoch * self.iters + it, "distill.<term>.weight")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            if solver.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.distiller.parameters(), solver.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            clock.step()

            values = {**losses, **self.distiller.mechanism}
            n = labels.shape[0]
            sums["seen"] = sums.get("seen", 0.0) + n
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value.detach().double() * n
            if (it + 1) % cfg_train.log_period == 0 or it + 1 == self.iters:
                current = {k: float(v.detach()) for k, v in values.items()}
                self._log_iteration(epoch, it, lr, current, clock)
            if signals is not None and self._preempted(signals):
                self._stop(epoch, it + 1, sums, signals.received)
        keys = sorted(k for k in sums if k != "seen")
        packed = torch.stack(
            [torch.as_tensor(sums[k], dtype=torch.float64, device=device) for k in keys + ["seen"]]
        )
        all_reduce_sum(packed)
        average_buffers(self.distiller)
        return {k: float(packed[i] / packed[-1]) for i, k in enumerate(keys)}

    def _preempted(self, signals: PreemptionSignals) -> bool:
        """Whether any process has received a preemption signal (all of them stop together)."""
        if not self.ctx.distributed:
            return bool(signals.received)
        flag = torch.tensor([float(signals.received)], device=self.ctx.device)
        return bool(all_reduce_sum(flag).item())

    def _stop(self, epoch: int, iteration: int, sums: dict, signum: int) -> None:
        partial = {k: float(v) for k, v in sums.items()}
        self._save(LAST, epoch, iteration, partial=partial)
        self.logger.info(
            f"{signal.Signals(signum).name} received: training stopped after epoch {epoch + 1} "
            f"iteration {iteration}, checkpoint {LAST}.pth written; continue with --resume "
            f"(exit status {EXIT_PREEMPTED})"
        )
        self.logger.close()
        raise SystemExit(EXIT_PREEMPTED)

    def _log_iteration(self, epoch, it, lr, current, clock) -> None:
        eta, per = clock.eta_seconds(), clock.seconds_per_iter
        terms = " ".join(f"{k[5:]} {v:.4f}" for k, v in current.items() if k.startswith("loss_"))
        self.logger.info(
            f"epoch {epoch + 1}/{self.cfg.solver.epochs} iter {it + 1}/{self.iters} loss "
            f"{current['loss']:.4f} ({terms}) lr {lr:.4g} "
            f"{'' if per is None else f'{per * 1000:.0f} ms/it '}"
            f"eta {'?' if eta is None else format_duration(eta)}"
        )
        self.logger.record(
            "iter", {"epoch": epoch + 1, "iter": it + 1, "lr": lr, **current}, step=clock.done
        )

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.distiller.student, self.test_loader, self.ctx.device, self.amp_dtype)

    # ------------------------------------------------------------------ saving
    def _save(self, name: str, epoch: int, iteration: int, **extra) -> None:
        """A checkpoint (every rank takes part: the RNG states are gathered)."""
        self.checkpointer.save(
            name,
            epoch=epoch,
            iteration=iteration,
            best_top1=self.best_top1,
            model_name=self.cfg.model.name,
            config=_plain(self.cfg),
            **self.facts,
            **extra,
        )

    # ------------------------------------------------------------------ the run
    def fit(self) -> TrainingResult:
        epochs = self.cfg.solver.epochs
        self._prepare_output()
        self._describe()
        clock = ProgressClock(epochs * self.iters, self.start_epoch * self.iters + self.start_iter)
        signals = PreemptionSignals()
        signals.install()
        last_eval: dict = {}
        try:
            for epoch in range(self.start_epoch, epochs):
                start, self.start_iter = self.start_iter, 0
                last_eval = self._epoch(epoch, clock, signals, start) or last_eval
        finally:
            signals.restore()
        self._save(FINAL, epochs, 0)
        if self.ctx.is_main and os.path.exists(os.path.join(self.output_dir, LAST + ".pth")):
            os.unlink(os.path.join(self.output_dir, LAST + ".pth"))  # model_final has it all
        self.logger.close()
        return TrainingResult(self.distiller, self.output_dir, epochs, self.best_top1, last_eval)

    def _epoch(self, epoch, clock, signals, start_iter) -> dict:
        """Train one epoch, evaluate when due, log and save; the evaluation (or {})."""
        solver, period = self.cfg.solver, self.cfg.train.eval_period
        train = self.train_one_epoch(epoch, clock, signals, start_iter)
        record = {"epoch": epoch + 1, "lr": learning_rate_at(epoch, solver)}
        record.update({f"train_{k}": v for k, v in train.items()})
        result = {}
        if (epoch + 1) % period == 0 or epoch + 1 == solver.epochs:
            result = self.evaluate()
            record.update({f"test_{k}": v for k, v in result.items()})
            if self.best_top1 is None or result["top1"] > self.best_top1:
                self.best_top1 = result["top1"]
                if self.ctx.is_main:
                    student = self.distiller.student.state_dict()
                    best = {"model": student, "epoch": epoch + 1, "metrics": result}
                    atomic_torch_save(best, os.path.join(self.output_dir, BEST))
            self.logger.info(
                f"epoch {epoch + 1}/{solver.epochs}: test top-1 {result['top1']:.2f} "
                f"top-5 {result['top5']:.2f} loss {result['loss']:.4f} "
                f"(best top-1 {self.best_top1:.2f})"
            )
        self.logger.record("epoch", record, step=epoch + 1)
        if epoch + 1 < solver.epochs:  # after the last epoch, fit writes model_final instead
            self._save(LAST, epoch + 1, 0)
        return result

    def _describe(self) -> None:
        teacher = self.cfg.distill.teacher.name
        terms = ", ".join(
            f"{n}(w={t.weight}{', warm-up' if t.warm_up else ''})"
            for n, t in self.distiller.terms.items()
        )
        self.logger.info(
            f"student {self.cfg.model.name} | teacher {teacher or '-'} | losses ce"
            f"{', ' + terms if terms else ''} | {len(self.train_set)} train / "
            f"{len(self.test_set)} test images, {self.info.num_classes} classes | "
            f"{self.ctx.world_size} process(es) on {self.ctx.device.type} | batch {self.batch} "
            f"per process | amp {self.amp_dtype or 'off'} | output {self.output_dir}"
        )


def run_training(cfg, resume: bool = False, stream=None) -> TrainingResult:
    """Build and train (``resume``: from ``train.output_dir``'s last checkpoint, if any)."""
    return ClassificationTrainer(cfg, stream=stream, resume=resume).fit()


def run_evaluation(cfg, resume: bool = False, stream=None) -> dict[str, float]:
    """Top-1/top-5 of ``model.weights`` (with ``resume``: of ``train.output_dir``'s last
    checkpoint) on the test split; only the student and the test split are built."""
    with input_stage(f"train.device {cfg.train.device}"):
        ctx = init_distributed(cfg.train.device)
    with stop_if_any_rank_fails(ctx), input_stage("the config"):
        test_set, info = build_dataset(cfg.data, train=False, augment=False)
        weights = cfg.model.weights
        cfg = cfg.clone()
        cfg.defrost()
        cfg.model.weights = ""
        student = build_student(cfg, info)
        checkpointer = ClassifierCheckpointer(student, cfg.train.output_dir, what="model.weights")
        if resume and checkpointer.has_checkpoint():
            weights = checkpointer.get_checkpoint_file()
        if not weights:
            raise ConfigError(
                "--eval-only evaluates model.weights: give it (e.g. model.weights "
                "output/<run>/model_final.pth), or --resume for train.output_dir's last checkpoint"
            )
        checkpointer.load(weights, checkpointables=[])
    student.to(ctx.device)
    loader = DataLoader(
        test_set,
        cfg.solver.eval_batch_size,
        sampler=ShardSampler(len(test_set), ctx.rank, ctx.world_size),
        num_workers=cfg.data.num_workers,
    )
    result = evaluate(student, loader, ctx.device, amp_dtype_for(ctx.device, cfg.train.amp))
    logger = RunLogger(cfg.train.output_dir, ctx.is_main, False, stream=stream)
    logger.info(
        f"{cfg.model.name} from {weights}: top-1 {result['top1']:.2f} top-5 "
        f"{result['top5']:.2f} loss {result['loss']:.4f} on {result['samples']} test images"
    )
    logger.record("eval", {"weights": weights, **result})
    return result
