"""Compute accounting in MACs (multiply-accumulates); FLOPs = 2 x MACs (`to_flops`).

Two numbers per model and input, both per image:

* `dense_macs`: what the forward actually executes, measured by
  `torch.utils.flop_counter.FlopCounterMode` (which counts 2 x MACs for convolutions and
  matrix products and nothing for BN, ReLU, pooling, additions, masks or interpolation) divided
  by 2 and by the batch size. For a gated model this includes the gate convs.
* `effective_macs`: what an executor that computes only active positions would spend. Every
  `nn.Conv1d/2d/3d` and `nn.Linear` call counts (active output positions) x C_out x
  (C_in / groups) x prod(kernel) (Linear: in x out per active row). A module's active
  positions are given by its `active_mask` attribute, set during the forward by whatever
  decides what runs (PAG gates, see `pag.models.gating`): a 0/1 tensor broadcastable to the
  output's N x 1 x H x W (N x 1 x 1 x 1 for a whole image; for a Linear, N x 1 x the row
  dimensions); nonzero = computed. A module with no mask computes every output position.
  Gate and halting-head costs are counted because those heads are convs or linears too.

Rules that keep the two exact and comparable:

* Both run the model in eval mode under `torch.no_grad()` and restore every module's mode.
* `active_mask` attributes are cleared before the forward (so a mask left by an earlier
  forward never counts) and after it. A mask is read when its module runs; a module that
  had none when it ran takes the mask it carries at the end of the forward (a gate may mark
  a conv after running it).
* With every mask all-ones, effective == dense exactly. `effective_macs` checks this
  (``strict=True``): work the flop counter sees outside conv/linear modules (a functional
  `F.conv2d`, a matmul) would be missing from the effective count, so it raises a `PagError`
  naming the module instead of under-counting silently.
* Bookkeeping that no executor runs as network compute (dilating a gate mask with a
  transposed convolution) goes inside `with uncounted():`, which both counts ignore.
* An executor may not shrink the batch to the images that run a module, unless the input
  is a single image: per-image accounting needs the batch, with N x 1 x 1 x 1 masks.

Importing this module has no side effects and does not import `pag.models`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils import flop_counter

from pag.errors import PagError

__all__ = [
    "MacsReport",
    "ModuleMacs",
    "dense_macs",
    "effective_macs",
    "macs_breakdown",
    "marking",
    "measure_macs",
    "measuring",
    "to_flops",
    "uncounted",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_UNCOUNTED: contextvars.ContextVar[int] = contextvars.ContextVar("pag_flops_uncounted", default=0)
_MEASURING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pag_flops_measuring", default=False
)


def measuring() -> bool:
    """True inside a MAC measurement: only then do gates mark `active_mask` on their convs
    (no stale masks elsewhere, and no mask bookkeeping in ordinary forwards)."""
    return _MEASURING.get()


def to_flops(macs):
    """FLOPs from MACs: one multiply-accumulate is two floating-point operations."""
    return 2 * macs


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Ops run inside are bookkeeping, not network compute: `dense_macs` and the strict check
    of `effective_macs` ignore them (for example the transposed convolution that dilates a
    gate mask in `pag.models.gating.input_mask`). Nests; costs nothing outside a count."""
    token = _UNCOUNTED.set(_UNCOUNTED.get() + 1)
    try:
        yield
    finally:
        _UNCOUNTED.reset(token)


@dataclass(frozen=True)
class ModuleMacs:
    """One conv/linear module's MACs per image, summed over its calls in one forward."""

    effective: Tensor  # (N,) float64: at its active positions
    dense: float  # at every output position
    calls: int


@dataclass(frozen=True)
class MacsReport:
    """`dense` (flop counter, per image), `effective` (N,) and the per-module breakdown."""

    dense: float
    effective: Tensor
    modules: dict[str, ModuleMacs] = field(default_factory=dict)


def dense_macs(model: nn.Module, x: Tensor) -> float:
    """MACs per image of the forward `model(x)` as `FlopCounterMode` measures it (its total,
    which is 2 x MACs over the batch, / 2 / N), in eval mode without gradients."""
    n = _batch_size(x)
    with _measuring(model):
        state = _CounterState()
        with state.counter():
            model(x)
    return state.total / (2 * n)


def effective_macs(model: nn.Module, x: Tensor, *, strict: bool = True) -> Tensor:
    """Per-image MACs (N,) float64 that an executor computing only the active positions of
    each conv/linear would spend on `model(x)`; see the module docstring for the rules.
    `strict` (default) raises `PagError` if the flop counter sees compute that the
    conv/linear hooks cannot count."""
    return measure_macs(model, x, strict=strict).effective


