"""`pag train`: validated run params, exact determinism, resume after SIGKILL, fine-tuning from
a dense checkpoint, NaN stops, and the run directory's files."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pag.data.synthetic import SynthParams, generate
from pag.errors import PagError
from pag.models import losses
from pag.training import checkpoint, load_run_params, train
from pag.training.data import epoch_batches

ALL_TASKS = {"semantic": 10, "boundary": None, "depth": None, "normals": None}
BASE = {
    "name": "test_run",
    "dataset": "synthetic",
    "tasks": ALL_TASKS,
    "input_size": [40, 56],  # smaller than the 48 x 64 images: crops are random
    "model": {"depth": 26, "width_multiplier": 0.125, "head_hidden": 8},
    "method": "dense",
    "training": {
        "epochs": 3,
        "batch_size": 2,
        "lr": 0.01,
        "checkpoint_every": 2,
        "log_every": 1000,
    },
    "seed": 3,
    "threads": 1,
}
TRAIN_KEYS = {"loss", "budget", "grad_norm", *ALL_TASKS}  # dense: no decision parameters


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """16 synthetic images at 48 x 64 (14 in the train split: 7 steps per epoch)."""
    root = tmp_path_factory.mktemp("data")
    generate(root / "synthetic", 16, SynthParams(seed=0, height=48, width=64), progress=False)
    return root


def write_params(path: Path, changes: dict | None = None, training: dict | None = None) -> Path:
    raw = {**BASE, **(changes or {})}
    raw["training"] = {**BASE["training"], **(training or {})}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(tmp, name, data_root, changes=None, training=None) -> tuple[Path, dict]:
    params = load_run_params(write_params(tmp / f"{name}.yaml", changes, training))
    run_dir = tmp / name
    metrics = train(params, run_dir, data_root=data_root, stream=io.StringIO(), tty=False)
    return run_dir, metrics


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.model_weights(run_dir / "checkpoints" / "final.pt")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "images_per_s"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """An uninterrupted dense run: the reference for determinism, resumption and fine-tuning."""
    return run(tmp_path_factory.mktemp("reference"), "dense", data_root)


def test_two_runs_are_bit_identical(tmp_path, data_root, reference):
    ref_dir, ref_metrics = reference
    run_dir, metrics = run(tmp_path, "again", data_root)
    assert_same_weights(final_weights(ref_dir), final_weights(run_dir))
    assert without_timing(metrics) == without_timing(ref_metrics)
    saved = json.loads((run_dir / "train_metrics.json").read_text())
    ref_saved = json.loads((ref_dir / "train_metrics.json").read_text())
    # the file the pipeline tracks is byte for byte the same: timings live in timing.json
    assert (run_dir / "train_metrics.json").read_bytes() == (
        ref_dir / "train_metrics.json"
    ).read_bytes()
    assert "images_per_s" not in saved and saved == without_timing(ref_metrics) == ref_saved
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["images_per_s"] == metrics["images_per_s"] > 0 and timing["images"] == 21 * 2
    assert metrics["steps"] == 21 and metrics["epochs"] == 3 and metrics["images_per_s"] > 0
    assert set(metrics["train"]) == TRAIN_KEYS and metrics["train"]["budget"] == 0.0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]


def test_a_finished_run_of_an_older_layout_is_adopted_not_trained_again(
    tmp_path, data_root, reference, caplog
):
    """Older pag wrote a run's training metrics as `metrics.json`: such a run directory is
    still a run directory, its metrics are renamed `train_metrics.json`, and the finished run
    is found finished (its weights untouched); a `metrics.json` that is not training metrics
    (an evaluation's) is still another command's file."""
    ref_dir, _ = reference
    old = tmp_path / "old"
    shutil.copytree(ref_dir, old)
    (old / "train_metrics.json").rename(old / "metrics.json")
    final = (old / "checkpoints" / "final.pt").read_bytes()
    params = load_run_params(write_params(tmp_path / "dense.yaml"))
    metrics = train(params, old, data_root=data_root, stream=io.StringIO(), tty=False)
    assert without_timing(metrics) == json.loads((ref_dir / "train_metrics.json").read_text())
    assert (
        metrics["images_per_s"] == json.loads((ref_dir / "timing.json").read_text())["images_per_s"]
    )
    assert not (old / "metrics.json").exists() and (old / "train_metrics.json").is_file()
    assert (old / "checkpoints" / "final.pt").read_bytes() == final
    assert "renamed metrics.json to train_metrics.json" in caplog.text

    (old / "metrics.json").write_text(json.dumps({"split": "val"}))
    with pytest.raises(
        PagError, match=r"holds files that are not a training run's \(metrics.json\)"
    ):
        train(params, old, data_root=data_root, stream=io.StringIO(), tty=False)


def test_data_order_and_augmentation_depend_only_on_seed_epoch_index():
    assert epoch_batches(14, 2, 3, 0) == epoch_batches(14, 2, 3, 0)
    assert epoch_batches(14, 2, 3, 0) != epoch_batches(14, 2, 3, 1)
    assert len(epoch_batches(15, 2, 3, 0)) == 7  # the incomplete batch is dropped


@pytest.mark.parametrize(
    ("changes", "training", "min_step"),
    [
        ({}, None, 1),  # dense, killed early in the first epoch
        # a gated run draws Gumbel noise, so its random states must be restored; killed at an
        # epoch boundary or later (7 steps per epoch), where the temperature changes; 8 epochs,
        # so that the kill lands before the end however fast the machine trains
        ({"method": "pag", "budget": 0.5}, {"epochs": 8}, 14),
    ],
    ids=["dense-early", "pag-late"],
)
def test_resume_after_sigkill_matches_an_uninterrupted_run(
    tmp_path, data_root, reference, changes, training, min_step
):
    if changes:
        ref_dir, ref_metrics = run(tmp_path, "ref", data_root, changes, training)
    else:
        ref_dir, ref_metrics = reference
    total_steps = 7 * (training or {}).get("epochs", 3)
    params = write_params(tmp_path / "p.yaml", changes, training)
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "pag", "train", "--params", str(params), "--out", str(run_dir)]
    command += ["--data-root", str(data_root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = run_dir / "checkpoints" / "last.pt"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not last.exists() or checkpoint.load(last)["state"]["step"] < min_step:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"no checkpoint of step {min_step} within 60 s"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = checkpoint.load(last)["state"]["step"]
    assert min_step <= killed_at < total_steps and not (run_dir / "train_metrics.json").exists()

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    assert_same_weights(final_weights(ref_dir), final_weights(run_dir))
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert without_timing(metrics) == without_timing(ref_metrics)
    # a third start finds the run complete and changes nothing
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert (
        again.returncode == 0
        and json.loads((run_dir / "train_metrics.json").read_text()) == metrics
    )


ADDED_BY = {"pag": "gate.", "mp_pag": "multipool.", "layer_skip": "gate.", "sact": "halting."}


@pytest.mark.parametrize(
    ("method", "budget"),
    [
        ("pag", 0.5),
        ("mp_pag", None),
        ("multipool_avg", None),
        ("truncation", 5),
        ("layer_skip", 0.5),
        ("sact", 0.01),
    ],
)
def test_fine_tuning_from_a_dense_checkpoint(
    tmp_path, data_root, reference, monkeypatch, method, budget
):
    import pag.models

    loaded = []
    original = pag.models.load_dense_weights

    def spy(model, state):
        loaded.append(original(model, state))
        return loaded[-1]

    monkeypatch.setattr(pag.models, "load_dense_weights", spy)
    init = reference[0] / "checkpoints" / "final.pt"
    changes = {"method": method, "budget": budget, "init_from": str(init)}
    run_dir, metrics = run(tmp_path, method, data_root, changes, {"epochs": 1})
    assert len(loaded) == 1
    if method in ADDED_BY:  # what the method adds keeps its initialisation
        assert loaded[0]["missing"]
        assert all(ADDED_BY[method] in key for key in loaded[0]["missing"])
    if method == "truncation":  # the dropped blocks' weights are skipped
        assert any(key.startswith("trunk.layer4") for key in loaded[0]["skipped"])
    recorded = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert recorded["init_from"] == str(init.absolute()) and recorded["method"] == method
    train_metrics = metrics["train"]
    tasks = sum(train_metrics[t] for t in ALL_TASKS)
    assert train_metrics["loss"] == pytest.approx(tasks + train_metrics["budget"], rel=1e-5)
    if method in ("pag", "layer_skip", "sact"):
        assert train_metrics["budget"] > 0  # the budget loss is part of the objective
    assert metrics["method"] == method and metrics["budget"] == budget


def test_nan_stops_naming_step_and_term_and_keeps_the_last_checkpoint(
    tmp_path, data_root, monkeypatch
):
    calls = []
    depth_loss = losses.LOSSES["depth"]

    def poisoned(pred, target):
        calls.append(1)
        value = depth_loss(pred, target)
        return value * float("nan") if len(calls) == 5 else value

    monkeypatch.setitem(losses.LOSSES, "depth", poisoned)
    with pytest.raises(PagError, match=r"^step 5: loss term 'depth' is nan$"):
        run(tmp_path, "nan", data_root)
    last = tmp_path / "nan" / "checkpoints" / "last.pt"
    assert checkpoint.load(last)["state"]["step"] == 4
    assert not (tmp_path / "nan" / "train_metrics.json").exists()
    assert not list(last.parent.glob(".*.tmp"))
    # without the poison, the same command resumes from step 4 and finishes
    monkeypatch.setitem(losses.LOSSES, "depth", depth_loss)
    _, metrics = run(tmp_path, "nan", data_root)
    assert metrics["steps"] == 21


@pytest.mark.parametrize(
    ("changes", "training", "message"),
    [
        ({"learning_rate": 0.1}, None, r"learning_rate: Extra inputs are not permitted"),
        (None, {"warmup": 3}, r"training.warmup: Extra inputs are not permitted"),
        (None, {"epochs": "many"}, r"training.epochs: Input should be a valid integer"),
        ({"seed": [1]}, None, r"seed: Input should be a valid integer"),
        ({"init_from": "nowhere/final.pt"}, None, r"init_from: checkpoint .*nowhere/final.pt"),
        ({"method": "pag", "budget": 1.5}, None, r"budget 1.5 outside the range for 'pag'"),
        ({"method": "pag"}, None, r"method 'pag' needs a finite numeric budget"),
        ({"method": "dense", "budget": 0.5}, None, r"has no budget knob"),
        ({"dataset": "imagenet"}, None, r"dataset: unknown dataset 'imagenet'"),
        (None, {"loss_weights": {"edges": 1}}, r"\['edges'\] are not among the tasks"),
    ],
)
def test_bad_params_give_one_clear_error_and_write_nothing(
    tmp_path, data_root, changes, training, message
):
    path = write_params(tmp_path / "bad.yaml", changes, training)
    with pytest.raises(PagError, match=message) as error:
        params = load_run_params(path)
        train(params, tmp_path / "run", data_root=data_root, stream=io.StringIO())
    assert str(error.value).startswith(f"{path}: ")
    assert not (tmp_path / "run").exists()


def test_missing_data_and_other_params_for_an_existing_run_are_refused(
    tmp_path, data_root, reference
):
    params = load_run_params(write_params(tmp_path / "p.yaml"))
    with pytest.raises(PagError, match="not found"):
        train(params, tmp_path / "run", data_root=tmp_path / "empty", stream=io.StringIO())
    assert not (tmp_path / "run").exists()
    ref_dir = reference[0]
    before = {p: p.stat().st_mtime_ns for p in ref_dir.rglob("*")}
    other = load_run_params(write_params(tmp_path / "q.yaml", {"seed": 4}, {"lr": 0.02}))
    with pytest.raises(PagError, match=r"other params \(seed, training.lr differ"):
        train(other, ref_dir, data_root=data_root, stream=io.StringIO())
    assert {p: p.stat().st_mtime_ns for p in ref_dir.rglob("*")} == before


def test_cli_trains_the_tiny_example_end_to_end(tmp_path, data_root):
    example = Path(__file__).resolve().parent.parent / "params" / "examples" / "tiny_run.yaml"
    run_dir = tmp_path / "tiny"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PAG_DATA": str(data_root)}
    command = [sys.executable, "-m", "pag", "train", "--params", str(example)]
    done = subprocess.run(
        [*command, "--out", str(run_dir)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 6  # 14 images, batches of 4, 2 epochs
    assert re.search(r"^epoch 2 step 1/3 loss [\d.]+ [\d.]+ img/s$", done.stderr, re.M)
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert params["training"]["temperature"]["decay"] == 0.03 and params["data_root"] is None
    assert load_run_params(run_dir / "params.yaml").digest() == load_run_params(example).digest()
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert set(metrics) >= {"train", "steps", "epochs", "history"}
    assert json.loads((run_dir / "timing.json").read_text())["images_per_s"] > 0
    assert set(metrics["train"]) == TRAIN_KEYS
    assert all(isinstance(v, float) for v in metrics["train"].values())
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert set(last) >= {"model", "optimizer", "scheduler", "state", "rng", "params_hash"}
    assert last["state"]["step"] == 6 and last["state"]["epoch"] == 2
    assert final_weights(run_dir).keys() == last["model"].keys()

    bad = subprocess.run(
        [*command, "--out", str(tmp_path / "x"), "--init-from", str(tmp_path / "no.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == (
        f"error: {example}: init_from: checkpoint {tmp_path / 'no.pt'} not found"
    )
    assert not (tmp_path / "x").exists()


def test_threads_come_from_params_or_environment_and_never_exceed_the_cores(monkeypatch):
    from pag.training.run_params import resolve_threads

    cores = min(os.cpu_count() or 1, len(os.sched_getaffinity(0)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(None) == 1
    assert resolve_threads(10_000) == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "10000")
    assert resolve_threads(None) == cores
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert resolve_threads(None) == cores


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere():
    from pag.training.progress import Progress

    outputs = {}
    for tty in (True, False):
        stream = io.StringIO()
        progress = Progress(epochs=1, steps_per_epoch=4, log_every=2, stream=stream, tty=tty)
        progress.start_epoch(0, 0)
        for step in range(1, 5):
            progress.step(step, step, images=2, loss=1.5)
        progress.end_epoch({"loss": 1.5})
        outputs[tty] = stream.getvalue()
    assert "epoch 1/1" in outputs[True] and "img_s=" in outputs[True]
    lines = outputs[False].splitlines()
    assert re.fullmatch(r"epoch 1 step 2/4 loss 1.5 [\d.]+ img/s", lines[0])
    assert lines[-1] == "epoch 1/1 done: loss 1.5"
