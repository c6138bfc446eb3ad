"""Compute accounting: dense MACs from the flop counter, effective MACs of active positions.

Hand-computed counts use MACs = output positions x C_out x (C_in / groups) x kh x kw.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pag import flops
from pag.errors import PagError
from pag.flops import dense_macs, effective_macs, macs_breakdown, measure_macs, to_flops
from pag.methods import registry
from pag.models import build_model, gating
from pag.models.resnet import BasicBlock, Bottleneck, conv1x1


def both(module, x):
    """dense_macs, effective_macs (as a list) and the strict check, in one go."""
    return dense_macs(module, x), effective_macs(module, x).tolist()


# -- single modules, by hand ----------------------------------------------------------------


def test_conv3x3_padded():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    # 7 x 9 = 63 output positions, each 5 outputs x 3 inputs x 9 taps
    assert both(conv, torch.randn(2, 3, 7, 9)) == (5 * 3 * 9 * 63, [8505.0, 8505.0])
    assert to_flops(dense_macs(conv, torch.randn(1, 3, 7, 9))) == 17010


def test_strided_convs():
    # 9 x 11, k3 s2 p1: output 5 x 6 = 30 positions; 30 x 6 x 4 x 9 = 6480
    assert both(nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.randn(1, 4, 9, 11)) == (
        6480,
        [6480.0],
    )
    # no padding: output 4 x 5 = 20 positions; 20 x 3 x 2 x 9 = 1080
    assert both(nn.Conv2d(2, 3, 3, stride=2), torch.randn(3, 2, 9, 11)) == (1080, [1080.0] * 3)


def test_dilated_and_grouped_convs():
    # dilation changes which inputs are read, not the cost: 36 x 2 x 2 x 9 = 1296
    assert both(nn.Conv2d(2, 2, 3, padding=2, dilation=2), torch.randn(1, 2, 6, 6))[0] == 1296
    # groups=4: each output reads 8 / 4 = 2 channels; 25 x 12 x 2 x 9 = 5400
    grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4)
    assert both(grouped, torch.randn(2, 8, 5, 5)) == (5400, [5400.0, 5400.0])
    # depthwise: 25 x 8 x 1 x 9 = 1800
    assert dense_macs(nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.randn(1, 8, 5, 5)) == 1800


def test_linear():
    # one row per image: 10 x 7 = 70
    assert both(nn.Linear(10, 7), torch.randn(3, 10)) == (70, [70.0] * 3)
    # 4 rows per image: 280
    assert both(nn.Linear(10, 7, bias=False), torch.randn(2, 4, 10)) == (280, [280.0, 280.0])


class Masked(nn.Module):
    """Sets `conv.active_mask` during its forward, as a gate does."""

    def __init__(self, conv, mask, late=False):
        super().__init__()
        self.conv, self.mask, self.late = conv, mask, late

    def forward(self, x):
        if not self.late:
            self.conv.active_mask = self.mask
        out = self.conv(x)
        if self.late:  # marked after running, as `gating` does for conv1 in residual mode
            self.conv.active_mask = self.mask
        return out


def test_1x1_conv_with_mask():
    mask = torch.zeros(2, 1, 5, 6)
    mask[0, 0, 1, :4] = 1  # image 0: 4 active positions
    mask[0, 0, 3, 2:5] = 1  # ... and 3 more: 7
    # image 1: none; each position costs 3 x 4 = 12
    conv = nn.Conv2d(4, 3, 1)
    x = torch.randn(2, 4, 5, 6)
    for late in (False, True):
        model = Masked(conv, mask, late)
        assert effective_macs(model, x).tolist() == [7 * 12, 0.0]
        assert dense_macs(model, x) == 30 * 12
    # a per-image mask N x 1 x 1 x 1: image 0 runs, image 1 skips
    per_image = Masked(conv, torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1))
    assert effective_macs(per_image, x).tolist() == [30 * 12, 0.0]
    breakdown = macs_breakdown(Masked(conv, mask), x)
    assert list(breakdown) == ["conv"]
    assert breakdown["conv"].effective.tolist() == [84.0, 0.0]
    assert breakdown["conv"].dense == 360 and breakdown["conv"].calls == 1


def test_module_called_twice_counts_each_call_with_its_mask():
    conv = nn.Conv2d(2, 2, 1, bias=False)
    first, second = torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3)
    first[0, 0, 0, 0] = 1

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            self.conv.active_mask = first
            y = self.conv(x)
            self.conv.active_mask = second
            return self.conv(y)

    report = measure_macs(Twice(), torch.randn(1, 2, 3, 3))
    assert report.effective.tolist() == [(1 + 9) * 4.0]
    assert report.dense == 2 * 9 * 4 and report.modules["conv"].calls == 2


def test_stale_masks_never_count_and_state_is_restored():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    conv.active_mask = torch.zeros(1, 1, 1, 1)  # left over from an earlier forward
    model = nn.Sequential(conv, nn.BatchNorm2d(4))
    model.train()
    model[1].eval()
    x = torch.randn(2, 3, 4, 4)
    assert effective_macs(model, x).tolist() == [16 * 4 * 3 * 9] * 2
    assert model.training and conv.training and not model[1].training
    assert conv.active_mask is None
    assert not conv._forward_hooks and not conv._forward_pre_hooks


def test_bad_mask_and_batch_errors():
    x = torch.randn(2, 4, 5, 6)
    with pytest.raises(PagError, match=r"conv.active_mask has shape \(2, 1, 4, 6\)"):
        effective_macs(Masked(nn.Conv2d(4, 3, 1), torch.ones(2, 1, 4, 6)), x)
    with pytest.raises(PagError, match="broadcast"):
        effective_macs(Masked(nn.Conv2d(4, 3, 1), torch.ones(2, 3, 5, 6)), x)

    class FirstImageOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 3, 1)

        def forward(self, x):
            return self.conv(x[:1])

    with pytest.raises(PagError, match="batch of 1 images, the input has 2"):
        effective_macs(FirstImageOnly(), x)
    # with one input image, a module that ran on a sub-batch is summed: 1 x 30 x 12 MACs
    assert effective_macs(FirstImageOnly(), x[:1]).tolist() == [360.0]


class Functional(nn.Module):
    """A conv outside any nn.Conv2d: the hooks cannot see it, the flop counter can."""

    def __init__(self, bookkeeping=False):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.weight = nn.Parameter(torch.randn(3, 3, 3, 3))
        self.bookkeeping = bookkeeping

    def forward(self, x):
        y = self.conv(x)
        if self.bookkeeping:
            with flops.uncounted():
                return F.conv2d(y, self.weight, padding=1)
        return F.conv2d(y, self.weight, padding=1)


def test_compute_outside_conv_modules_is_an_error_unless_uncounted():
    x = torch.randn(1, 2, 4, 4)
    conv_macs, functional_macs = 16 * 3 * 2, 16 * 3 * 3 * 9
    with pytest.raises(
        PagError, match=r"\(the model itself\): 1296 MACs per image of aten.convolution outside"
    ):
        effective_macs(Functional(), x)
    assert effective_macs(Functional(), x, strict=False).tolist() == [conv_macs]
    assert dense_macs(Functional(), x) == conv_macs + functional_macs
    assert both(Functional(bookkeeping=True), x) == (conv_macs, [conv_macs])


def test_import_has_no_side_effects():
    code = "import sys, pag.flops; assert 'pag.models' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- residual blocks, by hand ---------------------------------------------------------------


def gate_on_channel0(block, mode):
    """A gate that computes where input channel 0 exceeds 0.5 (its conv still runs)."""
    gate = gating.PixelGate(block.conv1.in_channels, block.stride, mode=mode)
    with torch.no_grad():
        gate.conv.weight.zero_()
        gate.conv.weight[1, 0] = 1.0  # compute logit = x[:, 0]
        gate.conv.bias.copy_(torch.tensor([0.5, 0.0]))  # skip logit = 0.5
    block.gate = gate
    return block


def test_bottleneck_stride2_by_hand():
    block = Bottleneck(
        4, 2, stride=2, downsample=nn.Sequential(conv1x1(4, 8, 2), nn.BatchNorm2d(8))
    )
    # input 6 x 6 -> output 3 x 3; the stride-2 gate reads x[:, 0, 2i, 2j]
    x = torch.zeros(2, 4, 6, 6)
    x[0, 0, 0, 0] = x[0, 0, 4, 4] = 1.0  # image 0: outputs (0, 0) and (2, 2) compute
    on = torch.zeros(2, 1, 3, 3)
    on[0, 0, 0, 0] = on[0, 0, 2, 2] = 1
    # conv2 (k3 s2 p1) reads rows/cols {-1,0,1} -> {0,1} for (0, 0): 4 inputs, and {3,4,5}
    # for (2, 2): 9 inputs; conv1 must run at these 13 positions
    assert gating.input_mask(block.conv2, on, (6, 6)).sum(dim=(1, 2, 3)).tolist() == [13, 0]

    gate = 9 * 2 * 4  # 1x1 4->2 at 3x3 = 72
    downsample = 9 * 8 * 4  # 1x1 4->8 stride 2 at 3x3 = 288
    conv1 = 36 * 2 * 4  # 1x1 4->2 at 6x6 = 288
    conv2 = 9 * 2 * 2 * 9  # 3x3 2->2 at 3x3 = 324
    conv3 = 9 * 8 * 2  # 1x1 2->8 at 3x3 = 144
    dense = gate + downsample + conv1 + conv2 + conv3
    assert dense == 1116

    gate_on_channel0(block, "residual")
    # residual: conv1 at 13 positions (104), conv2 and conv3 at 2 (72 and 32)
    image0 = gate + downsample + 13 * 2 * 4 + 2 * 2 * 2 * 9 + 2 * 8 * 2
    assert image0 == 568
    assert both(block, x) == (dense, [568.0, gate + downsample])  # image 1: 360
    parts = macs_breakdown(block, x)
    assert {k: v.effective.tolist() for k, v in parts.items()} == {
        "gate.conv": [72.0, 72.0],
        "conv1": [104.0, 0.0],
        "conv2": [72.0, 0.0],
        "conv3": [32.0, 0.0],
        "downsample.0": [288.0, 288.0],
    }

    gate_on_channel0(block, "conv3x3")
    # conv3x3: conv2 is gated; conv3 and the shortcut run everywhere; conv1 (its output at
    # 6 x 6) is needed on the stride-2 grid where skipped pixels pass it through, and around
    # computed pixels for conv2. Image 0: the 13 positions above plus the 7 grid positions
    # of its 7 skipped outputs, none of which lie among the 13: 20. Image 1: the 9 grid points.
    conv1_image0, conv1_image1 = 20 * 2 * 4, 9 * 2 * 4
    image0 = gate + downsample + conv1_image0 + 2 * 2 * 2 * 9 + conv3
    image1 = gate + downsample + conv1_image1 + conv3
    assert (image0, image1) == (736, 576)
    assert both(block, x) == (dense, [736.0, 576.0])


def test_basic_block_by_hand():
    block = BasicBlock(2, 2)
    x = torch.zeros(1, 2, 5, 5)
    x[0, 0, 2, 2] = 1.0  # only the centre output computes
    gate = 25 * 2 * 2  # 1x1 2->2 at 5x5 = 100
    conv = 2 * 2 * 9  # a 3x3 2->2 conv, per output position: 36
    gate_on_channel0(block, "residual")
    # conv2 at the centre (36); conv1 (a 3x3 too) at the 3x3 window conv2 reads (9 x 36)
    assert both(block, x) == (gate + 2 * 25 * conv, [100.0 + 36 + 324])
    gate_on_channel0(block, "conv3x3")
    assert both(block, x) == (1900, [100.0 + 25 * conv + conv])


# -- whole models ---------------------------------------------------------------------------

TRUNKS = [
    (18, 8, {"semantic": 5}),
    (26, 16, {"depth": None, "normals": None}),
    (50, 8, {"semantic": 4, "boundary": None, "depth": None, "normals": None}),
    (50, 16, {"boundary": None}),
]


def small(method="dense", budget=None, *, depth, output_stride, tasks, **kwargs):
    return build_model(
        method,
        budget,
        tasks=tasks,
        depth=depth,
        width_multiplier=0.125,
        output_stride=output_stride,
        head_hidden=8,
        **kwargs,
    )


def set_gates(model, open_):
    """Every gate computes everywhere (open) or nowhere (closed)."""
    for _, block in model.blocks():
        with torch.no_grad():
            block.gate.conv.weight.zero_()
            bias = [0.0, 5.0] if open_ else [5.0, 0.0]
            block.gate.conv.bias.copy_(torch.tensor(bias))


@pytest.mark.parametrize(("depth", "output_stride", "tasks"), TRUNKS)
def test_dense_model_effective_equals_flop_counter(depth, output_stride, tasks):
    model = small(depth=depth, output_stride=output_stride, tasks=tasks)
    x = torch.randn(2, 3, 37, 45)
    report = measure_macs(model, x)  # strict: the flop counter agrees module by module
    assert report.dense > 0
    assert report.effective.tolist() == [report.dense] * 2
    assert sum(m.dense for m in report.modules.values()) == report.dense
    assert "trunk.fc" not in report.modules  # kept for checkpoints, never called


def block_sizes(model, x):
    """Output positions (h x w) of every block of `model` on `x`."""
    sizes, handles = {}, []
    for name, block in model.blocks():
        handles.append(
            block.register_forward_hook(
                lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[-2] * o.shape[-1])
            )
        )
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return sizes


@pytest.mark.parametrize("gate_mode", ["conv3x3", "residual"])
@pytest.mark.parametrize(("depth", "output_stride", "tasks"), TRUNKS[:3])
def test_pag_gates_open_and_closed(depth, output_stride, tasks, gate_mode):
    dense_model = small(depth=depth, output_stride=output_stride, tasks=tasks)
    model = small(
        "pag", 0.5, depth=depth, output_stride=output_stride, tasks=tasks, gate_mode=gate_mode
    )
    x = torch.randn(2, 3, 37, 45)
    sizes = block_sizes(dense_model, x)
    # each gate is a 1x1 conv C_in -> 2 at the block's output positions
    gates = sum(2 * b.conv1.in_channels * sizes[n] for n, b in model.blocks())
    dense = dense_macs(dense_model, x)

    set_gates(model, open_=True)
    opened = measure_macs(model, x)  # strict: the flop counter agrees module by module
    assert opened.dense == dense + gates
    assert opened.effective.tolist() == [dense + gates] * 2

    set_gates(model, open_=False)
    closed = measure_macs(model, x)
    assert closed.dense == dense + gates  # the forward still executes every conv
    gated = ("conv2",) if gate_mode == "conv3x3" else ("conv1", "conv2", "conv3")
    removed = 0.0
    for name, block in model.blocks():
        for conv in gated:
            if hasattr(block, conv):
                key = f"trunk.{name}.{conv}"
                assert closed.modules[key].effective.tolist() == [0.0, 0.0]
                removed += opened.modules[key].dense
        if gate_mode == "conv3x3" and block.conv2.stride[0] > 1 and hasattr(block, "conv3"):
            # closed: conv1 is needed only on the stride grid the skipped pixels pass through
            conv1 = block.conv1
            grid = conv1.out_channels * conv1.in_channels * sizes[name]
            key = f"trunk.{name}.conv1"
            assert closed.modules[key].effective.tolist() == [grid] * 2
            removed += opened.modules[key].dense - grid
        if block.downsample is not None:  # the shortcut always runs
            key = f"trunk.{name}.downsample.0"
            assert closed.modules[key].effective.tolist() == [closed.modules[key].dense] * 2
    assert closed.effective.tolist() == [dense + gates - removed] * 2


def test_truncated_model_counts_only_kept_blocks():
    kwargs = {"depth": 18, "output_stride": 8, "tasks": {"semantic": 3}}
    model = small("truncation", 3, **kwargs)
    x = torch.randn(1, 3, 33, 33)
    report = measure_macs(model, x)
    assert report.effective.tolist() == [report.dense]
    assert not any(k.startswith(("trunk.layer3", "trunk.layer4")) for k in report.modules)
    assert report.dense < dense_macs(small(**kwargs), x)


# -- the other methods: masks set by layer skipping, MultiPool and SACT -----------------------

BUDGETS = {"pag": 0.5, "random_gate": 0.5, "truncation": 5, "layer_skip": 0.5, "sact": 0.01}


def constant_logits(conv, index):
    """Make a logit conv choose channel `index` everywhere."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(0.0)
        conv.bias[index] = 5.0


