"""The side-output boundary head (HED on a ResNet) and per-method seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pag.errors import PagError
from pag.models import build_model
from pag.models.heads import SideOutputHead
from pag.params import load_profile
from pag.pipeline.plan import sweep
from pag.sparse.executor import SparseExecutor
from pag.training.run_params import validate_run_params

TINY = {"depth": 26, "width_multiplier": 0.125, "head_hidden": 8}


def test_the_head_reads_the_stem_and_every_stage_and_starts_as_their_mean():
    model = build_model("dense", tasks={"boundary": None}, boundary_head="side_outputs", **TINY)
    head = model.heads["boundary"]
    assert isinstance(head, SideOutputHead)
    # stem conv 8 channels, then the bottleneck stages' outputs (width 8: 32, 64, 128, 256)
    assert [conv.in_channels for conv in head.sides] == [8, 32, 64, 128, 256]
    assert torch.allclose(head.fuse.weight, torch.full_like(head.fuse.weight, 0.2))
    out = model(torch.randn(2, 3, 33, 47))["pred"]["boundary"]
    assert tuple(out.shape) == (2, 1, 33, 47)


def test_the_fused_map_follows_a_fine_edge_the_last_stage_cannot_place():
    """Only the stem's stride-2 map changes when a 1-pixel line moves by 2 pixels; a head on
    the stride-8 output alone sees at most a blurred change."""
    head = SideOutputHead([1, 1])
    with torch.no_grad():
        head.sides[0].weight.fill_(1.0)
        head.sides[0].bias.zero_()
        head.sides[1].weight.zero_()
        head.sides[1].bias.zero_()
    stem = torch.zeros(1, 1, 8, 8)
    stem[..., 3] = 1.0
    out = head([stem, torch.zeros(1, 1, 2, 2)], (16, 16))
    column = out[0, 0].mean(0)
    assert int(column.argmax()) in (6, 7)  # stem column 3 at stride 2


def test_methods_keep_the_side_head_and_truncation_must_keep_its_stages():
    for method, budget in (("pag", 0.5), ("random_gate", 0.5), ("layer_skip", 0.5)):
        model = build_model(
            method, budget, tasks={"boundary": None}, boundary_head="side_outputs", **TINY
        )
        assert isinstance(model.heads["boundary"], SideOutputHead)
        model(torch.randn(1, 3, 32, 32))
    model = build_model(
        "truncation",
        5,
        tasks={"boundary": None},
        boundary_head="side_outputs",
        truncation_mode="shortcut",
        **TINY,
    )
    assert tuple(model(torch.randn(1, 3, 32, 32))["pred"]["boundary"].shape) == (1, 1, 32, 32)
    with pytest.raises(PagError, match="use truncation_mode 'shortcut'"):
        build_model("truncation", 5, tasks={"boundary": None}, boundary_head="side_outputs", **TINY)


def test_the_sparse_executor_refuses_a_side_head_by_name():
    model = build_model("pag", 0.5, tasks={"boundary": None}, boundary_head="side_outputs", **TINY)
    with pytest.raises(PagError, match="side outputs"):
        SparseExecutor(model.eval())


def test_the_head_key_at_its_default_leaves_a_run_as_before():
    run = {
        "name": "r",
        "dataset": "bsds500",
        "tasks": {"boundary": None},
        "input_size": [8, 8],
        "training": {"epochs": 1, "batch_size": 2, "lr": 0.1},
    }
    plain = validate_run_params(run, "run.yaml")
    assert "boundary_head" not in plain.resolved()["model"]
    explicit = validate_run_params({**run, "model": {"boundary_head": "last_stage"}}, "run.yaml")
    assert explicit.digest() == plain.digest()
    side = validate_run_params({**run, "model": {"boundary_head": "side_outputs"}}, "run.yaml")
    assert side.resolved()["model"]["boundary_head"] == "side_outputs"
    assert side.digest() != plain.digest()


def _profile(tmp_path, extra: str):
    text = Path("params/tiny.yaml").read_text() + extra
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def test_method_seeds_replace_the_seeds_of_one_method(tmp_path):
    profile = load_profile(_profile(tmp_path, "method_seeds:\n  dense: [0, 5]\n"))
    runs = [run.name for run in sweep(profile)]
    assert "dense-s5" in runs
    assert all(not name.endswith("-s5") for name in runs if not name.startswith("dense-"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("method_seeds:\n  nope: [0]\n", "method_seeds.nope: not a method of this profile"),
        ("method_seeds:\n  dense: [1, 1]\n", "method_seeds.dense must be distinct"),
        ("method_seeds:\n  pag: [3]\n", r"seeds \[3\] have no dense run to fine-tune from"),
    ],
)
def test_bad_method_seeds_are_refused_by_key(tmp_path, extra, message):
    with pytest.raises(PagError, match=message):
        load_profile(_profile(tmp_path, extra))
