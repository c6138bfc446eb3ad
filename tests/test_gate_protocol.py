"""Issue 13's pieces: straight-through gates, gate rules, the random-gate and dense_ft
controls, the budget on probabilities, gradient norms and clipping, method variants, and
where the compute goes (`compute_allocation`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pag.errors import PagError
from pag.models import build_model
from pag.models.gating import (
    PixelGate,
    RandomPixelGate,
    SparsityLoss,
    decide_by_rule,
    gate_rule,
    gumbel_softmax,
)
from pag.params import load_profile
from pag.pipeline.plan import load_plan, run_params
from pag.training.evaluate import ComputeAllocation, boundary_map, near_mask
from pag.training.optimization import decision_parameters, gradient_norms

SMALL = {"tasks": {"semantic": 3}, "depth": 26, "width_multiplier": 0.125, "head_hidden": 8}
TINY = "params/tiny.yaml"


def test_straight_through_gradient_is_the_soft_samples_hand_computed():
    """Forward: the one-hot argmax of the relaxed sample. Backward: the relaxed sample's
    gradient, here d soft_1 / d z for two logits, written out by hand:
    (s1 s0 / t) p0 p1 (1 / (p1 + eps) + 1 / (p0 + eps)), and its negative for z0."""
    z = torch.tensor([[[[0.2]], [[0.5]]]], dtype=torch.float64, requires_grad=True)
    t, eps = 0.5, 1e-3
    torch.manual_seed(3)
    hard = gumbel_softmax(z, t, hard=True)
    torch.manual_seed(3)
    u = (torch.rand_like(z) + 1e-5) / (1 + 1e-5)
    hard[0, 1, 0, 0].backward()
    hard = hard.detach()

    p1 = 1 / (1 + math.exp(0.2 - 0.5))
    p0 = 1 - p1
    g = [-math.log(-math.log(float(u[0, k, 0, 0]))) for k in (0, 1)]
    s = [math.log((p + eps) / (1 + eps)) + gk for p, gk in zip((p0, p1), g, strict=True)]
    s1 = 1 / (1 + math.exp((s[0] - s[1]) / t))
    s0 = 1 - s1
    expected_forward = 1.0 if s1 > s0 else 0.0
    d_z1 = (s1 * s0 / t) * p0 * p1 * (1 / (p1 + eps) + 1 / (p0 + eps))
    assert float(hard[0, 1]) == expected_forward
    assert float(hard[0, 0]) == 1 - expected_forward
    assert z.grad[0, 1, 0, 0].item() == pytest.approx(d_z1, rel=1e-9)
    assert z.grad[0, 0, 0, 0].item() == pytest.approx(-d_z1, rel=1e-9)


def test_gate_rules_decide_as_named():
    logits = torch.tensor([[[[0.0, 3.0]], [[1.0, -3.0]]]])  # 1 x 2 x 1 x 2
    hard = decide_by_rule(logits, "hard")
    assert hard[0, 1].tolist() == [[1.0, 0.0]]
    assert decide_by_rule(logits, "open")[0, 1].tolist() == [[1.0, 1.0]]
    expected = torch.softmax(logits, 1)
    torch.testing.assert_close(decide_by_rule(logits, "expected"), expected)
    torch.manual_seed(0)
    draws = torch.stack([decide_by_rule(logits, "sample")[0, 1, 0] for _ in range(4000)])
    # a Gumbel-max draw computes with the softmax probability of computing
    torch.testing.assert_close(draws.mean(0), expected[0, 1, 0], atol=0.03, rtol=0)
    with pytest.raises(PagError, match="gate rule must be one of"):
        decide_by_rule(logits, "soft")


def test_gate_rule_context_sets_and_restores_every_gate():
    model = build_model("pag", 0.5, **SMALL).eval()
    x = torch.randn(1, 3, 32, 32)
    with gate_rule(model, "open"), torch.no_grad():
        gates = model(x)["aux"]["gates"]
    assert all(bool((g[:, 1] == 1).all()) for g in gates.values())
    assert {m.rule for m in model.modules() if isinstance(m, PixelGate)} == {"hard"}
    with pytest.raises(PagError, match="gate rule"), gate_rule(model, "nope"):
        pass


def test_random_gate_rate_determinism_and_no_parameters():
    model = build_model("random_gate", 0.3, **SMALL).eval()
    gates = [m for m in model.modules() if isinstance(m, RandomPixelGate)]
    assert len(gates) == len(model.blocks())
    assert not any(p for g in gates for p in g.parameters())
    x = torch.randn(2, 3, 96, 128)
    torch.manual_seed(7)
    with torch.no_grad():
        first = model(x)["aux"]["gates"]
    torch.manual_seed(7)
    with torch.no_grad():
        again = model(x)["aux"]["gates"]
    on = torch.cat([g[:, 1].reshape(-1) for g in first.values()])
    assert abs(float(on.mean()) - 0.3) < 0.02  # thousands of positions
    for name in first:
        assert torch.equal(first[name], again[name])
    torch.manual_seed(8)
    with torch.no_grad():
        other = model(x)["aux"]["gates"]
    assert any(not torch.equal(first[n], other[n]) for n in first)
    assert model.budget_loss(model(x)["aux"]).item() == 0.0  # no learned policy to steer


def test_random_gate_refused_by_the_sparse_executor():
    from pag.sparse import SparseExecutor

    with pytest.raises(PagError, match="random"):
        SparseExecutor(build_model("random_gate", 0.5, **SMALL).eval())


def test_budget_on_probabilities_reads_the_noiseless_gates():
    model = build_model("pag", 0.5, budget_source="probs", **SMALL).train()
    out = model(torch.randn(2, 3, 32, 32))
    probs = out["aux"]["gate_probs"]
    expected = SparsityLoss(0.5)(
        model, {"gates": {n: torch.cat([1 - p, p], 1) for n, p in probs.items()}}
    )
    torch.testing.assert_close(model.budget_loss(out["aux"]), expected)
    samples = SparsityLoss(0.5, source="samples")(model, out["aux"]).detach()
    expected = expected.detach()
    assert samples.item() != expected.item()
    with pytest.raises(PagError, match="budget source"):
        SparsityLoss(0.5, source="argmax")


def test_gate_bias_sets_the_initial_compute_probability():
    model = build_model("pag", 0.5, gate_bias=0.0, **SMALL)
    gate = next(m for m in model.modules() if isinstance(m, PixelGate))
    assert gate.conv.bias.tolist() == [0.0, 0.0]


def test_gradient_norms_and_clipping():
    model = torch.nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert gradient_norms(model, [], None) == {"grad_norm": 5.0}
    norms = gradient_norms(model, [model.weight], 1.0)
    assert norms["grad_norm"] == 5.0  # before clipping
    assert norms["decision_grad_norm"] == pytest.approx(1.0)  # after
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.6, 0.8]]))
    pag = build_model("pag", 0.5, **SMALL)
    names = {id(p) for p in decision_parameters(pag)}
    gate_params = {id(p) for n, p in pag.named_parameters() if ".gate." in n}
    assert names == gate_params and names


def test_compute_allocation_on_a_constructed_map():
    """A vertical boundary at column 5 of a 4 x 10 image: columns 3-7 lie within 2 px.
    Ponder 3 there and 1 elsewhere: near 3, far 1, ratio 3, near fraction 5/10."""
    boundary = np.zeros((1, 4, 10), dtype=np.uint8)
    boundary[0, :, 5] = 1
    ponder = np.ones((4, 10), dtype=np.float32)
    ponder[:, 3:8] = 3
    allocation = ComputeAllocation(radius=2)
    allocation.update(ponder, {"boundary": boundary})
    result = allocation.compute()
    assert result["near_boundary"] == 3 and result["far_from_boundary"] == 1
    assert result["ratio"] == 3 and result["near_fraction"] == 0.5
    assert result["boundary_source"] == "boundary"
    # a diagonal neighbour at distance sqrt(5) > 2 is not near; (1, 2) at sqrt(5) neither
    edges = np.zeros((5, 5), dtype=bool)
    edges[2, 2] = True
    near = near_mask(edges, 2.0)
    assert near[2, 0] and near[0, 2] and near[1, 1] and not near[0, 1] and not near[0, 0]


def test_boundaries_from_semantic_labels_mark_both_sides():
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    edges, source = boundary_map({"semantic": labels})
    assert source == "semantic"
    assert edges.tolist() == [[False, True, True, False]] * 2
    assert boundary_map({"depth": labels}) == (None, None)


def _tiny_raw() -> dict:
    return yaml.safe_load(Path(TINY).read_text())


def _tiny_with(tmp_path, **changes):
    raw = _tiny_raw()
    raw.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_dense_ft_fine_tunes_the_dense_weights_with_the_fine_tune_schedule(tmp_path):
    raw = _tiny_raw()
    path = _tiny_with(tmp_path, methods={**raw["methods"], "dense_ft": [None]})
    plan = load_plan(path)
    job = plan.job("train-dense_ft-s0")
    assert "--init-from runs/tiny/dense-s0/checkpoints/final.pt" in job.cmd
    params = run_params(plan.profile, "dense_ft-s0")
    assert params["training"] == plan.profile.finetune.model_dump(mode="json")
    assert params["method"] == "dense_ft"
    dense = build_model("dense", None, **SMALL)
    tuned = build_model("dense_ft", None, **SMALL)
    assert dense.state_dict().keys() == tuned.state_dict().keys()


def test_variants_build_their_method_with_their_own_keys(tmp_path):
    raw = _tiny_raw()
    path = _tiny_with(
        tmp_path,
        variants={"pag_st": {"method": "pag", "model": {"hard_gates": True}}},
        methods={**raw["methods"], "pag_st": [0.5]},
        method_training={
            "layer_skip": {"budget_weight": 5.0},
            "pag": {"decision_lr_mult": 10.0, "temperature": {"start": 0.5}},
            "pag_st": {"temperature": {"final": 0.1}},
        },
    )
    plan = load_plan(path)
    params = run_params(plan.profile, "pag_st-0.5-s0")
    assert params["method"] == "pag" and params["model"]["hard_gates"] is True
    training = params["training"]
    # the variant inherits its method's keys and changes one nested key of its own
    assert training["decision_lr_mult"] == 10.0
    assert training["temperature"]["start"] == 0.5 and training["temperature"]["final"] == 0.1
    assert training["temperature"]["decay"] == plan.profile.finetune.temperature.decay
    job = plan.job("train-pag_st-0.5-s0")
    assert "variants.pag_st" in job.params and "method_training.pag_st" in job.params
    assert run_params(plan.profile, "pag-0.5-s0")["model"]["hard_gates"] is False


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"pag": {"method": "pag"}}, "not a method's name"),
        ({"gate x": {"method": "pag"}}, "lower-case letters"),
        ({"v": {"method": "dense"}}, "a variant's method must be one of"),
        ({"v": {"method": "pag", "model": {"hard": True}}}, r"unknown model keys \['hard'\]"),
        ({"v": {"method": "pag", "model": {"gate_bias": 99}}}, "variants.v.model: gate_bias"),
    ],
)
def test_bad_variants_fail_naming_the_key(tmp_path, variants, message):
    raw = _tiny_raw()
    path = _tiny_with(tmp_path, variants=variants, methods={**raw["methods"]})
    with pytest.raises(PagError, match=message):
        load_profile(path)


def test_a_method_name_that_is_neither_method_nor_variant_is_refused(tmp_path):
    raw = _tiny_raw()
    path = _tiny_with(tmp_path, methods={**raw["methods"], "pag_st": [0.5]})
    with pytest.raises(PagError, match=r"unknown method\(s\) \['pag_st'\]"):
        load_profile(path)


def test_the_ablation_profile_expands_with_gate_rules_on_gated_lines_only():
    plan = load_plan("ablation_gates")
    assert "--gate-rules open,expected,sample" in plan.job("eval-pag_st-0.5-s0").cmd
    random = plan.job("eval-random_gate-0.5-s0").cmd
    assert random.endswith("--gate-rules open")  # its other rules would repeat its draws
    assert "--gate-rule" not in plan.job("eval-truncation-7-s0").cmd
    assert "--gate-rules open" in plan.job("eval-layer_skip_gate10-0.5-s0").cmd


def test_shortcut_truncation_passes_shortcuts_and_keeps_the_heads():
    from pag.flops import measure_macs

    dense = build_model("dense", None, **SMALL).eval()
    cut = build_model("truncation", 7, truncation_mode="shortcut", **SMALL).eval()
    cut.load_state_dict(dense.state_dict())
    last = cut.block("layer4.1")
    assert not any(p.requires_grad for p in last.parameters())
    assert all(p.requires_grad for p in cut.block("layer4.0").parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f = dense.trunk.stem(x)
        for name, block in dense.blocks():
            f = block(f) if name != "layer4.1" else f  # layer4.1's identity shortcut alone
        expected = {t: h(f, (64, 64)) for t, h in dense.heads.items()}
        got = cut(x)["pred"]
    torch.testing.assert_close(got["semantic"], expected["semantic"])
    macs = [
        float(
            measure_macs(
                build_model("truncation", k, truncation_mode="shortcut", **SMALL), x
            ).effective[0]
        )
        for k in range(1, 9)
    ]
    assert macs == sorted(macs)  # fewer blocks kept, fewer MACs
    assert macs[-1] == measure_macs(dense, x).dense
    with pytest.raises(PagError, match="truncation mode"):
        build_model("truncation", 6, truncation_mode="drop", **SMALL)
    for kept in (7, 5):  # identity and projection shortcuts both train
        model = build_model("truncation", kept, truncation_mode="shortcut", **SMALL).train()
        model(torch.randn(2, 3, 32, 32))["pred"]["semantic"].sum().backward()


def test_budget_on_decisions_counts_what_evaluation_computes():
    from pag.models.gating import straight_through_decision
    from pag.models.layer_skip import TargetRateLoss

    p = torch.tensor([0.3, 0.5, 0.7, 0.9], requires_grad=True)
    decided = straight_through_decision(p)
    assert decided.tolist() == [0.0, 0.0, 1.0, 1.0]  # ties skip, as the argmax does
    decided.sum().backward()
    assert p.grad.tolist() == [1.0, 1.0, 1.0, 1.0]  # the probabilities' gradient
    loss = TargetRateLoss(0.25, "decisions")(None, {"block_gate_probs": {"b": p.detach()}})
    assert loss.item() == pytest.approx((0.25 - 0.5) ** 2)
    with pytest.raises(PagError, match="layer_skip budget source"):
        TargetRateLoss(0.5, "probs")
    model = build_model("pag", 0.5, budget_source="decisions", **SMALL).train()
    out = model(torch.randn(2, 3, 32, 32))
    model.budget_loss(out["aux"]).backward()
    gate = next(m for m in model.modules() if isinstance(m, PixelGate))
    assert gate.conv.weight.grad is not None and gate.conv.weight.grad.abs().sum() > 0
