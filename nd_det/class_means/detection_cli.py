"""``tools/extract_class_means.py --task detection`` (the default): the teacher's class-mean
table of a detection distillation config (:mod:`.detection`)."""

import os

from detectron2.config import instantiate
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import OmegaConf

from ..config import is_lazy_run_config, load_lazy_config
from ..engine.args import distill_argument_parser
from ..engine.cli import launch_main
from ..engine.lazy_config import run_view
from ..engine.setup import register_datasets, setup_cfg
from ..errors import input_stage
from ..utils.paths import check_overwrite
from ..utils.seed import seed_argument
from .detection import (
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    REFERENCE_NUM_IMAGES,
    check_extraction,
    extract_class_means,
    parse_max_images,
)

__all__ = ["parser", "precheck", "run", "main"]

_EPILOG = """
  python tools/extract_class_means.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml
  python tools/extract_class_means.py --config-file CFG --num-gpus 8 --output means.pth
  python tools/extract_class_means.py --config-file CFG --max-images 2000   # a quick table
  python tools/extract_class_means.py --config-file CFG --protocol gt-boxes --max-images all
  python tools/extract_class_means.py --config-file configs/COCO-Distill/FCOS_R50_from_R101_nd.py \
      model.teacher.weights=output/fcos_R101/model_final.pth     # a LazyConfig run

Writes to MODEL.DISTILL.CLASS_MEANS unless --output is given (an existing table only with
--overwrite): extract once, then train.  The paper's own tables (R101_emb.json / R50_emb.json)
are converted with tools/import_class_means.py instead.  Protocols: see docs/class_means.md.
"""


def parser():
    p = distill_argument_parser(epilog=_EPILOG)
    p.add_argument(
        "--task",
        choices=("detection",),
        default="detection",
        help="detection (default); --task classification takes a trained classifier "
        "(see --task classification --help)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="where to write the table (default: MODEL.DISTILL.CLASS_MEANS)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the table at the output path (without it, an existing file is refused)",
    )
    p.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        choices=list(PROTOCOLS),
        help="which teacher RoIs are averaged. 'reference' (default): the RoIs the "
        "ROI head samples from the teacher's training-mode RPN proposals, GT appended, "
        "background included, under the config's TRAINING augmentation (INPUT."
        "MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING, RANDOM_FLIP), as the "
        "paper's code did; 'gt-boxes': each ground-truth box once at test scale, "
        "background from sampled teacher proposals",
    )
    p.add_argument(
        "--max-images",
        default=str(REFERENCE_NUM_IMAGES),
        metavar="K",
        help="use at most K training images: the first K of a permutation seeded by "
        f"--seed, or 'all' (default {REFERENCE_NUM_IMAGES}, the reference's 30,000 "
        "iterations x 2 images per process; every image of a smaller set)",
    )
    p.add_argument(
        "--seed",
        type=seed_argument,
        default=0,
        help="seeds the image subset and, with each image's index, its augmentation "
        "and RoI sampling (the table does not depend on --num-gpus or loader workers; "
        "default 0)",
    )
    p.add_argument(
        "--allow-empty-classes",
        action="store_true",
        help="do not fail on classes without samples: zero-fill their rows and flag "
        "them in the file's metadata (ND then pulls no direction for them)",
    )
    return p


def _config(args):
    """The yacs config the extraction reads, and the augmentation of a LazyConfig run's mapper
    (``dataloader.train`` for the reference protocol, ``dataloader.test`` for gt-boxes; None for
    a yacs config: detectron2 builds it from cfg.INPUT)."""
    if not (os.path.isfile(args.config_file) and is_lazy_run_config(args.config_file)):
        return setup_cfg(args), None
    register_datasets(args)
    lazy = load_lazy_config(args.config_file, args.opts, required=("model", "dataloader.train"))
    node = f"dataloader.{'train' if args.protocol == 'reference' else 'test'}.mapper.augmentations"
    with input_stage(node):
        augmentations = list(instantiate(OmegaConf.select(lazy, node, default=[])))
    return run_view(lazy), augmentations


def _options(args) -> dict:
    return dict(
        output=args.output,
        max_images=parse_max_images(args.max_images),
        allow_empty_classes=args.allow_empty_classes,
        seed=args.seed,
        protocol=args.protocol,
    )


def precheck(args):
    """Fail fast, before any worker starts: config, datasets, teacher config and weights, the
    output path, classes without ground truth in the selected images."""
    options = _options(args)  # the flags' own values first: nothing to load for them
    cfg, _ = _config(args)
    what = "--output" if args.output else "MODEL.DISTILL.CLASS_MEANS (the default --output)"
    check_overwrite(args.output or cfg.MODEL.DISTILL.CLASS_MEANS, what, args.overwrite)
    check_extraction(cfg, **options)


def run(args):
    setup_logger(distributed_rank=comm.get_rank())
    setup_logger(distributed_rank=comm.get_rank(), name="nd_det")
    cfg, augmentations = _config(args)
    extract_class_means(cfg, augmentations=augmentations, **_options(args))


def main(argv=None) -> None:
    launch_main(run, parser().parse_args(argv), precheck=precheck)
