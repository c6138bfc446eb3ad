"""The model's own decisions, computed on feature-map rows: what the sparse executor runs.

* `PixelDecision`: a PAG gate's 1x1 conv (on the stride grid) and its hard argmax, as in
  evaluation (compute where logit 1 > logit 0; ties go to skip, as `argmax` picks the
  first).
* `ImageDecision`: a layer-skipping gate (pool, 1x1, BN, ReLU, 1x1, argmax) per image.
* `HaltingExecutor`: an SACT halting head, sigmoid(conv3x3(BN(state)) + conv1x1(BN(pool))),
  at the positions still running. The 3x3 has one output channel, so instead of gathering
  9 rows of C channels per position it projects each needed row onto the 9 taps (one
  (C, 9) product, the BN folded in) and sums 9 gathered scalars. A tap outside the image
  reads the zero sentinel, which is exactly zero padding of BN(state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.sparse.kernels import (
    FeatureMap,
    Geometry,
    Linear,
    bn_affine,
    folded,
    union_rows,
)


class PixelDecision:
    """A `PixelGate`: (N*Ho*Wo,) bool, True where the block computes."""

    def __init__(self, gate: nn.Module):
        self.stride = gate.conv.stride[0]
        self.logits = Linear(*folded(gate.conv, None))

    def __call__(self, x: FeatureMap) -> Tensor:
        logits = self.logits(x.subsampled(self.stride).rows)
        return logits[:, 1] > logits[:, 0]


class ImageDecision:
    """A layer-skipping `BlockGate`: ((N,) bool execute decision, (N,) execute probability)."""

    def __init__(self, gate: nn.Module):
        self.fc1 = Linear(*folded(gate.fc1, gate.fc1bn))
        self.fc2 = Linear(*folded(gate.fc2, None))

    def __call__(self, x: FeatureMap) -> tuple[Tensor, Tensor]:
        pooled = x.rows.view(x.n, -1, x.channels).mean(1)
        logits = self.fc2(self.fc1(pooled, relu=True))
        return logits[:, 1] > logits[:, 0], F.softmax(logits, dim=1)[:, 1]


class HaltingExecutor:
    """An SACT `HaltingHead` at given positions of a unit's output."""

    def __init__(self, head: nn.Module):
        self.geometry = Geometry.of(head.local_conv)
        scale, shift = bn_affine(head.local_bn)
        weight = head.local_conv.weight.detach().double()[0]  # C x k x k
        per_tap = weight.permute(1, 2, 0).reshape(-1, weight.shape[0])  # taps x C
        dtype = head.local_conv.weight.dtype
        self.project = Linear((per_tap * scale).to(dtype), (per_tap @ shift).to(dtype))
        self.taps = per_tap.shape[0]
        self.local_bias = head.local_conv.bias.detach().clone().reshape(())
        g_scale, g_shift = bn_affine(head.global_bn)
        g_weight = head.global_conv.weight.detach().double().reshape(1, -1)
        self.pooled = Linear((g_weight * g_scale).to(dtype), (g_weight @ g_shift).to(dtype))

    def __call__(self, state: FeatureMap, rows: Tensor | None, ctx) -> Tensor:
        """Halting scores as an N x 1 x H x W map, computed at `rows` (all if None); other
        positions hold 0 (they have halted, and the halting rule ignores them)."""
        pooled = self.pooled(state.rows.view(state.n, -1, state.channels).mean(1))  # N x 1
        taps = ctx.tables.taps(state, self.geometry)
        count = state.positions
        if rows is None:
            projected = torch.cat([self.project(state.rows), state.rows.new_zeros(1, self.taps)])
            neighbours = taps
        else:
            neighbours = taps.index_select(0, rows)
            needed = union_rows(count, neighbours)
            projected = state.rows.new_empty(count + 1, self.taps)
            projected[count].zero_()
            gathered = ctx.workspace.gather("rows", state.rows, ctx.padded(needed))
            projected.index_copy_(0, needed, self.project(gathered)[: needed.shape[0]])
        tap = torch.arange(self.taps, device=taps.device)
        local = projected.view(-1).index_select(0, (neighbours * self.taps + tap).reshape(-1))
        local = local.view(-1, self.taps).sum(1) + self.local_bias
        if rows is None:
            logit = local.view(state.n, -1) + pooled
            return torch.sigmoid(logit).view(state.n, 1, state.h, state.w)
        image = torch.div(rows, state.h * state.w, rounding_mode="floor")
        scores = state.rows.new_zeros(count)
        scores[rows] = torch.sigmoid(local + pooled[image, 0])
        return scores.view(state.n, 1, state.h, state.w)
