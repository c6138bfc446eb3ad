"""Losses for the four tasks, each with its validity mask, on predictions at input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pag.data.sample import IGNORE_INDEX
from pag.errors import PagError

SILOG_LAMBDA = 0.85  # variance weight of the scale-invariant log loss (BTS, AdaBins)


def semantic_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over labelled pixels; 0 (with gradient) for an all-ignored batch."""
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def boundary_target(boundary: Tensor) -> tuple[Tensor, Tensor]:
    """(label, valid) from K annotator maps (N x K x H x W), or their mean (K = 1): positive
    where at least half the annotators mark a boundary, negative where none does, ignored in
    between (as RCF does)."""
    agreement = boundary.float().mean(dim=1, keepdim=True)
    return (agreement >= 0.5).float(), (agreement >= 0.5) | (agreement == 0)


def boundary_loss(logits: Tensor, boundary: Tensor) -> Tensor:
    """HED's class-balanced binary cross-entropy: positives weighted by the fraction of
    negatives and the other way round, per image."""
    label, valid = boundary_target(boundary)
    positives = (label * valid).sum(dim=(1, 2, 3), keepdim=True)
    total = valid.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
    beta = 1 - positives / total
    weight = torch.where(label > 0, beta, 1 - beta) * valid
    loss = F.binary_cross_entropy_with_logits(logits, label, weight=weight, reduction="sum")
    return loss / total.sum()


def depth_loss(pred: Tensor, depth: Tensor) -> Tensor:
    """Scale-invariant log loss sqrt(mean(d^2) - lambda mean(d)^2), d = log pred - log gt, over
    valid pixels (depth > 0) of each image, averaged over images with any valid pixel."""
    if pred.shape[0] != depth.shape[0] or pred.shape[-2:] != depth.shape[-2:] or depth.dim() != 3:
        raise PagError(
            f"depth_loss: prediction {tuple(pred.shape)} vs target {tuple(depth.shape)} (N x H x W)"
        )
    valid = depth > 0
    d = torch.where(
        valid, torch.log(pred.squeeze(1).clamp(min=1e-6)) - torch.log(depth.clamp(min=1e-6)), 0
    )
    count = valid.sum(dim=(1, 2))
    has = count > 0
    if not has.any():
        return pred.sum() * 0.0
    mean = d.sum(dim=(1, 2))[has] / count[has]
    mean_sq = (d * d).sum(dim=(1, 2))[has] / count[has]
    return torch.sqrt((mean_sq - SILOG_LAMBDA * mean * mean).clamp(min=1e-8)).mean()


def normal_loss(pred: Tensor, normals: Tensor) -> Tensor:
    """Mean of 1 - cos(angle) between unit predictions and ground truth over valid pixels."""
    # sums of squares over the 3 channels: Tensor.norm(dim=1) and F.normalize took 15 ms of a
    # batch of 8 at 64 x 96 on one CPU thread (forward and backward), this takes 2.5 ms
    valid = (normals * normals).sum(dim=1) > 0.25  # |n| > 0.5
    if not valid.any():
        return pred.sum() * 0.0
    length = (pred * pred).sum(dim=1, keepdim=True).clamp_min(1e-12).sqrt()  # max(|p|, 1e-6)
    cosine = (pred / length * normals).sum(dim=1)
    return (1 - cosine)[valid].mean()


LOSSES = {
    "semantic": semantic_loss,
    "boundary": boundary_loss,
    "depth": depth_loss,
    "normals": normal_loss,
}


def task_losses(pred: dict[str, Tensor], batch: dict, weights: dict[str, float] | None = None):
    """Per-task losses for the tasks the model predicts; `weights` scale each (default 1)."""
    out = {}
    for task, value in pred.items():
        if task not in batch:
            raise PagError(f"the model predicts '{task}' but the batch has no '{task}' target")
        out[task] = LOSSES[task](value, batch[task]) * (
            1.0 if weights is None else weights.get(task, 1.0)
        )
    return out
