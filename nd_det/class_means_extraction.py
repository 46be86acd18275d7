"""Teacher class means for detection: the (NUM_CLASSES + 1, D) table ND needs.

The frozen teacher (eval, no_grad) runs over the training set, one image at a time:

* foreground row k: mean of the teacher's box-head embeddings (FastRCNNConvFCHead output, after
  the last fc + ReLU) of every ground-truth box of class k;
* background row (index NUM_CLASSES): mean over teacher proposals that match no ground truth
  (IoU below the ROI head's threshold), sampled exactly as the ROI head samples them in training
  (``label_and_sample_proposals``), with a sampling seed derived from the image index - so the
  result does not depend on how many processes share the work.

Sums and counts are accumulated in float64 and all-reduced across processes; rank 0 writes the
file (``nd_det.losses.class_means`` format) with the per-class counts and the teacher identity.
"""
import logging
import time
from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from .losses import ClassMeanAccumulator, ClassMeans, save_class_means
from .modeling.teacher import build_teacher, teacher_identity
from .utils.progress import format_duration

__all__ = ["extract_class_means", "TeacherEmbedder"]

logger = logging.getLogger(__name__)


class TeacherEmbedder:
    """Box-head embeddings of a frozen teacher for GT boxes and for sampled background RoIs."""

    def __init__(self, teacher, seed: int = 0):
        self.teacher = teacher
        self.seed = seed
        self.num_classes = teacher.roi_heads.num_classes

    @torch.no_grad()
    def __call__(self, inputs: Dict, index: int):
        """(embeddings, labels) of one mapped dataset dict; ``index`` seeds the background
        sampling, so a given image always yields the same RoIs."""
        teacher = self.teacher
        images = teacher.preprocess_image([inputs])
        features = teacher.backbone(images.tensor)
        gt = inputs["instances"].to(teacher.device)
        box_features = [features[f] for f in teacher.roi_heads.box_in_features]

        embeddings = [self._embed(box_features, [gt.gt_boxes])]
        labels = [gt.gt_classes]

        proposals, _ = teacher.proposal_generator(images, features, None)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed * 1_000_003 + index)
        try:
            sampled = teacher.roi_heads.label_and_sample_proposals(proposals, [gt])[0]
        finally:
            torch.random.set_rng_state(generator_state)
        background = sampled[sampled.gt_classes == self.num_classes]
        if len(background):
            embeddings.append(self._embed(box_features, [background.proposal_boxes]))
            labels.append(background.gt_classes)
        return torch.cat(embeddings), torch.cat(labels)

    def _embed(self, box_features, boxes):
        heads = self.teacher.roi_heads
        return heads.box_head(heads.box_pooler(box_features, boxes))


def _mapper(cfg: CfgNode, teacher_cfg: CfgNode) -> DatasetMapper:
    """Deterministic test-time resizing of the student config, teacher's image format,
    annotations kept."""
    return DatasetMapper(
        is_train=True,
        augmentations=[
            T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
        ],
        image_format=teacher_cfg.INPUT.FORMAT,
        use_instance_mask=False,
    )


def extract_class_means(
    cfg: CfgNode,
    output: Optional[str] = None,
    max_images: Optional[int] = None,
    allow_empty_classes: bool = False,
    num_workers: Optional[int] = None,
    log_period: float = 10.0,
    seed: int = 0,
) -> ClassMeans:
    """Run the teacher of ``cfg.MODEL.DISTILL`` over ``cfg.DATASETS.TRAIN`` and write the class
    means to ``output`` (default: ``cfg.MODEL.DISTILL.CLASS_MEANS``) on rank 0.

    Works in a single process and under detectron2's ``launch`` (each rank takes a shard; sums
    and counts are all-reduced).  Raises ClassMeansError naming the classes without samples
    unless ``allow_empty_classes`` (their rows are then zero-filled and flagged in the metadata).
    """
    output = output or cfg.MODEL.DISTILL.CLASS_MEANS
    teacher, teacher_cfg = build_teacher(cfg)
    dicts = get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN), filter_empty=False)
    total = len(dicts)
    if max_images is not None:
        dicts = dicts[: max(0, int(max_images))]
    num_classes = teacher.roi_heads.num_classes
    dim = teacher.roi_heads.box_head.output_shape.channels
    loader = build_detection_test_loader(
        dicts,
        mapper=_mapper(cfg, teacher_cfg),
        num_workers=cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers,
    )
    indices = _local_indices(len(dicts))
    embedder = TeacherEmbedder(teacher, seed=seed)
    acc = ClassMeanAccumulator(num_classes + 1, dim, device=teacher.device)

    logger.info("Extracting teacher class means from %d of %d images of %s (%d on this rank)",
                len(dicts), total, list(cfg.DATASETS.TRAIN), len(indices))
    start = last_log = time.perf_counter()
    with EventStorage(0):  # the ROI head's sampler logs into an event storage
        for done, (batch, index) in enumerate(zip(loader, indices), start=1):
            feats, labels = embedder(batch[0], index)
            acc.update(feats, labels)
            now = time.perf_counter()
            if now - last_log >= log_period or done == len(indices):
                rate = done / max(now - start, 1e-9)
                logger.info("[class means] %d/%d images  %.2f img/s  ETA %s", done, len(indices),
                            rate, format_duration((len(indices) - done) / rate))
                last_log = now
    acc.all_reduce()

    class_names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
    names = list(class_names) + ["background"] if class_names else None
    metadata = dict(teacher_identity(cfg))
    metadata.update(
        datasets=list(cfg.DATASETS.TRAIN),
        num_images=len(dicts),
        background_row=num_classes,
        embedding="teacher box head output (RoI embeddings)",
        class_names=names or [],
    )
    table = acc.finalize(metadata, allow_empty=allow_empty_classes, class_names=names)
    if comm.is_main_process():
        save_class_means(output, table)
        logger.info("Wrote class means %s (%d x %d) to %s; samples per class: %s",
                    "table", table.num_classes, table.dim, output, table.counts.tolist())
    comm.synchronize()
    return table


def _local_indices(n: int) -> List[int]:
    """The dataset indices this rank's InferenceSampler yields, in order."""
    from detectron2.data.samplers import InferenceSampler

    return list(InferenceSampler(n)._local_indices)
