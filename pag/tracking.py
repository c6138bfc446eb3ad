"""MLflow tracking: a *view* of finished jobs; the JSON files in the run directories are the truth.

* **Store.** `MLFLOW_TRACKING_URI` when set, else a SQLite file `<project root>/mlflow.db`, with
  artifacts on the local file system beside it (`<store dir>/mlartifacts/<experiment>/...`).
  View it with ``mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1``.
* **One MLflow run per job.** `log_run(run_dir, kind, experiment)` reads `params.yaml` and
  the job's metrics (`train_metrics.json`, or the evaluation's `metrics.json`) after
  `pag train` / `pag evaluate` finished and logs flattened params,
  per-epoch metrics (step = epoch), final metrics, tags and the files as artifacts. Logging the
  same job again changes nothing (the run is found by a key tag and a content hash); logging it
  after its files changed replaces the old run (deleted, not duplicated).
* **Grouping.** `start_parent(experiment, name)` makes a parent run for one pipeline invocation;
  jobs pass its id as `parent_run_id` (the `mlflow.parentRunId` tag, which the UI nests by).
* **Concurrency.** SQLite serializes writers. The schema is created and migrated once, under an
  exclusive file lock (`init_store()`, which every entry point calls and which is cheap once
  done), the database is switched to WAL (readers never block the writer), and every store call
  is retried with backoff on "database is locked" and other transient SQLite errors.
  Experiments are got-or-created with a retry for the creation race. WAL needs a local file
  system: on a shared (NFS) file system, point `MLFLOW_TRACKING_URI` at an `mlflow server`.
* **Never fails a job.** `log_run`, `start_parent` and `end_parent` catch every error, log one
  warning naming it (on stderr), and return None.
* **Quiet.** MLflow's, Alembic's and SQLAlchemy's own log lines (store creation, migrations,
  MLflow's warnings) are silenced when the store is first used, unless `MLFLOW_LOGGING_LEVEL`
  is set; `pag -v` shows what this module did.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import yaml

from pag import run_layout as layout
from pag.paths import project_root

TRACKING_ENV = "MLFLOW_TRACKING_URI"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
KINDS = ("train", "evaluate")
# of the metrics: tags, not metrics (provenance: its digests become tags, `_provenance_tags`)
META_KEYS = ("method", "budget", "params_hash", "split", "provenance")
FIGURE_DIRS = (layout.FIGURES,)  # sub-directories whose image files are logged as artifacts
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")

# tags this module sets (besides mlflow.runName and mlflow.parentRunId)
TAG_KEY = "pag.key"  # identifies the job: kind + metrics file; used to find the run again
TAG_CONTENT = "pag.content_hash"  # hash of what was logged; set last, so it marks completion
TAG_KIND = "pag.kind"
TAG_PARENT = "mlflow.parentRunId"

# MLflow's limits (mlflow.utils.validation), restated so that nothing is truncated by the server
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
BATCH_PARAMS = 100
BATCH_METRICS = 1000

RETRIES = 12
_T = TypeVar("_T")
_READY: set[str] = set()  # tracking URIs whose store this process has initialised

log = logging.getLogger(__name__)
# loggers of MLflow and the libraries it drives, which write their own start-up lines ("Creating
# initial MLflow database tables...", Alembic's "Context impl SQLiteImpl") to stderr
THIRD_PARTY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "huey")


# -- the store ----------------------------------------------------------------------------------


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the SQLite store in the project root."""
    uri = os.environ.get(TRACKING_ENV, "").strip()
    if uri:
        return uri
    return f"sqlite:///{project_root() / STORE_FILE}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores or in-memory SQLite)."""
    if not uri.startswith("sqlite:"):
        return None
    path = unquote(urlparse(uri).path)
    if uri.startswith("sqlite:////"):
        path = "/" + path.lstrip("/")  # absolute: sqlite:////abs/path
    elif path.startswith("/"):
        path = path[1:]  # relative: sqlite:///rel/path
    return Path(path) if path and path != ":memory:" else None


def artifact_root(uri: str) -> Path | None:
    """Where artifacts of a SQLite store go: `mlartifacts/` beside the database file. None for
    other stores (a tracking server decides)."""
    db = sqlite_path(uri)
    return db.resolve().parent / ARTIFACTS_DIR if db is not None else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's import and store set-up emit deprecation warnings from its dependencies, which
    the test suite turns into errors; they are not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        yield


