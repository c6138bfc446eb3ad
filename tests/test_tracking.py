"""MLflow tracking (`pag.tracking`): contents of the logged runs, idempotency, parent grouping,
concurrent writers on one SQLite store, and that a tracking failure never raises."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from pag import tracking

EPOCHS = 3


def write_train_run(run_dir: Path, seed: int = 0) -> dict:
    """A run directory as `pag train` leaves it (params.yaml and train_metrics.json with the schema
    of pag.training.loop), with loss values depending on `seed`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {
        "name": f"run{seed}",
        "dataset": "synthetic",
        "train_split": "train",
        "tasks": {"semantic": 10, "boundary": None, "depth": None, "normals": None},
        "input_size": [48, 64],
        "model": {"depth": 26, "width_multiplier": 0.125, "output_stride": 8, "head_hidden": 16},
        "method": "pag",
        "budget": 0.5,
        "init_from": None,
        "training": {
            "epochs": EPOCHS,
            "batch_size": 4,
            "optimizer": "sgd",
            "lr": 0.01,
            "loss_weights": {},
            "temperature": {"start": 1.0, "decay": 0.03, "every": 2, "minimum": 0.01},
        },
        "seed": seed,
        "device": "cpu",
    }
    (run_dir / "params.yaml").write_text(
        "# Resolved run params, written by `pag train`\n" + yaml.safe_dump(params, sort_keys=False)
    )
    history = []
    for epoch in range(1, EPOCHS + 1):
        train = {
            "semantic": 2.0 / epoch + seed,
            "depth": 1.0 / epoch,
            "budget": 0.1 * epoch,
            "loss": 3.0 / epoch + seed,
        }
        history.append({"epoch": epoch, "train": train, "lr": 0.01 * (1 - epoch / EPOCHS)})
        history[-1]["temperature"] = 1.0 - 0.03 * (epoch - 1)
    metrics = {
        "train": history[-1]["train"],
        "steps": 10 * EPOCHS,
        "epochs": EPOCHS,
        "images_per_s": 123.5,
        "history": history,
        "method": "pag",
        "budget": 0.5,
        "params_hash": f"hash{seed}",
    }
    (run_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """One migrated SQLite store per session (migrations take seconds); tests copy it."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    tracking.init_store(f"sqlite:///{path}")
    return path


@pytest.fixture
def store(migrated_db, tmp_path, monkeypatch) -> str:
    """A fresh, migrated store in tmp_path, set as MLFLOW_TRACKING_URI; returns its URI."""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(migrated_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv(tracking.TRACKING_ENV, uri)
    return uri


def client(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str):
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id])


# -- the store -------------------------------------------------------------------------------------


def test_tracking_uri_default_and_env(monkeypatch, tmp_path):
    """The default store is the working directory's (the project being run), not the
    checkout holding the installed package: two clones never mix their runs."""
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    for project in ("clone_a", "clone_b"):
        (tmp_path / project).mkdir()
        monkeypatch.chdir(tmp_path / project)
        expected = (tmp_path / project).resolve() / "mlflow.db"
        assert tracking.tracking_uri() == f"sqlite:///{expected}"
    monkeypatch.setenv(tracking.TRACKING_ENV, "sqlite:////elsewhere/x.db")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/x.db"
    assert tracking.sqlite_path("sqlite:////elsewhere/x.db") == Path("/elsewhere/x.db")
    assert tracking.sqlite_path("sqlite:///rel/x.db") == Path("rel/x.db")
    assert tracking.sqlite_path("http://127.0.0.1:5000") is None
    assert tracking.artifact_root("sqlite:////elsewhere/x.db") == Path("/elsewhere/mlartifacts")


def test_flatten_and_values():
    flat = tracking.flatten({"a": {"b": 1, "c": {}}, "d": [1, 2], "e": None})
    assert flat == {"a.b": 1, "a.c": {}, "d": [1, 2], "e": None}
    assert [tracking.param_value(v) for v in flat.values()] == ["1", "{}", "[1, 2]", "null"]
    assert len(tracking.param_value("x" * 10_000)) == tracking.MAX_PARAM_VALUE
    assert tracking.numeric_leaves({"a": [0.5, 0.25], "b": "s", "c": True, "d": None}) == {
        "a.0": 0.5,
        "a.1": 0.25,
    }


# -- contents of a logged run ----------------------------------------------------------------------


def test_train_run_contents(store, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    metrics = write_train_run(run_dir)
    (run_dir / "figures").mkdir()
    (run_dir / "figures" / "gates.png").write_bytes(b"\x89PNG fake")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"not an artifact")

    run_id = tracking.log_run(run_dir, "train", experiment="synthetic")
    assert run_id is not None
    c = client(store)
    run = c.get_run(run_id)
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.name == "synthetic"
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny/train"

    params = run.data.params
    assert params["dataset"] == "synthetic"
    assert params["tasks.semantic"] == "10"
    assert params["tasks.boundary"] == "null"
    assert params["input_size"] == "[48, 64]"
    assert params["model.width_multiplier"] == "0.125"
    assert params["training.temperature.decay"] == "0.03"
    assert params["training.loss_weights"] == "{}"
    assert params["budget"] == "0.5"
    written = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert len(params) == len(tracking.flatten(written)) == 26

    for key in ("loss", "semantic", "depth", "budget"):
        history = c.get_metric_history(run_id, f"train.{key}")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (h["epoch"], pytest.approx(h["train"][key])) for h in metrics["history"]
        ]
    lr = sorted(c.get_metric_history(run_id, "lr"), key=lambda m: m.step)
    assert [m.step for m in lr] == [1, 2, 3]
    assert [m.value for m in lr] == pytest.approx([h["lr"] for h in metrics["history"]])
    assert len(c.get_metric_history(run_id, "temperature")) == EPOCHS

    final = run.data.metrics
    assert final["train.loss"] == pytest.approx(metrics["train"]["loss"])
    assert final["steps"] == 30
    assert final["epochs"] == EPOCHS
    assert final["images_per_s"] == pytest.approx(123.5)

    tags = run.data.tags
    assert tags["pag.kind"] == "train"
    assert tags["pag.method"] == "pag"
    assert tags["pag.budget"] == "0.5"
    assert tags["pag.params_hash"] == "hash0"
    assert tags["pag.run_dir"] == str(run_dir.resolve())
    assert "mlflow.parentRunId" not in tags

    top = {f.path for f in c.list_artifacts(run_id)}
    assert top == {"params.yaml", "train_metrics.json", "figures"}
    assert [f.path for f in c.list_artifacts(run_id, "figures")] == ["figures/gates.png"]
    local = Path(c.download_artifacts(run_id, "train_metrics.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text()) == metrics
    # artifacts lie beside the store, not in the working directory
    assert run.info.artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())


def test_evaluate_run_contents(store, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    write_train_run(run_dir)
    out = tmp_path / "eval" / "val.json"
    out.parent.mkdir()
    evaluation = {
        "split": "val",
        "semantic": {"miou": 0.42, "pixel_acc": 0.8},
        "depth": {"rmse": 0.61},
        "macs": {"dense": 1.5e9, "effective": 0.9e9},
        "activity": [1.0, 0.5, 0.25],
        "method": "pag",
        "budget": 0.5,
        "params_hash": "hash0",
    }
    out.write_text(json.dumps(evaluation))
    train_id = tracking.log_run(run_dir, "train", experiment="synthetic")
    eval_id = tracking.log_run(run_dir, "evaluate", experiment="synthetic", metrics_file=out)
    assert eval_id is not None and eval_id != train_id
    c = client(store)
    run = c.get_run(eval_id)
    assert run.data.metrics == {
        "semantic.miou": 0.42,
        "semantic.pixel_acc": 0.8,
        "depth.rmse": 0.61,
        "macs.dense": 1.5e9,
        "macs.effective": 0.9e9,
        "activity.0": 1.0,
        "activity.1": 0.5,
        "activity.2": 0.25,
    }
    assert run.data.tags["pag.kind"] == "evaluate"
    assert run.data.tags["pag.split"] == "val"
    assert run.info.run_name == "tiny/evaluate/val"
    assert run.data.params["method"] == "pag"
    assert {f.path for f in c.list_artifacts(eval_id)} == {"params.yaml", "val.json"}
    assert len(runs_of(store, "synthetic")) == 2


def test_idempotent_and_replaced_when_changed(store, tmp_path):
    run_dir = tmp_path / "runs" / "a"
    write_train_run(run_dir)
    first = tracking.log_run(run_dir, "train", experiment="exp")
    assert tracking.log_run(run_dir, "train", experiment="exp") == first
    assert [r.info.run_id for r in runs_of(store, "exp")] == [first]
    assert len(client(store).get_metric_history(first, "train.loss")) == EPOCHS

    write_train_run(run_dir, seed=1)  # the files changed: the run is replaced, not duplicated
    second = tracking.log_run(run_dir, "train", experiment="exp")
    assert second not in (None, first)
    runs = runs_of(store, "exp")
    assert [r.info.run_id for r in runs] == [second]
    assert runs[0].data.tags["pag.params_hash"] == "hash1"


def test_parent_grouping(store, tmp_path):
    parent = tracking.start_parent("exp", "pipeline 1")
    assert parent is not None
    ids = []
    for name in ("a", "b"):
        write_train_run(tmp_path / name)
        ids.append(tracking.log_run(tmp_path / name, "train", "exp", parent_run_id=parent))
    tracking.end_parent(parent)
    c = client(store)
    assert c.get_run(parent).info.status == "FINISHED"
    assert c.get_run(parent).info.run_name == "pipeline 1"
    for run_id in ids:
        run = c.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.experiment_id == c.get_run(parent).info.experiment_id


# -- failures never fail the job -------------------------------------------------------------------


def test_failure_warns_and_returns_none(tmp_path, monkeypatch, caplog):
    write_train_run(tmp_path / "run")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(tracking.TRACKING_ENV, f"sqlite:///{blocker}/sub/mlflow.db")
    assert tracking.log_run(tmp_path / "run", "train", experiment="exp") is None
    assert tracking.start_parent("exp", "p") is None
    warned = [r for r in caplog.records if r.name == "pag.tracking" and r.levelname == "WARNING"]
    assert "MLflow tracking: logging train run" in warned[0].getMessage()
    assert "NotADirectoryError" in caplog.text or "FileExistsError" in caplog.text


def test_missing_metrics_warns(store, tmp_path, caplog):
    (tmp_path / "run").mkdir()
    assert tracking.log_run(tmp_path / "run", "train", experiment="exp") is None
    assert "FileNotFoundError" in caplog.text


def test_bad_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        tracking.log_run(tmp_path, "predict")


# -- concurrent writers ----------------------------------------------------------------------------

WRITERS = 8


def _log_concurrently(args) -> str | None:
    run_dir, uri, barrier = args
    import os

    os.environ[tracking.TRACKING_ENV] = uri
    import mlflow.tracking  # noqa: F401  (import before the barrier: all write at once)

    barrier.wait()
    return tracking.log_run(run_dir, "train", experiment="parallel")


def _run_writers(tmp_path: Path, uri: str) -> list[str | None]:
    dirs = [tmp_path / "runs" / f"r{i}" for i in range(WRITERS)]
    for seed, run_dir in enumerate(dirs):
        write_train_run(run_dir, seed=seed)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(WRITERS)
        with context.Pool(WRITERS) as pool:
            return pool.map(_log_concurrently, [(d, uri, barrier) for d in dirs])


def _check_all_logged(uri: str, ids: list[str | None]) -> None:
    assert None not in ids
    runs = runs_of(uri, "parallel")
    assert sorted(r.info.run_id for r in runs) == sorted(ids)
    c = client(uri)
    for run in runs:
        seed = int(run.data.params["seed"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["pag.params_hash"] == f"hash{seed}"
        assert len(run.data.params) == 26
        assert run.data.metrics["train.loss"] == pytest.approx(3.0 / EPOCHS + seed)
        history = c.get_metric_history(run.info.run_id, "train.loss")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
        assert {f.path for f in c.list_artifacts(run.info.run_id)} == {
            "params.yaml",
            "train_metrics.json",
        }


def test_concurrent_writers_lose_nothing(store, tmp_path):
    """8 processes log at once into one (migrated) SQLite store, creating the experiment
    concurrently: exactly 8 complete runs, no failure."""
    _check_all_logged(store, _run_writers(tmp_path, store))


@pytest.mark.slow
def test_concurrent_writers_on_unmigrated_store(tmp_path):
    """Without init_store beforehand: the first users migrate under the file lock."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    _check_all_logged(uri, _run_writers(tmp_path, uri))


def test_track_job_is_off_when_disabled_and_uses_the_parent_from_the_environment(
    store, tmp_path, monkeypatch
):
    run_dir = tmp_path / "runs" / "job"
    write_train_run(run_dir)
    monkeypatch.setenv(tracking.ENABLE_ENV, "0")
    assert tracking.track_job(run_dir, "train", experiment="jobs") is None
    assert runs_of(store, "jobs") == []
    monkeypatch.setenv(tracking.ENABLE_ENV, "1")
    parent = tracking.start_parent("jobs", "invocation")
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    run_id = tracking.track_job(run_dir, "train", experiment="jobs")
    run = client(store).get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent


def test_track_job_takes_the_profile_experiment_and_logs_evaluation_samples(
    store, tmp_path, monkeypatch
):
    run_dir = tmp_path / "runs" / "job"
    write_train_run(run_dir)
    out = run_dir / "eval_val" / "metrics.json"
    out.parent.mkdir()
    out.write_text(json.dumps({"split": "val", "depth": {"abs_rel": 0.25}}))
    (out.parent / "samples.npz").write_bytes(b"not checked here")
    monkeypatch.setenv(tracking.ENABLE_ENV, "1")
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, "profile_synthetic")
    run_id = tracking.track_job(run_dir, "evaluate", experiment="job", metrics_file=out)
    assert [r.info.run_id for r in runs_of(store, "profile_synthetic")] == [run_id]
    artifacts = {a.path for a in client(store).list_artifacts(run_id)}
    assert {"metrics.json", "params.yaml", "samples.npz"} <= artifacts
