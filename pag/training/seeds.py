"""Seeds: every random stream of a run is derived from its seed.

Data order and augmentation draw from generators seeded from (seed, stream, ...), never from
global state; the model's forward noise draws from the global torch generator, seeded once
(`seed_everything`) before the model is built, and per rank under torchrun (`RANK`).
"""

from __future__ import annotations

import random

import numpy as np
import torch

ORDER, AUGMENT, RANK = 1, 2, 3  # stream tags, so the kinds of seeds never coincide


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: well spread, platform-free)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the global state others may draw from)
    random.seed(seed)
