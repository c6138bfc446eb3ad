"""Shared test settings."""

import os

import pytest
import torch

# the reliability suite's counters (tests/faults.py): the fixture and the hooks that report them
from faults import pytest_runtest_logreport, pytest_sessionfinish, tally  # noqa: F401

# `pag train`/`pag evaluate` (also in subprocesses) must not write the project's MLflow store;
# tests/test_tracking.py exercises tracking against stores of its own
os.environ["PAG_TRACKING"] = "0"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run tiny models, fastest on one thread; on a busy 2-core machine intra-op threads
    contend (a 30-step training loop: 0.5 s on one thread, over 10 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
