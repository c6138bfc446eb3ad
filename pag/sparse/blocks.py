"""Residual blocks on feature-map rows, computing only what their gate lets run.

A `BlockExecutor` holds a block's convolutions with their BatchNorms folded in and runs it in
one of the ways the methods need, each equal to the model's masked dense forward:

* `dense`: every position (ungated blocks, truncation, the first unit of an SACT stage);
* `conv3x3_gated`: PAG's authors' gating. The 3x3 stage runs at the active output positions;
  elsewhere its input passes through. The 1x1 reduction runs everywhere (stride 1), or, in
  a strided block, on the stride grid the pass-through reads plus the neighbourhoods the
  active 3x3 outputs read;
* `residual_gated`: the whole residual branch at the active positions (PAG residual mode,
  SACT's units after the first). The first conv runs on the neighbourhood the 3x3 reads;
  the others at the active positions only; elsewhere the output is relu(shortcut);
* `image_gated`: layer skipping, the dense branch on the images that execute the block;
* `multipool`: MP-PAG, each chosen branch's (dilated) 3x3 at the pixels that chose it.

The gate heads themselves live in `pag.sparse.decisions`. Above `dense_above` (a fraction
of active positions) a layer runs its dense convolution instead of gathering: at nearly
full activity the gather only adds cost.

Blocks consume their input: with an identity shortcut the output reuses the input's rows
in place (a skipped pixel's output is its input, since block inputs are ReLU outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pag.errors import PagError
from pag.models.resnet import BasicBlock, Bottleneck
from pag.sparse.kernels import (
    Conv,
    FeatureMap,
    Linear,
    NeighbourTables,
    Workspace,
    folded,
    union_rows,
)


@dataclass(frozen=True)
class Policy:
    """When a layer runs its dense convolution instead of gathering active positions.

    A k x k conv runs dense when at least `dense_above` of its outputs are active, unless its
    dense cost is below `small_conv_macs`: on small maps the dense convolution is so
    inefficient that gathering wins even at full activity. A 1x1 conv whose input rows are
    a subset (the neighbourhood a 3x3 reads) runs on every row when at least
    `rows_dense_above` of them are needed. The defaults are measured on the development
    machine (docs/decisions.md).

    `bucket_rows`: with oneDNN, round each product's row count up (to 1/8 of its power of
    two): oneDNN builds a kernel per shape, about 1 ms each, and the active counts change
    with every image; bucketed, a few shapes per layer recur and hit its cache."""

    dense_above: float = 0.85
    rows_dense_above: float = 0.8
    small_conv_macs: float = 1e8
    bucket_rows: bool = True

    def __post_init__(self):
        for name in ("dense_above", "rows_dense_above"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise PagError(f"{name} must be a fraction in (0, 1], got {value!r}")
        if not self.small_conv_macs >= 0:
            raise PagError(f"small_conv_macs must be >= 0, got {self.small_conv_macs!r}")

    @staticmethod
    def always_dense() -> Policy:
        """Every layer dense (masks still applied): the executor without its sparsity."""
        return Policy(dense_above=1e-9, rows_dense_above=1e-9, small_conv_macs=0.0)


class Context:
    """What every block of one executor shares: tap tables, the gather workspace and the
    dense-or-gather policy."""

    def __init__(self, policy: Policy, bucket: bool):
        self.policy = policy
        self.bucket = bucket and policy.bucket_rows
        self.tables = NeighbourTables()
        self.workspace = Workspace()

    def padded(self, index: Tensor) -> Tensor:
        """`index` extended to its bucketed length with copies of its first entry (rows
        computed and discarded: callers keep the first len(index) results)."""
        count = index.shape[0]
        if not self.bucket or count == 0:
            return index
        size = bucketed(count)
        return index if size == count else torch.cat([index, index[:1].expand(size - count)])

    def conv_runs_dense(self, active: int, total: int, conv: Conv) -> bool:
        p = self.policy
        return (
            total > 0
            and active >= p.dense_above * total
            and total * conv.macs_per_position >= p.small_conv_macs
        )

    def rows_run_dense(self, needed: int, total: int) -> bool:
        return needed >= self.policy.rows_dense_above * total


def bucketed(count: int) -> int:
    """`count` rounded up to a multiple of 1/8 of its power of two (at most 12.5 % more)."""
    step = 1 << max(0, count.bit_length() - 4)
    return -(-count // step) * step


class BlockExecutor:
    """One BasicBlock or Bottleneck of a trained model, folded for inference."""

    def __init__(self, name: str, block: nn.Module, ctx: Context):
        if not isinstance(block, BasicBlock | Bottleneck):
            raise PagError(
                f"{name}: the sparse executor runs BasicBlock and Bottleneck blocks, "
                f"got {type(block).__name__}"
            )
        self.name = name
        self.ctx = ctx
        self.bottleneck = isinstance(block, Bottleneck)
        if self.bottleneck:
            self.conv1: Linear | Conv = Linear(*folded(block.conv1, block.bn1))
            self.conv3: Linear | None = Linear(*folded(block.conv3, block.bn3))
        else:
            self.conv1 = Conv.of(block.conv1, block.bn1)
            self.conv3 = None
        self.conv2 = Conv.of(block.conv2, block.bn2)
        self.stride = block.conv2.stride[0] if self.bottleneck else block.conv1.stride[0]
        self.downsample: Linear | None = None
        if block.downsample is not None:
            ds = block.downsample
            if not (
                isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[0], nn.Conv2d)
            ):
                raise PagError(f"{name}: expected a downsample of conv1x1 + BatchNorm, got {ds}")
            if ds[0].kernel_size != (1, 1):
                raise PagError(f"{name}: expected a 1x1 downsample conv, got {ds[0]}")
            self.downsample = Linear(*folded(ds[0], ds[1]))
            self.downsample_stride = ds[0].stride[0]
        self.multipool = None
        if hasattr(block.conv2, "multipool"):
            self.multipool = MultiPoolExecutor(block.conv2, block.bn2, self.bottleneck)

    # -- parts ---------------------------------------------------------------------------------

    def shortcut(self, x: FeatureMap) -> Tensor:
        if self.downsample is None:
            return x.rows
        return self.downsample(x.subsampled(self.downsample_stride).rows)

    def branch_input(self, x: FeatureMap) -> FeatureMap:
        """relu(bn1(conv1(x))) at every position."""
        if self.bottleneck:
            return FeatureMap(self.conv1(x.rows, relu=True), x.n, x.h, x.w)
        return self.conv1.dense(x, relu=True)

    def branch_input_size(self, x: FeatureMap) -> tuple[int, int]:
        if self.bottleneck:
            return x.h, x.w
        return self.conv1.geometry.out_size(x.h, x.w)

    def branch_input_at(self, x: FeatureMap, rows: Tensor) -> Tensor:
        """relu(bn1(conv1(x))) at `rows` of its output, returned as that output's rows plus
        the zero sentinel row; the rows not asked for are left unset (never read)."""
        h, w = self.branch_input_size(x)
        count = x.n * h * w
        out = self.ctx.workspace.take("branch_input", count + 1, self.conv2.in_channels, x.rows)
        out[count].zero_()
        if self.ctx.rows_run_dense(rows.shape[0], count):
            out[:count] = self.branch_input(x).rows
            return out
        padded = self.ctx.padded(rows)
        if self.bottleneck:
            values = self.conv1(self.ctx.workspace.gather("rows", x.rows, padded), relu=True)
        else:
            taps = self.ctx.tables.taps(x, self.conv1.geometry)
            values = self.conv1.at(x.with_sentinel(), taps, padded, self.ctx.workspace, relu=True)
        out.index_copy_(0, rows, values[: rows.shape[0]])
        return out

    def stage(self, h: FeatureMap) -> FeatureMap:
        """The 3x3 stage at every position: relu(bn2(conv2(h))) (Bottleneck) or bn2(conv2(h)),
        by the dense conv, or on a small layer by gathering every position (faster there)."""
        ho, wo = self.conv2.geometry.out_size(h.h, h.w)
        total = h.n * ho * wo
        if self.ctx.conv_runs_dense(total, total, self.conv2):
            return self.conv2.dense(h, relu=self.bottleneck)
        taps = self.ctx.tables.taps(h, self.conv2.geometry)
        out = self.conv2.at(h.with_sentinel(), taps, None, self.ctx.workspace, self.bottleneck)
        return FeatureMap(out, h.n, ho, wo)

    def finish(self, mid: Tensor, shortcut: Tensor) -> Tensor:
        """relu(shortcut + branch_output(mid)) on matching rows."""
        if self.conv3 is not None:
            return self.conv3(mid, relu=True, add=shortcut)
        return (mid + shortcut).relu_()

    def branch_output(self, mid: Tensor) -> Tensor:
        return self.conv3(mid) if self.conv3 is not None else mid

    # -- ways of running -----------------------------------------------------------------------

    def dense(self, x: FeatureMap) -> FeatureMap:
        if self.multipool is not None:
            return self.run_multipool(x)[0]
        h = self.branch_input(x)
        mid = self.stage(h)
        return FeatureMap(self.finish(mid.rows, self.shortcut(x)), mid.n, mid.h, mid.w)

    def conv3x3_gated(self, x: FeatureMap, on: Tensor, rows: Tensor) -> FeatureMap:
        """PAG's gating of the 3x3 stage; `on` (N*Ho*Wo,) bool, `rows` its nonzero indices."""
        h_size = self.branch_input_size(x)
        h_map = FeatureMap(x.rows, x.n, *h_size)  # geometry only
        ho, wo = self.conv2.geometry.out_size(*h_size)
        stride = self.conv2.geometry.stride
        if rows.shape[0] == on.shape[0]:  # every pixel computes
            return self.dense(x)
        dense = self.ctx.conv_runs_dense(rows.shape[0], on.shape[0], self.conv2)
        tables, ws = self.ctx.tables, self.ctx.workspace
        if stride == 1:
            h = self.branch_input(x)
            if dense:
                mixed = torch.where(on[:, None], self.stage(h).rows, h.rows)
            else:
                source = h.with_sentinel()
                taps = tables.taps(h, self.conv2.geometry)
                computed = self.conv2.at(
                    source, taps, self.ctx.padded(rows), ws, relu=self.bottleneck
                )
                mixed = source[:-1]
                mixed.index_copy_(0, rows, computed[: rows.shape[0]])
        else:  # the pass-through reads the 3x3 input on the stride grid
            grid = tables.grid(h_map, stride)
            if dense:
                h = self.branch_input(x)
                passed = h.rows.index_select(0, grid)
                mixed = torch.where(on[:, None], self.stage(h).rows, passed)
            else:
                taps = tables.taps(h_map, self.conv2.geometry)
                neighbours = taps.index_select(0, self.ctx.padded(rows))
                needed = union_rows(h_map.positions, grid, neighbours[: rows.shape[0]])
                source = self.branch_input_at(x, needed)
                computed = self.conv2.at(source, neighbours, None, ws, relu=self.bottleneck)
                mixed = source.index_select(0, grid)
                mixed.index_copy_(0, rows, computed[: rows.shape[0]])
        return FeatureMap(self.finish(mixed, self.shortcut(x)), x.n, ho, wo)

    def residual_gated(self, x: FeatureMap, on: Tensor, rows: Tensor) -> FeatureMap:
        """The whole residual branch at `rows` (of the N*Ho*Wo outputs); relu(shortcut)
        elsewhere."""
        h_size = self.branch_input_size(x)
        h_map = FeatureMap(x.rows, x.n, *h_size)
        ho, wo = self.conv2.geometry.out_size(*h_size)
        if rows.shape[0] == on.shape[0]:  # every pixel computes
            return self.dense(x)
        shortcut = self.shortcut(x)
        if self.ctx.conv_runs_dense(rows.shape[0], on.shape[0], self.conv2):
            h = self.branch_input(x)
            residual = self.branch_output(self.stage(h).rows)
            out = torch.addcmul(shortcut, on[:, None].to(residual.dtype), residual).relu_()
            return FeatureMap(out, x.n, ho, wo)
        count = rows.shape[0]
        padded = self.ctx.padded(rows)
        base = self.ctx.workspace.gather("shortcut", shortcut, padded)
        # skipped pixels keep relu(shortcut): the input itself for an identity shortcut
        out = shortcut if self.downsample is None else shortcut.relu_()
        if count:
            taps = self.ctx.tables.taps(h_map, self.conv2.geometry)
            neighbours = taps.index_select(0, padded)
            needed = union_rows(h_map.positions, neighbours[:count])
            source = self.branch_input_at(x, needed)
            mid = self.conv2.at(source, neighbours, None, self.ctx.workspace, relu=self.bottleneck)
            out.index_copy_(0, rows, self.finish(mid, base)[:count])
        return FeatureMap(out, x.n, ho, wo)

    def image_gated(self, x: FeatureMap, on: Tensor) -> FeatureMap:
        """Layer skipping: the block runs densely on the images where `on` (N,) is true;
        the others get relu(shortcut)."""
        images = on.nonzero().squeeze(1)
        if images.shape[0] == x.n:
            return self.dense(x)
        ho, wo = self.conv2.geometry.out_size(*self.branch_input_size(x))
        if images.shape[0] and self.ctx.conv_runs_dense(
            images.shape[0] * ho * wo, x.n * ho * wo, self.conv2
        ):  # masked dense, as the model runs it
            residual = self.branch_output(self.stage(self.branch_input(x)).rows)
            gate = on.to(residual.dtype).repeat_interleave(ho * wo)[:, None]
            out = torch.addcmul(self.shortcut(x), gate, residual).relu_()
            return FeatureMap(out, x.n, ho, wo)
        shortcut = self.shortcut(x)
        base = shortcut.view(x.n, ho * wo, -1).index_select(0, images)
        out = shortcut if self.downsample is None else shortcut.relu_()
        if images.shape[0]:
            chosen = x.rows.view(x.n, -1, x.channels).index_select(0, images)
            sub = FeatureMap(chosen.view(-1, x.channels), images.shape[0], x.h, x.w)
            mid = self.stage(self.branch_input(sub)).rows
            new = self.finish(mid, base.view(mid.shape[0], -1))
            out.view(x.n, ho * wo, -1).index_copy_(
                0, images, new.view(images.shape[0], ho * wo, -1)
            )
        return FeatureMap(out, x.n, ho, wo)

    def run_multipool(self, x: FeatureMap) -> tuple[FeatureMap, Tensor | None]:
        """MP-PAG's block: (output, per-pixel branch index or None for the average)."""
        h = self.branch_input(x)
        mixed, choice = self.multipool(h, self.ctx)
        return FeatureMap(self.finish(mixed, self.shortcut(x)), h.n, h.h, h.w), choice


