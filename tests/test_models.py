"""Trunks, PAG gates, MultiPool, truncation, build_model: shapes, paths, losses, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from pag.errors import PagError
from pag.methods import registry
from pag.models import build_model, load_dense_weights, resnet26, resnet50
from pag.models.gating import (
    gumbel_softmax,
    input_mask,
    rate_kl_loss,
    sparsity_loss,
    temperature_at,
)
from pag.models.multipool import MultiPool, branch_names

TASKS = {"semantic": 5, "boundary": None, "depth": None, "normals": None}
SMALL = {"tasks": TASKS, "depth": 26, "width_multiplier": 0.125, "head_hidden": 8}
BUDGET = {
    "dense": None,
    "dense_ft": None,
    "random_gate": 0.5,
    "pag": 0.5,
    "mp_pag": None,
    "multipool_avg": None,
    "truncation": 5,
    "layer_skip": 0.5,
    "sact": 0.01,
}


def torchvision_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision's resnet50 state-dict keys and shapes, written out from its architecture:
    Bottleneck blocks (3, 4, 6, 3), widths 64..512, expansion 4, downsample in block 0."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, n):
        shapes.update(
            {f"{prefix}.{k}": (n,) for k in ("weight", "bias", "running_mean", "running_var")}
        )
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    inplanes = 64
    for stage, (blocks, planes) in enumerate(
        zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), 1
    ):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 2048), (1000,)
    return shapes


def test_resnet50_has_torchvision_keys_and_shapes():
    model = resnet50()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == torchvision_resnet50_shapes()
    assert len(got) == 320
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's count
    model.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize(("output_stride", "size"), [(8, 8), (16, 4), (32, 2)])
def test_output_stride_and_dilation(output_stride, size):
    trunk = resnet26(width_multiplier=0.125, output_stride=output_stride)
    assert trunk(torch.randn(1, 3, 64, 64)).shape[-1] == size
    if output_stride == 8:  # torchvision: a dilated stage keeps the previous dilation first
        assert trunk.layer3[0].conv2.dilation == (1, 1) and trunk.layer3[1].conv2.dilation == (2, 2)
        assert trunk.layer4[0].conv2.dilation == (2, 2) and trunk.layer4[1].conv2.dilation == (4, 4)


def test_every_method_predicts_every_task_at_input_size():
    x = torch.randn(2, 3, 40, 48)
    for method, budget in BUDGET.items():
        model = build_model(method, budget, **SMALL).eval()
        pred = model(x)["pred"]
        assert pred["semantic"].shape == (2, 5, 40, 48) and pred["boundary"].shape == (2, 1, 40, 48)
        assert (pred["depth"] > 0).all()
        torch.testing.assert_close(pred["normals"].norm(dim=1), torch.ones(2, 40, 48))


def test_gumbel_softmax_follows_the_authors_formula():
    logits = torch.tensor([[[[0.3]], [[-1.2]]]])  # 1 x 2 x 1 x 1
    torch.manual_seed(0)
    sample = gumbel_softmax(logits, temperature=0.5)
    torch.manual_seed(0)
    u = (torch.rand_like(logits) + 1e-5) / 1.00001
    a = (F.softmax(logits, 1) + 1e-3) / 1.001
    expected = F.softmax((a.log() - (-u.log()).log()) / 0.5, 1)
    torch.testing.assert_close(sample, expected)
    hard = gumbel_softmax(logits.repeat(1, 1, 8, 8).requires_grad_(), 0.5, hard=True)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    hard[:, 1].sum().backward()  # straight-through: gradients flow


def test_temperature_schedule_is_the_authors():
    assert [temperature_at(e) for e in (0, 1, 2, 3)] == [1.0, 1.0, 0.97, 0.97]
    assert math.isclose(temperature_at(67), 0.01) and temperature_at(68) == 0.001


def test_rate_kl_loss_hand_computed():
    on = torch.full((1, 1, 2, 2), 0.5)
    # KL(Bern(.7)||Bern(.5)) twice: 2 * (.7 ln 1.4 + .3 ln .6)
    expected = 2 * (0.7 * math.log(1.4) + 0.3 * math.log(0.6))
    assert float(rate_kl_loss(on, 1 - on, 0.7)) == pytest.approx(expected, rel=1e-6)
    perfect = rate_kl_loss(torch.full((1, 1, 2, 2), 0.7), torch.full((1, 1, 2, 2), 0.3), 0.7)
    assert float(perfect) == pytest.approx(0.0, abs=1e-6)
    # target 1: only the log of the compute mean remains, 0 log 0 = 0
    assert float(rate_kl_loss(on, 1 - on, 1.0)) == pytest.approx(2 * math.log(2), rel=1e-6)


def test_global_sparsity_pools_layers_by_pixel_count():
    big = torch.cat([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)], 1)  # all compute
    small = torch.cat([torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)], 1)  # all skip
    pooled = 16 / 20
    expected = rate_kl_loss(
        torch.full((1, 1, 1, 1), pooled), torch.full((1, 1, 1, 1), 1 - pooled), 0.5
    )
    torch.testing.assert_close(sparsity_loss({"a": big, "b": small}, 0.5, "global"), expected)
    with pytest.raises(PagError, match="'layer' or 'global'"):
        sparsity_loss({"a": big}, 0.5, "image")


def _force_gates(model, compute: bool):
    for _, block in model.blocks():
        if block.gate is not None:
            with torch.no_grad():
                block.gate.conv.weight.zero_()
                block.gate.conv.bias.copy_(torch.tensor([0.0, 9.0] if compute else [9.0, 0.0]))


@pytest.mark.parametrize("mode", ["conv3x3", "residual"])
def test_open_gates_equal_the_dense_model_and_closed_gates_skip(mode):
    torch.manual_seed(0)
    dense = build_model("dense", **SMALL).eval()
    gated = build_model("pag", 0.5, gate_mode=mode, **SMALL).eval()
    load_dense_weights(gated, dense.state_dict())
    x = torch.randn(2, 3, 32, 32)
    _force_gates(gated, compute=True)
    for task, value in dense(x)["pred"].items():
        torch.testing.assert_close(gated(x)["pred"][task], value)
    _force_gates(gated, compute=False)
    block = gated.trunk.layer1[1]
    h = torch.relu(torch.randn(1, block.conv1.in_channels, 8, 8))
    out = block(h)
    if mode == "residual":  # the identity survives alone
        torch.testing.assert_close(out, torch.relu(h))
    else:  # the 3x3 input passes through to the 1x1 expansion
        passed = block.bn3(block.conv3(block.relu(block.bn1(block.conv1(h)))))
        torch.testing.assert_close(out, torch.relu(h + passed))
    aux = gated(x)["aux"]
    assert aux["ponder"].shape == (2, 1, 32, 32) and float(aux["ponder"].max()) == 0


def test_strided_block_passes_its_subsampled_input_in_conv3x3_mode():
    gated = build_model("pag", 0.5, **SMALL).eval()
    _force_gates(gated, compute=False)
    block = gated.trunk.layer2[0]
    x = torch.relu(torch.randn(1, block.conv1.in_channels, 8, 8))
    h = block.relu(block.bn1(block.conv1(x)))[:, :, ::2, ::2]
    torch.testing.assert_close(block(x), torch.relu(block.shortcut(x) + block.bn3(block.conv3(h))))


def test_input_mask_is_the_receptive_field_of_active_outputs():
    conv = torch.nn.Conv2d(1, 1, 3, padding=2, dilation=2, bias=False)
    out = torch.zeros(1, 1, 6, 6)
    out[0, 0, 0, 5] = 1  # a single active pixel in a corner
    mask = input_mask(conv, out, (6, 6))
    expected = torch.zeros(6, 6)
    for dy in (-2, 0, 2):
        for dx in (-2, 0, 2):
            if 0 <= dy < 6 and 0 <= 5 + dx < 6:
                expected[dy, 5 + dx] = 1
    torch.testing.assert_close(mask[0, 0], expected)
    strided = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    out = torch.zeros(1, 1, 4, 4)
    out[0, 0, 1, 1] = 1  # reads input rows/cols 1..3
    mask = input_mask(strided, out, (8, 8))
    assert mask[0, 0].nonzero().tolist() == [[r, c] for r in (1, 2, 3) for c in (1, 2, 3)]


def test_gates_get_gradients_and_evaluation_is_deterministic():
    model = build_model("pag", 0.5, **SMALL).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    (out["pred"]["semantic"].mean() + model.budget_loss(out["aux"])).backward()
    for name, block in model.blocks():
        assert block.gate.conv.weight.grad.abs().sum() > 0, name
    model.eval()
    first, second = model(x), model(x)
    torch.testing.assert_close(first["pred"]["depth"], second["pred"]["depth"])
    assert set(first["aux"]["gates"]["layer1.0"].unique().tolist()) <= {0.0, 1.0}


def test_target_rate_moves_measured_activity():
    """A few steps of the budget loss alone pull activity toward each target."""
    rates = {}
    for target in (0.2, 0.9):
        torch.manual_seed(0)
        model = build_model("pag", target, **SMALL).train()
        model.set_temperature(0.5)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        x = torch.randn(2, 3, 32, 32)
        for _ in range(30):
            optimizer.zero_grad()
            model.budget_loss(model(x)["aux"]).backward()
            optimizer.step()
        model.eval()
        gates = model(x)["aux"]["gates"]
        rates[target] = sum(float(g[:, 1].mean()) for g in gates.values()) / len(gates)
    assert rates[0.2] < 0.4 < 0.75 < rates[0.9]


def test_multipool_initialises_branches_from_the_dense_conv_and_picks_one_branch():
    torch.manual_seed(0)
    dense = build_model("dense", **SMALL)
    model = build_model("mp_pag", **SMALL)
    report = load_dense_weights(model, dense.state_dict())
    assert report["skipped"] == [] and all("multipool." in k for k in report["missing"])
    pool = model.trunk.layer4[1].conv2
    assert isinstance(pool, MultiPool) and pool.num_branches == 7
    for branch in pool.multipool.dilated:
        torch.testing.assert_close(branch.weight, dense.trunk.layer4[1].conv2.weight)
    assert [b.dilation for b in pool.multipool.dilated] == [(d, d) for d in (2, 4, 6, 8, 10)]
    model.eval()
    h = torch.randn(2, pool.in_channels, 6, 6)
    out = pool(h)
    choice = pool.last_choice
    assert torch.equal(choice.sum(1), torch.ones(2, 6, 6))
    k = int(choice[0, :, 2, 3].argmax())
    branches = [b(h) for b in pool.multipool.dilated] + [
        F.conv2d(h, pool.weight, padding=4, dilation=4),
        h,
    ]
    torch.testing.assert_close(out[0, :, 2, 3], branches[k][0, :, 2, 3])
    assert branch_names((2, 4)) == ["dilation 2", "dilation 4", "original", "skip"]


def test_multipool_average_is_the_mean_of_the_conv_branches():
    model = build_model("multipool_avg", **SMALL).eval()
    pool = model.trunk.layer4[1].conv2
    h = torch.randn(1, pool.in_channels, 5, 5)
    expected = torch.stack(
        [b(h) for b in pool.multipool.dilated] + [F.conv2d(h, pool.weight, padding=4, dilation=4)]
    )
    torch.testing.assert_close(pool(h), expected.mean(0))
    assert pool.multipool.attention is None


def test_truncation_keeps_the_first_blocks_and_refits_heads():
    dense = build_model("dense", **SMALL)
    model = build_model("truncation", 3, **SMALL)
    assert [n for n, _ in model.blocks()] == ["layer1.0", "layer1.1", "layer2.0"]
    assert model.heads["semantic"].conv.in_channels == model.trunk.layer2[0].conv3.out_channels
    report = load_dense_weights(model, dense.state_dict())
    assert any(k.startswith("trunk.layer3") for k in report["skipped"])
    torch.testing.assert_close(
        model.trunk.layer1[0].conv1.weight, dense.trunk.layer1[0].conv1.weight
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "pixel"}, r"unknown method 'pixel'; expected one of \['dense', 'dense_ft'"),
        ({"method": "pag", "budget": 1.5}, r"budget 1.5 outside the range for 'pag'"),
        ({"method": "pag", "budget": 0.0}, r"outside the range for 'pag': .*\(0.0, 1.0\]"),
        ({"method": "pag"}, r"'pag' needs a finite numeric budget"),
        ({"method": "dense", "budget": 0.5}, r"'dense' has no budget knob"),
        ({"method": "truncation", "budget": 9}, r"outside the range .*\[1, 8\]"),
        ({"method": "truncation", "budget": 2.5}, r"needs an integer budget"),
        (
            {"method": "pag", "budget": 0.5, "gate_blocks": ["layer9.0"]},
            r"no block named 'layer9.0'",
        ),
        ({"method": "pag", "budget": 0.5, "gate_mode": "all"}, r"gate mode must be one of"),
        ({"method": "mp_pag", "multipool_block": "layer2.0"}, r"MultiPool needs a stride-1 block"),
    ],
)
def test_bad_configuration_says_what_is_allowed(kwargs, message):
    with pytest.raises(PagError, match=message):
        build_model(**{**SMALL, **kwargs})


def test_every_variant_round_trips_through_save_and_load():
    x = torch.randn(1, 3, 32, 32)
    for method, budget in BUDGET.items():
        torch.manual_seed(1)
        model = build_model(method, budget, **SMALL).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):  # trained weights and BatchNorm statistics, not the initial ones
            out = model(torch.randn(4, 3, 32, 32))
            loss = out["pred"]["semantic"].mean() + model.budget_loss(out["aux"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        torch.manual_seed(2)
        again = build_model(method, budget, **SMALL).eval()
        again.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        with torch.no_grad():  # the same draws for the random gate, which samples in eval
            torch.manual_seed(3)
            ref = model(x)
            torch.manual_seed(3)
            out = again(x)
        for task, value in ref["pred"].items():
            assert torch.equal(out["pred"][task], value), f"{method}/{task}"
        if "ponder" in ref["aux"]:
            assert torch.equal(out["aux"]["ponder"], ref["aux"]["ponder"]), method
    assert set(BUDGET) <= set(registry.names())


def test_models_copy_after_a_training_forward():
    """Recorded decisions (tensors of the training graph) do not follow copies."""
    import copy

    for method, budget in (("pag", 0.5), ("mp_pag", None)):
        model = build_model(method, budget, **SMALL).train()
        model(torch.randn(2, 3, 32, 32))
        clone = copy.deepcopy(model)
        assert (
            clone.trunk.layer4[1].conv2.weight.data_ptr()
            != model.trunk.layer4[1].conv2.weight.data_ptr()
        )


def test_kl_gradient_survives_a_saturated_layer():
    """A layer whose every pixel computes still gets pulled towards the target."""
    on = torch.ones(1, 1, 2, 2, requires_grad=True)
    loss = rate_kl_loss(on, 1 - on, 0.5)
    loss.backward()
    assert float(loss.detach()) > 1 and on.grad.abs().sum() > 0  # a clamp at 1 gives 0


def test_load_dense_weights_rejects_what_does_not_fit():
    dense = build_model("dense", **SMALL).state_dict()
    wider = build_model("pag", 0.5, **{**SMALL, "width_multiplier": 0.25})
    with pytest.raises(PagError, match="of another shape"):
        load_dense_weights(wider, dense)
    other_tasks = build_model("pag", 0.5, **{**SMALL, "tasks": {"semantic": 7}})
    with pytest.raises(PagError, match=r"unexpected \['heads.boundary"):
        load_dense_weights(other_tasks, dense)
    kept_all = build_model("truncation", 8, **SMALL)  # drops nothing, rebuilds nothing
    skip_ckpt = build_model("layer_skip", 0.5, **SMALL).state_dict()
    with pytest.raises(PagError, match=r"unexpected \['trunk.layer1.0.gate"):
        load_dense_weights(kept_all, skip_ckpt)


def test_reloading_a_trained_multipool_keeps_its_branches():
    model = build_model("mp_pag", **SMALL)
    with torch.no_grad():
        model.trunk.layer4[1].conv2.multipool.dilated[0].weight.add_(1.0)
    trained = model.state_dict()
    again = build_model("mp_pag", **SMALL)
    load_dense_weights(again, trained)
    torch.testing.assert_close(
        again.trunk.layer4[1].conv2.multipool.dilated[0].weight,
        trained["trunk.layer4.1.conv2.multipool.dilated.0.weight"],
    )


def test_multipool_skip_passes_the_3x3_input_to_the_expansion():
    model = build_model("mp_pag", **SMALL).eval()
    block = model.trunk.layer4[1]
    with torch.no_grad():  # the attention always picks the last branch: skip
        last = block.conv2.multipool.attention[-1]
        last.weight.zero_()
        last.bias.copy_(torch.arange(7, dtype=torch.float))
    x = torch.relu(torch.randn(1, block.conv1.in_channels, 5, 5))
    h = block.relu(block.bn1(block.conv1(x)))
    torch.testing.assert_close(block(x), torch.relu(x + block.bn3(block.conv3(h))))


def test_losses_and_budgets_at_the_edges():
    from pag.models.losses import semantic_loss

    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = semantic_loss(logits, torch.full((1, 2, 2), 255))
    assert float(loss.detach()) == 0.0
    loss.backward()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(PagError, match="finite numeric budget"):
            build_model("sact", bad, **SMALL)
    with pytest.raises(PagError, match="gate_blocks must be 'all' or a list"):
        build_model("pag", 0.5, gate_blocks="layer4.1", **SMALL)
    some = build_model("pag", 0.5, gate_blocks=["layer4.1"], **SMALL)
    assert [n for n, b in some.blocks() if b.gate is not None] == ["layer4.1"]


def test_wrapped_trunk_has_no_classifier_but_loads_imagenet_keys():
    from pag.models.resnet import load_imagenet_weights, resnet26

    model = build_model("dense", **SMALL)
    assert not hasattr(model.trunk, "fc")
    checkpoint = resnet26(width_multiplier=0.125).state_dict()  # with fc, like torchvision's
    load_imagenet_weights(model.trunk, checkpoint)
    torch.testing.assert_close(model.trunk.conv1.weight, checkpoint["conv1.weight"])
    del checkpoint["fc.bias"]
    with pytest.raises(PagError, match=r"no \['fc.bias'\]"):
        load_imagenet_weights(model.trunk, checkpoint)


@pytest.mark.parametrize("method", list(BUDGET))
def test_batch_of_one_and_copies_after_a_training_step(method):
    """A single-image batch trains (pooled BatchNorm in gate heads falls back to running
    statistics), and the model copies afterwards and evaluates like its copy."""
    import copy

    torch.manual_seed(0)
    model = build_model(method, BUDGET[method], **SMALL).train()
    out = model(torch.randn(1, 3, 32, 40))
    (out["pred"]["semantic"].mean() + model.budget_loss(out["aux"])).backward()
    twin = copy.deepcopy(model).eval()
    model.eval()
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():  # the same draws for the random gate, which samples in eval
        torch.manual_seed(5)
        a = model(x)
        torch.manual_seed(5)
        b = twin(x)
    torch.testing.assert_close(a["pred"]["semantic"], b["pred"]["semantic"], rtol=0, atol=0)
