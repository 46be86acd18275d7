"""Data-loader throughput: images/s of the configured detectron2 training loader
(``build_detection_train_loader`` with its default ``DatasetMapper(cfg, is_train=True)``: JPEG
decoding, the config's resize/flip augmentations, annotation transforms) with N workers, on
synthetic JPEG files and a small COCO-format JSON written to a temporary folder.

Compare the result with the training step's images/s: if the loader is slower, the GPU waits
for data whatever the model costs.
"""
import json
import os
import tempfile
import uuid
from typing import Dict, Tuple

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.benchmark import iter_benchmark
from PIL import Image

from nd_det.data import register_coco_dataset

__all__ = ["write_synthetic_coco", "loader_throughput"]


def write_synthetic_coco(folder: str, num_images: int, height: int, width: int,
                         num_classes: int, boxes_per_image: int = 4,
                         seed: int = 0) -> Tuple[str, str]:
    """``num_images`` JPEG files (smooth random colour fields with filled boxes, quality 90, so
    they decode at a realistic cost) and a COCO instances JSON describing the boxes.  Returns
    (json_path, image_dir)."""
    rng = np.random.RandomState(seed)
    image_dir = os.path.join(folder, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        coarse = rng.randint(0, 256, size=(max(2, height // 16), max(2, width // 16), 3))
        pixels = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height)))
        pixels = pixels.astype(np.int16) + rng.randint(-20, 21, size=pixels.shape)
        canvas = np.clip(pixels, 0, 255).astype(np.uint8)
        for _ in range(boxes_per_image):
            w = int(rng.randint(width // 10, width // 2))
            h = int(rng.randint(height // 10, height // 2))
            x = int(rng.randint(0, width - w))
            y = int(rng.randint(0, height - h))
            canvas[y:y + h, x:x + w] = rng.randint(0, 256, size=3)
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1,
                "category_id": int(rng.randint(1, num_classes + 1)),
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
            })
        name = f"{index:05d}.jpg"
        Image.fromarray(canvas).save(os.path.join(image_dir, name), quality=90)
        images.append({"id": index + 1, "file_name": name, "height": height, "width": width})
    categories = [{"id": c, "name": f"class_{c}"} for c in range(1, num_classes + 1)]
    json_path = os.path.join(folder, "instances.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path, image_dir


def loader_throughput(cfg: CfgNode, workers: int, batch_size: int, num_images: int = 32,
                      image_size: Tuple[int, int] = (480, 640), batches: int = 20,
                      warmup_batches: int = 2, seed: int = 0) -> Dict[str, object]:
    """Images/s of detectron2's training loader for ``cfg`` with ``workers`` worker processes.

    The first ``warmup_batches`` batches (worker start-up) and then the batches the workers
    prefetched meanwhile (up to 2 per worker) are not timed; the next ``batches`` are.
    """
    if workers < 0 or batches < 1 or num_images < 1:
        raise ValueError(
            f"loader_throughput: need workers >= 0, batches >= 1 and num_images >= 1; got "
            f"workers={workers}, batches={batches}, num_images={num_images}"
        )
    height, width = image_size
    num_classes = max(1, min(int(cfg.MODEL.ROI_HEADS.NUM_CLASSES), 80))
    name = f"nd_det_benchmark_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="nd_det_loader_") as folder:
        json_path, image_dir = write_synthetic_coco(folder, num_images, height, width,
                                                    num_classes, seed=seed)
        register_coco_dataset(name, json_path, image_dir)
        loader_cfg = cfg.clone()
        loader_cfg.defrost()
        loader_cfg.DATASETS.TRAIN = (name,)
        loader_cfg.DATALOADER.NUM_WORKERS = workers
        loader_cfg.SOLVER.IMS_PER_BATCH = batch_size
        loader_cfg.freeze()
        iterator = None
        try:
            iterator = iter(build_detection_train_loader(loader_cfg))
            sizes = []

            def batches_seen(source):
                for batch in source:
                    sizes.extend(tuple(x["image"].shape[-2:]) for x in batch)
                    yield batch

            # detectron2's own loader timing (its DataLoaderBenchmark only logs its figures)
            warmup = warmup_batches + 2 * workers
            seconds_per_batch, times = iter_benchmark(batches_seen(iterator), batches,
                                                      warmup=warmup)
            sizes = sizes[warmup * batch_size:]
        finally:
            del iterator  # stops the worker processes
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    return {
        "workers": workers,
        "batch_size": batch_size,
        "timed_batches": len(times),
        "images_per_s": batch_size / seconds_per_batch,
        "source_image_size": [height, width],
        "median_output_size": [int(np.median([s[0] for s in sizes])),
                               int(np.median([s[1] for s in sizes]))],
    }
