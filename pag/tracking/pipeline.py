"""Parent runs, one per pipeline invocation (Snakemake's handlers, or the `dvc` process of
DVC stages), and `track_job`, what the CLI calls after each job."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from pag.tracking.content import source_tags
from pag.tracking.finished import log_run
from pag.tracking.store import (
    DVC_STAGE_ENV,
    ENABLE_ENV,
    EXPERIMENT_ENV,
    PARENT_ENV,
    TAG_FRONT_END,
    TAG_INVOCATION,
    TAG_KIND,
    TAG_PARENT,
    _client,
    _file_lock,
    _retry,
    _warn,
    get_or_create_experiment,
    init_store,
    log,
    sqlite_path,
)

# -- parent runs: one per pipeline invocation ------------------------------------------------------


def start_parent(
    experiment: str, name: str, *, uri: str | None = None, tags: dict[str, str] | None = None
) -> str | None:
    """Create a parent run for one pipeline invocation (status RUNNING until `end_parent`);
    return its id, or None when tracking failed (with a warning). Also initialises the store,
    so calling it before starting parallel jobs is enough."""
    try:
        uri = init_store(uri)
        client = _client(uri)
        experiment_id = get_or_create_experiment(client, experiment, uri)
        return _create_parent(client, experiment_id, name, tags or {})
    except Exception as exc:
        _warn(f"starting parent run {name!r}", exc)
        return None


def _create_parent(client, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    all_tags = {TAG_KIND: "pipeline", **source_tags("pipeline"), **tags}
    run = _retry(
        lambda: client.create_run(experiment_id, tags=all_tags, run_name=name),
        "create parent run",
    )
    return run.info.run_id


def end_parent(run_id: str | None, ok: bool = True, *, uri: str | None = None) -> None:
    """Mark a parent run FINISHED (or FAILED); nothing when `run_id` is None."""
    if run_id is None:
        return
    try:
        client = _client(init_store(uri))
        status = "FINISHED" if ok else "FAILED"
        _retry(lambda: client.set_terminated(run_id, status), "end parent run")
    except Exception as exc:
        _warn(f"ending parent run {run_id}", exc)


_STARTED_PARENT: list[str] = []  # the parent run this process started (begin_pipeline)


def enabled() -> bool:
    """False when $PAG_TRACKING is "0", "off", "false" or "no"."""
    switch = os.environ.get(ENABLE_ENV, "").strip()
    if switch.lower() in ("0", "off", "false", "no"):
        log.debug("MLflow tracking is off ($%s=%s)", ENABLE_ENV, switch)
        return False
    return True


def begin_pipeline(experiment: str, front_end: str) -> str | None:
    """The Snakefile's `onstart`: start this invocation's parent run in the profile's
    experiment and export its id ($PAG_MLFLOW_PARENT) and the experiment
    ($PAG_MLFLOW_EXPERIMENT) to the jobs, which inherit the environment."""
    if not enabled():
        return None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    tags = {TAG_FRONT_END: front_end, "pag.profile": experiment}
    outer = os.environ.get(PARENT_ENV, "").strip()
    if outer:
        tags[TAG_PARENT] = outer
    parent = start_parent(experiment, f"{experiment} ({front_end} {stamp})", tags=tags)
    if parent is not None:
        os.environ[PARENT_ENV] = parent
        os.environ[EXPERIMENT_ENV] = experiment
        _STARTED_PARENT.append(parent)
        log.info("MLflow: jobs are tracked under parent run %s (experiment %r)", parent, experiment)
    return parent


def end_pipeline(ok: bool) -> None:
    """The Snakefile's `onsuccess` / `onerror`: end the parent run `begin_pipeline` started."""
    while _STARTED_PARENT:
        parent = _STARTED_PARENT.pop()
        end_parent(parent, ok)
        if os.environ.get(PARENT_ENV) == parent:
            del os.environ[PARENT_ENV]


def dvc_invocation() -> str | None:
    """Under DVC (which has no hooks to start a parent run): a marker of the `dvc` process that
    runs this stage (host, pid and start time of the nearest ancestor process that is `dvc`),
    the same for every stage of one `dvc repro` or `dvc exp run`. None when not under DVC or
    when the ancestors cannot be read (not Linux)."""
    if not os.environ.get(DVC_STAGE_ENV):
        return None
    pid = os.getppid()
    for _ in range(8):
        if pid <= 1:
            return None
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        names = [Path(a.decode(errors="replace")).name for a in args[:3]]
        if "dvc" in names:
            return f"{socket.gethostname()}:{pid}:{fields[19]}"
        pid = int(fields[1])
    return None


def _job_parent(client, experiment_id: str, experiment: str, uri: str) -> tuple[str | None, bool]:
    """(the parent run of a job, whether the job ends it): $PAG_MLFLOW_PARENT (Snakemake), else
    under DVC the parent of its `dvc` invocation, got or created (under the store's lock) by the
    first job, re-opened by each later one and ended by each (so it ends with the last job,
    FAILED if that failed); else none."""
    parent = os.environ.get(PARENT_ENV, "").strip()
    if parent:
        return parent, False
    marker = dvc_invocation()
    if marker is None:
        return None, False
    db = sqlite_path(uri)
    lock = _file_lock(db.with_name(db.name + ".lock")) if db else contextlib.nullcontext()
    with lock:
        found = _retry(
            lambda: client.search_runs(
                [experiment_id], f"tags.`{TAG_INVOCATION}` = '{marker}'", max_results=1
            ),
            "search parent",
        )
        if found:
            run = found[0]
            if run.info.status != "RUNNING":
                _retry(lambda: client.update_run(run.info.run_id, "RUNNING"), "re-open parent")
            return run.info.run_id, True
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        tags = {TAG_FRONT_END: "dvc", TAG_INVOCATION: marker, "pag.profile": experiment}
        return _create_parent(client, experiment_id, f"{experiment} (dvc {stamp})", tags), True


def _experiment_of(experiment: str) -> str:
    return os.environ.get(EXPERIMENT_ENV, "").strip() or experiment


def track_job(
    run_dir: str | os.PathLike,
    kind: str,
    experiment: str,
    metrics_file: str | os.PathLike | None = None,
    start_time: int | None = None,
) -> str | None:
    """What `pag train` (for a run that was finished already) and `pag evaluate` call when
    they finish: `log_run` in the experiment $PAG_MLFLOW_EXPERIMENT (one per profile; else
    `experiment`, the run's name) under the pipeline's parent run, unless $PAG_TRACKING is
    "0" or "off"."""
    if not enabled():
        return None
    experiment = _experiment_of(experiment)
    try:
        uri = init_store()
        client = _client(uri)
        parent, ends = _job_parent(
            client, get_or_create_experiment(client, experiment, uri), experiment, uri
        )
    except Exception as exc:
        _warn(f"finding the parent run of {run_dir}", exc)
        parent, ends = None, False
    run_id = log_run(
        run_dir, kind, experiment, parent, metrics_file=metrics_file, start_time=start_time
    )
    if ends:
        end_parent(parent, run_id is not None)
    return run_id
