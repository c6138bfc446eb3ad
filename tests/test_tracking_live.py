"""MLflow as live tracking (`pag.tracking.LiveTrainingRun`, parent runs of the pipelines):
a training job is an MLflow run while it trains, evaluation arrays are artifacts rather than
metrics, jobs nest under their pipeline invocation, and tracking never changes a result."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_tracking
import torch
from faults import make_synthetic, write_run_params
from test_tracking import client, runs_of, write_train_run

from pag import tracking
from pag.training import load_run_params, train
from pag.training.observer import NO_OBSERVER, TrainingObserver

# test_tracking's temporary stores (pytest finds fixtures by their module-level names)
migrated_db = test_tracking.migrated_db
store = test_tracking.store
PAG = {"method": "pag", "budget": 0.5}
TRAINING = {"epochs": 2, "log_every": 2, "checkpoint_every": 4}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("data"))


def params_of(tmp_path: Path, **training):
    path = write_run_params(tmp_path / "run.yaml", PAG, {**TRAINING, **training})
    return load_run_params(path)


class Recorder(TrainingObserver):
    """Remembers the calls, and passes them on."""

    def __init__(self, inner: TrainingObserver = NO_OBSERVER):
        self.inner, self.calls = inner, []

    def on_start(self, start):
        self.started = time.time()
        self.calls.append(("start", start.resumed_step))
        self.inner.on_start(start)

    def on_step(self, step, values, lr, temperature):
        self.calls.append(("step", step))
        self.inner.on_step(step, values, lr, temperature)

    def on_epoch(self, record):
        self.calls.append(("epoch", record["epoch"]))
        self.inner.on_epoch(record)

    def on_end(self, metrics):
        self.ended = time.time()
        self.calls.append(("end", None))
        self.inner.on_end(metrics)


def run_train(params, run_dir, data_root, observer=NO_OBSERVER):
    return train(
        params, run_dir, data_root=data_root, stream=io.StringIO(), tty=False, observer=observer
    )


def test_a_training_job_is_an_mlflow_run_while_it_trains(store, tmp_path, data_root):
    params = params_of(tmp_path)
    live = tracking.LiveTrainingRun("live")
    recorder = Recorder(live)
    metrics = run_train(params, tmp_path / "run", data_root, recorder)
    took = recorder.ended - recorder.started
    kinds = [c[0] for c in recorder.calls]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == metrics["steps"] and kinds.count("epoch") == 2
    assert kinds.index("step") < kinds.index("epoch")  # told while it trains, not at the end

    c = client(store)
    run = c.get_run(live.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run/train"
    # the run lasts as long as the training did (it is not a copy made afterwards)
    duration = (run.info.end_time - run.info.start_time) / 1000
    assert took - 0.1 <= duration <= took + 5, (duration, took)
    losses = c.get_metric_history(live.run_id, "batch.loss")
    assert [m.step for m in losses] == list(range(2, metrics["steps"] + 1, 2))
    assert len({m.timestamp for m in losses}) > 1  # logged as they happened
    assert len(c.get_metric_history(live.run_id, "batch.lr")) == len(losses)
    assert len(c.get_metric_history(live.run_id, "batch.temperature")) == len(losses)
    epochs = c.get_metric_history(live.run_id, "train.loss")
    assert sorted(m.step for m in epochs) == [1, 2]
    assert [m.value for m in sorted(epochs, key=lambda m: m.step)] == pytest.approx(
        [h["train"]["loss"] for h in metrics["history"]]
    )
    assert run.data.metrics["steps"] == metrics["steps"]

    assert run.data.params["method"] == "pag" and run.data.params["training.epochs"] == "2"
    tags = run.data.tags
    assert tags["pag.run"] == "run" and tags["pag.kind"] == "train"
    assert tags["pag.params_hash"] == params.digest()
    assert tags["mlflow.source.name"] == "pag train"
    if tracking.git_commit():
        assert tags["mlflow.source.git.commit"] == tracking.git_commit()
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "synthetic/train"
    assert metrics["provenance"]["data"].startswith(dataset.dataset.digest)

    artifacts = {a.path for a in c.list_artifacts(live.run_id)}
    assert {"params.yaml", "train_metrics.json", "checkpoints"} <= artifacts
    assert [a.path for a in c.list_artifacts(live.run_id, "checkpoints")] == [
        "checkpoints/final.pt"
    ]
    # logging the finished run again (what `pag train` does for a finished run) changes nothing
    assert tracking.log_run(tmp_path / "run", "train", "live") == live.run_id
    assert len(runs_of(store, "live")) == 1


@pytest.mark.slow
def test_tracking_changes_no_result(store, tmp_path, data_root):
    """Trained with and without the live run: the same weights and metrics, bit for bit
    (timing apart)."""
    params = params_of(tmp_path)
    plain = run_train(params, tmp_path / "plain", data_root)
    tracked = run_train(params, tmp_path / "tracked", data_root, tracking.LiveTrainingRun("x"))
    for metrics in (plain, tracked):
        metrics.pop("images_per_s")
    assert json.dumps(plain, sort_keys=True) == json.dumps(tracked, sort_keys=True)
    a = torch.load(tmp_path / "plain/checkpoints/final.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "tracked/checkpoints/final.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Interrupt(TrainingObserver):
    def on_epoch(self, record):
        raise KeyboardInterrupt


class Both(Recorder):
    def __init__(self, live, stop):
        super().__init__(live)
        self.stop = stop

    def on_epoch(self, record):
        super().on_epoch(record)
        self.stop.on_epoch(record)


def test_a_resumed_training_continues_its_mlflow_run(store, tmp_path, data_root):
    params = params_of(tmp_path, checkpoint_every=1)
    first = tracking.LiveTrainingRun("resume")
    with pytest.raises(KeyboardInterrupt):
        run_train(params, tmp_path / "run", data_root, Both(first, Interrupt()))
    first.abort("KILLED")
    assert client(store).get_run(first.run_id).info.status == "KILLED"
    second = tracking.LiveTrainingRun("resume")
    recorder = Recorder(second)
    run_train(params, tmp_path / "run", data_root, recorder)
    assert recorder.calls[0][1] > 0  # resumed
    assert second.run_id == first.run_id
    run = client(store).get_run(second.run_id)
    assert run.info.status == "FINISHED"
    history = client(store).get_metric_history(run.info.run_id, "train.loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert len(runs_of(store, "resume")) == 1


def test_a_failing_store_only_warns(tmp_path, data_root, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(tracking.TRACKING_ENV, f"sqlite:///{blocker}/sub/mlflow.db")
    live = tracking.LiveTrainingRun("broken")
    with caplog.at_level(logging.WARNING, logger="pag.tracking"):
        metrics = run_train(params_of(tmp_path), tmp_path / "run", data_root, live)
    assert metrics["epochs"] == 2 and live.broken
    warned = [r for r in caplog.records if r.name == "pag.tracking" and r.levelname == "WARNING"]
    assert len(warned) == 1 and "MLflow tracking: tracking training run" in warned[0].getMessage()


def test_off_means_no_observer(monkeypatch):
    monkeypatch.setenv(tracking.ENABLE_ENV, "0")
    assert tracking.training_observer("x") is NO_OBSERVER
    assert tracking.begin_pipeline("x", "snakemake") is None
    monkeypatch.setenv(tracking.ENABLE_ENV, "1")
    assert isinstance(tracking.training_observer("x"), tracking.LiveTrainingRun)


# -- evaluation ------------------------------------------------------------------------------------


def write_evaluation(run_dir: Path) -> Path:
    points = 99
    recall = [i / points for i in range(points)]
    precision = [1 - r / 2 for r in recall]
    evaluation = {
        "split": "val",
        "semantic": {"miou": 0.42, "iou_per_class": [0.1, 0.2, 0.3]},
        "boundary": {
            "ods": 0.6,
            "ap": 0.5,
            "pr_curve": {
                "thresholds": [i / points for i in range(points)],
                "precision": precision,
                "recall": recall,
                "f": [
                    2 * p * r / (p + r) if p + r else 0.0
                    for p, r in zip(precision, recall, strict=True)
                ],
            },
        },
        "activity": [1.0, 0.5],
        "method": "pag",
        "budget": 0.5,
        "params_hash": "hash0",
    }
    out = run_dir / "eval_val" / "metrics.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(evaluation))
    return out


def test_evaluation_arrays_are_artifacts_not_metrics(store, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    write_train_run(run_dir)
    out = write_evaluation(run_dir)
    train_id = tracking.log_run(run_dir, "train", "exp")
    started = int(time.time() * 1000) - 3000
    eval_id = tracking.log_run(run_dir, "evaluate", "exp", metrics_file=out, start_time=started)
    c = client(store)
    run = c.get_run(eval_id)
    assert not [k for k in run.data.metrics if k.startswith("boundary.pr_curve")]
    assert run.data.metrics == {
        "semantic.miou": 0.42,
        "semantic.iou_per_class.0": 0.1,
        "semantic.iou_per_class.1": 0.2,
        "semantic.iou_per_class.2": 0.3,
        "boundary.ods": 0.6,
        "boundary.ap": 0.5,
        "activity.0": 1.0,
        "activity.1": 0.5,
    }
    assert run.info.start_time == started
    curves = {a.path for a in c.list_artifacts(eval_id, "curves")}
    assert curves == {"curves/boundary.pr_curve.csv", "curves/boundary.pr_curve.png"}
    local = Path(c.download_artifacts(eval_id, "curves", str(tmp_path / "dl")))
    rows = (local / "boundary.pr_curve.csv").read_text().splitlines()
    assert rows[0] == "thresholds,precision,recall,f" and len(rows) == 100
    assert (local / "boundary.pr_curve.png").read_bytes()[:4] == b"\x89PNG"
    # linked to its training
    assert run.data.tags["pag.run"] == "tiny" == c.get_run(train_id).data.tags["pag.run"]
    assert run.data.tags["pag.trained_by"] == train_id
    assert run.data.tags["mlflow.source.name"] == "pag evaluate"


def test_split_arrays():
    kept, tables = tracking.split_arrays({"a": {"x": list(range(70)), "y": 1}, "b": [1, 2]})
    assert kept == {"a": {"y": 1}, "b": [1, 2]}
    assert tables == {"a": {"x": list(range(70))}}
    assert tracking.table_csv({"x": [1, 2], "y": [0.5]}) == "x,y\n1,0.5\n2,\n"


# -- parent runs -----------------------------------------------------------------------------------


def test_snakemake_invocation_nests_its_jobs(store, tmp_path, data_root, monkeypatch):
    """As the Snakefile's onstart/onsuccess do: one parent per invocation, exported to the
    jobs through the environment; train and evaluate runs of one run are linked."""
    monkeypatch.setenv(tracking.ENABLE_ENV, "1")
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    monkeypatch.delenv(tracking.EXPERIMENT_ENV, raising=False)
    parent = tracking.begin_pipeline("profile", "snakemake")
    assert os.environ[tracking.PARENT_ENV] == parent
    assert os.environ[tracking.EXPERIMENT_ENV] == "profile"
    live = tracking.training_observer("the run's name")  # the experiment comes from the env
    run_train(params_of(tmp_path), tmp_path / "run", data_root, live)
    out = write_evaluation(tmp_path / "run")
    eval_id = tracking.track_job(tmp_path / "run", "evaluate", "the run's name", out)
    tracking.end_pipeline(ok=True)
    assert tracking.PARENT_ENV not in os.environ

    c = client(store)
    assert c.get_run(parent).info.status == "FINISHED"
    assert c.get_run(parent).data.tags["pag.front_end"] == "snakemake"
    for run_id in (live.run_id, eval_id):
        assert c.get_run(run_id).data.tags["mlflow.parentRunId"] == parent
    assert c.get_run(eval_id).data.tags["pag.trained_by"] == live.run_id
    assert {r.info.run_id for r in runs_of(store, "profile")} == {parent, live.run_id, eval_id}


def test_dvc_stages_of_one_invocation_share_a_parent(store, tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENABLE_ENV, "1")
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    marker = ["host:100:1"]
    monkeypatch.setattr(tracking.pipeline, "dvc_invocation", lambda: marker[0])
    ids = []
    for name in ("a", "b"):
        write_train_run(tmp_path / name)
        ids.append(tracking.track_job(tmp_path / name, "train", "dvcexp"))
    c = client(store)
    parents = {c.get_run(i).data.tags["mlflow.parentRunId"] for i in ids}
    assert len(parents) == 1
    (parent,) = parents
    run = c.get_run(parent)
    assert run.info.status == "FINISHED"  # ended with its last job
    assert run.data.tags["pag.front_end"] == "dvc"
    marker[0] = "host:200:5"  # the next `dvc repro`: a parent of its own
    write_train_run(tmp_path / "c")
    third = tracking.track_job(tmp_path / "c", "train", "dvcexp")
    assert c.get_run(third).data.tags["mlflow.parentRunId"] != parent


def test_dvc_invocation_is_the_dvc_process(tmp_path):
    """Stages are children of one `dvc` process (through a shell): they find the same marker;
    a second `dvc` process is another invocation."""
    fake = tmp_path / "dvc"
    probe = "from pag.tracking import dvc_invocation; print(dvc_invocation())"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        f"cmd = [sys.executable, '-c', {probe!r}]\n"
        "for _ in range(2):\n"
        "    subprocess.run(['/bin/sh', '-c', ' '.join(repr(a) for a in cmd) + ' ; true'])\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "DVC_STAGE": "train-x", "PYTHONPATH": str(Path.cwd())}
    first = subprocess.run([str(fake)], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([str(fake)], env=env, capture_output=True, text=True, check=True)
    a, b = first.stdout.split(), second.stdout.split()
    assert len(a) == 2 and a[0] == a[1] != "None", first.stderr
    assert b[0] == b[1] and b[0] != a[0]
    env.pop("DVC_STAGE")
    outside = subprocess.run([str(fake)], env=env, capture_output=True, text=True, check=True)
    assert outside.stdout.split() == ["None", "None"]
