"""A run's config from the command line (checked, nothing written), and the per-process set-up
that writes into OUTPUT_DIR (only once every check has passed)."""

import logging
import os
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from ..config import load_config, num_classes, num_classes_key
from ..data import register_coco_dataset
from ..errors import ConfigError, DataError
from ..utils.atomic_file import atomic_write_text
from ..utils.paths import writing

__all__ = ["setup_cfg", "setup_run", "register_datasets", "check_datasets", "RUN_CONFIG_NAME"]

logger = logging.getLogger(__name__)

RUN_CONFIG_NAME = "config.yaml"


def setup_cfg(args, setup: bool = False) -> CfgNode:
    """get_cfg + nd-det keys + --config-file + overrides, frozen; registers the --dataset entries
    (the datasets are checked by the run's pre-flight: :func:`check_datasets`).  Writes nothing,
    unless ``setup``: then :func:`setup_run` runs once the config is loaded (so the dataset
    registration is logged)."""
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if setup:
        setup_run(cfg, args)
    register_datasets(args)
    cfg.freeze()
    return cfg


def register_datasets(args) -> None:
    """The COCO-format datasets of ``--dataset NAME JSON IMAGE_DIR`` (read and checked once)."""
    degenerate = "warn" if getattr(args, "allow_degenerate_boxes", False) else "error"
    for name, json_file, image_dir in getattr(args, "dataset", []) or []:
        register_coco_dataset(name, json_file, image_dir, degenerate_boxes=degenerate, replace=True)


def setup_run(cfg: CfgNode, args, config_text: Optional[str] = None) -> None:
    """What detectron2's ``default_setup`` does, in each process of a run that passed its
    checks: loggers into OUTPUT_DIR, the environment and command line in the log, the full config
    saved as OUTPUT_DIR/config.yaml, seeding, cuDNN benchmark.

    A resumed run (``--resume``) keeps the config.yaml of the run it continues (the record of
    the settings the checkpoints were trained with) and writes its own next to it as
    config.resume.yaml.  (``default_setup`` would overwrite it, hence this copy of its steps.)
    ``config_text``: what the file holds instead of ``cfg.dump()`` (a LazyConfig run's own).
    The config is written atomically (a run killed then leaves no half record); a folder or file
    the system refuses is one FileError naming it and the ``[Errno N]`` cause."""
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    with writing("OUTPUT_DIR", output_dir, "choose another OUTPUT_DIR or fix that folder"):
        if comm.is_main_process() and output_dir:
            PathManager.mkdirs(output_dir)
        setup_logger(output_dir, distributed_rank=rank, name="fvcore")
        d2_logger = setup_logger(output_dir, distributed_rank=rank)
        setup_logger(output_dir, distributed_rank=rank, name="nd_det")
    d2_logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    d2_logger.info("Environment info:\n%s", collect_env_info())
    d2_logger.info("Command line arguments: %s", args)
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, RUN_CONFIG_NAME)
        if getattr(args, "resume", False) and os.path.isfile(path):
            path = os.path.join(output_dir, "config.resume.yaml")
        with writing("the run's config", path, "free space or fix OUTPUT_DIR, then run again"):
            atomic_write_text(config_text or cfg.dump(), path)
        d2_logger.info("Full config saved to %s", path)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def check_datasets(cfg: CfgNode, splits=("TRAIN", "TEST"), required=("TRAIN",)) -> None:
    """Every name of DATASETS.<split> is registered, its files exist and it has the model's
    classes (detectron2 would find out in a worker, after OUTPUT_DIR is written, or never)."""
    want = num_classes(cfg)
    for split in splits:
        names = list(cfg.DATASETS[split])
        if split in required and not names:
            raise ConfigError(
                f"DATASETS.{split} is empty: name a dataset (--dataset NAME JSON DIR)"
            )
        for name in names:
            if name not in DatasetCatalog:
                raise DataError(
                    f"DATASETS.{split} {name!r} is not registered: add --dataset "
                    f"{name} JSON IMAGE_DIR, or use a builtin such as coco_2017_val"
                )
            meta = MetadataCatalog.get(name)
            files = (meta.get("json_file", ""), meta.get("image_root", ""))
            missing = [p for p in files if p and not os.path.exists(p)]
            if missing:
                raise DataError(
                    f"DATASETS.{split} {name!r}: {missing[0]} does not exist (builtin "
                    "sets are under $DETECTRON2_DATASETS, default ./datasets)"
                )
            classes = meta.get("thing_classes", None)
            if classes is not None and len(classes) != want:
                raise ConfigError(
                    f"dataset {name!r} has {len(classes)} classes: set "
                    f"{num_classes_key(cfg)} {len(classes)} (and a teacher of them)"
                )
