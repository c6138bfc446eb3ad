"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run tiny models, fastest on one thread; on a busy 2-core machine intra-op threads
    contend (a 30-step training loop: 0.5 s on one thread, over 10 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
