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
from typing import Dict, Optional

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
from detectron2.utils.logger import log_every_n_seconds

from .losses import ClassMeanAccumulator, ClassMeans, save_class_means
from .modeling.teacher import FrozenTeacher
from .utils.progress import ProgressClock, format_duration

__all__ = ["extract_class_means", "TeacherEmbedder", "INDEX_KEY"]

# key of each mapped dataset dict holding its position in the list being extracted (seeds the
# per-image sampling, whichever process and loader worker maps it)
INDEX_KEY = "nd_det_index"

logger = logging.getLogger(__name__)


class TeacherEmbedder:
    """Box-head embeddings of a frozen teacher for GT boxes and for sampled background RoIs."""

    def __init__(self, teacher: FrozenTeacher, seed: int = 0):
        self.teacher = teacher
        self.seed = seed
        self.num_classes = teacher.num_classes

    @torch.no_grad()
    def __call__(self, inputs: Dict):
        """(embeddings, labels) of one mapped dataset dict; its ``INDEX_KEY`` seeds the
        background sampling, so a given image always yields the same RoIs."""
        teacher = self.teacher
        model = teacher.model
        images = teacher.preprocess([inputs["image"].to(teacher.device)])
        features = teacher.features(images)
        gt = inputs["instances"].to(teacher.device)

        embeddings = [teacher.box_embeddings(features, [gt.gt_boxes])]
        labels = [gt.gt_classes]

        proposals, _ = model.proposal_generator(images, features, None)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed * 1_000_003 + int(inputs[INDEX_KEY]))
        try:
            sampled = model.roi_heads.label_and_sample_proposals(proposals, [gt])[0]
        finally:
            torch.random.set_rng_state(generator_state)
        background = sampled[sampled.gt_classes == self.num_classes]
        if len(background):
            embeddings.append(teacher.box_embeddings(features, [background.proposal_boxes]))
            labels.append(background.gt_classes)
        return torch.cat(embeddings), torch.cat(labels)


def _mapper(cfg: CfgNode) -> DatasetMapper:
    """Deterministic test-time resizing of the student config, the student's image format (the
    teacher converts it as in training), annotations kept."""
    return DatasetMapper(
        is_train=True,
        augmentations=[
            T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
        ],
        image_format=cfg.INPUT.FORMAT,
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
    teacher = FrozenTeacher(cfg)
    dicts = get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN), filter_empty=False)
    total = len(dicts)
    if max_images is not None:
        dicts = dicts[: max(0, int(max_images))]
    dicts = [dict(d, **{INDEX_KEY: i}) for i, d in enumerate(dicts)]
    num_classes = teacher.num_classes
    loader = build_detection_test_loader(
        dicts,
        mapper=_mapper(cfg),
        num_workers=cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers,
    )
    embedder = TeacherEmbedder(teacher, seed=seed)
    acc = ClassMeanAccumulator(num_classes + 1, teacher.embedding_dim, device=teacher.device)
    local = len(loader)

    logger.info("Extracting teacher class means from %d of %d images of %s (%d on this rank)",
                len(dicts), total, list(cfg.DATASETS.TRAIN), local)
    clock = ProgressClock(local, skip=1)
    clock.start()
    with EventStorage(0):  # the ROI head's sampler logs into an event storage
        for batch in loader:
            feats, labels = embedder(batch[0])
            acc.update(feats, labels)
            clock.step()
            eta = clock.eta_seconds()
            message = (f"[class means] {clock.done}/{local} images  "
                       f"ETA {'?' if eta is None else format_duration(eta)}")
            if clock.done == local:
                logger.info(message)
            else:
                log_every_n_seconds(logging.INFO, message, n=log_period, name=logger.name)
    acc.all_reduce()

    class_names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
    names = list(class_names) + ["background"] if class_names else None
    metadata = dict(teacher.identity)
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
