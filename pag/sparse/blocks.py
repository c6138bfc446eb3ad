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


class Context:
    """What every block of one executor shares: tap tables, the gather workspace and the
    activity above which a layer runs dense."""

    def __init__(self, dense_above: float):
        if not 0.0 < dense_above <= 1.0:
            raise PagError(f"dense_above must be a fraction in (0, 1], got {dense_above!r}")
        self.dense_above = dense_above
        self.tables = NeighbourTables()
        self.workspace = Workspace()

    def runs_dense(self, active: int, total: int) -> bool:
        return total > 0 and active >= self.dense_above * total


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
        out = x.rows.new_empty(count + 1, self.conv2.in_channels)
        out[count].zero_()
        if self.bottleneck:
            values = self.conv1(x.rows.index_select(0, rows), relu=True)
        else:
            taps = self.ctx.tables.taps(x, self.conv1.geometry)
            values = self.conv1.at(x.with_sentinel(), taps, rows, self.ctx.workspace, relu=True)
        out.index_copy_(0, rows, values)
        return out

    def stage(self, h: FeatureMap) -> FeatureMap:
        """The 3x3 stage at every position: relu(bn2(conv2(h))) (Bottleneck) or bn2(conv2(h))."""
        return self.conv2.dense(h, relu=self.bottleneck)

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
        dense = self.ctx.runs_dense(rows.shape[0], on.shape[0])
        tables, ws = self.ctx.tables, self.ctx.workspace
        if stride == 1:
            h = self.branch_input(x)
            if dense:
                mixed = torch.where(on[:, None], self.stage(h).rows, h.rows)
            else:
                source = h.with_sentinel()
                taps = tables.taps(h, self.conv2.geometry)
                computed = self.conv2.at(source, taps, rows, ws, relu=self.bottleneck)
                mixed = source[:-1]
                mixed.index_copy_(0, rows, computed)
        else:  # the pass-through reads the 3x3 input on the stride grid
            grid = tables.grid(h_map, stride)
            if dense:
                h = self.branch_input(x)
                passed = h.rows.index_select(0, grid)
                mixed = torch.where(on[:, None], self.stage(h).rows, passed)
            else:
                taps = tables.taps(h_map, self.conv2.geometry)
                neighbours = taps.index_select(0, rows)
                needed = union_rows(h_map.positions, grid, neighbours)
                source = self.branch_input_at(x, needed)
                computed = self.conv2.at(source, neighbours, None, ws, relu=self.bottleneck)
                mixed = source.index_select(0, grid)
                mixed.index_copy_(0, rows, computed)
        return FeatureMap(self.finish(mixed, self.shortcut(x)), x.n, ho, wo)

    def residual_gated(self, x: FeatureMap, on: Tensor, rows: Tensor) -> FeatureMap:
        """The whole residual branch at `rows` (of the N*Ho*Wo outputs); relu(shortcut)
        elsewhere."""
        h_size = self.branch_input_size(x)
        h_map = FeatureMap(x.rows, x.n, *h_size)
        ho, wo = self.conv2.geometry.out_size(*h_size)
        shortcut = self.shortcut(x)
        if self.ctx.runs_dense(rows.shape[0], on.shape[0]):
            h = self.branch_input(x)
            residual = self.branch_output(self.stage(h).rows)
            out = torch.addcmul(shortcut, on[:, None].to(residual.dtype), residual).relu_()
            return FeatureMap(out, x.n, ho, wo)
        # skipped pixels keep relu(shortcut): the input itself for an identity shortcut
        out = shortcut if self.downsample is None else shortcut.relu()
        if rows.shape[0]:
            taps = self.ctx.tables.taps(h_map, self.conv2.geometry)
            neighbours = taps.index_select(0, rows)
            source = self.branch_input_at(x, union_rows(h_map.positions, neighbours))
            mid = self.conv2.at(source, neighbours, None, self.ctx.workspace, relu=self.bottleneck)
            out.index_copy_(0, rows, self.finish(mid, shortcut.index_select(0, rows)))
        return FeatureMap(out, x.n, ho, wo)

    def image_gated(self, x: FeatureMap, on: Tensor) -> FeatureMap:
        """Layer skipping: the block runs densely on the images where `on` (N,) is true;
        the others get relu(shortcut)."""
        images = on.nonzero().squeeze(1)
        if images.shape[0] == x.n:
            return self.dense(x)
        shortcut = self.shortcut(x)
        ho, wo = self.conv2.geometry.out_size(*self.branch_input_size(x))
        out = shortcut if self.downsample is None else shortcut.relu()
        if images.shape[0]:
            chosen = x.rows.view(x.n, -1, x.channels).index_select(0, images)
            sub = FeatureMap(chosen.view(-1, x.channels), images.shape[0], x.h, x.w)
            mid = self.stage(self.branch_input(sub)).rows
            base = shortcut.view(x.n, ho * wo, -1).index_select(0, images)
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
            if ctx.runs_dense(rows.shape[0], choice.shape[0]):
                values = branch.dense(h, relu=self.relu).rows.index_select(0, rows)
            else:
                taps = ctx.tables.taps(h, branch.geometry)
                values = branch.at(source, taps, rows, ctx.workspace, relu=self.relu)
            computed.append((rows, values))
        mixed = source[:-1]  # every gather is done: the skip rows keep h
        for rows, values in computed:
            mixed.index_copy_(0, rows, values)
        return mixed, choice
