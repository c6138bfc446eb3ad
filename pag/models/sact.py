"""Spatially Adaptive Computation Time (SACT, Figurnov et al., CVPR 2017) on our ResNet trunk.

Each stage (layer1..layer4) of L residual units is one ACT module. After every unit l < L a
halting head, attached as `block.halting` (parameters `trunk.layerX.Y.halting.*`), gives each
position a halting score h_l in [0, 1]; the last unit has h_L = 1. The head is SACT's
`get_halting_proba_conv`: logit = local term (BatchNorm of the unit output -> 3x3 conv to 1
channel, bias -3) + global term (global average pool -> BatchNorm -> 1x1 conv to 1 channel, no
bias, broadcast over space), h = sigmoid(logit). With the bias at -3 the heads start almost never
halting, so the model starts close to the dense one it was fine-tuned from.

Halting rule per position, eps = 0.01 (`halting_distribution`):

    N = min{n : sum_{l<=n} h_l >= 1 - eps}          (number of units executed, 1-based)
    R = 1 - sum_{l<N} h_l                             (remainder)
    p_l = h_l for l < N,  p_N = R,  p_l = 0 for l > N
    stage output = sum_l p_l * state_l,   ponder cost rho = N + R.

N is not differentiable; gradients reach the halting heads through R (and through the p_l
weighting of the states). A position that has halted stops updating: units after its N
multiply their residual branch by (1 - halted), so its state is carried unchanged (our blocks are
post-activation, relu(x + 0) = x because x is itself a ReLU output). The first unit of a stage,
possibly strided or changing the channel count, is never masked.

Budget: tau * sum over stages of mean over (batch, H, W) of rho (SACT's
`add_all_ponder_costs`), tau = the knob of `build_model("sact", tau)`.

Execution is masked and dense, as in the released SACT code (whose docstring says the
computation "is not actually saved"): every unit runs at every position. In evaluation each
masked unit marks `active_mask` on its convs the way SACT's flopsometer counts them: conv2 and
conv3 on the running positions (not yet halted), conv1 on the positions the 3x3 conv2 reads
around running positions (`needed_inputs`, equal to `pag.models.gating.input_mask` at
stride 1), the halting head's 3x3 conv on the running positions; the first unit of a stage and
the heads' global 1x1 convs are dense.

`forward`'s aux gets:
* ``stage_ponder``: {"layer1": rho, ...}, each N x 1 x h x w at the stage's resolution;
* ``stage_units``: {"layer1": N, ...} (int64), the number of units executed per position;
* ``ponder_cost``: sum over stages of rho, nearest-upsampled to the input size
  (N x 1 x H x W), SACT's own ponder map;
* ``ponder``: sum over stages of N at the input size: the residual units computed at each
  pixel, which is what ``ponder`` means for every method (PAG counts computed blocks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.errors import PagError
from pag.flops import measuring
from pag.models.layer_skip import PooledBatchNorm2d

EPS = 0.01
INIT_BIAS = -3.0
SACT_KERNEL_SIZE = 3


class HaltingHead(nn.Module):
    """SACT's halting-score head on a unit's output: sigmoid(local 3x3 + global 1x1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.local_bn = nn.BatchNorm2d(channels)
        self.local_conv = nn.Conv2d(
            channels, 1, SACT_KERNEL_SIZE, padding=SACT_KERNEL_SIZE // 2, bias=True
        )
        self.global_bn = PooledBatchNorm2d(channels)  # a batch of one falls back to running stats
        # no bias: "biases are already present in local logits"
        self.global_conv = nn.Conv2d(channels, 1, 1, bias=False)
        # He (fan-in) initialisation as under the slim ResNet arg scope, bias -3
        for conv in (self.local_conv, self.global_conv):
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            nn.init.normal_(conv.weight, std=math.sqrt(2.0 / fan_in))
        nn.init.constant_(self.local_conv.bias, INIT_BIAS)

    def logit(self, state: Tensor) -> Tensor:
        local = self.local_conv(self.local_bn(state))
        pooled = state.mean(dim=(2, 3), keepdim=True)
        return local + self.global_conv(self.global_bn(pooled))

    def forward(self, state: Tensor) -> Tensor:
        """Halting scores h, N x 1 x H x W, in [0, 1]."""
        return torch.sigmoid(self.logit(state))


class Halting:
    """The halting arithmetic, one unit at a time (shared by the stage runner and
    `halting_distribution`, so both apply exactly the same rule)."""

    def __init__(self, like: Tensor, eps: float = EPS):
        if not 0.0 <= eps < 1.0:
            raise PagError(f"SACT eps must be in [0, 1), got {eps!r}")
        self.eps = eps
        self.cumsum = torch.zeros_like(like)
        self.remainder = torch.ones_like(like)
        self.finished = torch.zeros_like(like, dtype=torch.bool)
        self.units = torch.zeros_like(like, dtype=torch.long)
        self.R = torch.zeros_like(like)
        self.p: list[Tensor] = []
        self.halted_after: list[Tensor] = []

    def running(self) -> Tensor:
        """Positions that have not halted (the next unit updates them), as a bool map."""
        return ~self.finished

    def step(self, h: Tensor | None) -> Tensor:
        """Account for one executed unit with halting score `h` (None for the last unit, whose
        score is 1); returns p for this unit."""
        zero = torch.zeros_like(self.remainder)
        if h is None:
            h = torch.ones_like(self.remainder)
            finished = torch.ones_like(self.finished)
        else:
            self.cumsum = self.cumsum + h
            finished = self.finished | (self.cumsum >= 1 - self.eps)
        just = finished & ~self.finished
        p = torch.where(just, self.remainder, torch.where(finished, zero, h))
        self.R = torch.where(just, self.remainder, self.R)
        self.units = self.units + (~self.finished).long()
        self.remainder = self.remainder - torch.where(finished, zero, h)
        self.finished = finished
        self.p.append(p)
        self.halted_after.append(finished)
        return p

    def ponder_cost(self) -> Tensor:
        """rho = N + R (valid once the last unit has been stepped)."""
        return self.units.to(self.R.dtype) + self.R


def halting_distribution(
    h: list[Tensor], eps: float = EPS
) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
    """SACT's halting rule for one stage of L = len(h) + 1 units.

    `h` holds the halting scores of units 1..L-1 (any common shape, values in [0, 1]); unit L
    halts by definition (h_L = 1). Returns (p, N, R, halted_after):
    p, L tensors: the halting distribution (h_l for l < N, R at N, 0 after);
    N (int64): units executed, min{n : sum_{l<=n} h_l >= 1 - eps};
    R: 1 - sum_{l<N} h_l (differentiable in h);
    halted_after, L bool tensors: True where the position halted at or before unit l, i.e.
    where unit l + 1 no longer updates it.
    The ponder cost is N + R.
    """
    if not h:
        raise PagError("halting_distribution needs the scores of at least one unit")
    acc = Halting(h[0], eps)
    for score in h:
        acc.step(score)
    acc.step(None)
    return acc.p, acc.units, acc.R, acc.halted_after


def needed_inputs(conv: nn.Conv2d, running: Tensor) -> Tensor:
    """The input positions a stride-1 `conv` reads to compute its outputs at `running`:
    a max-pool of the mask with the conv's kernel, dilation and padding (SACT's "dilated
    residual mask", a 3x3 max-pool for an undilated 3x3 conv). For stride 1 this equals
    `pag.models.gating.input_mask(conv, running, size)`; a max-pool is not convolution work,
    so `torch.utils.flop_counter` (and so `pag.flops`) does not count this bookkeeping."""
    if conv.stride != (1, 1):
        raise PagError("needed_inputs is for stride-1 convs (SACT never masks a strided unit)")
    (ph, pw), zero_padded = conv.padding, running  # a mask is >= 0: zero padding = no input
    if ph or pw:
        zero_padded = F.pad(running, (pw, pw, ph, ph))
    return F.max_pool2d(zero_padded, conv.kernel_size, stride=1, dilation=conv.dilation)


def run_masked_unit(block: nn.Module, x: Tensor, running: Tensor, track: bool) -> Tensor:
    """relu(x + running * residual(x)) for a non-first unit of a stage (stride 1, identity
    shortcut); with `track`, mark `active_mask` on its convs as SACT's flopsometer counts."""
    if block.downsample is not None or block.conv2.stride[0] != 1 or block.stride != 1:
        raise PagError("SACT masks only stride-1 units with an identity shortcut")
    h = block.branch_input(x)
    residual = block.branch_output(block.conv3x3_stage(h))
    if track:
        block.conv2.active_mask = running
        block.conv1.active_mask = needed_inputs(block.conv2, running)
        if hasattr(block, "conv3"):
            block.conv3.active_mask = running
    return block.relu(x + running * residual)


class SACTStageRunner:
    """`model.stage_runner`: runs one trunk stage as an SACT module and records, per stage,
    the ponder cost rho = N + R and the executed-unit count N."""

    def __init__(self, eps: float = EPS):
        self.eps = eps
        self.ponder: dict[str, Tensor] = {}
        self.units: dict[str, Tensor] = {}

    def __getstate__(self):
        # the records may hold non-leaf tensors of a training graph, which neither deepcopy
        # nor pickle accept: copies start without them
        return {**self.__dict__, "ponder": {}, "units": {}}

    def __call__(self, index: int, stage: nn.Sequential, x: Tensor) -> Tensor:
        if index == 0:
            self.ponder, self.units = {}, {}
        name = f"layer{index + 1}"
        blocks = list(stage)
        if not blocks:
            return x
        track = measuring()  # mark what runs only while MACs are being counted
        state = blocks[0](x)  # dense: the first unit is never masked
        acc = Halting(
            state[:, :1].float(), self.eps
        )  # halting sums in float32, even under autocast
        out: Tensor | None = None
        for i, block in enumerate(blocks):
            if i > 0:
                running = acc.running().to(state.dtype)
                state = run_masked_unit(block, state, running, track)
            last = i == len(blocks) - 1
            if last:
                p = acc.step(None)
            else:
                head = block.halting
                if track and i > 0:
                    head.local_conv.active_mask = running
                p = acc.step(head(state).float())
            out = p * state if out is None else out + p * state
        self.ponder[name] = acc.ponder_cost()
        self.units[name] = acc.units
        return out


class _SACTAux:
    """Adds per-stage ponder and unit maps and their totals at input size to aux."""

    def __init__(self, runner: SACTStageRunner):
        self.runner = runner

    def __call__(self, model: nn.Module, aux: dict, size: tuple[int, int]) -> None:
        runner = self.runner
        if not runner.ponder:
            return
        aux["stage_ponder"] = dict(runner.ponder)
        aux["stage_units"] = dict(runner.units)
        aux["ponder_cost"] = sum(
            F.interpolate(rho, size=size, mode="nearest") for rho in runner.ponder.values()
        )
        # as for every method, "ponder" counts the residual units computed at each pixel
        aux["ponder"] = sum(
            F.interpolate(n.float(), size=size, mode="nearest") for n in runner.units.values()
        )


class PonderCostLoss:
    """SACT's ponder loss: tau * sum over stages of mean over (batch, H, W) of rho."""

    def __init__(self, tau: float):
        self.tau = float(tau)

    def __call__(self, model: nn.Module, aux: dict) -> Tensor:
        return ponder_loss(aux.get("stage_ponder", {}), self.tau)


def ponder_loss(stage_ponder: dict[str, Tensor], tau: float) -> Tensor:
    """tau * sum_stages mean(rho)."""
    if not stage_ponder:
        raise PagError("ponder_loss: no ponder maps in aux (is the model an SACT one?)")
    return tau * sum(rho.mean() for rho in stage_ponder.values())


def apply_sact(model: nn.Module, tau: float, eps: float = EPS) -> None:
    """Make each trunk stage of `model` (a DensePredictionModel) an SACT module: a
    `HaltingHead` on every unit but the last of each stage, the stage runner, aux maps and the
    ponder loss with weight `tau` >= 0."""
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau >= 0:
        raise PagError(f"SACT tau (ponder-cost weight) must be a number >= 0, got {tau!r}")
    if not 0.0 <= eps < 1.0:
        raise PagError(f"SACT eps must be in [0, 1), got {eps!r}")
    if model.stage_runner is not None:
        raise PagError("SACT: the model already has a stage runner")
    gated = [name for name, block in model.blocks() if block.gate is not None]
    if gated:
        raise PagError(f"SACT cannot run blocks that carry a gate: {gated}")
    for stage in model.trunk.stages():
        for i, block in enumerate(stage):
            if i > 0 and (block.downsample is not None or block.stride != 1):
                raise PagError("SACT needs stride-1 identity units after the first of a stage")
            if i < len(stage) - 1:
                channels = (
                    block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features
                )
                block.halting = HaltingHead(channels)
    runner = SACTStageRunner(eps)
    model.stage_runner = runner
    model.aux_fns.append(_SACTAux(runner))
    model.budget_loss_fn = PonderCostLoss(tau)


__all__ = [
    "EPS",
    "INIT_BIAS",
    "Halting",
    "HaltingHead",
    "PonderCostLoss",
    "SACTStageRunner",
    "apply_sact",
    "halting_distribution",
    "needed_inputs",
    "ponder_loss",
    "run_masked_unit",
]
