"""Helpers shared by the model tests."""

import torch


def warm_bn(model, steps: int = 2, seed: int = 1) -> None:
    """A few training-mode forwards so BatchNorm running statistics are not the trivial ones."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(4, 3, 32, 32, generator=g) * 2 + 0.5)
