"""The summary collects every run's evaluation exactly, and refuses to leave one out."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from pag.errors import PagError
from pag.pipeline.plan import evaluation_settings, load_plan, parse_run
from pag.pipeline.summary import HEADLINE, SUMMARY_COLUMNS, expected_params, summarize


def fake_evaluation(plan, run, effective):
    """An evaluation of `run` as the profile asks for it now (params hash, split, rules)."""
    settings = evaluation_settings(plan.profile, run)
    return {
        "split": settings["split"],
        "gate_rule": settings["gate_rule"],
        "params_hash": expected_params(plan, run).digest(),
        "method": run.method,
        "budget": run.budget,
        "semantic": {"miou": 0.5, "pixel_acc": 0.75, "iou_per_class": [0.5, 0.5]},
        "boundary": {"ods": 0.25, "ois": 0.3, "ap": 0.1, "nms": False, "pr_curve": {}},
        "depth": {"abs_rel": 0.2, "rmse": 0.5, "delta1": 0.6, "num_images": 6},
        "normals": {"mean": 30.0, "within_11_25": None},
        "macs": {"dense": 200.0, "effective": effective, "effective_std": 0.0},
        "gate_rules": {rule: {"activity_mean": 1.0} for rule in settings["gate_rules"]},
    }


def write_results(plan, root):
    effective = {}
    for index, run in enumerate(plan.runs()):
        effective[run.name] = 100.0 if run.method == "dense" else 50.0 + index
        path = root / f"results/tiny/runs/{run.name}/metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fake_evaluation(plan, run, effective[run.name])))
        train = root / f"runs/tiny/{run.name}/train_metrics.json"
        train.parent.mkdir(parents=True, exist_ok=True)
        digest = expected_params(plan, run).digest()
        history = [{"epoch": 1, "train": {"loss": 1.0}}]
        train.write_text(json.dumps({"history": history, "params_hash": digest}))
        samples = root / f"runs/tiny/{run.name}/eval_val/samples.npz"
        samples.parent.mkdir(parents=True, exist_ok=True)
        samples.write_bytes(f"samples of {run.name}".encode())
    return effective


@pytest.fixture
def tiny_results(tmp_path):
    plan = load_plan("tiny")
    return plan, tmp_path, write_results(plan, tmp_path)


def test_summary_rows_columns_and_values(tiny_results):
    plan, root, effective = tiny_results
    paths = summarize(plan, root)
    assert [p.name for p in paths[:3]] == ["summary.csv", "headline.json", "curves.csv"]
    # each run's headline, training history and (its method's lowest seed) saved samples,
    # committed beside its evaluation: dvc metrics show, training curves and image figures
    names = [run.name for run in plan.runs()]
    headlines = [root / f"results/tiny/runs/{name}/headline.json" for name in names]
    histories = [root / f"results/tiny/runs/{name}/history.json" for name in names]
    samples = [root / f"results/tiny/runs/{name}/samples.npz" for name in names]
    assert paths[3:] == headlines + histories + samples  # one seed: every run is drawn
    assert samples[4].read_bytes() == f"samples of {names[4]}".encode()
    history = json.loads(histories[0].read_text())
    assert history["run"] == "dense-s0" and history["history"] == [
        {"epoch": 1, "train": {"loss": 1.0}}
    ]
    rows = list(csv.DictReader((root / "results/tiny/summary.csv").read_text().splitlines()))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    # 9 runs x (2 semantic + 3 boundary + 3 depth + 2 normals) scalar metrics
    assert len(rows) == 9 * 10
    pag = {r["metric"]: r for r in rows if r["run"] == "pag-0.5-s0"}
    assert pag["miou"]["value"] == "0.5" and pag["miou"]["budget"] == "0.5"
    assert pag["miou"]["seed"] == "0" and pag["miou"]["dataset"] == "synthetic"
    assert float(pag["rmse"]["effective_macs"]) == effective["pag-0.5-s0"]
    assert pag["within_11_25"]["value"] == ""  # NaN written as null stays empty
    assert "num_images" not in pag and "iou_per_class" not in pag and "nms" not in pag
    dense = [r for r in rows if r["run"] == "dense-s0"]
    assert {r["budget"] for r in dense} == {""}
    nested = json.loads((root / "results/tiny/headline.json").read_text())
    assert nested["pag-0.5-s0"]["macs_pct"] == pytest.approx(effective["pag-0.5-s0"])
    assert nested["dense-s0"]["semantic_miou"] == 0.5
    curves = list(csv.DictReader((root / "results/tiny/curves.csv").read_text().splitlines()))
    assert [c["run"] for c in curves] == [run.name for run in plan.runs()]
    # each run's own headline file: one flat row of numbers for `dvc metrics show`
    own = json.loads((root / "results/tiny/runs/pag-0.5-s0/headline.json").read_text())
    assert own == {
        k: v for k, v in nested["pag-0.5-s0"].items() if k not in ("budget", "allocation_ratio")
    }
    assert all(isinstance(v, float) for v in own.values() if v is not None)
    assert set(json.loads((root / "results/tiny/runs/dense-s0/headline.json").read_text())) == {
        "macs_pct",
        *(f"{task}_{m}" for task in plan.profile.tasks for m in HEADLINE[task]),
    }
    assert float(curves[0]["macs_pct"]) == 100.0 and curves[0]["depth_rmse"] == "0.5"


def test_a_missing_or_mismatched_evaluation_is_an_error(tiny_results):
    plan, root, _ = tiny_results
    path = root / "results/tiny/runs/sact-0.01-s0/metrics.json"
    data = json.loads(path.read_text())
    data["budget"] = 0.05
    path.write_text(json.dumps(data))
    with pytest.raises(PagError, match=r"sact-0.01-s0/metrics.json: evaluates method 'sact'"):
        summarize(plan, root)
    path.unlink()
    with pytest.raises(PagError, match=r"sact-0.01-s0/metrics.json: no evaluation of run"):
        summarize(plan, root)
    assert not (root / "results/tiny/summary.csv").exists()  # nothing half-written


def test_trivial_predictors_fit_constants_by_hand():
    import numpy as np
    import torch

    from pag.pipeline.trivial import fit, predictions

    def sample(labels, depth, normal):
        normals = torch.zeros(3, 2, 2)
        normals[:, 0, :] = torch.tensor(normal)[:, None]  # second row invalid (all zero)
        return {
            "semantic": torch.tensor(labels),
            "depth": torch.tensor(depth),
            "normals": normals,
        }

    dataset = [
        sample([[1, 1], [0, 255]], [[1.0, 0.0], [2.0, 3.0]], [0.0, 0.0, -1.0]),
        sample([[1, 2], [2, 2]], [[4.0, 0.0], [0.0, 0.0]], [0.0, 1.0, 0.0]),
    ]
    tasks = {"semantic": 3, "depth": None, "normals": None, "boundary": None}
    constants = fit(dataset, tasks)
    # class counts: 0 -> 1, 1 -> 3, 2 -> 3 (255 ignored): the first most frequent wins
    assert constants["semantic"] == 1
    assert constants["depth"] == pytest.approx((1 + 2 + 3 + 4) / 4)  # zeros are invalid
    expected = np.array([0.0, 2.0, -2.0]) / np.sqrt(8)
    assert constants["normals"] == pytest.approx(expected.tolist())
    maps = predictions(constants, 3, 5)
    assert maps["semantic"].shape == (3, 5) and (maps["semantic"] == 1).all()
    assert maps["normals"].shape == (3, 3, 5) and maps["boundary"].max() == 0.5


def test_compute_allocation_gate_rules_and_gradient_norms_reach_the_summary(tmp_path):
    profile = yaml.safe_load(Path("params/tiny.yaml").read_text())
    profile["evaluation"]["gate_rules"] = ["open"]
    (tmp_path / "params").mkdir()
    (tmp_path / "params/tiny.yaml").write_text(yaml.safe_dump(profile))
    plan, root = load_plan(tmp_path / "params/tiny.yaml"), tmp_path
    write_results(plan, root)
    path = root / "results/tiny/runs/pag-0.5-s0/metrics.json"
    data = json.loads(path.read_text())
    data["activity"] = {"layer1.0": 0.4, "layer1.1": 0.6}
    data["compute_allocation"] = {"near_boundary": 6.0, "far_from_boundary": 4.0, "ratio": 1.5}
    closed = root / "results/tiny/runs/random_gate-0.5-s0/metrics.json"
    gates_shut = json.loads(closed.read_text())
    gates_shut["compute_allocation"] = {
        "near_boundary": 0.0,
        "far_from_boundary": 0.0,
        "ratio": None,
    }
    closed.write_text(json.dumps(gates_shut))
    data["gate_rules"] = {"open": {"semantic": {"miou": 0.25}, "activity_mean": 1.0}}
    path.write_text(json.dumps(data))
    train = root / "runs/tiny/pag-0.5-s0/train_metrics.json"
    train.parent.mkdir(parents=True, exist_ok=True)
    history = [
        {"train": {"grad_norm": 2.0, "decision_grad_norm": 1.0}, "train_max": {"grad_norm": 9.0}},
        {"train": {"grad_norm": 3.0, "decision_grad_norm": 0.5}, "train_max": {"grad_norm": 4.0}},
    ]
    digest = expected_params(plan, parse_run(plan.profile, "pag-0.5-s0")).digest()
    train.write_text(json.dumps({"history": history, "params_hash": digest}))
    summarize(plan, root)
    rows = list(csv.DictReader((root / "results/tiny/summary.csv").read_text().splitlines()))
    mine = {(r["task"], r["metric"]): r["value"] for r in rows if r["run"] == "pag-0.5-s0"}
    assert mine["compute", "activity"] == "0.5"
    assert mine["compute", "allocation_ratio"] == "1.5"
    assert mine["compute", "near_boundary"] == "6.0"
    assert mine["semantic", "miou@open"] == "0.25" and mine["compute", "activity@open"] == "1.0"
    assert mine["training", "grad_norm_last_epoch"] == "3.0"
    assert mine["training", "grad_norm_max"] == "9.0"
    assert mine["training", "decision_grad_norm_last_epoch"] == "0.5"
    assert ("training", "decision_grad_norm_max") not in mine  # no step maxima recorded
    shut = {(r["task"], r["metric"]) for r in rows if r["run"] == "random_gate-0.5-s0"}
    assert ("compute", "near_boundary") in shut and ("compute", "allocation_ratio") not in shut
    curves = list(csv.DictReader((root / "results/tiny/curves.csv").read_text().splitlines()))
    pag = next(c for c in curves if c["run"] == "pag-0.5-s0")
    assert pag["activity"] == "0.5" and pag["allocation_ratio"] == "1.5"
    assert "grad_norm_max" not in pag
