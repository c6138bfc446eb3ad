"""SACT: the halting arithmetic against hand-computed values, the stage runner, accounting,
dense equivalence, gradients, save/load and the tau knob."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import train_toy, warm_bn

from pag.errors import PagError
from pag.flops import dense_macs, macs_breakdown, marking, measure_macs
from pag.models import build_model, load_dense_weights
from pag.models.gating import input_mask
from pag.models.heads import finish_prediction
from pag.models.resnet import conv3x3
from pag.models.sact import (
    HaltingHead,
    apply_sact,
    halting_distribution,
    needed_inputs,
    ponder_loss,
    run_masked_unit,
)

TINY = dict(tasks={"semantic": 3}, width_multiplier=0.125, head_hidden=8, output_stride=8)


def _model(tau=0.01, depth=18, method="sact", seed=0):
    torch.manual_seed(seed)
    return build_model(method, tau if method == "sact" else None, depth=depth, **TINY)


def _set_halting_bias(model, bias):
    for _, block in model.blocks():
        if hasattr(block, "halting"):
            with torch.no_grad():
                block.halting.local_conv.weight.zero_()
                block.halting.global_conv.weight.zero_()
                block.halting.local_conv.bias.fill_(bias)


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _check(h, eps, p_expected, n_expected, r_expected, halted_expected):
    p, n, r, halted = halting_distribution([_t(*v) for v in h], eps)
    assert len(p) == len(h) + 1 == len(halted)
    for got, want in zip(p, p_expected, strict=True):
        torch.testing.assert_close(got, _t(*want))
    assert n.tolist() == n_expected
    torch.testing.assert_close(r, _t(*r_expected))
    assert [x.tolist() for x in halted] == halted_expected
    torch.testing.assert_close(sum(p), torch.ones_like(p[0]))  # a distribution


# -- the halting rule on hand-made scores -----------------------------------------------------


def test_halting_at_the_first_unit():
    # h1 = 0.995 >= 0.99: N = 1, R = 1 - 0 = 1, p = (1, 0, 0), rho = 2; h2 is never used
    _check([[0.995], [0.3]], 0.01, [[1.0], [0.0], [0.0]], [1], [1.0], [[True], [True], [True]])


def test_halting_exactly_at_the_boundary():
    # 0.49 + 0.5 = 0.99 = 1 - eps: halts at unit 2; R = 1 - 0.49 = 0.51
    _check(
        [[0.49], [0.5], [0.7]],
        0.01,
        [[0.49], [0.51], [0.0], [0.0]],
        [2],
        [0.51],
        [[False], [True], [True], [True]],
    )
    # h1 = 0.99 exactly: halts at unit 1
    _check([[0.99]], 0.01, [[1.0], [0.0]], [1], [1.0], [[True], [True]])
    # with a dyadic eps the float sum is exact in any precision: 0.5 + 0.25 = 1 - 0.25
    _check([[0.5], [0.25]], 0.25, [[0.5], [0.5], [0.0]], [2], [0.5], [[False], [True], [True]])


def test_just_below_the_boundary_runs_on():
    # 0.49 + 0.49 = 0.98 < 0.99: runs to the last unit; R = 1 - 0.98 = 0.02
    _check(
        [[0.49], [0.49]],
        0.01,
        [[0.49], [0.49], [0.02]],
        [3],
        [0.02],
        [[False], [False], [True]],
    )


def test_never_halting_before_the_last_unit():
    # 0.1 + 0.2 + 0.3 = 0.6: N = 4 (last unit, h = 1), R = 0.4, rho = 4.4
    _check(
        [[0.1], [0.2], [0.3]],
        0.01,
        [[0.1], [0.2], [0.3], [0.4]],
        [4],
        [0.4],
        [[False], [False], [False], [True]],
    )
    # zero scores: all mass on the last unit, R = 1
    _check([[0.0], [0.0]], 0.01, [[0.0], [0.0], [1.0]], [3], [1.0], [[False], [False], [True]])


def test_positions_halting_at_different_units():
    # four positions, three units:
    #   pos 0: h = (0.995, 0.3) -> N 1, R 1,    p (1, 0, 0)
    #   pos 1: h = (0.49, 0.5)  -> N 2, R 0.51, p (0.49, 0.51, 0)
    #   pos 2: h = (0.2, 0.3)   -> N 3, R 0.5,  p (0.2, 0.3, 0.5)
    #   pos 3: h = (0, 0)       -> N 3, R 1,    p (0, 0, 1)
    _check(
        [[0.995, 0.49, 0.2, 0.0], [0.3, 0.5, 0.3, 0.0]],
        0.01,
        [[1.0, 0.49, 0.2, 0.0], [0.0, 0.51, 0.3, 0.0], [0.0, 0.0, 0.5, 1.0]],
        [1, 2, 3, 3],
        [1.0, 0.51, 0.5, 1.0],
        [[True, False, False, False], [True, True, False, False], [True, True, True, True]],
    )


def test_ponder_gradient_flows_only_through_the_remainder():
    # rho = N + R, R = 1 - sum_{l<N} h_l: d rho / d h_l = -1 for l < N, 0 from N on
    h1 = _t(0.995, 0.49, 0.2, 0.0).requires_grad_()
    h2 = _t(0.3, 0.5, 0.3, 0.0).requires_grad_()
    _, n, r, _ = halting_distribution([h1, h2], 0.01)
    rho = n.to(r.dtype) + r
    torch.testing.assert_close(rho.detach(), _t(2.0, 2.51, 3.5, 4.0))
    assert not n.requires_grad
    rho.sum().backward()
    torch.testing.assert_close(h1.grad, _t(0.0, -1.0, -1.0, -1.0))
    torch.testing.assert_close(h2.grad, _t(0.0, 0.0, -1.0, -1.0))


def test_halting_distribution_rejects_bad_input():
    with pytest.raises(PagError):
        halting_distribution([], 0.01)
    with pytest.raises(PagError):
        halting_distribution([_t(0.5)], 1.0)


# -- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 26])
def test_heads_on_all_but_the_last_unit_and_shapes(depth):
    model = _model(depth=depth)
    keys = model.state_dict().keys()
    for stage_index, stage in enumerate(model.trunk.stages()):
        for i, block in enumerate(stage):
            name = f"trunk.layer{stage_index + 1}.{i}.halting.local_conv.bias"
            if i < len(stage) - 1:
                assert isinstance(block.halting, HaltingHead)
                assert name in keys
                assert block.halting.local_conv.bias.detach().item() == -3.0
                assert block.halting.global_conv.bias is None
            else:
                assert not hasattr(block, "halting")
                assert name not in keys
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out["pred"]["semantic"].shape == (2, 3, 32, 32)
    aux = out["aux"]
    assert set(aux["stage_ponder"]) == {"layer1", "layer2", "layer3", "layer4"}
    assert aux["stage_ponder"]["layer1"].shape == (2, 1, 8, 8)
    assert aux["stage_units"]["layer4"].shape == (2, 1, 4, 4)
    assert aux["stage_units"]["layer4"].dtype == torch.long
    assert aux["ponder_cost"].shape == (2, 1, 32, 32)
    assert aux["ponder"].shape == (2, 1, 32, 32)
    for name, rho in aux["stage_ponder"].items():
        n = aux["stage_units"][name]
        r = rho - n
        assert bool(((r > 0) & (r <= 1 + 1e-6)).all())  # rho = N + R, R in (0, 1]
    loss = model.budget_loss(aux)
    want = 0.01 * sum(rho.mean() for rho in aux["stage_ponder"].values())
    torch.testing.assert_close(loss, want)


def test_halting_heads_receive_gradients():
    model = _model(tau=0.1, depth=26)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    loss = out["pred"]["semantic"].square().mean() + model.budget_loss(out["aux"])
    loss.backward()
    heads = [b.halting for _, b in model.blocks() if hasattr(b, "halting")]
    assert heads
    for head in heads:
        for param in (head.local_conv.weight, head.local_conv.bias, head.global_conv.weight):
            assert param.grad is not None
            assert float(param.grad.abs().sum()) > 0


def test_eval_is_deterministic():
    model = _model(depth=18)
    warm_bn(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a["pred"]["semantic"], b["pred"]["semantic"])
    assert torch.equal(a["aux"]["ponder"], b["aux"]["ponder"])


def test_halted_positions_keep_their_state():
    model = _model(depth=26)
    block = model.block("layer1.1")
    model.eval()
    x = torch.rand(2, block.conv1.in_channels, 8, 8)
    running = (torch.rand(2, 1, 8, 8) > 0.5).float()
    with torch.no_grad():
        out = run_masked_unit(block, x, running, track=True)
        dense = block(x)
    halted = running.expand_as(x) == 0
    assert torch.equal(out[halted], x[halted])
    assert torch.equal(out[~halted], dense[~halted])
    # compute accounting, as SACT's flopsometer: conv2/conv3 on running positions, conv1 on
    # the 3x3 neighbourhood of running positions (stride 1, dilation 1 here)
    assert torch.equal(block.conv2.active_mask, running)
    assert torch.equal(block.conv3.active_mask, running)
    dilated = F.max_pool2d(running, 3, stride=1, padding=1)
    assert torch.equal(block.conv1.active_mask, dilated)
    with pytest.raises(PagError, match="stride-1"):
        run_masked_unit(model.block("layer2.0"), torch.rand(2, 32, 8, 8), running, False)


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_needed_inputs_is_the_3x3_input_mask(dilation):
    conv = conv3x3(4, 4, 1, dilation)
    running = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(dilation)) > 0.8
    running = running.float()
    torch.testing.assert_close(needed_inputs(conv, running), input_mask(conv, running, (9, 11)))
    with pytest.raises(PagError, match="stride-1"):
        needed_inputs(conv3x3(4, 4, 2), running)


def test_compute_accounting():
    x = torch.randn(2, 3, 32, 32)
    dense_model = _model(depth=26, method="dense")
    model = _model(depth=26)
    load_dense_weights(model, dense_model.state_dict())
    # no halting: every position runs every unit; the heads' cost comes on top of dense
    _set_halting_bias(model, float("-inf"))
    report = measure_macs(model, x)  # strict: the flop counter agrees with the masks
    torch.testing.assert_close(
        report.effective, torch.full((2,), report.dense, dtype=torch.float64)
    )
    assert report.dense > dense_macs(dense_model, x)
    # halting at the first unit: later units count nothing, first units and heads all
    _set_halting_bias(model, float("inf"))
    report = measure_macs(model, x)
    skipped = sum(m.dense for name, m in macs_breakdown(model, x).items() if ".1.conv" in name)
    assert skipped > 0
    torch.testing.assert_close(
        report.effective, torch.full((2,), report.dense - skipped, dtype=torch.float64)
    )


def _reference_stage(stage, x, eps=0.01):
    """SACT written out directly from the equations, for one stage."""
    blocks = list(stage)
    state = blocks[0](x)
    states, scores = [state], []
    cumsum = torch.zeros_like(state[:, :1])
    for i in range(1, len(blocks)):
        h = blocks[i - 1].halting(state)
        scores.append(h)
        cumsum = cumsum + h
        keep = (cumsum < 1 - eps).float()  # h >= 0, so the cumulative sum only grows
        state = blocks[i].relu(state + keep * blocks[i].residual(state))
        states.append(state)
    p, n, r, _ = halting_distribution(scores, eps)
    return sum(pi * si for pi, si in zip(p, states, strict=True)), n, n + r


def test_stage_runner_matches_the_equations_with_varied_halting():
    model = _model(depth=50)  # stages of 3, 4, 6 and 3 units
    warm_bn(model)
    _set_halting_bias(model, -3.0)
    for _, block in model.blocks():  # restore random head weights, bias 0: mid-range scores
        if hasattr(block, "halting"):
            torch.nn.init.normal_(block.halting.local_conv.weight, std=0.3)
            torch.nn.init.normal_(block.halting.global_conv.weight, std=0.3)
            torch.nn.init.zeros_(block.halting.local_conv.bias)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with marking(model):  # gates mark active_mask only while marking
        out = model(x)
        f = model.trunk.stem(x)
        for index, stage in enumerate(model.trunk.stages()):
            name = f"layer{index + 1}"
            f, n, rho = _reference_stage(stage, f)
            assert torch.equal(out["aux"]["stage_units"][name], n)
            torch.testing.assert_close(out["aux"]["stage_ponder"][name], rho)
        ref = finish_prediction("semantic", model.heads["semantic"](f, (32, 32)))
        torch.testing.assert_close(out["pred"]["semantic"], ref)
        units = out["aux"]["stage_units"]["layer3"]
        assert len(units.unique()) > 1  # positions halt at different units
        # total maps at input size are the nearest-upsampled sums over stages
        total = sum(
            F.interpolate(rho, size=(32, 32), mode="nearest")
            for rho in out["aux"]["stage_ponder"].values()
        )
        torch.testing.assert_close(out["aux"]["ponder_cost"], total)
        # accounting in layer3 (6 units): unit i > 0 runs where not halted after unit i - 1
        stage = model.trunk.layer3
        for i in range(1, len(stage)):
            running = stage[i].conv2.active_mask
            assert torch.equal(running, stage[i].conv3.active_mask)
            assert bool((stage[i].conv1.active_mask >= running).all())
            if i < len(stage) - 1:
                assert torch.equal(stage[i].halting.local_conv.active_mask, running)
            executed = sum(stage[j].conv2.active_mask for j in range(1, len(stage))) + 1
            assert torch.equal(executed.long(), units)
        for conv in (stage[0].conv1, stage[0].conv2, stage[0].halting.local_conv):
            assert getattr(conv, "active_mask", None) is None  # the first unit is dense


@pytest.mark.parametrize("depth", [18, 26])
def test_dense_weights_and_no_halting_equal_dense(depth):
    dense = _model(depth=depth, method="dense")
    warm_bn(dense)
    sact = _model(depth=depth, seed=5)
    report = load_dense_weights(sact, dense.state_dict())
    assert report["missing"] and all(".halting." in k for k in report["missing"])
    _set_halting_bias(sact, float("-inf"))  # h = 0: all p mass on the last unit
    dense.eval()
    sact.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, out = dense(x), sact(x)
    torch.testing.assert_close(out["pred"]["semantic"], ref["pred"]["semantic"], rtol=0, atol=0)
    for stage, rho in zip(sact.trunk.stages(), out["aux"]["stage_ponder"].values(), strict=True):
        # N = L, R = 1
        assert torch.equal(rho, torch.full_like(rho, len(stage) + 1.0))


def test_halting_at_once_equals_first_units_only():
    model = _model(depth=26)
    warm_bn(model)
    _set_halting_bias(model, float("inf"))  # h = 1 at the first unit
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with marking(model):  # gates mark active_mask only while marking
        out = model(x)
        f = model.trunk.stem(x)
        for stage in model.trunk.stages():
            f = stage[0](f)
        ref = model.heads["semantic"](f, (32, 32))
        torch.testing.assert_close(out["pred"]["semantic"], ref)
        for rho in out["aux"]["stage_ponder"].values():
            assert torch.equal(rho, torch.full_like(rho, 2.0))  # N = 1, R = 1
        assert torch.equal(out["aux"]["ponder"], torch.full((2, 1, 32, 32), 4.0))
        for stage in model.trunk.stages():  # later units count nothing
            assert float(stage[1].conv1.active_mask.sum()) == 0
            assert float(stage[1].conv2.active_mask.sum()) == 0


def test_bad_configuration():
    for bad in (-0.1, float("nan"), "1", True):
        with pytest.raises(PagError, match="tau"):
            apply_sact(_model(method="dense"), bad)
    with pytest.raises(PagError, match="tau"):
        build_model("sact", -1.0, depth=18, **TINY)
    with pytest.raises(PagError, match="stage runner"):
        apply_sact(_model(), 0.1)
    with pytest.raises(PagError):
        ponder_loss({}, 0.1)


def _ponder_after_training(tau, steps=30):
    """Train a tiny model on a toy task + tau * ponder; the eval mean ponder cost (sum of the
    per-stage means of rho)."""
    model = _model(tau, depth=18, seed=0)
    g = train_toy(model, steps)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(8, 3, 32, 32, generator=g))
    return float(sum(rho.mean() for rho in out["aux"]["stage_ponder"].values()))


def test_tau_moves_ponder_cost():
    none, low, high = (_ponder_after_training(t) for t in (0.0, 0.1, 1.0))
    # 4 stages of 2 units: rho of a stage is 3 - h_1 in (2.01, 3] while both units run and
    # 2 where the first unit halts, so the sum over stages lies in [8, 12]
    assert none > 11.0  # no pressure: the heads stay near their -3 bias (rho ~ 2.9 a stage)
    assert low < none - 0.5
    assert high < low - 0.5
    assert high < 9.0  # most positions halt after the first unit of every stage
