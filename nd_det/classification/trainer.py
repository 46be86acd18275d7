"""Training loop of the classification package: one process or many (torchrun + DDP).

``run_training(cfg, resume=None | "auto" | path)`` trains the config's student (alone when the
config names no teacher), evaluates top-1/top-5 on the test split, writes
``<output_dir>/last_checkpoint.pth`` (atomically, every epoch), ``model_best.pth`` and
``model_final.pth`` (student weights only), ``metrics.jsonl`` and TensorBoard events, and prints
progress lines with an ETA.  Per-epoch re-seeding makes a resumed run repeat an uninterrupted
one exactly (same data order, augmentation and dropout).
"""

import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import ConfigError, FileError
from ..utils.atomic_file import atomic_torch_save
from ..utils.precision import AUTOCAST_DTYPES
from ..utils.progress import ProgressClock, format_duration
from ..utils.seed import seed_everything
from .builders import build_distiller
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_model_weights, module_mismatch
from .config import config_dict, merge_config
from .data import ShardSampler, build_batch_mixer, build_dataset
from .distiller import Distiller
from .distributed import all_reduce_sum, average_buffers, init_distributed, stop_if_any_rank_fails
from .metrics import evaluate
from .preflight import check_batch_split, check_training_setup
from .run_logger import RunLogger
from .solver import build_optimizer, learning_rate_at, set_learning_rate

__all__ = [
    "ClassificationTrainer",
    "TrainingResult",
    "run_training",
    "run_evaluation",
    "amp_dtype_for",
]

LAST_CHECKPOINT = "last_checkpoint.pth"
BEST_WEIGHTS = "model_best.pth"
FINAL_WEIGHTS = "model_final.pth"


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


