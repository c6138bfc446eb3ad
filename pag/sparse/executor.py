"""`SparseExecutor`: a trained model run at inference computing only its active positions.

Built once from a `DensePredictionModel` (weights copied, every BatchNorm folded into its
conv with the running statistics: inference only; rebuild after further training). Each
call runs the model's own decisions on the input (PAG gates, MultiPool attention, SACT
halting heads, layer-skipping gates) and then computes only what they let run
(`pag.sparse.blocks`), on channels-last rows. Its output is the model's eval forward's,
{"pred": {...}, "aux": {...}}, with the same aux maps, to within float rounding (tested to
1e-4 relative for every method).

The stem and the task heads are dense in every method, as in the model. The heads'
3x3 convs run as one conv (their weights concatenated), their classifiers as one
block-diagonal product and one bilinear upsampling for all tasks.

`forced`, for benchmarks only: {block name: N x 1 x h x w mask} replaces the named PAG gates'
decisions (their logits are still computed, so the cost is the same); see
`pag.sparse.forcing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.errors import PagError
from pag.methods import registry
from pag.models import gating
from pag.models.heads import finish_prediction
from pag.models.layer_skip import BlockGate
from pag.models.model import DensePredictionModel
from pag.models.sact import Halting, SACTStageRunner, _SACTAux
from pag.sparse.blocks import BlockExecutor, Context, Policy
from pag.sparse.decisions import HaltingExecutor, ImageDecision, PixelDecision
from pag.sparse.kernels import (
    Conv,
    FeatureMap,
    Geometry,
    Linear,
    folded,
    onednn_enabled,
    rows_of,
)


def sparse_methods() -> list[str]:
    """The methods whose decisions the executor runs (`Method.sparse`)."""
    return [m.name for m in registry.methods() if m.sparse]


@dataclass
class Unit:
    """One block with the decision that controls it."""

    name: str
    block: BlockExecutor
    pixel: PixelDecision | None = None
    gate_mode: str = ""
    image: ImageDecision | None = None
    halting: HaltingExecutor | None = None


@dataclass
class Trace:
    """The decisions of one call, for the aux maps."""

    gates: dict[str, Tensor] = field(default_factory=dict)  # N x 1 x h x w bool
    block_gates: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    multipool: dict[str, tuple[Tensor, int, int, int]] = field(default_factory=dict)
    ponder: dict[str, Tensor] = field(default_factory=dict)
    units: dict[str, Tensor] = field(default_factory=dict)


class SparseExecutor:
    """Inference engine for a gated `DensePredictionModel`; see the module docstring.

    `require_gates` (default): refuse a model that decides nothing (dense, truncation,
    multipool_avg); with False such a model runs densely through the same kernels.
    `policy`: when a layer runs its dense conv instead of gathering (`Policy`)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        require_gates: bool = True,
        policy: Policy | None = None,
    ):
        if not isinstance(model, DensePredictionModel):
            raise PagError(
                "the sparse executor runs a pag DensePredictionModel (pag.models.build_model "
                f"or a trained run's model), got {type(model).__name__}"
            )
        runner = model.stage_runner
        if runner is not None and not isinstance(runner, SACTStageRunner):
            raise PagError(
                f"the sparse executor knows SACT's stage runner only, got {type(runner).__name__}"
            )
        self.method = model.method
        weight = model.trunk.conv1.weight
        self.ctx = Context(
            policy if policy is not None else Policy(),
            bucket=onednn_enabled(weight.device, weight.dtype),
        )
        self.sact_eps = runner.eps if runner is not None else None
        with torch.no_grad():
            trunk = model.trunk
            self.stem = Conv.of(trunk.conv1, trunk.bn1)
            pool = trunk.maxpool
            self.pool = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
            self.stages = [
                [self._unit(f"layer{s + 1}.{i}", block) for i, block in enumerate(stage)]
                for s, stage in enumerate(trunk.stages())
            ]
            self.heads = HeadsExecutor(model)
        decides = self.sact_eps is not None or any(
            unit.pixel is not None
            or unit.image is not None
            or (unit.block.multipool is not None and not unit.block.multipool.average)
            for stage in self.stages
            for unit in stage
        )
        if require_gates and not decides:
            raise PagError(
                f"model of method {self.method!r} has no gates, halting heads or MultiPool "
                "choices, so there is nothing to skip: the sparse executor runs models that "
                f"decide per pixel or per image what to compute ({', '.join(sparse_methods())}). "
                "Run it with its own forward, or pass require_gates=False to run it densely"
            )
        self._forced: dict[str, Tensor] = {}

    @property
    def forced(self) -> dict[str, Tensor] | None:
        """Benchmarks only: {block name: mask} replacing those PAG gates' decisions."""
        return self._forced or None

    @forced.setter
    def forced(self, masks: dict[str, Tensor] | None) -> None:
        device = self.stem.weight.device
        self._forced = {n: m.reshape(-1).to(device) != 0 for n, m in (masks or {}).items()}

    def _unit(self, name: str, block: nn.Module) -> Unit:
        unit = Unit(name, BlockExecutor(name, block, self.ctx))
        gate = block.gate
        if isinstance(gate, gating.RandomPixelGate):
            raise PagError(
                f"{name}: a random gate (the random_gate control) draws its decisions instead "
                "of computing them from the features; the sparse executor runs learned policies"
            )
        if isinstance(gate, gating.PixelGate):
            unit.pixel, unit.gate_mode = PixelDecision(gate), gate.mode
        elif isinstance(gate, BlockGate):
            unit.image = ImageDecision(gate)
        elif gate is not None:
            raise PagError(f"{name}: unknown gate type {type(gate).__name__}")
        if hasattr(block, "halting"):
            unit.halting = HaltingExecutor(block.halting)
        return unit

    # -- running ----------------------------------------------------------------------------------

    def features(self, x: Tensor) -> Tensor:
        """The trunk's output, N x C x h x w (channels-last memory), as `model.features(x)`."""
        with torch.no_grad():
            return self._trunk(self._check(x), Trace()).nchw()

    def __call__(self, x: Tensor) -> dict:
        """{"pred": {task: N x C x H x W}, "aux": {...}} as the model's eval forward."""
        with torch.no_grad():
            x = self._check(x)
            trace = Trace()
            features = self._trunk(x, trace)
            size = (x.shape[-2], x.shape[-1])
            return {"pred": self.heads(features, size), "aux": self._aux(trace, size)}

    def _check(self, x: Tensor) -> Tensor:
        weight = self.stem.weight
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != weight.shape[1]:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise PagError(
                f"the sparse executor needs an N x {weight.shape[1]} x H x W input, got {shape}"
            )
        if x.dtype != weight.dtype or x.device != weight.device:
            raise PagError(
                f"input is {x.dtype} on {x.device}; the model is {weight.dtype} on {weight.device}"
            )
        return x.contiguous(memory_format=torch.channels_last)

    def _trunk(self, x: Tensor, trace: Trace) -> FeatureMap:
        stem = self.stem.dense(FeatureMap.from_nchw(x), relu=True)
        kernel, stride, padding, dilation, ceil_mode = self.pool
        pooled = F.max_pool2d(stem.nchw(), kernel, stride, padding, dilation, ceil_mode)
        fm = FeatureMap.from_nchw(pooled)
        for index, stage in enumerate(self.stages):
            if self.sact_eps is not None:
                fm = self._sact_stage(f"layer{index + 1}", stage, fm, trace)
            else:
                for unit in stage:
                    fm = self._block(unit, fm, trace)
        return fm

    def _block(self, unit: Unit, fm: FeatureMap, trace: Trace) -> FeatureMap:
        block = unit.block
        if unit.pixel is not None:
            on = unit.pixel(fm)
            if unit.name in self._forced:
                on = self._forced_decision(unit.name, on)
            rows = rows_of(on)
            if unit.gate_mode == "conv3x3":
                out = block.conv3x3_gated(fm, on, rows)
            else:
                out = block.residual_gated(fm, on, rows)
            trace.gates[unit.name] = on.view(out.n, 1, out.h, out.w)
            return out
        if unit.image is not None:
            on, prob = unit.image(fm)
            trace.block_gates[unit.name] = (on, prob)
            return block.image_gated(fm, on)
        if block.multipool is not None:
            out, choice = block.run_multipool(fm)
            if choice is not None:
                count = len(block.multipool.branches) + 1
                trace.multipool[unit.name] = (choice, count, out.h, out.w)
            return out
        return block.dense(fm)

    def _forced_decision(self, name: str, decided: Tensor) -> Tensor:
        mask = self._forced[name]
        if mask.numel() != decided.numel():
            raise PagError(
                f"forced mask for {name} has {mask.numel()} positions; the gate decides "
                f"{decided.numel()} (N x 1 x h x w at the block's output)"
            )
        return mask

    def _sact_stage(self, name: str, stage: list[Unit], x: FeatureMap, trace: Trace) -> FeatureMap:
        """One SACT stage: the first unit dense; each later unit and halting head only at the
        positions still running; the output sum_l p_l * state_l updated where p_l != 0."""
        state = stage[0].block.dense(x)
        acc = Halting(state.rows.new_zeros(state.n, 1, state.h, state.w).float(), self.sact_eps)
        out = None
        rows = None
        for i, unit in enumerate(stage):
            if i > 0:
                running = acc.running().reshape(-1)
                rows = rows_of(running)
                state = unit.block.residual_gated(state, running, rows)
            if i == len(stage) - 1:
                p = acc.step(None)
            else:
                p = acc.step(unit.halting(state, rows, self.ctx).float())
            p = p.reshape(-1, 1).to(state.rows.dtype)
            if out is None:
                out = p * state.rows
            elif rows.shape[0]:
                out.index_add_(0, rows, p.index_select(0, rows) * state.rows.index_select(0, rows))
        trace.ponder[name] = acc.ponder_cost()
        trace.units[name] = acc.units
        return FeatureMap(out, state.n, state.h, state.w)

    def _aux(self, trace: Trace, size: tuple[int, int]) -> dict:
        """The aux maps the model's forward gives (see `DensePredictionModel.forward`)."""
        aux: dict = {}
        if trace.gates:
            aux["gates"] = {
                name: torch.cat([~on, on], dim=1).to(self.stem.weight.dtype)
                for name, on in trace.gates.items()
            }
            aux["ponder"] = gating.ponder_map(aux["gates"], size)
        if trace.multipool:
            aux["multipool"] = {
                name: F.one_hot(choice, count)
                .view(-1, h, w, count)
                .permute(0, 3, 1, 2)
                .to(self.stem.weight.dtype)
                for name, (choice, count, h, w) in trace.multipool.items()
            }
        if trace.block_gates:
            dtype = self.stem.weight.dtype
            aux["block_gates"] = {n: on.to(dtype) for n, (on, _) in trace.block_gates.items()}
            aux["block_gate_probs"] = {n: p for n, (_, p) in trace.block_gates.items()}
            executed = torch.stack([g.float() for g in aux["block_gates"].values()]).sum(0)
            aux["executed_blocks"] = executed
            aux["ponder"] = executed.view(-1, 1, 1, 1).expand(-1, 1, *size)
        if trace.ponder:
            _SACTAux(SimpleNamespace(ponder=trace.ponder, units=trace.units))(None, aux, size)
        return aux


