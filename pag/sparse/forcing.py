"""Forced gate masks at a chosen activity, for benchmarks (both execution paths alike).

`blob_masks` draws, for every PAG-gated block, an N x 1 x h x w mask at the block's output
size with exactly round(rate * h * w) active pixels per image, in blobs (the top of a
smooth random field), the way learned gates cluster on objects and edges rather than
scattering salt-and-pepper. `force_gates(model, masks)` makes the model's own forward
decide those masks (its gate convs still run; their logits are replaced), and
`SparseExecutor.forced = masks` does the same for the executor, so the dense-masked and
the sparse path compute the same thing and `pag.flops` counts it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.errors import PagError
from pag.models import gating


def blob_mask(n: int, h: int, w: int, rate: float, generator: torch.Generator) -> Tensor:
    """N x 1 x h x w float {0, 1}: round(rate * h * w) ones per image, blob-shaped (blobs
    about an eighth of the shorter side across)."""
    if not 0.0 <= rate <= 1.0:
        raise PagError(f"activity rate must be in [0, 1], got {rate!r}")
    cell = max(2, min(h, w) // 8)
    coarse = torch.randn(
        n, 1, math.ceil(h / cell) + 1, math.ceil(w / cell) + 1, generator=generator
    )
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    active = round(rate * h * w)
    mask = torch.zeros(n, h * w)
    if active:
        top = field.view(n, -1).topk(active, dim=1).indices
        mask.scatter_(1, top, 1.0)
    return mask.view(n, 1, h, w)


def gated_block_sizes(model: nn.Module, x: Tensor) -> dict[str, tuple[int, int, int]]:
    """(N, h, w) of the gate decision of every PAG-gated block on input `x`."""
    sizes: dict[str, tuple[int, int, int]] = {}
    handles = []
    for name, block in model.blocks():
        if isinstance(block.gate, gating.PixelGate):

            def record(_module, _args, out, name=name):
                sizes[name] = (out.shape[0], out.shape[2], out.shape[3])

            handles.append(block.gate.conv.register_forward_hook(record))
    if not handles:
        raise PagError(f"model of method {model.method!r} has no PAG gates to force")
    try:
        with torch.no_grad():
            model.eval().features(x)
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def blob_masks(model: nn.Module, x: Tensor, rate: float, seed: int = 0) -> dict[str, Tensor]:
    """One `blob_mask` per PAG-gated block at its decision size on `x`."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: blob_mask(n, h, w, rate, generator).to(x.device)
        for name, (n, h, w) in gated_block_sizes(model, x).items()
    }


@contextlib.contextmanager
def force_gates(model: nn.Module, masks: dict[str, Tensor]) -> Iterator[None]:
    """Within the block, each named block's PAG gate decides `masks[name]` (its conv still
    runs, so the dense-masked forward costs what it costs)."""
    handles = []
    try:
        for name, mask in masks.items():
            gate = model.block(name).gate
            if not isinstance(gate, gating.PixelGate):
                raise PagError(f"{name} has no PAG gate to force")

            def replace(_module, _args, logits, mask=mask, name=name):
                if logits.shape[0] != mask.shape[0] or logits.shape[2:] != mask.shape[2:]:
                    raise PagError(
                        f"forced mask for {name} is {tuple(mask.shape)}; the gate decides "
                        f"{logits.shape[0]} x 1 x {logits.shape[2]} x {logits.shape[3]}"
                    )
                on = (mask != 0).to(logits.dtype)
                return torch.cat([torch.zeros_like(on), 2 * on - 1], dim=1)

            handles.append(gate.conv.register_forward_hook(replace))
        yield
    finally:
        for handle in handles:
            handle.remove()
