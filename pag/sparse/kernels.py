"""The sparse executor's kernels: convolutions on the rows of channels-last feature maps.

A feature map is a `FeatureMap`: an (N*H*W, C) matrix whose rows are pixels in image-major,
row-major order (channels last), so the pixels a gate selects are rows, gathered with
`index_select` into contiguous matrices. On these:

* a 1x1 convolution (with its BatchNorm folded in) is one matrix product, `Linear`, on all
  rows or on the active ones;
* a k x k (dilated, strided) convolution, `Conv`, is either the dense convolution (oneDNN or
  cuDNN on the channels-last view) or, at a subset of output positions, a gather of the k*k
  neighbour rows of each active position (`NeighbourTables`: precomputed flat indices, where
  a tap outside the image points to an all-zero sentinel row appended to the input) and one
  matrix product with the (k*k*C_in, C_out) weight.

On CPU the matrix products use oneDNN's packed-weight linear (`torch.ops.mkldnn`), which on
the development machine runs at about twice the speed of `torch.addmm` (MKL) and as fast
as oneDNN's own dense convolutions; elsewhere (CUDA, or builds without oneDNN) they are
`torch.addmm`. Every index operation is a batched tensor op (no Python loop over pixels), so
the same code runs on any device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pag.errors import PagError

# set to "0" to use torch.addmm instead of oneDNN's packed linear on CPU (for comparisons)
ONEDNN_ENV = "PAG_SPARSE_ONEDNN"


@dataclass
class FeatureMap:
    """N x H x W pixels of C channels as an (N*H*W, C) row matrix (channels last)."""

    rows: Tensor
    n: int
    h: int
    w: int

    @property
    def channels(self) -> int:
        return self.rows.shape[1]

    @property
    def positions(self) -> int:
        return self.n * self.h * self.w

    def nchw(self) -> Tensor:
        """The map as an N x C x H x W tensor in channels-last memory (a view)."""
        return self.rows.view(self.n, self.h, self.w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def from_nchw(x: Tensor) -> FeatureMap:
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view when x is channels-last
        return FeatureMap(rows, n, h, w)

    def subsampled(self, stride: int) -> FeatureMap:
        """The map on the stride grid (what a strided 1x1 convolution reads)."""
        if stride == 1:
            return self
        grid = self.rows.view(self.n, self.h, self.w, -1)[:, ::stride, ::stride]
        return FeatureMap(grid.reshape(-1, self.channels), self.n, grid.shape[1], grid.shape[2])

    def with_sentinel(self) -> Tensor:
        """The rows followed by one all-zero row (where taps outside the image point)."""
        return torch.cat([self.rows, self.rows.new_zeros(1, self.channels)])


def folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """(weight, bias) of `bn(conv(x))` (times `scale`) as one convolution, in evaluation mode
    (running statistics); computed in float64, returned in the conv's dtype."""
    weight = conv.weight.detach().double()
    bias = (
        conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    )
    if bn is not None:
        factor, shift = bn_affine(bn)
        weight = weight * factor.view(-1, 1, 1, 1)
        bias = bias * factor + shift
    dtype = conv.weight.dtype
    return (weight * scale).to(dtype), (bias * scale).to(dtype)


def bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Evaluation-mode BatchNorm as x * scale + shift (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise PagError(f"{bn}: a BatchNorm without running statistics cannot be folded")
    scale = bn.running_var.detach().double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def onednn_enabled(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and os.environ.get(ONEDNN_ENV, "1") != "0"
    )


class Linear:
    """rows @ weight.T + bias (C_in -> C_out), optionally + `add` and/or ReLU."""

    def __init__(self, weight: Tensor, bias: Tensor):
        if weight.dim() != 2:
            weight = weight.reshape(weight.shape[0], -1)
        self.weight = weight.contiguous()
        self.bias = bias.contiguous()
        self.transposed = self.weight.t()
        self.packed = None
        if onednn_enabled(weight.device, weight.dtype):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, rows: Tensor, relu: bool = False, add: Tensor | None = None) -> Tensor:
        if rows.shape[0] == 0:
            return rows.new_empty(0, self.out_features)
        if self.packed is not None:
            if add is None:
                attr = "relu" if relu else "none"
                return torch.ops.mkldnn._linear_pointwise(
                    rows, self.packed, self.bias, attr, [], ""
                )
            out = torch.ops.mkldnn._linear_pointwise.binary(
                rows, add, self.packed, self.bias, "add"
            )
        else:
            out = torch.addmm(self.bias, rows, self.transposed)
            if add is not None:
                out.add_(add)
        return out.relu_() if relu else out


