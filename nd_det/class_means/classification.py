"""Teacher class means for ND: the mean penultimate embedding of each class over a dataset
(the training set, without augmentation), with the teacher in eval mode.

Works in one process or distributed (each rank takes a disjoint shard, sums are all-reduced), and
writes the class-means file format shared with detection (``nd_det.class_means.table``).
"""

import os
import time
from typing import Optional

import torch
from torch.utils.data import DataLoader

from ..classification.checkpoint import file_sha256, load_weights
from ..classification.cli import argument_parser, parse_config
from ..classification.data import ShardSampler, build_dataset
from ..classification.distributed import (
    cleanup_distributed,
    init_distributed,
    stop_if_any_rank_fails,
)
from ..classification.models import build_classifier
from ..classification.teacher import class_means_metadata
from ..classification.trainer import amp_dtype_for
from ..errors import FileError, input_stage
from ..utils.paths import check_overwrite, check_writable
from ..utils.skip_init import without_random_init
from .table import ClassMeanAccumulator, ClassMeans, save_class_means

__all__ = ["extract_class_means", "extract_classification_main"]


@torch.no_grad()
def extract_class_means(
    model: torch.nn.Module,
    loader,
    num_classes: int,
    device: torch.device,
    metadata: Optional[dict] = None,
    amp_dtype=None,
    class_names=None,
) -> ClassMeans:
    was_training = model.training
    model.eval()
    accumulator = ClassMeanAccumulator(num_classes, model.embedding_dim, device=device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            embedding = model(images).embedding
        accumulator.update(embedding.float(), labels)
    accumulator.all_reduce()
    model.train(was_training)
    metadata = dict(metadata or {})
    metadata.setdefault("num_samples", int(accumulator.counts.sum()))
    metadata.setdefault("embedding", "penultimate (global average pool) of the teacher, eval mode")
    return accumulator.finalize(metadata, class_names=class_names)


def extract_classification_main(argv: Optional[list[str]] = None):
    """Extract and save the class means; returns the table."""
    p = argument_parser(
        "tools/extract_class_means.py --task classification",
        "A trained classifier's class means (mean penultimate embedding per class over the "
        "training set, eval mode, no augmentation) for the ND loss: the config is the "
        "teacher's training config, model.weights its trained weights.",
    )
    p.add_argument(
        "--output", help="class-means file (default: class_means.pth next to the weights)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = p.parse_args(argv)
    cfg = parse_config(args)
    weights = cfg.model.weights
    if not weights:
        raise FileError("model.weights is empty: give the trained teacher's weights")
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(weights)), "class_means.pth"
    )
    check_writable(output, "--output")
    check_overwrite(output, "--output", args.overwrite)
    with input_stage(f"train.device {cfg.train.device}"):
        ctx = init_distributed(cfg.train.device)
    try:
        # this process's pieces; then one collective says whether every process has them
        with stop_if_any_rank_fails(ctx), input_stage("the config"):
            dataset, info = build_dataset(cfg.data, train=True, augment=False)
            with without_random_init():  # the strict load replaces every value
                model = build_classifier(
                    cfg.model.name, info.num_classes, info.in_channels, info.image_size
                )
            load_weights(model, weights)
            loader = DataLoader(
                dataset,
                batch_size=cfg.solver.eval_batch_size,
                sampler=ShardSampler(len(dataset), ctx.rank, ctx.world_size),
                num_workers=cfg.data.num_workers,
                pin_memory=ctx.device.type == "cuda",
            )
        model.to(ctx.device)
        metadata = class_means_metadata(
            cfg.model.name, weights, file_sha256(weights), args.config_file, cfg.data.name
        )
        start = time.time()
        table = extract_class_means(
            model,
            loader,
            info.num_classes,
            ctx.device,
            metadata,
            amp_dtype_for(ctx.device, cfg.train.amp),
            info.classes,
        )
        if ctx.is_main:
            save_class_means(output, table)
            print(
                f"class means of {cfg.model.name} ({table.num_classes} x {table.dim}) from "
                f"{int(table.counts.sum())} training images in {time.time() - start:.1f} s -> "
                f"{output}",
                flush=True,
            )
        return table
    finally:
        cleanup_distributed()
