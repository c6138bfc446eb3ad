"""Per-pixel attentional gates (PAG): which pixels of a residual block compute.

A `PixelGate` is attached to a block as `block.gate` and runs the block (see
`pag.models.resnet.ResidualBlock`). It predicts two logits per output pixel with a 1x1 conv on
the block input (channel 0 = skip, 1 = compute; stride = the block's stride), samples a gate
with the authors' Gumbel-softmax in training and takes the hard argmax, without noise, at
evaluation. What the gate controls is its `mode`:

* ``"conv3x3"`` (the authors' code): only the block's 3x3 stage is gated; at a skipped pixel the
  3x3 stage's input passes through unchanged (subsampled where the 3x3 conv has a stride) and
  the 1x1 convs and the shortcut still run.
* ``"residual"``: the whole residual branch is gated; a skipped pixel keeps relu(shortcut).

In evaluation the gate also marks, on each conv it controls, the output positions an executor
of active positions would compute (`conv.active_mask`), which `pag.flops` counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.errors import PagError
from pag.flops import measuring, uncounted
from pag.methods import registry

GATE_MODES = ("conv3x3", "residual")
# how a gate decides outside training (`gate_rule`): the paper's noiseless hard argmax, every
# position computing, the noiseless soft probability (a continuous mix), or one hard
# Gumbel-max sample (a Bernoulli draw at the gate's probability)
GATE_RULES = registry.GATE_RULES
# what the budget loss reads: the (relaxed or straight-through) training samples, as the
# authors' code; the noiseless gate probabilities; or the decisions evaluation takes (the hard
# argmax of the probabilities), with the probabilities' gradient (straight-through)
BUDGET_SOURCES = ("samples", "probs", "decisions")


def straight_through_decision(prob: Tensor) -> Tensor:
    """1 where `prob` > 0.5 (the noiseless argmax that evaluation takes), 0 elsewhere, with the
    gradient of `prob`: a budget on this constrains what evaluation computes."""
    hard = (prob > 0.5).to(prob.dtype)
    return hard - prob.detach() + prob


# the authors' squashing of probabilities and uniforms away from 0 (GumbelNoisySoftMax.m)
_PROB_EPS, _UNIFORM_EPS = 1e-3, 1e-5


def gumbel_softmax(logits: Tensor, temperature: float, hard: bool = False, dim: int = 1) -> Tensor:
    """The authors' relaxed sample softmax((log a + g) / t), a = softmax(logits) squashed to
    (a + 1e-3) / 1.001 and g Gumbel noise from u squashed to (u + 1e-5) / 1.001. `hard` returns
    the one-hot argmax of that sample with the soft sample's gradient (straight-through)."""
    probs = (F.softmax(logits, dim=dim) + _PROB_EPS) / (1 + _PROB_EPS)
    uniform = (torch.rand_like(logits) + _UNIFORM_EPS) / (1 + _UNIFORM_EPS)
    gumbel = -torch.log(-torch.log(uniform))
    soft = F.softmax((torch.log(probs) + gumbel) / temperature, dim=dim)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(dim), soft.shape[dim]).movedim(-1, dim).to(soft.dtype)
    return one_hot - soft.detach() + soft


def hard_argmax(logits: Tensor, dim: int = 1) -> Tensor:
    """One-hot of the most likely choice (ties go to the first), no noise: evaluation."""
    return F.one_hot(logits.argmax(dim), logits.shape[dim]).movedim(-1, dim).to(logits.dtype)


