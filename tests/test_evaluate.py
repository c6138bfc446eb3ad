"""`pag evaluate`: metrics.json schema, MACs and activity, determinism, saved samples, and bad
input giving one clear error with nothing written."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pag.data.synthetic import SynthParams, generate
from pag.errors import PagError
from pag.metrics import DEPTH_KEYS, NORMAL_KEYS
from pag.training import checkpoint, load_run_params, train
from pag.training.evaluate import evaluate

TASKS = {"semantic": 10, "boundary": None, "depth": None, "normals": None}
BASE = {
    "name": "eval_run",
    "dataset": "synthetic",
    "tasks": TASKS,
    "input_size": [40, 56],
    "model": {"depth": 26, "width_multiplier": 0.125, "head_hidden": 8},
    "method": "dense",
    "training": {"epochs": 1, "batch_size": 4, "lr": 0.01, "log_every": 1000},
    "seed": 3,
    "threads": 1,
}
BLOCKS = [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]  # ResNet-26: 2 per stage


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """20 synthetic images at 48 x 64: 16 train, 2 val (indices 8 and 18), 2 test."""
    root = tmp_path_factory.mktemp("data")
    generate(root / "synthetic", 20, SynthParams(seed=0, height=48, width=64), progress=False)
    return root


def trained(tmp: Path, data_root: Path, method: str, budget=None) -> Path:
    raw = {**BASE, "method": method, "budget": budget}
    path = tmp / f"{method}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_dir = tmp / method
    train(load_run_params(path), run_dir, data_root=data_root, stream=io.StringIO(), tty=False)
    return run_dir


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory, data_root):
    return trained(tmp_path_factory.mktemp("runs"), data_root, "dense")


@pytest.fixture(scope="module")
def pag_run(tmp_path_factory, data_root):
    return trained(tmp_path_factory.mktemp("runs"), data_root, "pag", 0.5)


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run without its evaluation outputs."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("eval_*"))
    return dest


def strict_json(path: Path) -> dict:
    def refuse(token):
        raise AssertionError(f"{path} holds {token}, not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_dense_metrics_schema(tmp_path, dense_run, data_root):
    run_dir = copy_run(dense_run, tmp_path / "run")
    result = evaluate(run_dir, "val", data_root=data_root)
    saved = strict_json(run_dir / "eval_val" / "metrics.json")
    assert saved == result
    assert result["split"] == "val" and result["num_images"] == 2
    assert result["method"] == "dense" and result["budget"] is None
    assert set(result) >= {"split", "num_images", "macs", "activity", "method", "budget", *TASKS}
    semantic = result["semantic"]
    assert {"miou", "pixel_acc", "mean_acc", "iou_per_class"} <= set(semantic)
    assert len(semantic["iou_per_class"]) == TASKS["semantic"]
    assert 0 <= semantic["pixel_acc"] <= 1
    assert set(DEPTH_KEYS) <= set(result["depth"]) and result["depth"]["num_images"] == 2
    assert set(NORMAL_KEYS) == set(result["normals"])
    assert 0 <= result["normals"]["mean"] <= 180
    boundary = result["boundary"]
    assert all(0 <= boundary[k] <= 1 for k in ("ods", "ois", "ap"))
    assert boundary["pr_curve"]["num_images"] == 2
    macs = result["macs"]
    assert macs["unit"] == "MACs per image" and isinstance(macs["dense"], float)
    assert macs["dense"] > 0 and macs["effective"] == macs["dense"]
    assert macs["effective_std"] == 0.0
    assert result["activity"] == {}


def test_pag_activity_and_closed_gates_lower_effective_macs(tmp_path, pag_run, data_root):
    open_result = evaluate(copy_run(pag_run, tmp_path / "open"), "val", data_root=data_root)
    assert set(open_result["activity"]) == set(BLOCKS)
    assert all(0.0 <= v <= 1.0 for v in open_result["activity"].values())
    assert open_result["macs"]["effective"] <= open_result["macs"]["dense"]

    closed = copy_run(pag_run, tmp_path / "closed")
    final = closed / "checkpoints" / "final.pt"
    weights = checkpoint.model_weights(final)
    for key in [k for k in weights if k.endswith("gate.conv.bias")]:
        weights[key] = torch.tensor([50.0, -50.0])  # skip logit always wins
    for key in [k for k in weights if k.endswith("gate.conv.weight")]:
        weights[key] = torch.zeros_like(weights[key])
    checkpoint.save(final, {**checkpoint.load(final), "model": weights})  # provenance kept
    result = evaluate(closed, "val", data_root=data_root)
    assert result["activity"] == dict.fromkeys(BLOCKS, 0.0)
    assert result["macs"]["effective"] < 0.9 * result["macs"]["dense"]
    assert result["macs"]["effective"] < open_result["macs"]["effective"]


def test_two_evaluations_are_identical(tmp_path, pag_run, data_root):
    run_dir = copy_run(pag_run, tmp_path / "run")
    first = evaluate(run_dir, "val", data_root=data_root, out=tmp_path / "a.json")
    samples = run_dir / "eval_val" / "samples.npz"
    arrays = dict(np.load(samples))
    second = evaluate(run_dir, "val", data_root=data_root, out=tmp_path / "b.json")
    assert first == second
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    again = np.load(samples)
    assert sorted(again.files) == sorted(arrays)
    for key, value in arrays.items():
        assert np.array_equal(again[key], value), key
    assert not (run_dir / "eval_val" / "metrics.json").exists()  # --out was used


def test_samples_npz_contents(tmp_path, pag_run, data_root):
    run_dir = copy_run(pag_run, tmp_path / "run")
    evaluate(run_dir, "val", data_root=data_root, save=1)
    saved = np.load(run_dir / "eval_val" / "samples.npz")
    ids = saved["ids"].tolist()
    assert len(ids) == 1
    sid = ids[0]
    expected = {
        "image": (np.uint8, (48, 64, 3)),
        "semantic": (np.uint8, (48, 64)),
        "depth": (np.float16, (48, 64)),
        "normals": (np.float16, (48, 64, 3)),
        "boundary": (np.uint8, (48, 64)),
        "ponder": (np.float16, (48, 64)),
    }
    for name, (dtype, shape) in expected.items():
        value = saved[f"{sid}/{name}"]
        assert value.dtype == dtype and value.shape == shape, name
    gates = sorted(k.split("/gate/")[1] for k in saved.files if "/gate/" in k)
    assert gates == BLOCKS
    assert saved[f"{sid}/semantic"].max() < TASKS["semantic"]
    assert float(saved[f"{sid}/ponder"].max()) <= len(BLOCKS)
    assert saved[f"{sid}/depth"].min() > 0
    assert set(saved.files) == {"ids"} | {f"{sid}/{n}" for n in expected} | {
        f"{sid}/gate/{b}" for b in BLOCKS
    }

    none = copy_run(pag_run, tmp_path / "none")
    evaluate(none, "val", data_root=data_root, save=0)
    assert not (none / "eval_val" / "samples.npz").exists()
    assert (none / "eval_val" / "metrics.json").is_file()


def test_bad_input_raises_and_writes_nothing(tmp_path, dense_run, data_root):
    with pytest.raises(PagError, match="run directory not found"):
        evaluate(tmp_path / "missing", "val", data_root=data_root)
    assert not (tmp_path / "missing").exists()

    unknown = copy_run(dense_run, tmp_path / "unknown")
    with pytest.raises(PagError, match="no split 'nope'"):
        evaluate(unknown, "nope", data_root=data_root)
    assert not (unknown / "eval_nope").exists()

    unfinished = copy_run(dense_run, tmp_path / "unfinished")
    (unfinished / "checkpoints" / "final.pt").unlink()
    with pytest.raises(PagError, match="run not finished"):
        evaluate(unfinished, "val", data_root=data_root)
    assert not (unfinished / "eval_val").exists()


def test_cli_writes_metrics_and_reports_errors_in_one_line(tmp_path, dense_run, data_root):
    run_dir = copy_run(dense_run, tmp_path / "run")
    out = tmp_path / "m.json"
    command = [sys.executable, "-m", "pag", "evaluate", "--run", str(run_dir)]
    command += ["--split", "val", "--data-root", str(data_root), "--out", str(out)]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["num_images"] == 2
    assert strict_json(out)["macs"]["dense"] > 0

    (run_dir / "checkpoints" / "final.pt").unlink()
    shutil.rmtree(run_dir / "eval_val")
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "run not finished" in lines[0]
    assert not (run_dir / "eval_val").exists()


def test_sampled_gates_evaluation_and_extra_rules(tmp_path, pag_run, data_root):
    """With gates at p = sigmoid(0.4) ~ 0.60 everywhere, the argmax computes everywhere while
    one Gumbel-max sample per position computes at about 60 % of them; the evaluation
    repeats itself exactly under the run's seed, and each extra rule gets its own pass."""
    run_dir = copy_run(pag_run, tmp_path / "run")
    final = run_dir / "checkpoints" / "final.pt"
    weights = checkpoint.model_weights(final)
    for key in [k for k in weights if k.endswith("gate.conv.bias")]:
        weights[key] = torch.tensor([0.0, 0.4])
    for key in [k for k in weights if k.endswith("gate.conv.weight")]:
        weights[key] = torch.zeros_like(weights[key])
    checkpoint.save(final, {**checkpoint.load(final), "model": weights})  # provenance kept
    sampled = evaluate(
        run_dir,
        "val",
        data_root=data_root,
        out=tmp_path / "a.json",
        gate_rule="sample",
        gate_rules=("hard", "open"),
    )
    again = evaluate(
        run_dir,
        "val",
        data_root=data_root,
        out=tmp_path / "b.json",
        gate_rule="sample",
        gate_rules=("hard", "open"),
    )
    assert sampled == again
    assert sampled["gate_rule"] == "sample"
    mean = sum(sampled["activity"].values()) / len(sampled["activity"])
    assert abs(mean - 1 / (1 + np.exp(-0.4))) < 0.05
    assert sampled["gate_rules"]["hard"]["activity_mean"] == 1.0
    assert sampled["gate_rules"]["open"]["activity_mean"] == 1.0
    assert sampled["macs"]["effective"] < 0.95 * sampled["macs"]["dense"]
    ratio = sampled["compute_allocation"]["ratio"]
    assert abs(ratio - 1.0) < 0.1  # gates that ignore the image spend alike everywhere


def test_gate_rules_are_refused_for_methods_without_gates(tmp_path, dense_run, data_root):
    run_dir = copy_run(dense_run, tmp_path / "run")
    with pytest.raises(PagError, match="need a model with gates"):
        evaluate(run_dir, "val", data_root=data_root, gate_rule="sample")
    with pytest.raises(PagError, match="unknown gate rules"):
        evaluate(run_dir, "val", data_root=data_root, gate_rules=("soft",))
    assert not (run_dir / "eval_val").exists()
