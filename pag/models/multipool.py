"""MultiPool (MP-PAG): a per-pixel choice of pooling field for one block's 3x3 conv.

`MultiPool` replaces `block.conv2`. Its branches are 3x3 convs with dilations (2, 4, 6, 8, 10
by default), the original conv itself, and a skip branch that passes the input through (the
authors' insertPyramidPool: 7 branches). A small attention head on the conv's input
(1x1 -> 128, BN, ReLU, 3x3 -> 32, BN, ReLU, 1x1 -> K, as in the authors' code) picks a branch
per pixel: a Gumbel-softmax mixture in training, the hard argmax in evaluation, so an
executor computes only the chosen branch at each pixel. `average=True` is the ablation that
runs every conv branch everywhere and averages them (no attention, no skip).

The module *is* the original conv (a `nn.Conv2d` subclass holding its weight), so a dense
checkpoint's `...conv2.weight` loads unchanged, and `init_from_dense` then copies that weight
into the dilated branches, as the authors initialise them from the pretrained 3x3.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pag.errors import PagError
from pag.flops import measuring
from pag.models.gating import RecordsDecisions, gumbel_softmax, hard_argmax

DEFAULT_TEMPERATURE = 0.1  # the authors' MultiPool Gumbel temperature


class MultiPoolBranches(nn.Module):
    """The parts MultiPool adds to the original conv (their keys contain 'multipool.')."""

    def __init__(self, conv: nn.Conv2d, dilations: tuple[int, ...], average: bool):
        super().__init__()
        channels_in, channels_out = conv.in_channels, conv.out_channels
        self.dilated = nn.ModuleList(
            nn.Conv2d(channels_in, channels_out, 3, padding=d, dilation=d, bias=False)
            for d in dilations
        )
        self.attention = None
        if not average:
            hidden, narrow = min(128, channels_in), min(32, channels_in)
            self.attention = nn.Sequential(
                nn.Conv2d(channels_in, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, narrow, 3, padding=1, bias=False),
                nn.BatchNorm2d(narrow),
                nn.ReLU(inplace=True),
                nn.Conv2d(narrow, len(dilations) + 2, 1),
            )


class MultiPool(RecordsDecisions, nn.Conv2d):
    """Drop-in replacement for a stride-1 3x3 conv; see the module docstring."""

    _records = ("last_choice",)

    def __init__(
        self, conv: nn.Conv2d, dilations: tuple[int, ...] = (2, 4, 6, 8, 10), average: bool = False
    ):
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.groups != 1:
            raise PagError(
                "MultiPool replaces a stride-1, ungrouped 3x3 conv; got kernel "
                f"{conv.kernel_size}, stride {conv.stride}, groups {conv.groups}"
            )
        if not dilations or any(int(d) != d or d < 1 for d in dilations):
            raise PagError(f"MultiPool dilations must be positive integers, got {dilations}")
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            3,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=False,
        )
        if conv.in_channels != conv.out_channels:
            raise PagError("MultiPool's skip branch needs a conv with as many outputs as inputs")
        with torch.no_grad():
            self.weight.copy_(conv.weight)
        self.average = average
        self.dilations = tuple(int(d) for d in dilations)
        self.multipool = MultiPoolBranches(conv, self.dilations, average)
        self.init_from_dense()
        self.temperature = DEFAULT_TEMPERATURE
        self.last_choice: Tensor | None = (
            None  # N x K x H x W, branch order: dilated, original, skip
        )

    @property
    def num_branches(self) -> int:
        return len(self.dilations) + 2

    def init_from_dense(self) -> None:
        """Copy the original conv's weight into every dilated branch."""
        with torch.no_grad():
            for branch in self.multipool.dilated:
                branch.weight.copy_(self.weight)

    takes_post = True  # the block hands it its BN/ReLU (see resnet.conv_stage)

    def forward(self, h: Tensor, post=None) -> Tensor:
        """The block's 3x3 stage: `post` (the block's BN and ReLU; none when called alone)
        follows the conv branches, while the skip branch passes `h` on unchanged, as PAG's
        skipped pixels do."""
        if post is None:
            post = _identity
        outputs = [branch(h) for branch in self.multipool.dilated] + [super().forward(h)]
        if self.average:
            self.last_choice = None
            return post(torch.stack(outputs).mean(dim=0))
        logits = self.multipool.attention(h)
        if self.training:
            choice = gumbel_softmax(logits, self.temperature)
        else:
            choice = hard_argmax(logits)
            if measuring():
                for k, branch in enumerate([*self.multipool.dilated, self]):
                    branch.active_mask = choice[:, k : k + 1]  # only the chosen branch runs
        self.last_choice = choice
        skip = choice[:, -1:]
        conv_weight = 1 - skip
        # the conv branches' normalised mixture goes through `post` once (one BN pass)
        mixed = sum(choice[:, k : k + 1] * out for k, out in enumerate(outputs))
        mixed = mixed / conv_weight.clamp(min=1e-6)
        return conv_weight * post(mixed) + skip * h


def _identity(x: Tensor) -> Tensor:
    return x


def apply_multipool(
    model, block_name: str, dilations: tuple[int, ...], average: bool = False
) -> None:
    """Replace the 3x3 conv of `block_name` (e.g. 'layer4.1') by a MultiPool."""
    block = model.block(block_name)
    if block.conv2.stride != (1, 1):
        raise PagError(
            f"MultiPool needs a stride-1 block; {block_name}'s 3x3 conv has stride "
            f"{block.conv2.stride}"
        )
    block.conv2 = MultiPool(block.conv2, tuple(dilations), average)
    if not average:
        model.aux_fns.append(MultiPoolAux(block_name))


class MultiPoolAux:
    """Adds the per-pixel branch choice to aux["multipool"][block_name]."""

    def __init__(self, block_name: str):
        self.block_name = block_name

    def __call__(self, model, aux: dict, size: tuple[int, int]) -> None:
        choice = model.block(self.block_name).conv2.last_choice
        aux.setdefault("multipool", {})[self.block_name] = choice


def branch_names(dilations: tuple[int, ...]) -> list[str]:
    """Legend of a MultiPool choice map: 'dilation 2', ..., 'original', 'skip'."""
    return [f"dilation {d}" for d in dilations] + ["original", "skip"]
