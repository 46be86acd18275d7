"""Toy students exported as tools/export_student.py does, for the deploy-format tests
(tools/export_model.py with every format)."""

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from nd_det.export import export_student

from .tiny_distill import tiny_distill_cfg


def write_image(path, height, width, seed):
    """A random RGB image file (the format from the suffix); returns its path."""
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def distilled_export(tmp, config_file, opts):
    """A DistillRCNN of the tiny config (``configs/COCO-Distill/<config_file>`` + ``opts``) from
    seed 0, saved as a training checkpoint and exported with export_student into
    ``tmp/deploy``.  Returns the DistillRCNN (eval mode) and the export folder."""
    cfg = tiny_distill_cfg(str(tmp), config_file, extra_opts=opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    (tmp / "train").mkdir()
    DetectionCheckpointer(model, str(tmp / "train")).save("model_final")
    export_student(cfg, str(tmp / "train" / "model_final.pth"), str(tmp / "deploy"))
    return model.eval(), str(tmp / "deploy")
