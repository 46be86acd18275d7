"""Which processes share the statistics of ReviewKD's ABF BatchNorms
(``MODEL.DISTILL.REVIEWKD.BN_IMAGES``).

The reference trained on 4 GPUs x 2 images, so every ABF BatchNorm normalised over 2 images.
With the same 8 images per iteration on 8 GPUs each process holds one image: consecutive ranks
are then grouped in pairs whose statistics are summed (:class:`GroupSyncBatchNorm2d`), and the
normalisation again covers 2 images.
"""

import logging

import torch.distributed as dist
from detectron2.utils import comm

from ..errors import ConfigError
from .teacher.source import on_meta_device

__all__ = ["bn_group_size", "abf_bn_group"]

logger = logging.getLogger(__name__)


def bn_group_size(bn_images: int, ims_per_batch: int, world_size: int) -> int:
    """How many consecutive ranks share ABF BatchNorm statistics (1: none)."""
    per_process = max(1, ims_per_batch // max(1, world_size))
    single = bn_images == 0 or world_size == 1 or per_process >= bn_images
    size = 1 if single else bn_images // per_process
    if bn_images < 0 or bn_images % per_process and not single or world_size % size:
        raise ConfigError(
            f"MODEL.DISTILL.REVIEWKD.BN_IMAGES {bn_images}: give 0 or a multiple of the "
            f"{per_process} image(s) per process that groups the {world_size} processes evenly"
        )
    return size


def abf_bn_group(bn_images: int, ims_per_batch: int):
    """This rank's process group for the ABF BatchNorms, or None (statistics of its own
    images).  Every rank creates every group, in the same order (torch.distributed's rule)."""
    world = comm.get_world_size()
    size = bn_group_size(bn_images, ims_per_batch, world)
    per_process = max(1, ims_per_batch // world)
    if on_meta_device():  # the checks before a run, on rank 0 alone: no collective here
        return None
    if size == 1:
        if per_process > bn_images > 0:
            logger.info(
                "ABF BatchNorm statistics cover the %d images of each process "
                "(MODEL.DISTILL.REVIEWKD.BN_IMAGES is %d)",
                per_process,
                bn_images,
            )
        return None
    groups = [dist.new_group(list(range(start, start + size))) for start in range(0, world, size)]
    logger.info(
        "ABF BatchNorm statistics are synchronised over groups of %d processes (%d images each)",
        size,
        size * per_process,
    )
    return groups[comm.get_rank() // size]
