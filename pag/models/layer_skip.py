"""Whole-block layer skipping per image, in the style of ConvNet-AIG (Veit & Belongie 2018).

Every residual block gets a `BlockGate` attached as `block.gate` (parameters
`trunk.layerX.Y.gate.*`, which `load_dense_weights` treats as added by the method). The gate
looks at the block input once per image: global average pool -> 1x1 conv to 16 -> BatchNorm ->
ReLU -> 1x1 conv to 2 logits (channel 0 = skip, 1 = execute), the convnet-aig head. The last
conv has weights ~ N(0, 0.001) and bias (0.1, 2), so about 85% of the gates start open; the
first conv has weights ~ N(0, sqrt(2 / (k*k*out))) as convnet-aig's ImageNet ResNet sets them.

* training: a straight-through hard Gumbel-softmax sample (`pag.models.gating.gumbel_softmax`
  with `hard=True`) at the gate's `temperature` (1 unless `model.set_temperature` changes it):
  the forward value is 0 or 1, the gradient is the soft sample's;
* evaluation: by default the hard argmax of the logits, *without* noise. ConvNet-AIG's
  released code keeps the Gumbel noise at test time (its sampler ignores `self.training` when
  `force_hard=True`); `pag.models.gating.gate_rule(model, "sample")` does that (one seeded
  Gumbel-max draw per image and block), which is how the default profile evaluates.

The block output is relu(shortcut(x) + g * residual(x)) with g in {0, 1} per image (N,1,1,1).
Execution is masked and dense (every block runs for every image and is multiplied by g), as in
the released ConvNet-AIG code, so that `torch.utils.flop_counter` sees the dense model; in
evaluation the gate marks each conv of the block with `active_mask` = g broadcast to the conv's
output size, so `pag.flops` counts the block only for images that execute it.

Budget: ConvNet-AIG's target-rate loss (1/K) sum_k (t - mean_batch(g_k))^2 over all K gated
blocks, with one target t for every block (the knob of `build_model("layer_skip", t)`).

`forward`'s aux gets:
* ``block_gates``: {block name: (N,) execute decision g (straight-through in training)};
* ``block_gate_probs``: {block name: (N,) softmax probability of executing, no noise};
* ``executed_blocks``: (N,) number of blocks each image executed;
* ``ponder``: that number broadcast to a (N, 1, H, W) map at input resolution (the same
  meaning as PAG's ponder map: computed blocks per pixel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.errors import PagError
from pag.flops import measuring
from pag.models.gating import (
    RecordsDecisions,
    decide_by_rule,
    gumbel_softmax,
    straight_through_decision,
)

GATE_HIDDEN = 16
# convnet-aig: "initialize the bias of the last fc for initial opening rate of about 85%"
GATE_BIAS = (0.1, 2.0)
GATE_WEIGHT_STD = 0.001


class PooledBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm on globally pooled features (N x C x 1 x 1). PyTorch cannot normalise a
    single value per channel in training (a batch of one image); there this falls back to the
    running statistics (without updating them) instead of raising. Parameter and buffer names
    are BatchNorm2d's."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.numel() // x.shape[1] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class BlockGate(RecordsDecisions, nn.Module):
    """One execute/skip decision per image for one residual block (attached as `block.gate`)."""

    _records = ("last_gate", "last_prob")

    def __init__(self, in_channels: int, hidden: int = GATE_HIDDEN):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.fc1bn = PooledBatchNorm2d(hidden)  # convnet-aig's BatchNorm1d on the pooled vector
        self.fc2 = nn.Conv2d(hidden, 2, kernel_size=1)
        nn.init.normal_(self.fc1.weight, std=math.sqrt(2.0 / hidden))
        nn.init.normal_(self.fc2.weight, std=GATE_WEIGHT_STD)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor(GATE_BIAS))
        self.temperature = 1.0
        self.rule = "hard"  # how it decides outside training (`pag.models.gating.gate_rule`)
        self.last_gate: Tensor | None = None  # (N,) execute decision
        self.last_prob: Tensor | None = None  # (N,) clean execute probability

    def logits(self, x: Tensor) -> Tensor:
        """N x 2 x 1 x 1 logits (skip, execute) from the globally pooled block input."""
        pooled = F.adaptive_avg_pool2d(x, 1)
        return self.fc2(F.relu(self.fc1bn(self.fc1(pooled))))

    def decide(self, x: Tensor) -> Tensor:
        """The execute decision g, N x 1 x 1 x 1, in {0, 1}."""
        logits = self.logits(x)
        if self.training:
            gate = gumbel_softmax(logits, self.temperature, hard=True)
        else:
            gate = decide_by_rule(logits, self.rule)
        self.last_gate = gate[:, 1, 0, 0]
        self.last_prob = F.softmax(logits, dim=1)[
            :, 1, 0, 0
        ]  # a budget on decisions needs its grad
        return gate[:, 1:2]

    def forward(self, block: nn.Module, x: Tensor) -> Tensor:
        on = self.decide(x)
        h = block.branch_input(x)
        mid = block.conv3x3_stage(h)
        residual = block.branch_output(mid)
        if measuring():
            _mark_block(block, on, h, mid)
        return block.relu(block.shortcut(x) + on * residual)


def _mark_block(block: nn.Module, on: Tensor, h: Tensor, mid: Tensor) -> None:
    """Mark every conv of the residual branch as active exactly for the executing images
    (the shortcut's downsample conv always runs)."""
    n = on.shape[0]
    block.conv1.active_mask = on.expand(n, 1, *h.shape[-2:])
    block.conv2.active_mask = on.expand(n, 1, *mid.shape[-2:])
    if hasattr(block, "conv3"):
        block.conv3.active_mask = on.expand(n, 1, *mid.shape[-2:])


class _LayerSkipAux:
    """Adds the block decisions, probabilities and executed-block counts to aux."""

    def __call__(self, model: nn.Module, aux: dict, size: tuple[int, int]) -> None:
        gated = [(n, b.gate) for n, b in model.blocks() if isinstance(b.gate, BlockGate)]
        gates = {n: g.last_gate for n, g in gated if g.last_gate is not None}
        if not gates:
            return
        aux["block_gates"] = gates
        aux["block_gate_probs"] = {n: g.last_prob for n, g in gated if g.last_prob is not None}
        executed = torch.stack([g.detach().float() for g in gates.values()]).sum(0)
        aux["executed_blocks"] = executed
        aux["ponder"] = executed.view(-1, 1, 1, 1).expand(-1, 1, *size)


class TargetRateLoss:
    """ConvNet-AIG's target-rate loss: mean over gated blocks of (t - mean_batch(g_k))^2, on
    the straight-through training samples (`source` "samples", ConvNet-AIG's) or on the
    decisions evaluation takes, the noiseless argmax, with the probabilities' gradient
    ("decisions"; see `pag.models.gating.BUDGET_SOURCES`)."""

    def __init__(self, target: float, source: str = "samples"):
        if source not in ("samples", "decisions"):
            raise PagError(
                f"layer_skip budget source must be 'samples' or 'decisions', got {source!r}"
            )
        self.target, self.source = float(target), source

    def __setstate__(self, state: dict) -> None:  # models pickled before `source` existed
        self.__dict__.update({"source": "samples", **state})

    def __call__(self, model: nn.Module, aux: dict) -> Tensor:
        if self.source == "samples":
            return target_rate_loss(aux.get("block_gates", {}), self.target)
        probs = aux.get("block_gate_probs", {})
        return target_rate_loss(
            {n: straight_through_decision(p) for n, p in probs.items()}, self.target
        )


def target_rate_loss(gates: dict[str, Tensor], target: float) -> Tensor:
    """(1/K) sum_k (target - mean over the batch of g_k)^2 for the K gates in `gates`."""
    if not gates:
        raise PagError("target_rate_loss: no block gates in aux (is the model a layer_skip one?)")
    rates = torch.stack([g.float().mean() for g in gates.values()])
    return ((target - rates) ** 2).mean()


def execution_rates(gates: dict[str, Tensor]) -> dict[str, float]:
    """Fraction of images executing each gated block."""
    return {name: float(g.float().mean()) for name, g in gates.items()}


def apply_layer_skip(model: nn.Module, target_rate: float, budget_source: str = "samples") -> None:
    """Attach a `BlockGate` to every residual block of `model` (a DensePredictionModel) and
    set ConvNet-AIG's target-rate loss with target `target_rate` in (0, 1]."""
    if isinstance(target_rate, bool) or not isinstance(target_rate, int | float):
        raise PagError(f"layer_skip target rate must be a number in (0, 1], got {target_rate!r}")
    if not 0.0 < target_rate <= 1.0:
        raise PagError(f"layer_skip target rate must be in (0, 1], got {target_rate!r}")
    blocks = model.blocks()
    taken = [name for name, block in blocks if block.gate is not None]
    if taken:
        raise PagError(f"layer_skip: blocks {taken} already carry a gate")
    if model.stage_runner is not None:
        raise PagError("layer_skip cannot be combined with a method that runs stages (SACT)")
    for _, block in blocks:
        block.gate = BlockGate(block.conv1.in_channels)
    model.aux_fns.append(_LayerSkipAux())
    model.budget_loss_fn = TargetRateLoss(target_rate, budget_source)


__all__ = [
    "BlockGate",
    "PooledBatchNorm2d",
    "TargetRateLoss",
    "apply_layer_skip",
    "execution_rates",
    "target_rate_loss",
]