def _silence_third_party() -> None:
    """MLflow configures its loggers when imported (a handler of its own, level INFO): keep
    what they say out of the command's output, unless `MLFLOW_LOGGING_LEVEL` asks for it."""
    if os.environ.get("MLFLOW_LOGGING_LEVEL", "").strip():
        return
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (Windows: no lock; init races stay possible there)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _transient(exc: BaseException) -> bool:
    """A SQLite/SQLAlchemy error worth retrying ("database is locked", a busy snapshot...)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if "locked" in text or "busy" in text:  # not "no such table", "unable to open" ...
            return True
        current = current.__cause__ or current.__context__
    return False


def _retry(call: Callable[[], _T], what: str) -> _T:
    """`call()`, retried with jittered exponential backoff (about a minute in all) while it
    fails with a transient database error."""
    for attempt in range(RETRIES):
        try:
            return call()
        except Exception as exc:
            if attempt == RETRIES - 1 or not _transient(exc):
                raise
            time.sleep(min(8.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError(f"unreachable ({what})")  # pragma: no cover


def init_store(uri: str | None = None) -> str:
    """Create and migrate the store once (safe to call repeatedly and from many processes at
    once); return its URI. Call it before starting parallel jobs: they then only read the
    schema version. For SQLite the database is switched to WAL mode (kept in the file)."""
    uri = uri or tracking_uri()
    if uri in _READY:
        return uri
    db = sqlite_path(uri)
    if db is None:
        _client(uri)
        _READY.add(uri)
        return uri
    db.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(db.with_name(db.name + ".lock")):
        _retry(lambda: _client(uri).search_experiments(max_results=1), "initialising the store")
        with contextlib.closing(sqlite3.connect(db, timeout=60)) as connection:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                _retry(lambda: connection.execute("PRAGMA journal_mode=WAL").fetchone(), "WAL")
    _READY.add(uri)
    return uri


# a tracking server that does not answer costs a job seconds, not minutes: MLflow's own
# defaults (7 retries with exponential backoff, 120 s per request) held a finished job for
# over 4 minutes. The user's own settings of these variables win.
HTTP_TIMEOUT_S = 5
HTTP_RETRIES = 1
CONNECT_TIMEOUT_S = 3.0


def _http_settings(uri: str) -> None:
    """For a tracking server: fail fast when it is unreachable (a TCP connect with a short
    timeout, a `ConnectionError` naming it), and bound MLflow's own retries and timeouts."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "localhost", port), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(
            f"tracking server {parsed.hostname}:{port} unreachable ({exc.strerror or exc})"
        ) from None


def _client(uri: str):
    _http_settings(uri)
    with _quiet():
        from mlflow.tracking import MlflowClient

        _silence_third_party()
        client = MlflowClient(tracking_uri=uri)
        client._tracking_client.store  # noqa: B018  (builds the store: migrations run here)
    return client


def get_or_create_experiment(client, name: str, uri: str) -> str:
    """The id of the experiment `name`, created (or restored when deleted) if need be; a
    concurrent creation by another process is not an error."""
    root = artifact_root(uri)
    location = None
    if root is not None:
        location = (root / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).as_uri()
    for attempt in range(RETRIES):
        experiment = _retry(lambda: client.get_experiment_by_name(name), "get experiment")
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                _retry(lambda e=experiment: client.restore_experiment(e.experiment_id), "restore")
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:
            if attempt == RETRIES - 1:
                raise
            time.sleep(0.05 * (1 + random.random()))  # another process created it, or busy
    raise AssertionError("unreachable")  # pragma: no cover


# -- reading a run directory -------------------------------------------------------------------


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys; other values (lists included) are leaves. An empty
    mapping is a leaf too, so that every key of the params file shows."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree} if prefix else {}


def param_value(value: Any) -> str:
    """A param as MLflow stores it: strings as they are, others as JSON (`null`, `[48, 64]`),
    cut to MLflow's length limit."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def numeric_leaves(tree: Any, prefix: str = "") -> dict[str, float]:
    """Numbers of a metrics tree under dotted keys; lists of numbers are indexed
    (`activity.0`, ...); strings, booleans and nulls are left out."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(numeric_leaves(value, f"{prefix}{key}."))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out.update(numeric_leaves(value, f"{prefix}{index}."))
    else:
        number = _number(tree)
        if number is not None and prefix:
            out[prefix[:-1]] = number
    return out


