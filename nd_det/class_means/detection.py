"""Teacher class means for detection: the (NUM_CLASSES + 1, D) table ND needs.

The frozen teacher runs over (a subset of) the training set, one image at a time, and its
box-head embeddings (FastRCNNConvFCHead output, after the last fc + ReLU) are averaged per class,
with background as class index NUM_CLASSES.  Which RoIs are averaged is the *protocol*
(:data:`PROTOCOLS`):

* ``reference`` (the default): what the paper's code averaged during a training run.  Each image
  gets the TRAINING augmentation of the config (``INPUT.MIN_SIZE_TRAIN`` / ``MAX_SIZE_TRAIN`` /
  ``MIN_SIZE_TRAIN_SAMPLING``, ``INPUT.RANDOM_FLIP``); the teacher's RPN proposes boxes with its
  training-time top-k (``PRE/POST_NMS_TOPK_TRAIN``, as the student's RPN does in a training
  step); the teacher's ROI head samples them as in training (``label_and_sample_proposals``:
  ground truth appended, labels by IoU matching, ``BATCH_SIZE_PER_IMAGE`` RoIs with at most
  ``POSITIVE_FRACTION`` foreground); every sampled RoI, foreground and background, is averaged
  under its label.
* ``gt-boxes``: each ground-truth box once (foreground rows) at test scale
  (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, no flip); the background row from the teacher's
  test-time proposals that match no ground truth, sampled by the same ROI-head sampler.

A one-stage teacher (RetinaNet, FCOS: the teacher of a one-stage student) has no box head and
no RoIs: its embedding is its classification tower's output, and under the ``reference``
protocol (its only one) every anchor its own ``label_anchors`` counts is averaged under its
label (positive anchors under their class, background anchors under the background row, ignored
ones left out), the tower's output taken at the anchor's location: the rows a training step of
the student hands ND, at the training augmentation (docs/one_stage.md).

Randomness (augmentation, ROI sampling) is seeded from (seed, image index), and the image subset
(``max_images``) is the first K of a permutation seeded by ``seed``: the table does not depend on
the number of processes or loader workers.  Sums and counts are accumulated in float64 and
all-reduced across processes; rank 0 writes the file (``nd_det.class_means.table`` format) with
the per-class counts, the teacher identity and the protocol's settings.

:func:`check_extraction` runs every check that needs no model (the output path, the datasets,
classes without ground truth) and is called before the pass, in the tool's parent process too.
"""

import logging
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.detection_utils import build_augmentation
from detectron2.structures import Instances
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import log_every_n_seconds

from ..config import num_classes
from ..data.image_scan import scan_registered_datasets
from ..engine.setup import check_datasets
from ..errors import DataError, input_stage
from ..modeling.anchor_rows import AnchorRows, anchors_per_location
from ..modeling.teacher import FrozenTeacher
from ..utils.paths import check_writable
from ..utils.progress import ProgressClock, format_duration
from ..utils.text import short_list
from .table import ClassMeanAccumulator, ClassMeans, class_labels, save_class_means

__all__ = [
    "extract_class_means",
    "check_extraction",
    "parse_max_images",
    "select_images",
    "image_seed",
    "training_proposals",
    "TeacherEmbedder",
    "SeededMapper",
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "REFERENCE_NUM_IMAGES",
    "INDEX_KEY",
]

logger = logging.getLogger(__name__)

PROTOCOLS = {
    "reference": "the RoIs the teacher's ROI head samples (GT appended, IoU labels, background "
    "included) from its training-mode RPN proposals, under training augmentation "
    "(the reference code's protocol)",
    "gt-boxes": "each ground-truth box once at test scale; background from sampled teacher "
    "proposals that match no ground truth",
}
DEFAULT_PROTOCOL = "reference"
# The reference averaged for 30,000 iterations of 2 images per process, and each process kept
# its own sums: one table from ~60,000 images (about half of COCO train2017).
REFERENCE_NUM_IMAGES = 60_000

