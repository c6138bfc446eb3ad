"""Task heads on a shared trunk, upsampled to the input resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.errors import PagError

# output channels per task; semantic takes the dataset's class count
TASK_CHANNELS = {"boundary": 1, "depth": 1, "normals": 3}


class TaskHead(nn.Module):
    """3x3 conv - BN - ReLU - 1x1 conv, then bilinear upsampling to the input size."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, features: Tensor, size: tuple[int, int]) -> Tensor:
        out = self.classifier(self.relu(self.bn(self.conv(features))))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class SideOutputHead(nn.Module):
    """HED's boundary head (Xie & Tu, ICCV 2015) on a ResNet, as RCF and BDCN put it there: a
    1x1 conv to one channel on the stem's stride-2 features and on each stage's output, each
    upsampled to the input size, fused by a 1x1 conv. Boundaries are localised to a few pixels
    (the benchmark tolerates 0.75 % of the diagonal), which a head on the stride-8 trunk output
    alone cannot do."""

    takes_sides = True

    def __init__(self, side_channels: list[int], out_channels: int = 1):
        super().__init__()
        self.sides = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in side_channels)
        self.fuse = nn.Conv2d(len(side_channels) * out_channels, out_channels, 1)
        nn.init.constant_(self.fuse.weight, 1.0 / len(side_channels))  # HED: the sides' mean
        nn.init.zeros_(self.fuse.bias)

    def forward(self, sides: list[Tensor], size: tuple[int, int]) -> Tensor:
        if len(sides) != len(self.sides):
            raise PagError(f"side-output head: {len(sides)} feature maps for {len(self.sides)}")
        maps = [
            F.interpolate(conv(side), size=size, mode="bilinear", align_corners=False)
            for conv, side in zip(self.sides, sides, strict=True)
        ]
        return self.fuse(torch.cat(maps, dim=1))


def head_channels(task: str, num_classes: int | None) -> int:
    if task == "semantic":
        if not num_classes or num_classes < 2:
            raise PagError(f"the semantic head needs num_classes >= 2, got {num_classes}")
        return num_classes
    if task not in TASK_CHANNELS:
        raise PagError(f"unknown task {task!r}; expected semantic, boundary, depth or normals")
    return TASK_CHANNELS[task]


def finish_prediction(task: str, raw: Tensor) -> Tensor:
    """Semantic and boundary stay logits; depth is exp of the predicted log depth (metres);
    normals are normalised to unit length."""
    if task == "depth":
        return raw.clamp(-10.0, 10.0).exp()
    if task == "normals":
        return F.normalize(raw, dim=1, eps=1e-6)
    return raw
