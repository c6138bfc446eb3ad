"""The sparse executor: equal to the masked dense eval forward for every method, computing
exactly the effective MACs, edge cases of masks, forced masks, bad input, `pag evaluate
--sparse`."""

import json

import pytest
import test_evaluate
import torch
from click.testing import CliRunner
from model_helpers import warm_bn
from test_evaluate import copy_run, strict_json
from torch import nn

from pag.cli_evaluate import evaluate as evaluate_command
from pag.errors import PagError
from pag.flops import measure_macs
from pag.models import build_model, gating
from pag.models.resnet import BasicBlock, Bottleneck, conv1x1
from pag.sparse import Policy, SparseExecutor, kernels
from pag.sparse.blocks import BlockExecutor, Context, bucketed
from pag.sparse.decisions import PixelDecision
from pag.sparse.forcing import blob_mask, blob_masks, force_gates
from pag.training.evaluate import evaluate

TASKS = {"semantic": 5, "boundary": None, "depth": None, "normals": None}
TASK_KEYS = ("semantic", "boundary", "depth", "normals")
# trained runs and their data, as the evaluation tests make them
data_root, dense_run, pag_run = (
    test_evaluate.data_root,
    test_evaluate.dense_run,
    test_evaluate.pag_run,
)


def small(method="dense", budget=None, depth=26, **kwargs):
    torch.manual_seed(0)
    model = build_model(
        method,
        budget,
        tasks=TASKS,
        depth=depth,
        width_multiplier=0.125,
        output_stride=8,
        head_hidden=8,
        **kwargs,
    )
    warm_bn(model)
    return model.eval()


def assert_matches(got, expected, rel=1e-4):
    """Every tensor within `rel` of the reference's largest magnitude."""
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert_matches(got[key], value, rel)
        return
    assert got.shape == expected.shape
    scale = float(expected.abs().max()) or 1.0
    assert float((got.float() - expected.float()).abs().max()) <= rel * scale


def compare(model, x, executor=None):
    """The executor's output against the model's eval forward, pred and aux."""
    executor = executor or SparseExecutor(model)
    with torch.no_grad():
        expected = model(x)
    got = executor(x)
    assert_matches(got["pred"], expected["pred"])
    assert set(got["aux"]) == set(expected["aux"])
    for key, value in expected["aux"].items():
        if key in ("gates", "multipool", "block_gates", "stage_units"):
            assert set(got["aux"][key]) == set(value)
            for name, decided in value.items():  # the same decisions, exactly
                assert torch.equal(got["aux"][key][name], decided), (key, name)
        else:
            assert_matches(got["aux"][key], value)
    return expected


def randomise(module_names, model, std, bias=None):
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(module_names):
                module.weight.normal_(0, std)
                if module.bias is not None and bias is not None:
                    module.bias.copy_(torch.as_tensor(bias, dtype=module.bias.dtype))


# -- every method against its masked dense forward -------------------------------------------


@pytest.mark.parametrize("depth", [26, 18])
@pytest.mark.parametrize("mode", ["conv3x3", "residual"])
def test_pag_matches_dense_with_different_masks_per_image(depth, mode):
    model = small("pag", 0.5, depth=depth, gate_mode=mode)
    randomise("gate.conv", model, 0.5, [0.0, 0.0])  # decisions that vary across pixels
    x = torch.randn(3, 3, 37, 45)
    expected = compare(model, x)
    gates = expected["aux"]["gates"]
    activity = torch.stack([g[:, 1].mean(dim=(1, 2)) for g in gates.values()])  # blocks x N
    assert 0.2 < float(activity.mean()) < 0.8
    assert (activity.max(1).values - activity.min(1).values).max() > 0.05  # per-image masks


@pytest.mark.parametrize("average", [False, True])
def test_multipool_runs_the_chosen_branch_or_the_average(average):
    model = small("multipool_avg" if average else "mp_pag")
    if not average:  # a choice map with many branches, skip included
        randomise("conv2.multipool.attention.6", model, 0.5, torch.zeros(7))
    x = torch.randn(2, 3, 37, 45)
    expected = compare(model, x, SparseExecutor(model, require_gates=not average))
    if not average:
        choice = expected["aux"]["multipool"]["layer4.1"].argmax(1)
        assert len(choice.unique()) >= 4 and (choice == 6).any()