class HeadsExecutor:
    """Every task head at once: one 3x3 conv with all heads' outputs, one block-diagonal
    classifier product, one bilinear upsampling; then each task's `finish_prediction`."""

    def __init__(self, model: DensePredictionModel):
        heads = list(model.heads.items())
        sided = [task for task, head in heads if getattr(head, "takes_sides", False)]
        if sided:
            raise PagError(
                f"the sparse executor runs task heads on the trunk's output; the {sided[0]} "
                "head reads side outputs (model.boundary_head: side_outputs), which it does "
                "not execute"
            )
        convs = [folded(head.conv, head.bn) for _, head in heads]
        geometry = Geometry.of(heads[0][1].conv)
        if any(Geometry.of(head.conv) != geometry for _, head in heads):
            raise PagError("the task heads' 3x3 convs differ in geometry")
        self.spread = Conv(
            torch.cat([w for w, _ in convs]), torch.cat([b for _, b in convs]), geometry
        )
        classifiers = [folded(head.classifier, None) for _, head in heads]
        out_total = sum(w.shape[0] for w, _ in classifiers)
        in_total = sum(w.shape[1] for w, _ in classifiers)
        weight = classifiers[0][0].new_zeros(out_total, in_total)
        self.slices: dict[str, slice] = {}
        row = col = 0
        for (task, _), (w, _) in zip(heads, classifiers, strict=True):
            weight[row : row + w.shape[0], col : col + w.shape[1]] = w.reshape(w.shape[0], -1)
            self.slices[task] = slice(row, row + w.shape[0])
            row, col = row + w.shape[0], col + w.shape[1]
        self.classify = Linear(weight, torch.cat([b for _, b in classifiers]))

    def __call__(self, features: FeatureMap, size: tuple[int, int]) -> dict[str, Tensor]:
        hidden = self.spread.dense(features, relu=True)
        raw = FeatureMap(self.classify(hidden.rows), hidden.n, hidden.h, hidden.w).nchw()
        up = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
        return {
            task: finish_prediction(task, up[:, part]).contiguous()
            for task, part in self.slices.items()
        }
