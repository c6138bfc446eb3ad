"""Adding a method is one registration (docs/adding-a-method.md): a method defined here, in the
test, runs through the plan, training, evaluation, the summary and the report of a small
profile with no edit anywhere in `pag`.

The method is a fixed checkerboard gate: every gated block computes the positions of a
diagonal pattern at its rate (0.5: a checkerboard), the same in training and evaluation, with no
parameters and no budget loss. Its activity is known exactly, so the test can check numbers,
not only that files appear."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from pag.cli import cli
from pag.errors import PagError
from pag.methods import registry
from pag.methods.registry import Budget, Method, Style, gated_blocks
from pag.models import gating
from pag.pipeline.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]
PERIOD = 4  # diagonals of the pattern; a rate r computes round(r * PERIOD) of every PERIOD


class CheckerboardGate(gating.RandomPixelGate):
    """PAG's gated block, computing a fixed diagonal pattern at `rate` (no learned policy)."""

    def decide(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = self.stride
        rows = torch.arange((h - 1) // s + 1, device=x.device).view(-1, 1)
        cols = torch.arange((w - 1) // s + 1, device=x.device).view(1, -1)
        pattern = ((rows + cols) % PERIOD < round(self.rate * PERIOD)).to(x.dtype)
        on = pattern.expand(n, 1, *pattern.shape).contiguous()
        self.last_prob = on.clone()
        self.last_gate = torch.cat([1 - on, on], dim=1)
        return on


def apply_checkerboard(model, budget, *, gate_mode, **_) -> None:
    for _, block in model.blocks():
        block.gate = CheckerboardGate(block.stride, budget, mode=gate_mode)


CHECKERBOARD = Method(
    "checkerboard",
    Style("Checkerboard", "#8c564b", "h", (0, (1, 1))),
    apply=apply_checkerboard,
    budget=Budget("fraction of positions computing, on a fixed pattern", 0.0, 1.0, low_open=True),
    model_keys=("gate_mode",),
    controlled_blocks=gated_blocks,
    dynamic=True,
)


@pytest.fixture
def checkerboard():
    registry.register(CHECKERBOARD)
    yield CHECKERBOARD
    registry.unregister(CHECKERBOARD.name)


def test_a_registered_method_is_known_to_params_and_plan(checkerboard, tmp_path):
    profile = yaml.safe_load((ROOT / "params/tiny.yaml").read_text())
    profile.update(name="checker", methods={"dense": [None], "checkerboard": [0.5, 0.25]})
    path = tmp_path / "checker.yaml"
    path.write_text(yaml.safe_dump(profile))
    plan = load_plan(path)
    assert [run.name for run in plan.runs()] == [
        "dense-s0",
        "checkerboard-0.5-s0",
        "checkerboard-0.25-s0",
    ]
    train = {job.name: job for job in plan.jobs}["train-checkerboard-0.5-s0"]
    assert "--init-from runs/checker/dense-s0/checkpoints/final.pt" in train.cmd
    assert "model.gate_mode" in train.params and "model.truncation_mode" not in train.params
    report = plan.job("report").results
    assert "paper_figures/checker/ponder_maps_checkerboard.png" in report


def test_a_registered_method_budget_is_checked(checkerboard, tmp_path):
    from pag.errors import PagError
    from pag.params import load_profile

    profile = yaml.safe_load((ROOT / "params/tiny.yaml").read_text())
    profile.update(methods={"dense": [None], "checkerboard": [1.5]})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(profile))
    with pytest.raises(PagError, match=r"methods\.checkerboard: budget 1\.5 outside the range"):
        load_profile(path)


def _run_job(cmd: str) -> None:
    """A plan job's `pag` command, run in this process (where the method is registered)."""
    args = shlex.split(cmd)
    assert args[0] == "pag", cmd
    cli.main(args[1:], standalone_mode=False)


@pytest.mark.slow
def test_a_method_registered_in_a_test_runs_through_the_whole_pipeline(
    checkerboard, tmp_path, monkeypatch
):
    profile = yaml.safe_load((ROOT / "params/tiny.yaml").read_text())
    profile.update(name="checker", methods={"dense": [None], "checkerboard": [0.5]})
    (tmp_path / "params").mkdir()
    (tmp_path / "params/checker.yaml").write_text(yaml.safe_dump(profile))
    monkeypatch.chdir(tmp_path)
    plan = load_plan("checker")
    for job in plan.jobs:
        _run_job(job.cmd)

    evaluation = json.loads(
        Path("results/checker/runs/checkerboard-0.5-s0/metrics.json").read_text()
    )
    activity = evaluation["activity"]
    assert len(activity) == 8 and all(value == 0.5 for value in activity.values()), activity
    with open("results/checker/summary.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["run"] == "checkerboard-0.5-s0"]
    assert rows and {row["method"] for row in rows} == {"checkerboard"}
    macs = {float(row["effective_macs"]) for row in rows} | {
        float(row["dense_macs"]) for row in rows
    }
    effective, dense = sorted(macs)
    assert effective < dense
    figures = Path("paper_figures/checker")
    for name in ("accuracy_vs_compute.png", "ponder_maps_checkerboard.png", "layer_activity.png"):
        assert (figures / name).is_file(), name
    assert "| checkerboard | 0.5 | 1 |" in (figures / "summary_table.md").read_text()


def test_an_installed_package_adds_its_methods_through_an_entry_point(monkeypatch):
    """`[project.entry-points."pag.methods"]` modules are imported when the registry is first
    read, so every process the pipeline starts knows their methods."""

    class EntryPoint:  # what importlib.metadata returns for a declared module
        def load(self):
            registry.register(CHECKERBOARD)

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(
        registry,
        "entry_points",
        lambda group: [EntryPoint()] if group == registry.ENTRY_POINT_GROUP else [],
    )
    try:
        assert "checkerboard" in registry.names()
        assert registry.get("checkerboard").budget.check("checkerboard", 0.25, 8) == 0.25
    finally:
        registry.unregister(CHECKERBOARD.name)


def test_the_registry_describes_the_papers_roles_once():
    assert registry.baseline().name == "dense"
    assert registry.reference().name == "dense_ft"
    assert registry.names()[:2] == ["dense", "dense_ft"]
    with pytest.raises(PagError, match=r"unknown method 'pagg'; expected one of \['dense'"):
        registry.get("pagg")
    with pytest.raises(PagError, match="registered twice"):
        registry.register(Method("pag", Style("Other", "#000000", "o", "-")))