def test_layer_skip_runs_only_the_images_that_execute():
    model = small("layer_skip", 0.5)
    randomise(("gate.fc1", "gate.fc2"), model, 2.0, None)
    for name, module in model.named_modules():
        if name.endswith("gate.fc2"):
            with torch.no_grad():
                module.bias.zero_()
    x = torch.randn(4, 3, 37, 45) * torch.tensor([0.5, 1.0, 2.0, 4.0]).view(4, 1, 1, 1)
    expected = compare(model, x)
    compare(model, x, SparseExecutor(model, policy=Policy.always_dense()))
    decisions = torch.stack(list(expected["aux"]["block_gates"].values()))  # blocks x N
    mixed = [(row.min() == 0) & (row.max() == 1) for row in decisions]
    assert any(mixed) and (decisions == 0).all(1).any() | (decisions == 1).all(1).any()


def test_sact_stops_positions_that_halted():
    model = small("sact", 0.01, depth=50)
    for _, block in model.blocks():
        if hasattr(block, "halting"):
            randomise("", block.halting.local_conv, 1.0, [3.0])
    x = torch.randn(2, 3, 37, 45)
    expected = compare(model, x)
    units = expected["aux"]["stage_units"]
    assert any(len(u.unique()) > 1 for u in units.values())  # positions halted at different units


@pytest.mark.parametrize(("method", "budget"), [("dense", None), ("truncation", 5)])
def test_models_without_decisions_run_densely_on_request(method, budget):
    model = small(method, budget)
    compare(model, torch.randn(2, 3, 33, 41), SparseExecutor(model, require_gates=False))


# -- the executor computes what pag.flops counts ---------------------------------------------


class CountedMacs:
    """MACs the executor's kernels run: products of rows x in x out, dense convs."""

    def __init__(self, monkeypatch):
        self.total = 0
        linear_call, dense_conv = kernels.Linear.__call__, kernels.Conv.dense

        def linear(this, rows, relu=False, add=None):
            self.total += rows.shape[0] * this.weight.shape[0] * this.weight.shape[1]
            return linear_call(this, rows, relu, add)

        def dense(this, fm, relu=False):
            out = dense_conv(this, fm, relu)
            self.total += out.positions * this.weight[0].numel() * this.weight.shape[0]
            return out

        monkeypatch.setattr(kernels.Linear, "__call__", linear)
        monkeypatch.setattr(kernels.Conv, "dense", dense)


@pytest.mark.parametrize("mode", ["conv3x3", "residual"])
def test_trunk_runs_exactly_the_effective_macs(monkeypatch, mode):
    model = small("pag", 0.5, depth=26, gate_mode=mode)
    randomise("gate.conv", model, 0.5, [0.0, 0.0])
    x = torch.randn(2, 3, 40, 48)
    report = measure_macs(model, x)
    trunk = {k: m for k, m in report.modules.items() if k.startswith("trunk.")}
    effective = sum(float(m.effective.sum()) for m in trunk.values())
    dense = sum(m.dense for m in trunk.values()) * 2
    assert effective < 0.9 * dense
    counted = CountedMacs(monkeypatch)
    SparseExecutor(model, policy=Policy(1.0, 1.0, 0.0, bucket_rows=False)).features(x)
    assert counted.total == effective


# -- masks at the edges ------------------------------------------------------------------------


def gate_on_channel0(block, mode, stride=1):
    """A gate that computes where input channel 0 exceeds 0.5."""
    gate = gating.PixelGate(block.conv1.in_channels, stride, mode=mode)
    with torch.no_grad():
        gate.conv.weight.zero_()
        gate.conv.weight[1, 0] = 1.0
        gate.conv.bias.copy_(torch.tensor([0.5, 0.0]))
    block.gate = gate
    return block.eval()


def run_block(block, x):
    """The block through the executor as the model-level executor runs it."""
    unit = BlockExecutor("block", block, Context(Policy(), bucket=True))
    fm = kernels.FeatureMap.from_nchw(x.contiguous(memory_format=torch.channels_last).clone())
    on = PixelDecision(block.gate)(fm)
    rows = kernels.rows_of(on)
    run = unit.conv3x3_gated if block.gate.mode == "conv3x3" else unit.residual_gated
    return run(fm, on, rows).nchw(), int(rows.shape[0])


