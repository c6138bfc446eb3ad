"""One dense-prediction model (trunk + task heads) and the methods that make it dynamic.

`build_model(method=..., budget=...)` builds a dense model and applies a method to it:
PAG gates, MultiPool, truncation, layer skipping or SACT. Methods only add modules (or remove
blocks), never rename existing ones, so the weights of a trained dense model load into any
variant with `load_dense_weights` (the paper's protocol: train dense, then plug in and
fine-tune). Each method has one budget knob, validated against its range.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pag.errors import PagError
from pag.methods import registry
from pag.models import gating
from pag.models.heads import SideOutputHead, TaskHead, finish_prediction, head_channels
from pag.models.resnet import ResNet, resnet

# the boundary task's head: on the trunk's last stage like every task, or HED's side outputs
BOUNDARY_HEADS = ("last_stage", "side_outputs")


def block_out_channels(block: nn.Module) -> int:
    return block.conv3.out_channels if hasattr(block, "conv3") else block.conv2.out_channels


def side_channels(trunk: ResNet) -> list[int]:
    """Channels of the maps a side-output head reads: the stem's, then each stage's output."""
    return [trunk.conv1.out_channels, *(block_out_channels(stage[-1]) for stage in trunk.stages())]


class DensePredictionModel(nn.Module):
    """Trunk + one head per task. `forward` returns {"pred": {task: tensor}, "aux": {...}}:
    predictions at input resolution (semantic/boundary logits, depth in metres, unit normals)
    and what the method exposes (gate maps, MultiPool choices, block decisions, ponder)."""

    def __init__(
        self,
        trunk: ResNet,
        tasks: dict[str, int | None],
        head_hidden: int = 256,
        boundary_head: str = "last_stage",
    ):
        super().__init__()
        if not tasks:
            raise PagError("a model needs at least one task")
        if boundary_head not in BOUNDARY_HEADS:
            raise PagError(f"boundary_head must be one of {BOUNDARY_HEADS}, got {boundary_head!r}")
        if hasattr(trunk, "fc"):  # the classifier is never used here; unused parameters break DDP
            del trunk.fc
        self.trunk = trunk
        heads: dict[str, nn.Module] = {
            task: TaskHead(trunk.out_channels, head_channels(task, n), head_hidden)
            for task, n in tasks.items()
        }
        if "boundary" in tasks and boundary_head == "side_outputs":
            heads["boundary"] = SideOutputHead(side_channels(trunk))
        self.heads = nn.ModuleDict(heads)
        self.tasks = dict(tasks)
        self.head_hidden = head_hidden
        self.method = registry.baseline().name  # as built; `build_model` applies a method
        self.budget = None
        self.dropped_blocks: list[str] = []  # truncation: blocks whose dense weights are unused
        self.rebuilt_heads = False  # truncation: heads re-created for fewer channels
        # hooks set by methods
        self.stage_runner: Callable[[int, nn.Sequential, Tensor], Tensor] | None = None
        self.budget_loss_fn: Callable[[DensePredictionModel, dict], Tensor] | None = None
        # aux_fns(model, aux, input_size) add what a method exposes to the forward's aux
        self.aux_fns: list[Callable[[DensePredictionModel, dict, tuple[int, int]], None]] = []

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return self.trunk.blocks()

    def block(self, name: str) -> nn.Module:
        blocks = dict(self.blocks())
        if name not in blocks:
            raise PagError(f"no block named {name!r}; the trunk has {list(blocks)}")
        return blocks[name]

    def features(self, x: Tensor, sides: list[Tensor] | None = None) -> Tensor:
        """The trunk's output; the stem's stride-2 map and every stage's output are appended
        to `sides` when given (what a side-output head reads)."""
        trunk = self.trunk
        f = trunk.relu(trunk.bn1(trunk.conv1(x)))
        if sides is not None:
            sides.append(f)
        f = trunk.maxpool(f)
        for index, stage in enumerate(trunk.stages()):
            f = stage(f) if self.stage_runner is None else self.stage_runner(index, stage, f)
            if sides is not None:
                sides.append(f)
        return f

    def forward(self, x: Tensor) -> dict:
        size = tuple(x.shape[-2:])
        wants_sides = any(getattr(head, "takes_sides", False) for head in self.heads.values())
        sides: list[Tensor] | None = [] if wants_sides else None
        f = self.features(x, sides)
        pred = {
            task: finish_prediction(
                task, head(sides if getattr(head, "takes_sides", False) else f, size)
            )
            for task, head in self.heads.items()
        }
        aux: dict = {}
        gated = [(n, b.gate) for n, b in self.blocks() if isinstance(b.gate, gating.PixelGate)]
        if gated:
            aux["gates"] = {n: g.last_gate for n, g in gated}
            if self.training:  # what a budget on probabilities or decisions reads
                aux["gate_probs"] = {n: g.last_prob for n, g in gated}
            aux["ponder"] = gating.ponder_map(aux["gates"], size)
        for fn in self.aux_fns:
            fn(self, aux, size)
        return {"pred": pred, "aux": aux}

    def budget_loss(self, aux: dict) -> Tensor:
        """The method's compute-budget loss (0 for methods without one)."""
        if self.budget_loss_fn is None:
            return torch.zeros((), device=next(self.parameters()).device)
        return self.budget_loss_fn(self, aux)

    def set_temperature(self, temperature: float) -> None:
        """Set the Gumbel temperature of every gate that samples one."""
        for module in self.modules():
            if hasattr(module, "temperature") and not isinstance(module, DensePredictionModel):
                module.temperature = float(temperature)