def epoch_metrics(history: list[dict[str, Any]]) -> list[tuple[str, float, int]]:
    """(key, value, step) of every per-epoch record: step is the record's `epoch` (1-based, as
    the training loop writes it), or its position when it has none."""
    points = []
    for position, record in enumerate(history, start=1):
        step = int(record.get("epoch", position))
        for key, value in numeric_leaves(record).items():
            if key != "epoch":
                points.append((key, value, step))
    return points


def _key_of(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


# -- logging ---------------------------------------------------------------------------------------


def _warn(what: str, exc: BaseException) -> None:
    message = " ".join(str(exc).split())[:500]
    log.warning("MLflow tracking: %s failed: %s: %s", what, type(exc).__name__, message)


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def log_run(
    run_dir: str | os.PathLike,
    kind: str = "train",
    experiment: str = "default",
    parent_run_id: str | None = None,
    *,
    metrics_file: str | os.PathLike | None = None,
    uri: str | None = None,
) -> str | None:
    """Log one finished job to MLflow; return the MLflow run id, or None when tracking failed
    (a warning names the error on stderr; the job is not failed).

    `run_dir` holds `params.yaml`; `metrics_file` is the job's metrics (default
    `run_dir/train_metrics.json`; `pag evaluate` passes its metrics file). `experiment` is the
    profile's name; `parent_run_id` comes from `start_parent`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        run_id = _log_run(Path(run_dir), kind, experiment, parent_run_id, metrics_file, uri)
    except Exception as exc:
        _warn(f"logging {kind} run {run_dir}", exc)
        return None
    log.debug("%s job %s is MLflow run %s (experiment %r)", kind, run_dir, run_id, experiment)
    return run_id


def _provenance_tags(provenance: Any) -> dict[str, Any]:
    """The digests a job's results record (pag.training.provenance) as tags: the training
    data's, the starting checkpoint's, the weights' (evaluations) and the code version."""
    if not isinstance(provenance, dict):
        return {}
    training = provenance.get("training", provenance)
    training = training if isinstance(training, dict) else {}
    return {
        "pag.data": training.get("data"),
        "pag.init": training.get("init"),
        "pag.code": training.get("code"),
        "pag.weights": provenance.get("weights"),
    }


def _log_run(run_dir, kind, experiment, parent_run_id, metrics_file, uri) -> str:
    run_dir = run_dir.resolve()
    metrics_path = (
        Path(metrics_file).resolve() if metrics_file else layout.train_metrics_file(run_dir)
    )
    params_path = layout.params_file(run_dir)
    params_bytes = params_path.read_bytes() if params_path.is_file() else b""
    metrics_bytes = metrics_path.read_bytes()
    params = (yaml.safe_load(params_bytes) or {}) if params_bytes else {}
    metrics = json.loads(metrics_bytes)
    figures = [  # (file, artifact folder)
        (path, str(path.parent.relative_to(base)))
        for base in dict.fromkeys([run_dir, metrics_path.parent])
        for name in FIGURE_DIRS
        if (base / name).is_dir()
        for path in sorted((base / name).rglob("*"))
        if path.is_file() and path.suffix.lower() in FIGURE_SUFFIXES
    ]

    key = _key_of(f"{kind}\0{metrics_path}")
    content = hashlib.sha256(params_bytes + b"\0" + metrics_bytes)
    content.update(f"\0{parent_run_id}\0{experiment}".encode())
    for path, _ in figures:
        content.update(f"\0{path}\0{path.stat().st_size}\0{path.stat().st_mtime_ns}".encode())
    content_hash = content.hexdigest()

    uri = init_store(uri)
    client = _client(uri)
    experiment_id = get_or_create_experiment(client, experiment, uri)

    from mlflow.entities import Metric, Param, RunTag, ViewType

    previous = _retry(
        lambda: client.search_runs(
            [experiment_id], f"tags.`{TAG_KEY}` = '{key}'", run_view_type=ViewType.ACTIVE_ONLY
        ),
        "search runs",
    )
    for run in previous:
        if run.data.tags.get(TAG_CONTENT) == content_hash and run.info.status == "FINISHED":
            return run.info.run_id  # logged already, with the same content
    for run in previous:  # stale (files changed) or incomplete (interrupted logging)
        _retry(lambda r=run: client.delete_run(r.info.run_id), "delete stale run")

    split = metrics.get("split") if kind == "evaluate" else None
    name = f"{run_dir.name}/{kind}" + (f"/{split}" if isinstance(split, str) else "")
    tags = {
        TAG_KEY: key,
        TAG_KIND: kind,
        "pag.run_dir": str(run_dir),
        "pag.metrics_file": str(metrics_path),
        "pag.method": metrics.get("method", params.get("method")),
        "pag.budget": metrics.get("budget", params.get("budget")),
        "pag.params_hash": metrics.get("params_hash"),
        "pag.split": split,
        "pag.name": params.get("name"),
        "pag.dataset": params.get("dataset"),
        **_provenance_tags(metrics.get("provenance")),
    }
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
    # budget is always tagged (`null` for dense); other unknowns are left out
    tag_values = {
        k: param_value(v)[:MAX_TAG_VALUE]
        for k, v in tags.items()
        if v is not None or k == "pag.budget"
    }
    run = _retry(
        lambda: client.create_run(experiment_id, tags=tag_values, run_name=name), "create run"
    )
    run_id = run.info.run_id

    now = int(time.time() * 1000)
    param_list = [
        Param(k[:MAX_KEY], param_value(v)) for k, v in flatten(params).items() if k[:MAX_KEY]
    ]
    points = epoch_metrics(metrics.get("history") or [])
    logged = {(k, s): v for k, v, s in points}
    final_step = int(metrics.get("epochs") or (points[-1][2] if points else 0))
    finals = numeric_leaves(
        {k: v for k, v in metrics.items() if k != "history" and k not in META_KEYS}
    )
    for k, v in finals.items():
        if logged.get((k, final_step)) != v:
            points.append((k, v, final_step))
    metric_list = [Metric(k[:MAX_KEY], v, now, s) for k, v, s in points]
    for batch in _chunks(param_list, BATCH_PARAMS):
        _retry(lambda b=batch: client.log_batch(run_id, params=b, synchronous=True), "params")
    for batch in _chunks(metric_list, BATCH_METRICS):
        _retry(lambda b=batch: client.log_batch(run_id, metrics=b, synchronous=True), "metrics")

    # beside an evaluation's metrics: its gate, ponder and MultiPool maps
    samples = metrics_path.parent / layout.SAMPLES
    for path in (params_path, metrics_path, samples):
        if path.is_file():
            _retry(lambda p=path: client.log_artifact(run_id, str(p)), "artifact")
    for path, folder in figures:
        _retry(
            lambda p=path, f=folder: client.log_artifact(run_id, str(p), artifact_path=f),
            "artifact",
        )

    _retry(
        lambda: client.log_batch(run_id, tags=[RunTag(TAG_CONTENT, content_hash)]), "content tag"
    )
    _retry(lambda: client.set_terminated(run_id, "FINISHED"), "finish run")
    return run_id


def start_parent(experiment: str, name: str, *, uri: str | None = None) -> str | None:
    """Create a parent run for one pipeline invocation (status RUNNING until `end_parent`);
    return its id, or None when tracking failed (with a warning). Also initialises the store,
    so calling it before starting parallel jobs is enough."""
    try:
        uri = init_store(uri)
        client = _client(uri)
        experiment_id = get_or_create_experiment(client, experiment, uri)
        run = _retry(
            lambda: client.create_run(experiment_id, tags={TAG_KIND: "pipeline"}, run_name=name),
            "create parent run",
        )
        return run.info.run_id
    except Exception as exc:
        _warn(f"starting parent run {name!r}", exc)
        return None


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


ENABLE_ENV = "PAG_TRACKING"  # "0" or "off" turns tracking off (the test suite does)
PARENT_ENV = "PAG_MLFLOW_PARENT"  # the parent run id of a pipeline invocation, if any
EXPERIMENT_ENV = "PAG_MLFLOW_EXPERIMENT"  # the profile's experiment (the pipeline sets it)


def track_job(
    run_dir: str | os.PathLike,
    kind: str,
    experiment: str,
    metrics_file: str | os.PathLike | None = None,
) -> str | None:
    """What `pag train` and `pag evaluate` call when they finish: `log_run` in the experiment
    $PAG_MLFLOW_EXPERIMENT (one per profile; else `experiment`, the run's name) under the parent
    run $PAG_MLFLOW_PARENT, unless $PAG_TRACKING is "0" or "off"."""
    switch = os.environ.get(ENABLE_ENV, "").strip()
    if switch.lower() in ("0", "off", "false", "no"):
        log.debug("MLflow tracking is off ($%s=%s)", ENABLE_ENV, switch)
        return None
    parent = os.environ.get(PARENT_ENV, "").strip() or None
    experiment = os.environ.get(EXPERIMENT_ENV, "").strip() or experiment
    return log_run(run_dir, kind, experiment, parent, metrics_file=metrics_file)
