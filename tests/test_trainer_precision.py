"""DistillTrainer's AMP set-up: SOLVER.AMP.PRECISION picks the autocast dtype and the scaler."""

import pytest
import torch

from nd_det.data import register_coco_dataset
from nd_det.engine import DistillTrainer

from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import tiny_distill_cfg


@pytest.mark.parametrize(
    "precision, dtype, scaled",
    [
        ("float16", torch.float16, True),
        ("bfloat16", torch.bfloat16, False),  # bf16 needs no gradient scaling: none, no host sync
    ],
)
def test_amp_precision(tmp_path, monkeypatch, precision, dtype, scaled):
    requested = []
    real_scaler = torch.amp.GradScaler

    def recording_scaler(device, enabled=True, **kwargs):
        requested.append((device, enabled))
        return real_scaler(device, enabled=enabled, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", recording_scaler)
    json_path, images = write_tiny_coco(tmp_path / "data", num_images=2)
    name = f"amp_{precision}"
    register_coco_dataset(name, json_path, images, replace=True)
    cfg = tiny_distill_cfg(
        str(tmp_path),
        extra_opts=[
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.AMP.ENABLED",
            "True",
            "SOLVER.AMP.PRECISION",
            precision,
        ],
    )
    trainer = DistillTrainer(cfg)
    assert trainer._trainer.precision == dtype
    assert requested == [("cuda", scaled)]
    # (a CUDA gradient scaler also switches itself off where there is no CUDA device)
    assert trainer._trainer.grad_scaler.is_enabled() == (scaled and torch.cuda.is_available())


def test_unknown_amp_precision(tmp_path):
    json_path, images = write_tiny_coco(tmp_path / "data", num_images=2)
    register_coco_dataset("amp_bad", json_path, images, replace=True)
    cfg = tiny_distill_cfg(
        str(tmp_path),
        extra_opts=[
            "DATASETS.TRAIN",
            "('amp_bad',)",
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.AMP.ENABLED",
            "True",
            "SOLVER.AMP.PRECISION",
            "fp8",
        ],
    )
    with pytest.raises(
        ValueError, match=r"SOLVER.AMP.PRECISION='fp8': use one of \['bfloat16', 'float16'\]"
    ):
        DistillTrainer(cfg)