def temperature_at(
    epoch: int,
    start: float = 1.0,
    decay: float = 0.03,
    every: int = 2,
    minimum: float = 0.01,
    final: float = 0.001,
) -> float:
    """The authors' schedule: start, lowered by `decay` every `every` epochs while it stays
    >= `minimum` (1, 1, 0.97, 0.97, ..., 0.01, 0.01: 68 epochs), then `final`."""
    value = start - decay * (epoch // every)
    return round(value, 10) if value >= minimum - 1e-9 else final


def input_mask(conv: nn.Conv2d, out_mask: Tensor, in_size: tuple[int, int]) -> Tensor:
    """The input positions `conv` reads to compute the output positions in `out_mask`:
    exactly those under a kernel window of an active output (a transposed convolution of
    the mask with a ones kernel), so a preceding 1x1 conv need only run there."""
    k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    full = (out_mask.shape[-2] - 1) * s - 2 * p + d * (k - 1) + 1
    pad = (in_size[0] - full, in_size[1] - ((out_mask.shape[-1] - 1) * s - 2 * p + d * (k - 1) + 1))
    ones = out_mask.new_ones(1, 1, k, k)
    with uncounted():  # mask bookkeeping, not network compute
        spread = F.conv_transpose2d(
            out_mask, ones, stride=s, padding=p, dilation=d, output_padding=pad
        )
    return (spread > 0).to(out_mask.dtype)


class RecordsDecisions:
    """Mixin for modules that keep their last forward's decisions for `aux` (`_records`):
    those tensors may belong to a training graph, which deepcopy and pickle refuse, so
    copies start without them."""

    _records: tuple[str, ...] = ()

    def __getstate__(self):
        return {**super().__getstate__(), **dict.fromkeys(self._records)}


class PixelGate(RecordsDecisions, nn.Module):
    """A per-pixel gate on one residual block (attached as `block.gate`).

    `bias` is the initial compute-minus-skip logit: with small weights, a gate plugged into a
    trained dense model starts close to it (2: about 88 % of pixels compute) instead of at
    random decisions. `hard` trains with straight-through hard samples (ConvNet-AIG, DynConv)
    instead of the authors' soft relaxed ones. `rule` is how it decides outside training
    (`GATE_RULES`; set with `gate_rule`)."""

    _records = ("last_gate", "last_prob")

    def __init__(
        self,
        in_channels: int,
        stride: int,
        mode: str = "conv3x3",
        hard: bool = False,
        bias: float = 2.0,
    ):
        super().__init__()
        if mode not in GATE_MODES:
            raise PagError(f"gate mode must be one of {list(GATE_MODES)}, got {mode!r}")
        self.mode = mode
        self.hard = hard
        self.conv = nn.Conv2d(in_channels, 2, kernel_size=1, stride=stride, bias=True)
        nn.init.normal_(self.conv.weight, std=0.01)
        with torch.no_grad():
            self.conv.bias.copy_(torch.tensor([0.0, float(bias)]))
        self.temperature = 1.0
        self.rule = "hard"
        self.last_gate: Tensor | None = None  # N x 2 x h x w, (skip, compute)
        self.last_prob: Tensor | None = None  # N x 1 x h x w, noiseless compute probability

    def decide(self, x: Tensor) -> Tensor:
        logits = self.conv(x)
        self.last_prob = F.softmax(logits, dim=1)[:, 1:2]
        if self.training:
            gate = gumbel_softmax(logits, self.temperature, hard=self.hard)
        else:
            gate = decide_by_rule(logits, self.rule)
        self.last_gate = gate
        return gate[:, 1:2]

    def forward(self, block: nn.Module, x: Tensor) -> Tensor:
        on = self.decide(x)
        h = block.branch_input(x)
        track = measuring()  # mark what runs only while MACs are being counted
        if self.mode == "conv3x3":
            stride = block.conv2.stride[0]
            if track:
                block.conv2.active_mask = on
                if (
                    stride > 1
                ):  # conv1 is needed on the pass-through grid and around computed pixels
                    grid = torch.zeros_like(h[:, :1])
                    grid[:, :, ::stride, ::stride] = 1 - on
                    around = input_mask(block.conv2, on, tuple(h.shape[-2:]))
                    block.conv1.active_mask = torch.maximum(grid, around)
            computed = block.conv3x3_stage(h)
            passed = h if stride == 1 else h[:, :, ::stride, ::stride]
            mixed = on * computed + (1 - on) * passed
            return block.relu(block.shortcut(x) + block.branch_output(mixed))
        if track:
            _mark_residual_masks(block, on, h.shape[-2:])
        residual = block.branch_output(block.conv3x3_stage(h))
        return block.relu(block.shortcut(x) + on * residual)


def decide_by_rule(logits: Tensor, rule: str) -> Tensor:
    """An evaluation decision (N x 2 x h x w, skip and compute) by one of `GATE_RULES`."""
    if rule == "hard":
        return hard_argmax(logits)
    if rule == "open":
        return torch.cat([torch.zeros_like(logits[:, :1]), torch.ones_like(logits[:, :1])], 1)
    if rule == "expected":
        return F.softmax(logits, dim=1)
    if rule == "sample":  # Gumbel-max: a draw from the categorical of softmax(logits)
        uniform = torch.rand_like(logits).clamp_(1e-12, 1 - 1e-7)
        return hard_argmax(logits - torch.log(-torch.log(uniform)))
    raise PagError(f"gate rule must be one of {list(GATE_RULES)}, got {rule!r}")


class RandomPixelGate(PixelGate):
    """The random-gate control: computes a uniformly random subset of positions, each with
    probability `rate`, in training and in evaluation (no learned policy). Draws come from the
    global torch generator, so a seeded run or evaluation repeats them exactly. It has no
    parameters: its conv is replaced by nothing."""

    def __init__(self, stride: int, rate: float, mode: str = "conv3x3"):
        nn.Module.__init__(self)
        if mode not in GATE_MODES:
            raise PagError(f"gate mode must be one of {list(GATE_MODES)}, got {mode!r}")
        if not 0.0 < rate <= 1.0:
            raise PagError(f"random gate rate must be in (0, 1], got {rate!r}")
        self.mode, self.hard, self.stride, self.rate = mode, True, int(stride), float(rate)
        self.rule = "hard"
        self.temperature = 1.0
        self.last_gate = None
        self.last_prob = None

    def decide(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        s = self.stride
        shape = (n, 1, (h - 1) // s + 1, (w - 1) // s + 1)
        if not self.training and self.rule == "open":
            on = x.new_ones(shape)
        else:
            on = (torch.rand(shape, device=x.device) < self.rate).to(x.dtype)
        self.last_prob = torch.full_like(on, self.rate)
        self.last_gate = torch.cat([1 - on, on], dim=1)
        return on


@contextlib.contextmanager
def gate_rule(model: nn.Module, rule: str) -> Iterator[None]:
    """Every gate of `model` (PAG's per-pixel gates, layer skipping's per-image ones) decides
    by `rule` outside training while inside."""
    if rule not in GATE_RULES:
        raise PagError(f"gate rule must be one of {list(GATE_RULES)}, got {rule!r}")
    gates = [m for m in model.modules() if isinstance(m, RecordsDecisions) and hasattr(m, "rule")]
    previous = [g.rule for g in gates]
    for gate in gates:
        gate.rule = rule
    try:
        yield
    finally:
        for gate, old in zip(gates, previous, strict=True):
            gate.rule = old


def _mark_residual_masks(block: nn.Module, on: Tensor, conv2_in_size) -> None:
    """Where each conv of a block must run when its whole residual branch is gated by `on`."""
    block.conv2.active_mask = on
    needed = input_mask(block.conv2, on, tuple(conv2_in_size))
    block.conv1.active_mask = needed  # conv1's outputs are conv2's inputs
    if hasattr(block, "conv3"):
        block.conv3.active_mask = on


def rate_kl_loss(on: Tensor, off: Tensor, target: float) -> Tensor:
    """The authors' sparsity loss (spatialSparsityKLDLoss.m) on per-image mean gate maps:
    KL(Bern(t) || Bern(mean on)) + KL(Bern(1 - t) || Bern(mean off)), averaged over images."""
    # squashed into (eps, 1 - eps) like the authors' (a + 1e-3) / 1.001, not clamped: a
    # clamp would cut the gradient of a layer whose mean reached exactly 0 or 1
    eps = 1e-6
    m_on = eps + (1 - 2 * eps) * on.float().mean(dim=(1, 2, 3))
    m_off = eps + (1 - 2 * eps) * off.float().mean(dim=(1, 2, 3))
    t = torch.as_tensor(target, dtype=m_on.dtype)

    def kl(p, q):  # KL(Bern(p) || Bern(q)), with 0 log 0 = 0
        return (
            torch.xlogy(p, p)
            - torch.xlogy(p, q)
            + torch.xlogy(1 - p, 1 - p)
            - torch.xlogy(1 - p, 1 - q)
        )

    return (kl(t, m_on) + kl(1 - t, m_off)).mean()


def sparsity_loss(gates: dict[str, Tensor], target: float, scope: str = "layer") -> Tensor:
    """Sum over gated layers of `rate_kl_loss` ("layer", the authors' default), or one KL on
    the rate pooled over all layers, weighted by their pixel counts ("global" budget)."""
    if not gates:
        raise PagError("sparsity_loss: no gate maps (is the model gated and in training?)")
    if scope == "layer":
        return sum(rate_kl_loss(g[:, 1:2], g[:, 0:1], target) for g in gates.values())
    if scope == "global":
        pixels = sum(g[0, 0].numel() for g in gates.values())
        pooled_on = sum(
            g[:, 1:2].mean(dim=(2, 3), keepdim=True) * g[0, 0].numel() for g in gates.values()
        )
        pooled_on = pooled_on / pixels
        return rate_kl_loss(pooled_on, 1 - pooled_on, target)
    raise PagError(f"sparsity scope must be 'layer' or 'global', got {scope!r}")


class SparsityLoss:
    """The model's budget loss for PAG: `sparsity_loss` of its gate maps (a class, not a
    closure, so models stay picklable). `source` "samples" reads the training samples (the
    authors'), "probs" the noiseless probabilities (`aux["gate_probs"]`)."""

    def __init__(self, target: float, scope: str = "layer", source: str = "samples"):
        if scope not in ("layer", "global"):
            raise PagError(f"sparsity scope must be 'layer' or 'global', got {scope!r}")
        if source not in BUDGET_SOURCES:
            raise PagError(f"budget source must be one of {list(BUDGET_SOURCES)}, got {source!r}")
        self.target, self.scope, self.source = float(target), scope, source

    def __setstate__(self, state: dict) -> None:  # models pickled before `source` existed
        self.__dict__.update({"source": "samples", **state})

    def __call__(self, model: nn.Module, aux: dict) -> Tensor:
        if self.source == "samples":
            return sparsity_loss(aux["gates"], self.target, self.scope)
        probs = aux["gate_probs"]
        if self.source == "decisions":
            probs = {n: straight_through_decision(p) for n, p in probs.items()}
        return sparsity_loss(
            {n: torch.cat([1 - p, p], dim=1) for n, p in probs.items()}, self.target, self.scope
        )


def ponder_map(gates: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
    """Per-pixel number of gated blocks that computed (N x 1 x H x W), each gate map
    upsampled to `size` with nearest neighbour (the authors' accumulated ponder map)."""
    total = None
    for gate in gates.values():
        up = F.interpolate(gate[:, 1:2].float(), size=size, mode="nearest")
        total = up if total is None else total + up
    if total is None:
        raise PagError("ponder_map: no gate maps")
    return total


def layer_activity(gates: dict[str, Tensor]) -> dict[str, float]:
    """Fraction of pixels computing in each gated layer."""
    return {name: float(g[:, 1:2].float().mean()) for name, g in gates.items()}