# key of each dataset dict holding its position in the FULL training list: it seeds the image's
# augmentation and sampling, whichever process, loader worker or subset maps it
INDEX_KEY = "nd_det_index"
# seconds between two progress lines of the pass (the last image always gets one)
_LOG_PERIOD_S = 10.0


# ---------------------------------------------------------------------- images and seeds
def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` (its position in the training list) under ``seed``."""
    return (int(seed) * 1_000_003 + int(index)) % 2**32


def parse_max_images(value: Union[None, int, str]) -> Optional[int]:
    """``--max-images``: a positive number, or ``"all"`` / None (every image)."""
    if value is None or str(value).strip().lower() == "all":
        return None
    if not str(value).strip().isdigit() or int(value) < 1:
        raise DataError(f"--max-images {value!r}: give a positive number of images, or 'all'")
    return int(value)


def select_images(num_images: int, max_images: Optional[int], seed: int) -> list[int]:
    """Indices of the images to use, ascending: all of them when ``max_images`` is None or at
    least ``num_images``, else the first ``max_images`` of a permutation seeded by ``seed``
    (a uniform random subset, as a shuffled training loader would visit)."""
    if max_images is None or max_images >= num_images:
        return list(range(num_images))
    order = np.random.RandomState(int(seed) % 2**32).permutation(num_images)
    return sorted(int(i) for i in order[:max_images])


class SeededMapper:
    """detectron2's DatasetMapper with the protocol's augmentation (training or test resizing,
    built by detectron2 from cfg.INPUT, or a LazyConfig mapper's own), the student's image
    format (the teacher converts it as in training) and the annotations kept; its random
    augmentation is seeded from (seed, the image's INDEX_KEY)."""

    def __init__(self, cfg: CfgNode, protocol: str, seed: int, augmentations=None):
        if augmentations is None:
            augmentations = build_augmentation(cfg, is_train=protocol == "reference")
        self.mapper = DatasetMapper(
            is_train=True,  # keeps the (transformed, non-crowd) annotations
            augmentations=augmentations,
            image_format=cfg.INPUT.FORMAT,
            use_instance_mask=False,
        )
        self.seed = seed

    def __call__(self, dataset_dict: dict) -> dict:
        # detectron2's augmentations draw from numpy's global generator (they take no generator
        # argument), so it is seeded around each call and restored afterwards
        state = np.random.get_state()
        np.random.seed(image_seed(self.seed, dataset_dict[INDEX_KEY]))
        try:
            return self.mapper(dataset_dict)
        finally:
            np.random.set_state(state)


# ---------------------------------------------------------------------- the teacher's RoIs
@torch.no_grad()
def training_proposals(teacher: FrozenTeacher, images, features, gt: Instances) -> list[Instances]:
    """The teacher RPN's proposals with its TRAINING top-k (PRE/POST_NMS_TOPK_TRAIN), as the
    student's RPN makes them in a training step.  detectron2's RPN chooses its top-k by its
    training flag, so it runs in training mode (under no_grad; the ground truth is what its
    training-mode forward needs for the losses it also returns, which are dropped)."""
    rpn = teacher.model.proposal_generator
    rpn.train()
    try:
        with teacher.precision():
            proposals, _ = rpn(images, features, [gt])
    finally:
        rpn.eval()
    return proposals


class TeacherEmbedder:
    """The (embeddings, labels) of one mapped image under a protocol (see the module docstring)."""

    def __init__(self, teacher: FrozenTeacher, seed: int = 0, protocol: str = DEFAULT_PROTOCOL):
        self.teacher = teacher
        self.seed = seed
        self.protocol = protocol

    def _own_rng(self):
        """The global torch generators (CPU, the teacher's GPU) are restored on exit."""
        device = self.teacher.device
        return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def _sample(self, proposals: list[Instances], gt: Instances, index: int) -> Instances:
        """The ROI head's training sampler on ``proposals``, seeded from the image index."""
        with self._own_rng():
            torch.manual_seed(image_seed(self.seed, index))
            return self.teacher.model.roi_heads.label_and_sample_proposals(proposals, [gt])[0]

    @torch.no_grad()
    def __call__(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, labels) of one mapped dataset dict; its ``INDEX_KEY`` seeds the
        sampling, so a given image always yields the same RoIs."""
        teacher = self.teacher
        index = int(inputs[INDEX_KEY])
        images = teacher.preprocess([inputs["image"].to(teacher.device)])
        features = teacher.features(images)
        gt = inputs["instances"].to(teacher.device)

        if teacher.one_stage:
            return self._anchors(features, gt)
        if self.protocol == "reference":
            with self._own_rng():  # its training-mode anchor sampling draws random numbers
                proposals = training_proposals(teacher, images, features, gt)
            sampled = self._sample(proposals, gt, index)
            return teacher.box_embeddings(features, [sampled.proposal_boxes]), sampled.gt_classes

        embeddings = [teacher.box_embeddings(features, [gt.gt_boxes])]
        labels = [gt.gt_classes]
        with teacher.precision():
            proposals, _ = teacher.model.proposal_generator(images, features, None)
        sampled = self._sample(proposals, gt, index)
        background = sampled[sampled.gt_classes == teacher.num_classes]
        if len(background):
            embeddings.append(teacher.box_embeddings(features, [background.proposal_boxes]))
            labels.append(background.gt_classes)
        return torch.cat(embeddings), torch.cat(labels)

    def _anchors(self, features, gt: Instances) -> tuple[torch.Tensor, torch.Tensor]:
        """A one-stage teacher: the tower's output at every anchor its ``label_anchors`` counts
        (label >= 0), under that label (background = NUM_CLASSES)."""
        model = self.teacher.model
        towers = self.teacher.dense_head(features)[0]
        anchors = model.anchor_generator([features[f] for f in model.head_in_features])
        labels = torch.stack(model.label_anchors(anchors, [gt])[0])
        # NUM_CLASSES + 1 "classes": the background anchors are rows too
        rows = AnchorRows(labels, self.teacher.num_classes + 1, anchors_per_location(model))
        return rows.embeddings(towers), rows.positive_labels


# ---------------------------------------------------------------------- checks before the pass
def _training_dicts(cfg: CfgNode) -> list[dict]:
    check_datasets(cfg, splits=("TRAIN",), required=("TRAIN",))  # registered, files present
    with input_stage(f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)}"):
        return get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN), filter_empty=False)


def _class_names(cfg: CfgNode) -> Optional[list[str]]:
    names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
    return list(names) if names else None


def _check_ground_truth(
    dicts: Sequence[dict],
    num_classes: int,
    class_names: Optional[Sequence[str]],
    datasets: Sequence[str],
) -> None:
    """Every foreground class needs a (non-crowd) ground-truth box in the selected images."""
    seen = set()  # counted from the records: DatasetMapper drops crowd boxes, so do we
    for record in dicts:
        seen.update(
            int(a["category_id"]) for a in record.get("annotations", ()) if not a.get("iscrowd", 0)
        )
    missing = [k for k in range(num_classes) if k not in seen]
    if missing:
        named = class_labels(missing, class_names)
        raise DataError(
            f"no ground-truth box of class(es) {short_list(named, 10)} in the {len(dicts)} images "
            f"chosen from DATASETS.TRAIN {tuple(datasets)}: give more (--max-images), or pass "
            "--allow-empty-classes (their rows zero-filled and flagged: ND pulls nothing there)"
        )


def check_extraction(
    cfg: CfgNode,
    output: Optional[str] = None,
    max_images: Optional[int] = REFERENCE_NUM_IMAGES,
    allow_empty_classes: bool = False,
    seed: int = 0,
    protocol: str = DEFAULT_PROTOCOL,
) -> tuple[str, list[dict], int]:
    """Every check of an extraction before the pass, in the order of their cost: the output path
    (writable; an existing table only with ``overwrite``), the teacher (built on the meta device)
    and its weights file, the datasets, classes without ground truth in the selected images
    (unless allowed).

    Returns (output path, the selected dataset dicts with their INDEX_KEY, images in the set)."""
    if protocol not in PROTOCOLS:
        raise DataError(f"--protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    max_images = parse_max_images(max_images)
    path, what = (
        (output, "--output")
        if output
        else (cfg.MODEL.DISTILL.CLASS_MEANS, "MODEL.DISTILL.CLASS_MEANS")
    )
    if str(path).lower().endswith(".json"):  # the reference's tables are JSON; ours are not
        raise DataError(f"{what} {path}: the class-means format is a torch file; give a .pth path")
    check_writable(path, what)
    with torch.device("meta"):  # the teacher's checks and its weights' names and shapes
        one_stage = FrozenTeacher(cfg).one_stage
    if one_stage and protocol != "reference":
        raise DataError(f"--protocol {protocol}: a {one_stage} teacher has only 'reference'")
    dicts = _training_dicts(cfg)
    scan_registered_datasets(cfg.DATASETS.TRAIN)  # every image decodes, at its JSON size
    chosen = [dict(dicts[i], **{INDEX_KEY: i}) for i in select_images(len(dicts), max_images, seed)]
    if not allow_empty_classes:
        _check_ground_truth(
            chosen,
            num_classes(cfg),
            _class_names(cfg),
            list(cfg.DATASETS.TRAIN),
        )
    return path, chosen, len(dicts)


# ---------------------------------------------------------------------- the pass
def _protocol_metadata(teacher: FrozenTeacher, cfg: CfgNode, protocol: str, augmentations) -> dict:
    """What the file records of the protocol: resizing / flipping, RPN top-k, ROI sampling, or
    a one-stage teacher's anchor labelling (read from the teacher's modules: a yacs or a
    LazyConfig teacher alike)."""
    inp = cfg.INPUT
    reference = protocol == "reference"
    mode = "train" if reference else "test"
    if reference:
        augmentation = {
            "min_size": [int(s) for s in inp.MIN_SIZE_TRAIN],
            "max_size": int(inp.MAX_SIZE_TRAIN),
            "sampling": str(inp.MIN_SIZE_TRAIN_SAMPLING),
            "flip": str(inp.RANDOM_FLIP),
        }
    else:
        augmentation = {
            "min_size": [int(inp.MIN_SIZE_TEST)],
            "max_size": int(inp.MAX_SIZE_TEST),
            "sampling": "choice",
            "flip": "none",
        }
    if augmentations is not None:  # a LazyConfig mapper's: detectron2's own description of each
        augmentation = {"augmentations": [repr(a) for a in augmentations]}
    described = {
        "protocol": protocol,
        "protocol_description": PROTOCOLS[protocol],
        "augmentation": augmentation,
    }
    if teacher.one_stage:
        matcher = getattr(teacher.model, "anchor_matcher", None)  # RetinaNet's; FCOS: centres
        described["anchor_labelling"] = {
            "by": f"{type(teacher.model).__name__}.label_anchors",
            "iou_thresholds": [float(x) for x in matcher.thresholds[1:-1]] if matcher else [],
            "rows": "every anchor it counts (label >= 0), at its location",
        }
        return described
    rpn, heads = teacher.model.proposal_generator, teacher.model.roi_heads
    return {
        **described,
        "rpn_topk": {
            "mode": mode,  # detectron2's RPN keys its top-k by its training flag
            "pre_nms": int(rpn.pre_nms_topk[reference]),
            "post_nms": int(rpn.post_nms_topk[reference]),
        },
        "roi_sampling": {
            "batch_size_per_image": int(heads.batch_size_per_image),
            "positive_fraction": float(heads.positive_fraction),
            "iou_thresholds": [  # the Matcher holds them between -inf and inf
                float(x) for x in heads.proposal_matcher.thresholds[1:-1]
            ],
            "append_gt": bool(heads.proposal_append_gt),
            "rows": "all sampled RoIs" if reference else "background RoIs only",
        },
    }


def extract_class_means(
    cfg: CfgNode,
    output: Optional[str] = None,
    max_images: Optional[int] = REFERENCE_NUM_IMAGES,
    allow_empty_classes: bool = False,
    num_workers: Optional[int] = None,
    seed: int = 0,
    protocol: str = DEFAULT_PROTOCOL,
    augmentations: Optional[list] = None,
) -> ClassMeans:
    """Run the teacher of ``cfg.MODEL.DISTILL`` over ``cfg.DATASETS.TRAIN`` and write the class
    means to ``output`` (default: ``cfg.MODEL.DISTILL.CLASS_MEANS``) on rank 0.

    ``protocol``: a key of :data:`PROTOCOLS`; ``augmentations``: the images' augmentation
    (default: detectron2's from cfg.INPUT, training or test as the protocol says);
    ``max_images``: at most this many images (the first of a permutation seeded by ``seed``;
    None = all).  Works in a single process and under
    detectron2's ``launch`` (each rank takes a shard; sums and counts are all-reduced).  Raises
    DataError naming the classes without samples unless ``allow_empty_classes`` (their
    rows are then zero-filled and flagged in the metadata), before the pass when the ground
    truth already shows it.
    """
    output, dicts, total = check_extraction(
        cfg, output, max_images, allow_empty_classes, seed, protocol
    )
    teacher = FrozenTeacher(cfg)
    num_classes = teacher.num_classes
    loader = build_detection_test_loader(  # InferenceSampler: one shard per process
        dicts,
        mapper=SeededMapper(cfg, protocol, seed, augmentations),
        num_workers=cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers,
    )
    embedder = TeacherEmbedder(teacher, seed=seed, protocol=protocol)
    acc = ClassMeanAccumulator(num_classes + 1, teacher.embedding_dim, device=teacher.device)
    local = len(loader)

    logger.info(
        "Extracting teacher class means (protocol %s) from %d of %d images of %s (%d on this rank)",
        protocol,
        len(dicts),
        total,
        list(cfg.DATASETS.TRAIN),
        local,
    )
    clock = ProgressClock(local, skip=1)
    clock.start()
    with EventStorage(0):  # the RPN and ROI-head samplers log into an event storage
        for batch in loader:
            feats, labels = embedder(batch[0])
            acc.update(feats, labels)
            clock.step()
            eta = clock.eta_seconds()
            message = (
                f"[class means] {clock.done}/{local} images  "
                f"ETA {'?' if eta is None else format_duration(eta)}"
            )
            if clock.done == local:
                logger.info(message)
            else:
                log_every_n_seconds(logging.INFO, message, n=_LOG_PERIOD_S, name=logger.name)
    acc.all_reduce()

    class_names = _class_names(cfg)
    names = class_names + ["background"] if class_names else None
    metadata = dict(teacher.identity)
    metadata.update(_protocol_metadata(teacher, cfg, protocol, augmentations))
    metadata.update(
        datasets=list(cfg.DATASETS.TRAIN),
        num_images=len(dicts),
        images_in_datasets=total,
        image_selection=(
            "all images"
            if len(dicts) == total
            else f"the first {len(dicts)} of a permutation seeded by {seed}"
        ),
        seed=int(seed),
        counts_known=True,
        background_row=num_classes,
        embedding=(
            "teacher classification-tower output at its anchors"
            if teacher.one_stage
            else "teacher box head output (RoI embeddings)"
        ),
        class_names=names or [],
    )
    table = acc.finalize(metadata, allow_empty=allow_empty_classes, class_names=names)
    if comm.is_main_process():
        save_class_means(output, table)
        logger.info(
            "Wrote class means %s (%d x %d) to %s; samples per class: %s",
            "table",
            table.num_classes,
            table.dim,
            output,
            table.counts.tolist(),
        )
    comm.synchronize()
    return table