def macs_breakdown(model: nn.Module, x: Tensor, *, strict: bool = True) -> dict[str, ModuleMacs]:
    """Effective and dense MACs per image of every conv/linear that ran, by qualified name
    (as `model.named_modules()` gives it; the model itself is ''), in order of first call."""
    return measure_macs(model, x, strict=strict).modules


def measure_macs(model: nn.Module, x: Tensor, *, strict: bool = True) -> MacsReport:
    """One forward that yields dense MACs (flop counter), effective MACs and the breakdown.
    With ``strict=False`` the flop counter is not run and `dense` is the hooks' dense sum."""
    n = _batch_size(x)
    names = {module: name for name, module in model.named_modules()}
    recorder = _Recorder(n, names)
    state = _CounterState(recorder) if strict else None
    with _measuring(model), _hooks(model, recorder):
        with state.counter() if state is not None else contextlib.nullcontext():
            model(x)
        recorder.resolve_late_masks()
    modules = recorder.totals()
    hook_dense_batch = sum(recorder.dense_batch.values())
    if state is not None:
        state.check(recorder)
        dense = state.total / (2 * n)
    else:
        dense = hook_dense_batch / n
    effective = torch.zeros(n, dtype=torch.int64)
    for entry in recorder.effective.values():
        effective += entry
    return MacsReport(dense=float(dense), effective=effective.to(torch.float64), modules=modules)


# -- internals ----------------------------------------------------------------------------------


def _batch_size(x: Tensor) -> int:
    if not isinstance(x, Tensor) or x.dim() == 0:
        raise PagError("MAC counting needs a batched input tensor (N x ...)")
    if x.shape[0] < 1:
        raise PagError("MAC counting needs at least one image in the batch")
    return int(x.shape[0])


def _clear_masks(model: nn.Module) -> None:
    for module in model.modules():
        if getattr(module, "active_mask", None) is not None:
            module.active_mask = None


def marking(model: nn.Module):
    """Eval mode without gradients in which gates mark `active_mask` on the convs they
    control (as during a measurement); masks are cleared and modes restored on exit."""
    return _measuring(model)


@contextlib.contextmanager
def _measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients, no stale masks; every module's mode restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    _clear_masks(model)
    model.eval()
    token = _MEASURING.set(True)
    try:
        with torch.no_grad():
            yield
    finally:
        _MEASURING.reset(token)
        for module, training in modes:
            module.training = training
        _clear_masks(model)


@dataclass
class _Call:
    module: nn.Module
    batch: int
    positions: tuple[int, ...]  # per-image output positions: spatial shape (conv) or rows
    cost: int  # MACs per output position (conv) or per row (linear)
    mask: Tensor | None