@dataclass(frozen=True)
class Geometry:
    """A square convolution's kernel size, stride, padding and dilation."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    @staticmethod
    def of(conv: nn.Conv2d) -> Geometry:
        if conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise PagError(f"{conv}: the sparse executor runs square, ungrouped convolutions")
        for name in ("stride", "padding", "dilation"):
            value = getattr(conv, name)
            if isinstance(value, str) or value[0] != value[1]:
                raise PagError(f"{conv}: the sparse executor needs equal {name} in both axes")
        return Geometry(conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0])

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        span = self.dilation * (self.kernel - 1)
        return (
            (h + 2 * self.padding - span - 1) // self.stride + 1,
            (w + 2 * self.padding - span - 1) // self.stride + 1,
        )


class NeighbourTables:
    """Cached flat indices of the k x k taps each output position reads (sentinel = N*H*W
    for taps outside the image), per batch size, input size and convolution geometry."""

    def __init__(self):
        self._tables: dict[tuple, Tensor] = {}
        self._grids: dict[tuple, Tensor] = {}

    def taps(self, fm: FeatureMap, geometry: Geometry) -> Tensor:
        """(N*Ho*Wo, k*k) int64: input row of each tap of each output position."""
        key = (fm.n, fm.h, fm.w, geometry, fm.rows.device)
        table = self._tables.get(key)
        if table is None:
            table = _tap_table(fm, geometry)
            self._tables[key] = table
        return table

    def grid(self, fm: FeatureMap, stride: int) -> Tensor:
        """(N*Ho*Wo,) int64: input row of each output position of a strided 1x1 read."""
        key = (fm.n, fm.h, fm.w, stride, fm.rows.device)
        grid = self._grids.get(key)
        if grid is None:
            index = torch.arange(fm.positions, device=fm.rows.device)
            grid = index.view(fm.n, fm.h, fm.w)[:, ::stride, ::stride].reshape(-1)
            self._grids[key] = grid
        return grid


def _tap_table(fm: FeatureMap, geometry: Geometry) -> Tensor:
    device = fm.rows.device
    ho, wo = geometry.out_size(fm.h, fm.w)
    k, s, p, d = geometry.kernel, geometry.stride, geometry.padding, geometry.dilation
    offsets = torch.arange(k, device=device) * d - p
    ys = torch.arange(ho, device=device) * s
    xs = torch.arange(wo, device=device) * s
    iy = (ys[:, None] + offsets[None, :])[:, None, :, None]  # ho, 1, k, 1
    ix = (xs[:, None] + offsets[None, :])[None, :, None, :]  # 1, wo, 1, k
    inside = (iy >= 0) & (iy < fm.h) & (ix >= 0) & (ix < fm.w)
    flat = (iy * fm.w + ix).expand(ho, wo, k, k)
    image = (torch.arange(fm.n, device=device) * (fm.h * fm.w)).view(-1, 1, 1, 1, 1)
    table = torch.where(inside, flat + image, torch.full_like(flat, fm.positions))
    return table.reshape(fm.n * ho * wo, k * k).contiguous()


def rows_of(mask: Tensor) -> Tensor:
    """Flat indices of the nonzero entries of a mask (any shape), int64."""
    return mask.reshape(-1).nonzero().squeeze(1)


def union_rows(count: int, *index_sets: Tensor) -> Tensor:
    """Sorted distinct rows < `count` among the given index tensors (a sentinel row, index
    `count`, is dropped)."""
    device = index_sets[0].device
    marked = torch.zeros(count + 1, dtype=torch.bool, device=device)
    for index in index_sets:
        marked[index.reshape(-1)] = True
    return marked[:count].nonzero().squeeze(1)


class Workspace:
    """Reusable buffers, one per named slot, for gathers whose result is consumed at once:
    large fresh allocations cost page faults (on the development machine a fresh 75 MB
    gather took 35 ms, one into a reused buffer 3 ms)."""

    def __init__(self):
        self._buffers: dict[str, Tensor] = {}

    def take(self, slot: str, rows: int, cols: int, like: Tensor) -> Tensor:
        """An uninitialised rows x cols buffer, valid until `slot` is taken again."""
        numel = rows * cols
        buf = self._buffers.get(slot)
        if (
            buf is None
            or buf.numel() < numel
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = torch.empty(max(numel, 1), dtype=like.dtype, device=like.device)
            self._buffers[slot] = buf
        return buf[:numel].view(rows, cols)

    def gather(self, slot: str, source: Tensor, index: Tensor) -> Tensor:
        """source.index_select(0, index) into the slot's buffer."""
        out = self.take(slot, index.shape[0], source.shape[1], source)
        return torch.index_select(source, 0, index, out=out)


class Conv:
    """A k x k convolution (BatchNorm folded in) on feature maps: `dense` at every output
    position, `at` at a subset of output rows."""

    def __init__(self, weight: Tensor, bias: Tensor, geometry: Geometry):
        self.geometry = geometry
        self.weight = weight.contiguous(memory_format=torch.channels_last)
        self.bias = bias
        c_out, c_in = weight.shape[:2]
        # im2col weight: column t * C_in + c is tap t = (ky, kx) row-major, channel c
        self.gathered = Linear(weight.permute(0, 2, 3, 1).reshape(c_out, -1), bias)
        self.in_channels = c_in
        self.macs_per_position = weight[0].numel() * c_out

    @staticmethod
    def of(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, scale: float = 1.0) -> Conv:
        """`bn(conv(x)) * scale` as one `Conv`."""
        geometry = Geometry.of(conv)
        return Conv(*folded(conv, bn, scale), geometry)

    def dense(self, fm: FeatureMap, relu: bool = False) -> FeatureMap:
        g = self.geometry
        out = F.conv2d(fm.nchw(), self.weight, self.bias, g.stride, g.padding, g.dilation)
        if relu:
            out = out.relu_()
        return FeatureMap.from_nchw(out)

    def at(
        self,
        source: Tensor,
        taps: Tensor,
        out_rows: Tensor | None,
        workspace: Workspace,
        relu: bool = False,
    ) -> Tensor:
        """The outputs at `out_rows` (all if None), (len, C_out): `source` is the input's rows
        followed by the zero sentinel row (`FeatureMap.with_sentinel`), `taps` the input's
        `NeighbourTables.taps` for this convolution."""
        neighbours = taps if out_rows is None else taps.index_select(0, out_rows)
        count = neighbours.shape[0]
        if count == 0:
            return source.new_empty(0, self.gathered.out_features)
        gathered = workspace.gather("im2col", source, neighbours.reshape(-1))
        return self.gathered(gathered.view(count, -1), relu=relu)