class MultiPoolExecutor:
    """A MultiPool 3x3 stage: the attention head at every pixel, then each conv branch (its
    BatchNorm folded in) at the pixels that chose it; the skip branch passes h through.
    The average ablation runs every branch everywhere (BN of the mean = the sum of branches
    with weights scaled by 1/K)."""

    def __init__(self, pool: nn.Module, bn: nn.BatchNorm2d, relu: bool):
        self.relu = relu
        self.average = pool.average
        convs = [*pool.multipool.dilated, pool]  # branch order: dilated, original (skip last)
        scale = 1.0 / len(convs) if self.average else 1.0
        self.branches = [Conv.of(conv, bn, scale) for conv in convs]
        if self.average:
            self.attention = None
            return
        att = pool.multipool.attention
        self.attention = (
            Linear(*folded(att[0], att[1])),
            Conv.of(att[3], att[4]),
            Linear(*folded(att[6], None)),
        )

    def __call__(self, h: FeatureMap, ctx: Context) -> tuple[Tensor, Tensor | None]:
        if self.average:
            total = self.branches[0].dense(h).rows
            for branch in self.branches[1:]:
                total = total + branch.dense(h).rows
            return (total.relu_() if self.relu else total), None
        reduce, spread, classify = self.attention
        hidden = FeatureMap(reduce(h.rows, relu=True), h.n, h.h, h.w)
        choice = classify(spread.dense(hidden, relu=True).rows).argmax(1)  # first max on ties
        source = h.with_sentinel()
        computed = []
        for k, branch in enumerate(self.branches):
            rows = (choice == k).nonzero().squeeze(1)
            if rows.shape[0] == 0:
                continue
            if ctx.conv_runs_dense(rows.shape[0], choice.shape[0], branch):
                values = branch.dense(h, relu=self.relu).rows.index_select(0, rows)
            else:
                taps = ctx.tables.taps(h, branch.geometry)
                values = branch.at(source, taps, ctx.padded(rows), ctx.workspace, relu=self.relu)
            computed.append((rows, values[: rows.shape[0]]))
        mixed = source[:-1]  # every gather is done: the skip rows keep h
        for rows, values in computed:
            mixed.index_copy_(0, rows, values)
        return mixed, choice
