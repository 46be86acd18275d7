"""Build the full config of a run from the command line and check it against the datasets."""
import logging
import os

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import ConfigError, load_config
from ..data import register_coco_dataset

__all__ = ["setup_cfg", "check_dataset_classes"]

logger = logging.getLogger(__name__)


def setup_cfg(args, freeze: bool = True, log: bool = True,
              splits=("TRAIN", "TEST")) -> CfgNode:
    """get_cfg + nd-det keys + --config-file + overrides; registers --dataset entries and checks
    that the datasets of ``splits`` (DATASETS.TRAIN / TEST) have NUM_CLASSES classes.

    With ``log``, detectron2's ``default_setup`` runs too (loggers, config.yaml in OUTPUT_DIR,
    seeding): tools call ``setup_cfg(args, log=False)`` once up front to fail fast, then again in
    each worker."""
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if log:
        default_setup(cfg, args)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="nd_det")
    degenerate = "warn" if getattr(args, "allow_degenerate_boxes", False) else "error"
    for name, json_file, image_dir in getattr(args, "dataset", []) or []:
        register_coco_dataset(name, json_file, image_dir, degenerate_boxes=degenerate)
    check_dataset_classes(cfg, splits)
    if freeze:
        cfg.freeze()
    return cfg


def check_dataset_classes(cfg: CfgNode, splits=("TRAIN", "TEST")) -> None:
    """Every registered dataset of DATASETS.<split> must have NUM_CLASSES classes."""
    want = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    for name in [n for split in splits for n in cfg.DATASETS[split]]:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != want:
            raise ConfigError(
                f"dataset {name!r} has {len(classes)} classes but MODEL.ROI_HEADS.NUM_CLASSES is "
                f"{want}: set MODEL.ROI_HEADS.NUM_CLASSES {len(classes)} (and use a teacher "
                "trained on these classes)."
            )
