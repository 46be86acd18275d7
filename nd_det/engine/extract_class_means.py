"""tools/extract_class_means.py: the teacher's class-mean table of a distillation config."""
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..class_means_extraction import extract_class_means
from .args import distill_argument_parser
from .cli import launch_main
from .preflight import preflight_distill
from .setup import setup_cfg

__all__ = ["parser", "precheck", "run", "main"]

_EPILOG = """
  python tools/extract_class_means.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml
  python tools/extract_class_means.py --config-file CFG --num-gpus 8 --output means.pth
  python tools/extract_class_means.py --config-file CFG --max-images 2000   # a quick table

Writes to MODEL.DISTILL.CLASS_MEANS unless --output is given: extract once, then train.
"""


def parser():
    p = distill_argument_parser(epilog=_EPILOG)
    p.add_argument("--output", default=None,
                   help="where to write the table (default: MODEL.DISTILL.CLASS_MEANS)")
    p.add_argument("--max-images", type=int, default=None,
                   help="use only the first K training images (deterministic)")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="do not fail on classes without samples: zero-fill their rows and flag "
                   "them in the file's metadata (ND then pulls no direction for them)")
    return p


def precheck(args):
    """Fail fast, before any worker starts: config, datasets, teacher config and weights."""
    cfg = setup_cfg(args, splits=("TRAIN",))
    preflight_distill(cfg, need_class_means=False)


def run(args):
    setup_logger(distributed_rank=comm.get_rank())
    setup_logger(distributed_rank=comm.get_rank(), name="nd_det")
    cfg = setup_cfg(args, splits=("TRAIN",))
    extract_class_means(
        cfg,
        output=args.output,
        max_images=args.max_images,
        allow_empty_classes=args.allow_empty_classes,
    )


def main(argv=None) -> None:
    launch_main(run, parser().parse_args(argv), precheck=precheck)