# -- methods -----------------------------------------------------------------------------------


def apply_pag(
    model: DensePredictionModel,
    target: float,
    *,
    mode: str = "conv3x3",
    blocks: list[str] | str = "all",
    hard: bool = False,
    scope: str = "layer",
    bias: float = 2.0,
    budget_source: str = "samples",
) -> None:
    """Attach a `PixelGate` to each named block (or all) with the KL sparsity loss."""
    for name in _gated_names(model, blocks):
        block = model.block(name)
        in_channels = block.conv1.in_channels
        block.gate = gating.PixelGate(in_channels, block.stride, mode=mode, hard=hard, bias=bias)
    model.budget_loss_fn = gating.SparsityLoss(target, scope, budget_source)


def apply_random_gate(
    model: DensePredictionModel,
    rate: float,
    *,
    mode: str = "conv3x3",
    blocks: list[str] | str = "all",
) -> None:
    """Attach a `RandomPixelGate` at `rate` to each named block (or all): PAG's blocks and
    execution, with random instead of learned decisions, and no budget loss."""
    for name in _gated_names(model, blocks):
        block = model.block(name)
        block.gate = gating.RandomPixelGate(block.stride, rate, mode=mode)


def _gated_names(model: DensePredictionModel, blocks: list[str] | str) -> list[str]:
    if isinstance(blocks, str) and blocks != "all":
        raise PagError(f"gate_blocks must be 'all' or a list of block names, got {blocks!r}")
    return [n for n, _ in model.blocks()] if blocks == "all" else list(blocks)


TRUNCATION_MODES = ("rebuild_heads", "shortcut")


class DroppedBranch(nn.Module):
    """Attached as `block.gate` by shortcut truncation: the block computes only its shortcut,
    relu(shortcut(x)) (the identity after a ReLU, or the projection where the block changes
    the shape), so the blocks after it and the heads keep their shapes and dense weights."""

    def forward(self, block: nn.Module, x: Tensor) -> Tensor:
        # not the block's in-place ReLU: an identity shortcut returns x itself, which the
        # previous block's backward still needs
        return torch.relu(block.shortcut(x))


def apply_truncation(model: DensePredictionModel, kept: int, mode: str = "rebuild_heads") -> None:
    """Keep the first `kept` residual blocks. "rebuild_heads": the later blocks are removed and
    new heads see the last kept block's features; "shortcut": the later blocks' residual
    branches are removed (their parameters frozen and unused), each passing on its shortcut,
    so the heads keep their input and their dense weights."""
    if mode not in TRUNCATION_MODES:
        raise PagError(f"truncation mode must be one of {list(TRUNCATION_MODES)}, got {mode!r}")
    names = [name for name, _ in model.blocks()]
    if mode == "shortcut":
        for name in names[kept:]:
            block = model.block(name)
            block.gate = DroppedBranch()
            for pname, param in block.named_parameters():
                if not pname.startswith("downsample."):
                    param.requires_grad_(False)
        return
    if any(getattr(head, "takes_sides", False) for head in model.heads.values()):
        raise PagError(
            "truncation_mode 'rebuild_heads' removes stages a side-output boundary head reads; "
            "use truncation_mode 'shortcut'"
        )
    model.dropped_blocks = names[kept:]
    for stage in reversed(model.trunk.stages()):
        while len(stage) and len(model.blocks()) > kept:
            del stage[len(stage) - 1]
    channels = block_out_channels(model.blocks()[-1][1])
    if channels != model.trunk.out_channels:
        model.trunk.out_channels = channels
        model.rebuilt_heads = True
        model.heads = nn.ModuleDict(
            {
                t: TaskHead(channels, head_channels(t, n), model.head_hidden)
                for t, n in model.tasks.items()
            }
        )


