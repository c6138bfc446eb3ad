"""Whole-block layer skipping (ConvNet-AIG style): gates, loss, accounting, budget knob."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import train_toy, warm_bn

from pag.errors import PagError
from pag.flops import macs_breakdown, marking, measure_macs
from pag.models import build_model, load_dense_weights
from pag.models.layer_skip import BlockGate, apply_layer_skip, target_rate_loss

TINY = dict(tasks={"semantic": 3}, width_multiplier=0.125, head_hidden=8, output_stride=8)


def _model(target=0.5, depth=18, method="layer_skip", seed=0):
    torch.manual_seed(seed)
    return build_model(method, target if method == "layer_skip" else None, depth=depth, **TINY)


def _force(model, execute: bool):
    for _, block in model.blocks():
        with torch.no_grad():
            block.gate.fc2.weight.zero_()
            bias = (-1e4, 1e4) if execute else (1e4, -1e4)
            block.gate.fc2.bias.copy_(torch.tensor(bias))


@pytest.mark.parametrize("depth", [18, 26])
def test_gate_on_every_block_and_shapes(depth):
    model = _model(depth=depth)
    names = [n for n, _ in model.blocks()]
    assert all(isinstance(b.gate, BlockGate) for _, b in model.blocks())
    keys = model.state_dict().keys()
    for name in names:
        assert f"trunk.{name}.gate.fc1.weight" in keys
        assert f"trunk.{name}.gate.fc2.bias" in keys
    x = torch.randn(2, 3, 32, 32)
    model.train()
    out = model(x)
    assert out["pred"]["semantic"].shape == (2, 3, 32, 32)
    aux = out["aux"]
    assert set(aux["block_gates"]) == set(names)
    for g in aux["block_gates"].values():
        assert g.shape == (2,)
        assert set(g.tolist()) <= {0.0, 1.0}
    assert aux["executed_blocks"].shape == (2,)
    assert aux["ponder"].shape == (2, 1, 32, 32)
    assert torch.equal(aux["ponder"][:, 0, 0, 0], aux["executed_blocks"])


def test_initial_opening_rate_about_85_percent():
    gate = BlockGate(8)
    assert torch.allclose(gate.fc2.bias, torch.tensor([0.1, 2.0]))
    assert gate.fc2.weight.std() < 0.01
    # softmax((0.1, 2))[1] = 0.87: the convnet-aig comment's "about 85%"
    p = F.softmax(gate.fc2.bias.detach(), 0)[1]
    assert 0.8 < float(p) < 0.9


def test_training_is_straight_through_and_eval_deterministic():
    model = _model()
    model.train()
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    loss = model.budget_loss(out["aux"])
    loss.backward()
    grads = [b.gate.fc2.weight.grad for _, b in model.blocks()]
    assert all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a["pred"]["semantic"], b["pred"]["semantic"])
    for name in a["aux"]["block_gates"]:
        assert torch.equal(a["aux"]["block_gates"][name], b["aux"]["block_gates"][name])
    # evaluation is the noiseless argmax of the logits
    for name, prob in a["aux"]["block_gate_probs"].items():
        assert torch.equal(a["aux"]["block_gates"][name], (prob > 0.5).float())


def test_temperature_is_honoured():
    model = _model()
    model.set_temperature(0.3)
    assert all(b.gate.temperature == 0.3 for _, b in model.blocks())


def test_target_rate_loss_by_hand():
    gates = {"a": torch.tensor([1.0, 0.0, 1.0, 1.0]), "b": torch.tensor([0.0, 0.0, 0.0, 1.0])}
    # rates 0.75 and 0.25; target 0.5: ((0.25)^2 + (0.25)^2) / 2
    assert float(target_rate_loss(gates, 0.5)) == pytest.approx(0.0625)
    assert float(target_rate_loss(gates, 1.0)) == pytest.approx((0.25**2 + 0.75**2) / 2)
    with pytest.raises(PagError):
        target_rate_loss({}, 0.5)


@pytest.mark.parametrize("depth", [18, 26])
def test_dense_weights_and_open_gates_equal_dense(depth):
    dense = _model(depth=depth, method="dense")
    warm_bn(dense)
    skip = _model(depth=depth, seed=5)
    report = load_dense_weights(skip, dense.state_dict())
    assert report["missing"] and all(".gate." in k for k in report["missing"])
    _force(skip, execute=True)
    dense.eval()
    skip.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, out = dense(x), skip(x)
    torch.testing.assert_close(out["pred"]["semantic"], ref["pred"]["semantic"], rtol=0, atol=0)
    assert torch.equal(out["aux"]["executed_blocks"], torch.full((2,), float(len(skip.blocks()))))


def test_closed_gates_run_only_shortcuts_and_count_nothing():
    model = _model(depth=26)
    _force(model, execute=False)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with marking(model):  # gates mark active_mask only while marking
        out = model(x)
        f = model.trunk.stem(x)
        for _, block in model.blocks():
            f = block.relu(block.shortcut(f))
        ref = model.heads["semantic"](f, (32, 32))
        torch.testing.assert_close(out["pred"]["semantic"], ref)
        assert torch.equal(out["aux"]["executed_blocks"], torch.zeros(2))
        for _, block in model.blocks():
            for conv in (block.conv1, block.conv2, block.conv3):
                assert float(conv.active_mask.sum()) == 0


def test_eval_marks_convs_per_image():
    model = _model(depth=26)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with marking(model):  # gates mark active_mask only while marking
        out = model(x)
        for name, block in model.blocks():
            g = out["aux"]["block_gates"][name]
            for conv in (block.conv1, block.conv2, block.conv3):
                mask = conv.active_mask
                assert mask.shape[:2] == (3, 1)
                assert torch.equal(mask[:, 0, 0, 0], g)
                assert torch.equal(mask, g.view(3, 1, 1, 1).expand_as(mask))
            if block.downsample is not None:  # the shortcut always runs: counted dense
                assert getattr(block.downsample[0], "active_mask", None) is None
        # conv2 of a strided block: mask at the conv's output resolution
        block = model.block("layer2.0")
        assert block.conv2.active_mask.shape[-2:] == (4, 4)
        assert block.conv1.active_mask.shape[-2:] == (8, 8)


def test_compute_accounting_per_image():
    model = _model(depth=26)
    x = torch.randn(2, 3, 32, 32)
    _force(model, execute=True)
    report = measure_macs(model, x)  # strict: the flop counter agrees with the masks
    torch.testing.assert_close(
        report.effective, torch.full((2,), report.dense, dtype=torch.float64)
    )
    # image 0 executes block layer3.1, image 1 skips it: only image 1 saves its convs
    block = model.block("layer3.1")
    per_image = torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).view(2, 2, 1, 1)
    block.gate.logits = lambda _x: per_image
    report = measure_macs(model, x)
    saved = sum(macs_breakdown(model, x)[f"trunk.layer3.1.conv{i}"].dense for i in (1, 2, 3))
    assert saved > 0
    want = torch.tensor([report.dense, report.dense - saved], dtype=torch.float64)
    torch.testing.assert_close(report.effective, want)


def test_bad_configuration():
    for bad in (0.0, -0.1, 1.5, "0.5", True):
        with pytest.raises(PagError, match=r"\(0, 1\]"):
            apply_layer_skip(_model(method="dense"), bad)
    with pytest.raises(PagError, match="target fraction"):
        build_model("layer_skip", 0.0, depth=18, **TINY)
    with pytest.raises(PagError, match="already carry a gate"):
        apply_layer_skip(_model(), 0.5)


def _execution_rate_after_training(target, steps=30):
    """Train a tiny model on a toy task + the target-rate loss; the eval execution rate."""
    model = _model(target, depth=18, seed=0)
    g = train_toy(model, steps)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(16, 3, 32, 32, generator=g))
    return float(torch.stack(list(out["aux"]["block_gates"].values())).mean())


def test_target_rate_moves_execution_rate():
    low, mid, high = (_execution_rate_after_training(t) for t in (0.2, 0.5, 0.9))
    # the gates start ~87% open (all open under the noiseless argmax)
    assert low < mid < high
    assert low < 0.3
    assert 0.4 < mid < 0.9
    assert high > 0.8