def dense_of(report, names):
    return sum(report.modules[n].dense for n in names)


@pytest.mark.parametrize("method", registry.names())
def test_every_method_is_exact_and_within_its_dense_forward(method):
    kwargs = {"depth": 50, "output_stride": 8, "tasks": {"semantic": 3, "depth": None}}
    torch.manual_seed(0)
    model = small(method, BUDGETS.get(method), **kwargs)
    report = measure_macs(model, torch.randn(2, 3, 35, 29))  # strict
    assert all(0 < e <= report.dense for e in report.effective.tolist())
    if method in ("dense", "truncation", "multipool_avg"):
        assert report.effective.tolist() == [report.dense] * 2


def branch_convs(model):
    return [
        (n, b, c) for n, b in model.blocks() for c in ("conv1", "conv2", "conv3") if hasattr(b, c)
    ]


def test_layer_skip_closed_blocks_cost_only_gate_and_shortcut():
    model = small("layer_skip", 0.5, depth=26, output_stride=16, tasks={"boundary": None})
    for _, block in model.blocks():
        constant_logits(block.gate.fc2, 0)  # skip, for every image
    report = measure_macs(model, torch.randn(2, 3, 33, 33))
    skipped = [f"trunk.{n}.{c}" for n, _, c in branch_convs(model)]
    assert all(report.modules[k].effective.tolist() == [0.0, 0.0] for k in skipped)
    assert report.effective.tolist() == [report.dense - dense_of(report, skipped)] * 2


