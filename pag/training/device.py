"""Where and how a run computes: its device, thread count and deterministic algorithms.

On CPU, `torch.use_deterministic_algorithms(True)` and a fixed thread count make a run's
arithmetic repeat bit for bit (on the same machine and thread count).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from pag.errors import PagError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PagError("device: cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


@contextlib.contextmanager
def compute_settings(threads: int, device: torch.device) -> Iterator[None]:
    """Thread count and deterministic algorithms for the run, restored afterwards (the
    settings are process-wide and tests train in-process)."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)
