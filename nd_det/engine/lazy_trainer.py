"""Training and evaluating a LazyConfig run with DistillTrainer's machinery.

:class:`LazyDistillTrainer` is DistillTrainer (its checkpointer, hooks, preemption, resumable
sampler, RNG states, finite-loss trainers, resume rules) with the objects detectron2's
``tools/lazyconfig_train_net.py`` builds from a LazyConfig: ``instantiate(cfg.model)``, the
optimizer of ``cfg.optimizer``, the loader of ``cfg.dataloader.train`` (its sampler replaced by
the resumable one), ``cfg.lr_multiplier``, evaluation with ``cfg.dataloader.test`` and
``cfg.dataloader.evaluator``; the run's numbers (iterations, periods, output folder, AMP, DDP)
come from ``cfg.train`` through the yacs view of :func:`~nd_det.engine.lazy_config.run_view`.
"""

import copy
import logging
from collections import OrderedDict

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver import LRMultiplier
from detectron2.utils import comm
from omegaconf import DictConfig, OmegaConf

from ..modeling.lazy import distill_model_target, plain_student_model
from ..modeling.student_checkpoint import load_student_checkpoint
from ..utils.skip_init import without_random_init
from .resumable_sampler import ResumableTrainingSampler
from .trainer import DistillTrainer

__all__ = ["LazyDistillTrainer", "lazy_test", "evaluate_lazy_student", "evaluate_lazy_teacher"]

logger = logging.getLogger(__name__)


class LazyDistillTrainer(DistillTrainer):
    """DistillTrainer for the LazyConfig ``cfg`` (see the module docstring); ``view``: its run
    settings in yacs keys (:func:`~nd_det.engine.lazy_config.run_view`)."""

    def __init__(self, cfg: DictConfig, view: CfgNode):
        self.lazy_cfg = cfg
        self.ddp_options = OmegaConf.to_container(cfg.train.get("ddp", {}), resolve=True)
        self.log_period = int(cfg.train.get("log_period", DistillTrainer.log_period))
        super().__init__(view)

    def build_model(self, cfg):
        model = instantiate(self.lazy_cfg.model)
        model.to(torch.device(cfg.MODEL.DEVICE))
        logger.info("Model:\n%s", model)
        return model

    def build_optimizer(self, cfg, model):
        optimizer = copy.deepcopy(self.lazy_cfg.optimizer)
        optimizer.params.model = model  # detectron2's get_default_optimizer_params
        return instantiate(optimizer)

    def build_train_loader(self, cfg):
        """``dataloader.train`` with the resumable sampler, unless it names its own sampler."""
        node = self.lazy_cfg.dataloader.train
        if node.get("sampler") is not None:
            logger.warning(
                "dataloader.train.sampler is set: a resumed run restarts that sampler's stream "
                "(only the default TrainingSampler resumes exactly)"
            )
            return instantiate(node)
        dataset = instantiate(node.dataset)
        self.train_sampler = ResumableTrainingSampler(
            len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None
        )
        kwargs = {k: instantiate(v) for k, v in node.items() if k not in ("_target_", "dataset")}
        # a loader-owned generator: (re)creating the iterator draws nothing from torch's global
        # RNG, whose state the checkpoints restore (as DistillTrainer's own loader)
        return distill_model_target(node)(
            dataset=dataset,
            sampler=self.train_sampler,
            seed=self.train_sampler.seed + comm.get_rank(),
            **kwargs,
        )

    def build_lr_scheduler(self, cfg, optimizer):
        multiplier = instantiate(self.lazy_cfg.lr_multiplier)
        return LRMultiplier(optimizer, multiplier=multiplier, max_iter=cfg.SOLVER.MAX_ITER)

    def test(self, cfg, model):
        return lazy_test(self.lazy_cfg, model)


def lazy_test(cfg: DictConfig, model, image_format=None) -> OrderedDict:
    """``model`` evaluated as detectron2's lazyconfig_train_net does (``dataloader.test``,
    ``dataloader.evaluator``; images read in ``image_format`` when given):
    {test set(s): results}; {} when ``dataloader.test.dataset.names`` is empty."""
    names = cfg.dataloader.test.dataset.names
    names = [names] if isinstance(names, str) else list(names or ())
    if not names:
        logger.info("dataloader.test.dataset.names is empty: nothing to evaluate")
        return OrderedDict()
    loader = copy.deepcopy(cfg.dataloader.test)
    if image_format:
        loader.mapper.image_format = image_format
    results = inference_on_dataset(
        model, instantiate(loader), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process() and results:
        print_csv_format(results)
    return OrderedDict([(",".join(names), results)])


def evaluate_lazy_student(cfg: DictConfig, weights: str, device: str) -> OrderedDict:
    """The student alone (plain detectron2's model of ``cfg.model``), the student entries of
    ``weights`` loaded strictly."""
    with without_random_init():  # the strict load replaces every value
        model = instantiate(plain_student_model(cfg.model)).to(torch.device(device))
    load_student_checkpoint(model, weights, "train.init_checkpoint")
    logger.info("Evaluating the student from %s", weights)
    return lazy_test(cfg, model.eval())


def evaluate_lazy_teacher(cfg: DictConfig, device: str) -> OrderedDict:
    """The teacher of ``model.teacher`` on the same test sets, reading the images in its own
    format; masks are evaluated only when the student predicts them."""
    teacher = instantiate(cfg.model.teacher)
    if not teacher.weights_loaded:
        teacher.load_weights()
    teacher.apply(lambda t: t.to(torch.device(device)))
    heads = teacher.model.roi_heads
    heads.mask_on = heads.mask_on and cfg.model.roi_heads.get("mask_head") is not None
    return lazy_test(cfg, teacher.model, image_format=teacher.source.input_format)