def build_model(
    method: str | None = None,
    budget: float | int | None = None,
    *,
    tasks: dict[str, int | None],
    depth: int = 50,
    width_multiplier: float = 1.0,
    output_stride: int = 8,
    head_hidden: int = 256,
    gate_mode: str = "conv3x3",
    gate_blocks: list[str] | str = "all",
    hard_gates: bool = False,
    gate_bias: float = 2.0,
    budget_source: str = "samples",
    sparsity_scope: str = "layer",
    truncation_mode: str = "rebuild_heads",
    multipool_block: str = "layer4.1",
    dilations: tuple[int, ...] = (2, 4, 6, 8, 10),
    boundary_head: str = "last_stage",
) -> DensePredictionModel:
    """Build `method` (a name of `pag.methods`) at `budget` on a ResNet trunk with heads for
    `tasks` ({task: classes})."""
    spec = registry.baseline() if method is None else registry.get(method)
    trunk = resnet(depth, width_multiplier=width_multiplier, output_stride=output_stride)
    model = DensePredictionModel(trunk, tasks, head_hidden, boundary_head)
    budget = spec.check_budget(budget, len(model.blocks()))
    if spec.apply is not None:
        spec.apply(
            model,
            budget,
            gate_mode=gate_mode,
            gate_blocks=gate_blocks,
            hard_gates=hard_gates,
            gate_bias=gate_bias,
            budget_source=budget_source,
            sparsity_scope=sparsity_scope,
            truncation_mode=truncation_mode,
            multipool_block=multipool_block,
            dilations=dilations,
        )
    model.method, model.budget = spec.name, budget
    return model


def load_dense_weights(
    model: DensePredictionModel, state_dict: dict[str, Tensor]
) -> dict[str, list[str]]:
    """Load a dense model's weights into any variant without manual surgery.

    Keys the variant added (gates, halting heads, MultiPool branches) may be missing: they keep
    their initialisation, and a MultiPool whose branches were missing copies them from the
    loaded conv. Keys of blocks a truncated model dropped, and of heads it rebuilt, are
    skipped. Anything else missing, unexpected or of another shape is an error naming the keys.
    """
    own = model.state_dict()
    added = ("gate.", "halting.", "multipool.")
    shaped = {k for k, v in state_dict.items() if k in own and own[k].shape != v.shape}
    compatible = {k: v for k, v in state_dict.items() if k in own and k not in shaped}
    dropped = tuple(f"trunk.{name}." for name in model.dropped_blocks)
    excused = dropped + (("heads.",) if model.rebuilt_heads else ())
    unexpected = sorted(k for k in set(state_dict) - set(own) if not k.startswith(excused))
    mis_shaped = sorted(k for k in shaped if not (model.rebuilt_heads and k.startswith("heads.")))
    missing = sorted(set(own) - set(compatible))
    bad_missing = [
        k
        for k in missing
        if not any(a in k for a in added)
        and k not in shaped
        and not (model.rebuilt_heads and k.startswith("heads."))
    ]
    problems = [
        f"{label} {keys[:6]}{' ...' if len(keys) > 6 else ''}"
        for label, keys in (
            ("missing", bad_missing),
            ("unexpected", unexpected),
            ("of another shape", mis_shaped),
        )
        if keys
    ]
    if problems:
        raise PagError("dense weights do not fit this model: " + "; ".join(problems))
    model.load_state_dict(compatible, strict=False)
    for name, module in model.named_modules():
        prefix = f"{name}.multipool."
        if hasattr(module, "init_from_dense") and any(k.startswith(prefix) for k in missing):
            module.init_from_dense()
    return {"missing": missing, "skipped": sorted(set(state_dict) - set(compatible))}
