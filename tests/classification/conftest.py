"""Classification tests run their tiny models on one intra-op thread: faster for small tensors
on a shared CPU, and restored after each test so other test packages are unaffected."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
