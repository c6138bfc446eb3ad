"""Logging a finished job from its files (an evaluation, or a training already done): found
again by a key tag, replaced when its files changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pag.tracking.content import (
    _final_points,
    _find_runs,
    _job_tags,
    _JobFiles,
    _run_name,
    _tag_values,
    epoch_metrics,
    flatten,
    param_value,
    training_run_of,
)
from pag.tracking.store import (
    BATCH_METRICS,
    BATCH_PARAMS,
    KINDS,
    MAX_KEY,
    TAG_CONTENT,
    TAG_PARENT,
    TAG_TRAINED_BY,
    _chunks,
    _client,
    _retry,
    _warn,
    get_or_create_experiment,
    init_store,
    log,
)

# -- logging a finished job ------------------------------------------------------------------------


def log_run(
    run_dir: str | os.PathLike,
    kind: str = "train",
    experiment: str = "default",
    parent_run_id: str | None = None,
    *,
    metrics_file: str | os.PathLike | None = None,
    uri: str | None = None,
    start_time: int | None = None,
) -> str | None:
    """Log one finished job to MLflow; return the MLflow run id, or None when tracking failed
    (a warning names the error on stderr; the job is not failed).

    `run_dir` holds `params.yaml`; `metrics_file` is the job's metrics (default
    `run_dir/train_metrics.json`; `pag evaluate` passes its metrics file). `experiment` is the
    profile's name; `parent_run_id` comes from `start_parent`; `start_time` (ms since the
    epoch) is when the job started (default: now)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        run_id = _log_run(
            Path(run_dir), kind, experiment, parent_run_id, metrics_file, uri, start_time
        )
    except Exception as exc:
        _warn(f"logging {kind} run {run_dir}", exc)
        return None
    log.debug("%s job %s is MLflow run %s (experiment %r)", kind, run_dir, run_id, experiment)
    return run_id


def _log_run(run_dir, kind, experiment, parent_run_id, metrics_file, uri, start_time) -> str:
    job = _JobFiles(run_dir, kind, metrics_file)
    run_dir, params, metrics = job.run_dir, job.params, job.metrics
    content_hash = job.content_hash(experiment)

    uri = init_store(uri)
    client = _client(uri)
    experiment_id = get_or_create_experiment(client, experiment, uri)

    from mlflow.entities import Metric, Param, RunTag

    previous = _find_runs(client, experiment_id, job.key)
    for run in previous:
        if run.data.tags.get(TAG_CONTENT) == content_hash and run.info.status == "FINISHED":
            if parent_run_id and run.data.tags.get(TAG_PARENT) != parent_run_id:
                _retry(
                    lambda r=run: client.set_tag(r.info.run_id, TAG_PARENT, parent_run_id),
                    "parent tag",
                )
            return run.info.run_id  # logged already (live, or before), with the same content
    for run in previous:  # stale (files changed) or incomplete (interrupted logging)
        _retry(lambda r=run: client.delete_run(r.info.run_id), "delete stale run")

    tags = _job_tags(kind, run_dir, job.metrics_path, params, metrics)
    if kind == "evaluate":
        tags[TAG_TRAINED_BY] = training_run_of(client, experiment_id, run_dir)
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
    name = _run_name(run_dir, kind, tags["pag.split"])
    run = _retry(
        lambda: client.create_run(
            experiment_id, start_time=start_time, tags=_tag_values(tags), run_name=name
        ),
        "create run",
    )
    run_id = run.info.run_id

    now = int(time.time() * 1000)
    param_list = [
        Param(k[:MAX_KEY], param_value(v)) for k, v in flatten(params).items() if k[:MAX_KEY]
    ]
    points = epoch_metrics(metrics.get("history") or [])
    points += _final_points(metrics, {(k, s): v for k, v, s in points})
    metric_list = [Metric(k[:MAX_KEY], v, now, s) for k, v, s in points]
    for batch in _chunks(param_list, BATCH_PARAMS):
        _retry(lambda b=batch: client.log_batch(run_id, params=b, synchronous=True), "params")
    for batch in _chunks(metric_list, BATCH_METRICS):
        _retry(lambda b=batch: client.log_batch(run_id, metrics=b, synchronous=True), "metrics")
    job.log_files(client, run_id)

    _retry(
        lambda: client.log_batch(run_id, tags=[RunTag(TAG_CONTENT, content_hash)]), "content tag"
    )
    _retry(lambda: client.set_terminated(run_id, "FINISHED"), "finish run")
    return run_id
