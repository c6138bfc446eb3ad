"""The MLflow store: where it is, its set-up once under a file lock, retries on a busy SQLite
file, quiet third-party loggers, experiments, and the tags and environment variables every
part of the tracking shares."""

from __future__ import annotations

import contextlib
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
from typing import TypeVar
from urllib.parse import unquote, urlparse

from pag import run_layout as layout

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

log = logging.getLogger("pag.tracking")  # one logger for all of the tracking
# loggers of MLflow and the libraries it drives, which write their own start-up lines ("Creating
# initial MLflow database tables...", Alembic's "Context impl SQLiteImpl") to stderr
THIRD_PARTY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "huey")


ENABLE_ENV = "PAG_TRACKING"  # "0" or "off" turns tracking off (the test suite does)
PARENT_ENV = "PAG_MLFLOW_PARENT"  # the parent run id of a pipeline invocation, if any
EXPERIMENT_ENV = "PAG_MLFLOW_EXPERIMENT"  # the profile's experiment (the pipeline sets it)
DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it for every stage command it runs
TAG_RUN = "pag.run"  # the run's name (its directory): links its train and evaluate runs
TAG_TRAINED_BY = "pag.trained_by"  # an evaluation's: the MLflow run of the training
TAG_INVOCATION = "pag.invocation"  # a DVC parent's: the `dvc` process it groups
TAG_FRONT_END = "pag.front_end"


# -- the store ----------------------------------------------------------------------------------


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the SQLite store `mlflow.db` in the working
    directory: the project being run (where the pipelines run their jobs), not the checkout
    that holds the installed package, so clones and worktrees sharing one environment never
    mix their runs."""
    uri = os.environ.get(TRACKING_ENV, "").strip()
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / STORE_FILE}"


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


# -- logging ---------------------------------------------------------------------------------------


def _warn(what: str, exc: BaseException) -> None:
    message = " ".join(str(exc).split())[:500]
    log.warning("MLflow tracking: %s failed: %s: %s", what, type(exc).__name__, message)


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
