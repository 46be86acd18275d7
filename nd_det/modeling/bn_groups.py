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

__all__ = ["bn_group_size", "abf_bn_group"]

logger = logging.getLogger(__name__)


def bn_group_size(bn_images: int, ims_per_batch: int, world_size: int) -> int:
    """How many consecutive ranks share ABF BatchNorm statistics (1: none)."""
    if bn_images < 0:
        raise ConfigError(
            f"MODEL.DISTILL.REVIEWKD.BN_IMAGES={bn_images}: give 0 (each process alone) or the "
            "number of images the ABF BatchNorm statistics cover (2, as the reference)"
        )
    per_process = max(1, ims_per_batch // max(1, world_size))
    if bn_images == 0 or world_size == 1 or per_process >= bn_images:
        return 1
    if bn_images % per_process:
        raise ConfigError(
            f"MODEL.DISTILL.REVIEWKD.BN_IMAGES={bn_images} is not a multiple of the "
            f"{per_process} images each of the {world_size} processes holds "
            f"(SOLVER.IMS_PER_BATCH {ims_per_batch}): set BN_IMAGES to a multiple of "
            f"{per_process}, or 0"
        )
    size = bn_images // per_process
    if world_size % size:
        raise ConfigError(
            f"MODEL.DISTILL.REVIEWKD.BN_IMAGES={bn_images} groups {size} processes of "
            f"{per_process} image(s), which does not divide the {world_size} processes: use a "
            f"number of processes divisible by {size}, or set BN_IMAGES 0"
        )
    return size


def abf_bn_group(bn_images: int, ims_per_batch: int):
    """This rank's process group for the ABF BatchNorms, or None (statistics of its own
    images).  Every rank creates every group, in the same order (torch.distributed's rule)."""
    world = comm.get_world_size()
    size = bn_group_size(bn_images, ims_per_batch, world)
    per_process = max(1, ims_per_batch // world)
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
