"""An autouse fixture for test modules of tiny models: one intra-op thread (faster for small
tensors on a shared CPU), the previous count restored after each test.  Import it into a test
module (or a conftest.py) to apply it there only."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