def test_multipool_counts_the_chosen_branch_only():
    kwargs = {"depth": 18, "output_stride": 8, "tasks": {"semantic": 3}}
    model = small("mp_pag", **kwargs)
    pool = model.block("layer4.1").conv2
    branches = ["trunk.layer4.1.conv2"] + [
        f"trunk.layer4.1.conv2.multipool.dilated.{k}" for k in range(len(pool.dilations))
    ]
    attention = [f"trunk.layer4.1.conv2.multipool.attention.{k}" for k in (0, 3, 6)]
    x = torch.randn(1, 3, 33, 41)
    dense = dense_macs(small(**kwargs), x)
    constant_logits(pool.multipool.attention[-1], pool.num_branches - 2)  # the original conv
    report = measure_macs(model, x)
    assert report.modules[branches[0]].effective.tolist() == [report.modules[branches[0]].dense]
    # the dense model plus the attention head
    assert report.effective.tolist() == [dense + dense_of(report, attention)]
    constant_logits(pool.multipool.attention[-1], pool.num_branches - 1)  # skip
    report = measure_macs(model, x)
    assert all(report.modules[b].effective.tolist() == [0.0] for b in branches)
    assert report.effective.tolist() == [report.dense - dense_of(report, branches)]


def test_sact_halted_units_cost_nothing():
    model = small("sact", 0.01, depth=50, output_stride=16, tasks={"depth": None})
    x = torch.randn(2, 3, 33, 33)
    for _, block in model.blocks():  # every position halts after the first unit of a stage
        if hasattr(block, "halting"):
            with torch.no_grad():
                block.halting.local_conv.weight.zero_()
                block.halting.global_conv.weight.zero_()
                block.halting.local_conv.bias.fill_(10.0)
    report = measure_macs(model, x)
    masked = [
        f"trunk.{name}.{part}"
        for stage in range(1, 5)
        for i, block in enumerate(getattr(model.trunk, f"layer{stage}"))
        if i > 0
        for name in [f"layer{stage}.{i}"]
        for part in ("conv1", "conv2", "conv3", "halting.local_conv")
        if part != "halting.local_conv" or hasattr(block, "halting")
    ]
    assert all(report.modules[k].effective.tolist() == [0.0, 0.0] for k in masked)
    assert report.effective.tolist() == [report.dense - dense_of(report, masked)] * 2