class ClassificationTrainer:
    """``ClassificationTrainer(cfg)`` builds a run; ``fit()`` trains it.

    Set-up is in two parts.  First each process builds its own pieces (datasets, student,
    teacher, loss terms, optimizer; with ``resume``, the checkpoint is read and compared with
    them; with ``weights=(path, key)``, the student's weights are loaded): a mistake there is a
    UserError.  Then one collective tells every process whether any of them failed
    (:func:`~.distributed.stop_if_any_rank_fails`), so no process waits for one that stopped.
    Only then are DDP and the data loaders made.  Nothing is written before ``fit()``.
    """

    def __init__(
        self,
        cfg: dict,
        stream=None,
        resume: Optional[str] = None,
        weights: Optional[tuple[str, str]] = None,
    ):
        self.cfg = cfg
        self.ctx = init_distributed(cfg["train"]["device"])
        self.output_dir = cfg["train"]["output_dir"]
        self.seed = int(cfg["train"]["seed"])
        self.start_epoch = 0
        self.best_top1: Optional[float] = None
        with stop_if_any_rank_fails(self.ctx):
            self._build(stream, weights)
            resume_state = self._read_resume_state(resume)

        device = self.ctx.device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = self.distiller
        if self.ctx.distributed:
            self.model = DistributedDataParallel(
                self.distiller, device_ids=[device.index] if device.type == "cuda" else None
            )
        self._build_loaders()
        if resume_state is not None:
            self._apply_resume_state(*resume_state)

    # ------------------------------------------------------------------ set-up
    def _build(self, stream, weights: Optional[tuple[str, str]]) -> None:
        """This process's pieces; raises a UserError for a set-up mistake, writes nothing."""
        cfg, train_cfg, solver = self.cfg, self.cfg["train"], self.cfg["solver"]
        self.logger = RunLogger(
            self.output_dir,
            enabled=self.ctx.is_main,
            tensorboard=bool(train_cfg["tensorboard"]),
            stream=stream,
        )
        world = self.ctx.world_size
        self.batch_per_process = check_batch_split(solver, world)
        self.train_set, self.info = build_dataset(cfg["data"], train=True, augment=True)
        self.test_set, _ = build_dataset(cfg["data"], train=False, augment=False)
        per_process = math.ceil(len(self.train_set) / world)
        if per_process < self.batch_per_process:
            raise ConfigError(
                f"the training set gives {per_process} samples per process, fewer than one batch "
                f"of {self.batch_per_process}; lower solver.batch_size or use more data "
                "(data.train_subset)"
            )
        seed_everything(self.seed)  # identical initial weights on every rank
        self.distiller, self.facts = build_distiller(cfg, self.info)
        self.mixer = build_batch_mixer(cfg["data"], self.info.num_classes)
        if weights is not None:
            path, key = weights
            load_model_weights(self.distiller.student, path, what="evaluated", key=key)
        self.distiller.to(self.ctx.device)
        self.distiller.teacher_to(self.ctx.device)
        self.optimizer = build_optimizer(self.distiller.parameters(), solver)
        self.amp_dtype = amp_dtype_for(self.ctx.device, bool(train_cfg["amp"]))
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.ctx.device.type == "cuda"
        )

    def _build_loaders(self) -> None:
        solver, data = self.cfg["solver"], self.cfg["data"]
        world, rank = self.ctx.world_size, self.ctx.rank
        pin = self.ctx.device.type == "cuda"
        workers = int(data["num_workers"])
        self.train_sampler = DistributedSampler(
            self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
        )
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=self.batch_per_process,
            sampler=self.train_sampler,
            num_workers=workers,
            pin_memory=pin,
            drop_last=True,
        )
        # (no persistent workers: fresh workers per epoch draw their seeds from the per-epoch
        # re-seeded generator, which is what makes a resumed run repeat an uninterrupted one)
        self.test_loader = DataLoader(
            self.test_set,
            batch_size=int(solver["eval_batch_size"]),
            sampler=ShardSampler(len(self.test_set), rank, world),
            num_workers=workers,
            pin_memory=pin,
        )

    def _read_resume_state(self, resume: Optional[str]) -> Optional[tuple[str, dict]]:
        """``(path, checkpoint)`` to continue from, checked against the built pieces; None to
        start fresh (``resume`` None, or ``"auto"`` without a checkpoint in the output folder)."""
        if resume is None:
            return None
        path = resume
        if resume == "auto":
            path = os.path.join(self.output_dir, LAST_CHECKPOINT)
            if not os.path.isfile(path):
                self.logger.info(f"no checkpoint at {path}: starting from scratch")
                return None
        state = load_checkpoint(path)
        if state.get("model_name") != self.cfg["model"]["name"]:
            raise FileError(
                f"--resume: checkpoint {path} holds a {state.get('model_name')!r} "
                f"model but the config trains {self.cfg['model']['name']!r}; "
                "resume with the config of that run"
            )
        for what, module, key in (
            ("student", self.distiller.student, "model"),
            ("loss terms", self.distiller.terms, "loss_terms"),
        ):
            problems = module_mismatch(module, state.get(key) or {})
            if problems:
                raise FileError(
                    f"--resume: the {what} in checkpoint {path} do not fit this "
                    f"config ({problems}); resume with the config of "
                    "that run (same model, dataset and distill.losses)"
                )
        return path, state

    def _apply_resume_state(self, path: str, state: dict) -> None:
        self.distiller.student.load_state_dict(state["model"])
        self.distiller.terms.load_state_dict(state["loss_terms"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.best_top1 = state.get("best_top1")
        self.logger.info(f"resumed from {path} after epoch {self.start_epoch}")

    def resume(self, resume: Optional[str]) -> None:
        """``None``: start fresh; ``"auto"``: the output folder's last checkpoint if there is one;
        otherwise a checkpoint path that must exist.  (``ClassificationTrainer(cfg, resume=...)``
        does the same during set-up, before any collective.)"""
        found = self._read_resume_state(resume)
        if found is not None:
            self._apply_resume_state(*found)

    def _prepare_output(self) -> None:
        """The output folder, TensorBoard writer and resolved ``config.yaml`` (main process)."""
        if not self.ctx.is_main:
            return
        self.logger.start()
        resolved = config_dict(self.cfg)
        with open(os.path.join(self.output_dir, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(f"# resolved from {resolved.pop('_source', '(no file)')}\n")
            yaml.safe_dump(resolved, f, sort_keys=False)

    # ------------------------------------------------------------------ steps
    def train_one_epoch(self, epoch: int, clock: ProgressClock) -> dict[str, float]:
        cfg_train, solver = self.cfg["train"], self.cfg["solver"]
        epochs = int(solver["epochs"])
        device = self.ctx.device
        self.train_sampler.set_epoch(epoch)
        seed_everything(self.seed * 100_003 + epoch * 1_009 + self.ctx.rank)
        lr = learning_rate_at(epoch, solver)
        set_learning_rate(self.optimizer, lr)
        per_iteration = solver["lr_schedule"] == "warmup_cosine"
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = torch.zeros((), dtype=torch.float64, device=device)
        iters = len(self.train_loader)
        log_period = max(1, int(cfg_train["log_period"]))
        clip = solver.get("clip_grad_norm")
        clock.start()
        for it, (images, labels) in enumerate(self.train_loader):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if self.mixer is not None:
                images, labels = self.mixer(images, labels)
            if per_iteration:
                lr = learning_rate_at(epoch + it / iters, solver)
                set_learning_rate(self.optimizer, lr)
            with torch.autocast(
                device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                losses, _ = self.model(images, labels, epoch)
            total = losses["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.distiller.parameters(), float(clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            clock.step()

            n = labels.shape[0]
            seen += n
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.detach().double() * n
            if (it + 1) % log_period == 0 or it + 1 == iters:
                current = {k: float(v.detach()) for k, v in losses.items()}
                if not all(math.isfinite(v) for v in current.values()):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {epoch + 1}, iteration {it + 1}: {current}. "
                        "Lower solver.lr, check the loss weights, or set solver.clip_grad_norm."
                    )
                self._log_iteration(epoch, epochs, it, iters, lr, current, clock)
        keys = sorted(sums)
        packed = torch.stack([sums[k] for k in keys] + [seen])
        all_reduce_sum(packed)
        average_buffers(self.distiller)
        return {k: float(packed[i] / packed[-1]) for i, k in enumerate(keys)}

    def _log_iteration(self, epoch, epochs, it, iters, lr, current, clock) -> None:
        eta = clock.eta_seconds()
        per = clock.seconds_per_iter
        terms = " ".join(f"{k[5:]} {v:.4f}" for k, v in current.items() if k != "loss")
        self.logger.info(
            f"epoch {epoch + 1}/{epochs} iter {it + 1}/{iters} loss {current['loss']:.4f} "
            f"({terms}) lr {lr:.4g} "
            f"{'' if per is None else f'{per * 1000:.0f} ms/it '}"
            f"eta {'?' if eta is None else format_duration(eta)}"
        )
        self.logger.record(
            "iter", {"epoch": epoch + 1, "iter": it + 1, "lr": lr, **current}, step=clock.done
        )

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.distiller.student, self.test_loader, self.ctx.device, self.amp_dtype)

    # ------------------------------------------------------------------ saving
    def _student_payload(self, epochs_done: int, metrics: dict) -> dict:
        return {
            "model": self.distiller.student.state_dict(),
            "model_name": self.cfg["model"]["name"],
            "num_classes": self.info.num_classes,
            "in_channels": self.info.in_channels,
            "epoch": epochs_done,
            "metrics": metrics,
            "config": config_dict(self.cfg),
        }

    def save_checkpoint(self, epochs_done: int, metrics: dict) -> None:
        if not self.ctx.is_main:
            return
        payload = self._student_payload(epochs_done, metrics)
        payload.update(
            {
                "format": CHECKPOINT_FORMAT,
                "loss_terms": self.distiller.terms.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "best_top1": self.best_top1,
                **self.facts,
            }
        )
        atomic_torch_save(payload, os.path.join(self.output_dir, LAST_CHECKPOINT))

    def save_weights(self, name: str, epochs_done: int, metrics: dict) -> None:
        if self.ctx.is_main:
            atomic_torch_save(
                self._student_payload(epochs_done, metrics), os.path.join(self.output_dir, name)
            )

    # ------------------------------------------------------------------ the run
    def fit(self) -> TrainingResult:
        solver, cfg_train = self.cfg["solver"], self.cfg["train"]
        epochs = int(solver["epochs"])
        iters = len(self.train_loader)
        self._prepare_output()
        self._describe()
        clock = ProgressClock(epochs * iters, self.start_epoch * iters)
        last_eval: dict = {}
        for epoch in range(self.start_epoch, epochs):
            train_losses = self.train_one_epoch(epoch, clock)
            record = {
                "epoch": epoch + 1,
                "lr": learning_rate_at(epoch, solver),
                **{f"train_{k}": v for k, v in train_losses.items()},
            }
            period = max(1, int(cfg_train["eval_period"]))
            if (epoch + 1) % period == 0 or epoch + 1 == epochs:
                last_eval = self.evaluate()
                record.update({f"test_{k}": v for k, v in last_eval.items()})
                if self.best_top1 is None or last_eval["top1"] > self.best_top1:
                    self.best_top1 = last_eval["top1"]
                    self.save_weights(BEST_WEIGHTS, epoch + 1, last_eval)
                self.logger.info(
                    f"epoch {epoch + 1}/{epochs}: test top-1 {last_eval['top1']:.2f} "
                    f"top-5 {last_eval['top5']:.2f} loss {last_eval['loss']:.4f} "
                    f"(best top-1 {self.best_top1:.2f})"
                )
            self.logger.record("epoch", record, step=epoch + 1)
            self.save_checkpoint(epoch + 1, last_eval)
        self.save_weights(FINAL_WEIGHTS, epochs, last_eval)
        self.logger.close()
        return TrainingResult(self.distiller, self.output_dir, epochs, self.best_top1, last_eval)

    def _describe(self) -> None:
        teacher = self.cfg["distill"]["teacher"]["name"]
        terms = ", ".join(
            f"{n}(w={t.weight}{', warm-up' if t.warm_up else ''})"
            for n, t in self.distiller.terms.items()
        )
        self.logger.info(
            f"student {self.cfg['model']['name']} | teacher {teacher or '-'} | losses {terms} | "
            f"{len(self.train_set)} train / {len(self.test_set)} test images, "
            f"{self.info.num_classes} classes | {self.ctx.world_size} process(es) on "
            f"{self.ctx.device.type} | batch {self.batch_per_process} per process | "
            f"amp {self.amp_dtype or 'off'} | output {self.output_dir}"
        )


def run_training(cfg: dict, resume: Optional[str] = None, stream=None) -> TrainingResult:
    """Check the set-up (:func:`~.preflight.check_training_setup`), build and train."""
    check_training_setup(cfg, resume=resume)
    trainer = ClassificationTrainer(cfg, stream=stream, resume=resume)
    return trainer.fit()


def run_evaluation(cfg: dict, weights: Optional[str] = None, stream=None) -> dict[str, float]:
    """Top-1/top-5 of the config's model on the test split, with ``weights`` (a training output
    or raw state dict) or else ``model.weights``."""
    check_training_setup(cfg, eval_only=True, weights=weights)
    source = weights or cfg["model"].get("weights")
    key = "--weights" if weights else "model.weights"
    # only the student is evaluated: no teacher, class means or distillation terms are built
    cfg = merge_config(
        cfg,
        {
            "model": {"weights": None},
            "distill": {"teacher": {"name": None, "weights": None}, "losses": {"ce": {}}},
        },
    )
    trainer = ClassificationTrainer(cfg, stream=stream, weights=(source, key))
    result = trainer.evaluate()
    trainer.logger.info(
        f"{cfg['model']['name']} from {source}: top-1 {result['top1']:.2f} "
        f"top-5 {result['top5']:.2f} loss {result['loss']:.4f} "
        f"on {result['samples']} test images"
    )
    trainer.logger.record("eval", {"weights": source, **result})
    trainer.logger.close()
    return result
