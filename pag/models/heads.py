"""Task heads on a shared trunk, upsampled to the input resolution."""

from __future__ import annotations

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