class _Recorder:
    """Forward hooks on convs and linears: what each call would cost."""

    def __init__(self, n: int, names: dict[nn.Module, str]):
        self.n = n
        self.names = names
        self.calls: list[_Call] = []
        self.stack: list[nn.Module] = []  # hooked modules now running (for the counter)
        self.effective: dict[nn.Module, Tensor] = {}  # (N,) int64 per image
        self.dense_batch: dict[nn.Module, int] = {}  # over the whole batch
        self.ncalls: dict[nn.Module, int] = {}

    def name(self, module: nn.Module) -> str:
        return self.names.get(module, type(module).__name__)

    def pre_hook(self, module: nn.Module, args) -> None:
        self.stack.append(module)

    def hook(self, module: nn.Module, args, output) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        if not isinstance(output, Tensor):
            raise PagError(f"{self.name(module)}: expected a tensor output for MAC counting")
        if isinstance(module, nn.Linear):
            cost = module.in_features * module.out_features
            shape = tuple(output.shape[:-1]) if output.dim() > 1 else (1,)
            batch, positions = shape[0], shape[1:]
        else:
            cost = module.out_channels * (module.in_channels // module.groups)
            cost *= math.prod(module.kernel_size)
            spatial = len(module.kernel_size)
            shape = tuple(output.shape)
            if len(shape) == spatial + 1:  # unbatched input
                shape = (1, *shape)
            batch, positions = shape[0], shape[2:]
        mask = getattr(module, "active_mask", None)
        self.calls.append(_Call(module, int(batch), tuple(positions), cost, mask))

    def resolve_late_masks(self) -> None:
        """Count every call; a call made without a mask takes the module's final mask."""
        for call in self.calls:
            mask = call.mask
            if mask is None:
                mask = getattr(call.module, "active_mask", None)
            self._count(call, mask)
        self.calls = []

    def _count(self, call: _Call, mask: Tensor | None) -> None:
        name = self.name(call.module)
        if call.batch != self.n and self.n != 1:
            raise PagError(
                f"{name} ran on a batch of {call.batch} images, the input has {self.n}: "
                "per-image MACs need the whole batch (mark skipped images with an "
                "N x 1 x 1 x 1 active_mask) or an input of one image"
            )
        per_image = math.prod(call.positions)
        if mask is None:
            active = torch.full((call.batch,), per_image, dtype=torch.int64)
        else:
            active = self._active_positions(name, call, mask)
        if call.batch != self.n:  # one input image, the executor ran the module `batch` times
            active = active.sum().reshape(1)
        self.effective[call.module] = self.effective.get(call.module, 0) + active * call.cost
        dense = call.batch * per_image * call.cost
        self.dense_batch[call.module] = self.dense_batch.get(call.module, 0) + dense
        self.ncalls[call.module] = self.ncalls.get(call.module, 0) + 1

    @staticmethod
    def _active_positions(name: str, call: _Call, mask: Tensor) -> Tensor:
        target = (call.batch, 1, *call.positions)
        if not isinstance(mask, Tensor):
            raise PagError(f"{name}.active_mask must be a tensor, got {type(mask).__name__}")
        try:
            ok = mask.dim() == len(target) and torch.broadcast_shapes(mask.shape, target) == target
        except RuntimeError:
            ok = False
        if not ok:
            raise PagError(
                f"{name}.active_mask has shape {tuple(mask.shape)}; it must broadcast to the "
                f"output's {' x '.join(map(str, target))} (N x 1 x positions)"
            )
        flat = (mask != 0).expand(target).reshape(call.batch, -1)
        return flat.sum(dim=1, dtype=torch.int64).cpu()

    def totals(self) -> dict[str, ModuleMacs]:
        return {
            self.name(module): ModuleMacs(
                effective=effective.to(torch.float64),
                dense=self.dense_batch[module] / self.n,
                calls=self.ncalls[module],
            )
            for module, effective in self.effective.items()
        }


@contextlib.contextmanager
def _hooks(model: nn.Module, recorder: _Recorder) -> Iterator[None]:
    handles = []
    try:
        for module in model.modules():
            if isinstance(module, (*_CONVS, nn.Linear)):
                handles.append(module.register_forward_pre_hook(recorder.pre_hook))
                handles.append(module.register_forward_hook(recorder.hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class _CounterState:
    """A `FlopCounterMode` that skips `uncounted()` ops and, given a recorder, splits what it
    counts into work inside hooked modules (per module) and work outside them (per module
    that was innermost when it ran)."""

    def __init__(self, recorder: _Recorder | None = None):
        self.recorder = recorder
        self.total = 0
        self.inside: dict[nn.Module, int] = {}
        self.outside: dict[tuple[str, str], int] = {}  # (module, op)
        self._mode: flop_counter.FlopCounterMode | None = None

    def _wrap(self, op, formula):
        def counted(*args, **kwargs):
            if _UNCOUNTED.get():
                return 0
            flops = formula(*args, **kwargs)
            self._attribute(op, flops)
            return flops

        counted._get_raw = True  # the registry's formulas already take raw arguments
        return counted

    def _attribute(self, op, flops: int) -> None:
        self.total += flops
        if self.recorder is None or not flops:
            return
        if self.recorder.stack:
            module = self.recorder.stack[-1]
            self.inside[module] = self.inside.get(module, 0) + flops
            return
        parents = self._mode.mod_tracker.parents if self._mode is not None else {"Global"}
        innermost = max(parents, key=lambda p: (p != "Global", p.count(".")))
        where = "(outside the model)" if innermost == "Global" else innermost.partition(".")[2]
        key = (where or "(the model itself)", str(op))
        self.outside[key] = self.outside.get(key, 0) + flops

    @contextlib.contextmanager
    def counter(self) -> Iterator[None]:
        mapping = {op: self._wrap(op, f) for op, f in flop_counter.flop_registry.items()}
        self._mode = flop_counter.FlopCounterMode(display=False, custom_mapping=mapping)
        try:
            with self._mode:
                yield
        finally:
            self._mode = None

    def check(self, recorder: _Recorder) -> None:
        """The flop counter and the hooks must agree on dense work, module by module."""
        problems = [
            f"{where}: {flops / 2 / recorder.n:g} MACs per image of {op} outside conv/linear "
            "modules"
            for (where, op), flops in sorted(self.outside.items())
        ]
        for module in sorted(set(self.inside) | set(recorder.dense_batch), key=recorder.name):
            counted = self.inside.get(module, 0)
            hooked = 2 * recorder.dense_batch.get(module, 0)
            if counted != hooked:
                problems.append(
                    f"{recorder.name(module)}: the flop counter saw {counted / 2 / recorder.n:g} "
                    f"MACs per image, the hooks {hooked / 2 / recorder.n:g}"
                )
        if problems:
            raise PagError(
                "effective MACs would not be exact: "
                + "; ".join(problems)
                + ". Compute with nn.Conv2d/nn.Linear modules (they carry active_mask), wrap "
                "mask bookkeeping in pag.flops.uncounted(), or pass strict=False"
            )