def warmed(block):
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    return block.eval()


CORNER_BLOCKS = {
    "bottleneck dilation 4": lambda: Bottleneck(8, 2, dilation=4),
    "bottleneck stride 2": lambda: Bottleneck(
        8, 2, stride=2, downsample=nn.Sequential(conv1x1(8, 8, 2), nn.BatchNorm2d(8))
    ),
    "basic dilation 2": lambda: BasicBlock(8, 8, dilation=2),
}


@pytest.mark.parametrize("mode", ["conv3x3", "residual"])
@pytest.mark.parametrize("kind", list(CORNER_BLOCKS))
@pytest.mark.parametrize("where", ["none", "corner", "all"])
def test_no_pixel_a_corner_pixel_or_every_pixel(kind, mode, where):
    torch.manual_seed(0)
    block = CORNER_BLOCKS[kind]()
    gate_on_channel0(warmed(block), mode, block.stride)
    x = torch.rand(2, 8, 7, 9) * 0.4  # channel 0 below 0.5: nothing computes
    if where == "corner":
        x[0, 0, 6, 8] = 1.0  # image 0: only the bottom-right corner (on the stride grid)
    elif where == "all":
        x[:, 0] = 1.0
    with torch.no_grad():
        expected = block(x)
    got, active = run_block(block, x)
    assert active == {"none": 0, "corner": 1, "all": expected[:, 0].numel()}[where]
    assert_matches(got, expected)


def test_single_corner_pixel_in_every_block_of_a_model():
    model = small("pag", 0.5, depth=26, gate_mode="residual")
    x = torch.randn(2, 3, 37, 45)
    masks = {}
    for name, mask in blob_masks(model, x, 0.0).items():
        mask[0, 0, -1, -1] = 1  # image 0: the last pixel; image 1: nothing
        masks[name] = mask
    executor = SparseExecutor(model)
    executor.forced = masks
    with force_gates(model, masks):
        expected = compare(model, x, executor)
    assert all(
        float(g[0, 1].sum()) == 1 and float(g[1, 1].sum()) == 0
        for g in expected["aux"]["gates"].values()
    )


def test_row_counts_are_bucketed_to_a_few_shapes():
    sizes = [bucketed(count) for count in range(1, 5000)]
    assert all(count <= size <= max(count * 1.125, count) for count, size in enumerate(sizes, 1))
    assert sizes[:16] == list(range(1, 17)) and bucketed(58) == 60 and bucketed(1229) == 1280
    assert len(set(sizes[2048:4096])) == 8  # 8 shapes per octave
    ctx = Context(Policy(), bucket=True)
    index = torch.tensor([5, 9, 2] * 6)  # 18 rows -> 18; 17 -> 18
    assert ctx.padded(index[:17]).tolist() == [*index[:17].tolist(), 5]
    assert Context(Policy(bucket_rows=False), bucket=True).padded(index[:17]).shape == (17,)


# -- forced masks ------------------------------------------------------------------------------


def test_blob_masks_have_the_exact_rate_in_blobs():
    g = torch.Generator().manual_seed(0)
    mask = blob_mask(2, 40, 48, 0.3, g)
    assert mask.sum(dim=(1, 2, 3)).tolist() == [round(0.3 * 40 * 48)] * 2
    # blobs: most active pixels have an active right neighbour (salt and pepper: ~30 %)
    pairs = (mask[..., :-1] * mask[..., 1:]).sum() / mask[..., :-1].sum()
    assert pairs > 0.8
    assert blob_mask(1, 5, 5, 0.0, g).sum() == 0 and blob_mask(1, 5, 5, 1.0, g).sum() == 25
    with pytest.raises(PagError, match="activity rate"):
        blob_mask(1, 5, 5, 1.5, g)


