"""The distillation loss path forces no host-device synchronisation: every term's forward and
the backward of their sum run without .item(), data-dependent shapes or tensors made from
Python data (each would stall a GPU step)."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from .helpers.sync_ops import find_sync_ops
from .helpers.tiny_distill import random_batch, tiny_distill_cfg


@pytest.mark.parametrize("config_file", ["R50_from_R101_nd.yaml", "R50_from_R101_kd_nd.yaml"])
def test_distillation_loss_path_has_no_host_device_sync(tmp_path, config_file):
    """(DKD is not listed: torch's F.one_hot checks the label range with .item() on CPU only;
    on CUDA it relies on a device-side assert.)"""
    model = build_model(tiny_distill_cfg(str(tmp_path), config_file)).train()
    with EventStorage(0):
        inputs = model.distill_step_inputs(random_batch(seed=1))[2]
    inputs.student_embeddings.requires_grad_(True)
    for f in inputs.student_features.values():
        f.requires_grad_(True)

    def loss_path():
        sum(term(inputs) for term in model.distill_terms).backward()

    assert find_sync_ops(loss_path) == []
    assert inputs.student_embeddings.grad is not None  # the path really ran backward


def test_sync_op_finder_flags_item_nonzero_and_python_data():
    x = torch.arange(6.0)
    assert [f["op"] for f in find_sync_ops(lambda: x.sum().item())] == ["_local_scalar_dense"]
    assert [f["op"] for f in find_sync_ops(lambda: x[x > 2])] == ["index"]  # boolean mask
    assert [f["op"] for f in find_sync_ops(lambda: torch.nonzero(x))] == ["nonzero"]
    assert [f["op"] for f in find_sync_ops(lambda: torch.tensor([1.0, 2.0]))] == ["lift_fresh"]
    assert find_sync_ops(lambda: (x * 2).sum()) == []
