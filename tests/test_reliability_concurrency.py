"""Concurrency: 8 `pag train` processes mirror their finished runs into one MLflow store at
once, one of them SIGKILLed in the middle of logging. No run, param or metric of the other
seven is lost; the killed one leaves an unfinished MLflow run, which the next `pag train`
replaces with a complete one (never a duplicate).

tests/test_tracking.py has the fast version without a kill (8 writers through `log_run`, and
on a store no one has migrated yet)."""

import io
import shutil

import pytest
import yaml
from faults import finish, killed, make_synthetic, start_pag, write_run_params

from pag import tracking
from pag.training import load_run_params, train

WRITERS = 8
KILLED = 3  # the writer killed in the middle: after its params, before its metrics


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """8 finished run directories (copies of one tiny run)."""
    tmp = tmp_path_factory.mktemp("runs")
    data_root = make_synthetic(tmp / "data")
    params = load_run_params(write_run_params(tmp / "run.yaml", training={"epochs": 1}))
    train(params, tmp / "r0", data_root=data_root, stream=io.StringIO(), tty=False)
    for i in range(1, WRITERS):
        shutil.copytree(tmp / "r0", tmp / f"r{i}")
    return [tmp / f"r{i}" for i in range(WRITERS)], data_root


def expected_metrics(run_dir) -> dict[str, int]:
    """Metric key -> number of points `log_run` writes for this run directory."""
    metrics = yaml.safe_load((run_dir / "train_metrics.json").read_text())
    counts: dict[str, int] = {}
    for key, _, _ in tracking.epoch_metrics(metrics["history"]):
        counts[key] = counts.get(key, 0) + 1
    finals = {k: v for k, v in metrics.items() if k != "history" and k not in tracking.META_KEYS}
    for key in tracking.numeric_leaves(finals):
        counts.setdefault(key, 1)
    return counts


@pytest.mark.slow
def test_eight_writers_one_killed_lose_nothing(finished_runs, tmp_path, tally):
    finished_runs, data_root = finished_runs
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"PAG_TRACKING": "1", tracking.TRACKING_ENV: uri, "PAG_MLFLOW_EXPERIMENT": "crowd"}
    tracking.init_store(uri)  # as the pipeline does before starting jobs

    def command(run_dir):
        # finished: each checks its provenance (data included) and goes straight to tracking
        return ["train", "--params", run_dir / "params.yaml", "--out", run_dir, "--root", data_root]

    kill = "kill-at:mlflow.tracking.MlflowClient.log_batch:2"
    processes = [
        start_pag(command(d), kill if i == KILLED else None, env=env)
        for i, d in enumerate(finished_runs)
    ]
    results = [finish(p) for p in processes]
    tally.fault("SIGKILL while logging to MLflow")
    for i, result in enumerate(results):
        assert killed(result) if i == KILLED else result.returncode == 0, result.stderr
        assert "warning: MLflow" not in result.stderr

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("crowd").experiment_id

    def runs(view=ViewType.ACTIVE_ONLY):
        return client.search_runs([experiment], run_view_type=view, max_results=100)

    partial = [r for r in runs() if r.info.status != "FINISHED"]
    assert len(partial) == 1 and partial[0].data.tags["pag.run_dir"] == str(
        finished_runs[KILLED].resolve()
    )
    again = finish(start_pag(command(finished_runs[KILLED]), env=env))
    assert again.returncode == 0, again.stderr

    complete = {r.data.tags["pag.run_dir"]: r for r in runs() if r.info.status == "FINISHED"}
    tally.runs(expected=WRITERS, found=len(complete))
    assert sorted(complete) == sorted(str(d.resolve()) for d in finished_runs)
    assert len(runs()) == WRITERS  # the partial run was replaced, not kept beside
    assert client.get_run(partial[0].info.run_id).info.lifecycle_stage == "deleted"
    for run_dir in finished_runs:
        run = complete[str(run_dir.resolve())]
        params = tracking.flatten(yaml.safe_load((run_dir / "params.yaml").read_text()))
        assert run.data.params == {k: tracking.param_value(v) for k, v in params.items()}
        for key, points in expected_metrics(run_dir).items():
            history = client.get_metric_history(run.info.run_id, key)
            assert len(history) == points, (run_dir.name, key)