@pytest.mark.parametrize("mode", ["conv3x3", "residual"])
def test_forced_masks_on_both_paths(mode):
    model = small("pag", 0.5, gate_mode=mode)
    x = torch.randn(1, 3, 40, 48)
    masks = blob_masks(model, x, 0.5, seed=1)
    executor = SparseExecutor(model)
    executor.forced = masks
    with force_gates(model, masks):
        expected = compare(model, x, executor)
        report = measure_macs(model, x)
    for name, mask in masks.items():
        assert torch.equal(expected["aux"]["gates"][name][:, 1:], mask)
    assert report.effective[0] < 0.85 * report.dense
    wrong = {name: mask[..., :-1] for name, mask in masks.items()}
    executor.forced = wrong
    with pytest.raises(PagError, match=r"forced mask for layer1\.0"):
        executor(x)
    with pytest.raises(PagError, match=r"forced mask for layer1\.0"), force_gates(model, wrong):
        model(x)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "budget"), [("dense", None), ("truncation", 4), ("multipool_avg", None)]
)
def test_a_model_without_gates_is_refused(method, budget):
    with pytest.raises(
        PagError, match=f"method '{method}' has no gates.*mp_pag, pag, layer_skip, sact"
    ):
        SparseExecutor(small(method, budget))


def test_bad_models_and_inputs():
    with pytest.raises(PagError, match=r"DensePredictionModel.*got ResNet"):
        SparseExecutor(small("pag", 0.5).trunk)
    executor = SparseExecutor(small("pag", 0.5))
    with pytest.raises(PagError, match=r"N x 3 x H x W input, got \(3, 32, 32\)"):
        executor(torch.randn(3, 32, 32))
    with pytest.raises(PagError, match=r"torch\.float64"):
        executor(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    with pytest.raises(PagError, match="dense_above must be a fraction"):
        Policy(dense_above=0.0)


@pytest.mark.parametrize("mode", ["conv3x3", "residual"])
def test_dense_fallback_is_exact_at_any_threshold(mode):
    model = small("pag", 0.5, gate_mode=mode)
    randomise("gate.conv", model, 0.5, [0.0, 0.0])
    x = torch.randn(2, 3, 37, 45)
    for policy in (Policy.always_dense(), Policy(0.5, 0.5, 0.0), Policy(1.0, 1.0, 0.0)):
        compare(model, x, SparseExecutor(model, policy=policy))


# -- pag evaluate --sparse ---------------------------------------------------------------------


def assert_close_values(got, expected):
    """Nested metrics equal, numbers to 1e-4 relative (the predictions differ by float
    rounding), None (an undefined metric) as None."""
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        for key in expected:
            assert_close_values(got[key], expected[key])
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert_close_values(a, b)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    else:
        assert got == expected


def test_evaluate_sparse_gives_the_same_metrics_and_latency(tmp_path, pag_run, data_root):
    dense_eval = evaluate(copy_run(pag_run, tmp_path / "a"), "val", data_root=data_root)
    run_dir = copy_run(pag_run, tmp_path / "b")
    result = CliRunner().invoke(
        evaluate_command,
        ["--run", str(run_dir), "--split", "val", "--data-root", str(data_root), "--sparse"],
    )
    assert result.exit_code == 0, result.output
    sparse_eval = strict_json(run_dir / "eval_val" / "metrics.json")
    latency = sparse_eval.pop("latency")
    assert json.loads(result.output)["latency"] == latency
    assert set(sparse_eval) == set(dense_eval)
    for task in TASK_KEYS:
        assert_close_values(sparse_eval[task], dense_eval[task])
    assert sparse_eval["macs"] == dense_eval["macs"]
    assert sparse_eval["activity"] == dense_eval["activity"]
    assert latency["dense_ms"] > 0 and latency["sparse_ms"] > 0 and latency["speedup"] > 0
    assert latency["device"] == "cpu" and latency["threads"] == test_evaluate.BASE["threads"]
    assert set(latency["max_rel_diff"]) == set(TASK_KEYS)
    assert all(0 <= d < 1e-4 for d in latency["max_rel_diff"].values())


def test_evaluate_sparse_refuses_a_dense_run_and_writes_nothing(tmp_path, dense_run, data_root):
    run_dir = copy_run(dense_run, tmp_path / "run")
    with pytest.raises(PagError, match="method 'dense' has no gates"):
        evaluate(run_dir, "val", data_root=data_root, sparse=True)
    assert not (run_dir / "eval_val").exists()
