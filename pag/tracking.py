"""MLflow tracking: live runs of the jobs; the JSON files in the run directories stay the truth.

* **Store.** `MLFLOW_TRACKING_URI` when set, else a SQLite file `mlflow.db` in the working
  directory (the project being run, where the pipelines run their jobs; not the checkout that
  holds the installed package, so clones and worktrees never mix their runs), with artifacts
  on the local file system beside it (`<store dir>/mlartifacts/<experiment>/...`).
  View it with ``mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1``.
* **A training job is a run while it trains** (`LiveTrainingRun`, a training observer that
  `pag train` gives the loop on rank 0): created when training starts (a resumed job continues
  the unfinished run of its run directory and params hash), with the flattened params, tags
  (`pag.run`, method, budget, digests, `mlflow.source.name`, `mlflow.source.git.commit` of the
  working directory), the training split as a dataset input (name, split, fingerprint); the
  loss terms, learning rate and temperature every `log_every` steps (`batch.*`, step = global
  step), each epoch's record (`train.*`, `lr`, `temperature`, step = epoch), and at the end the
  final metrics, `params.yaml`, `train_metrics.json` and `checkpoints/final.pt` as artifacts.
  A background thread sends it all, so the loop never waits on the store.
* **Finished jobs.** `log_run(run_dir, kind, experiment)` logs a job from its files: `pag
  evaluate` (with the evaluation's real start time) and `pag train` for a run that was finished
  already. Logging the same files again changes nothing (the run is found by a key tag and a
  content hash; a live run is marked the same way); logging after they changed replaces the
  old run (deleted, not duplicated). Big arrays of the metrics (lists longer than `MAX_LIST`:
  the boundary PR curve) are not metrics but `curves/<key>.csv` artifacts, PR curves also
  plotted as `curves/<key>.png`; an evaluation's `pag.trained_by` tag is its training's run id.
* **Grouping.** One parent run per pipeline invocation and profile: the Snakefile's `onstart`
  calls `begin_pipeline`, which exports its id in `$PAG_MLFLOW_PARENT` (and the experiment in
  `$PAG_MLFLOW_EXPERIMENT`) to the jobs, and `onsuccess`/`onerror` end it. DVC has no hooks:
  a stage's job finds the parent of its `dvc` process (`dvc_invocation`, a tag) or creates it,
  re-opens it, and ends it when it ends, so the parent ends with the invocation's last job.
  Jobs carry it as `mlflow.parentRunId`, which the UI nests by.
* **Concurrency.** SQLite serializes writers. The schema is created and migrated once, under an
  exclusive file lock (`init_store()`, which every entry point calls and which is cheap once
  done), the database is switched to WAL (readers never block the writer), and every store call
  is retried with backoff on "database is locked" and other transient SQLite errors.
  Experiments are got-or-created with a retry for the creation race. WAL needs a local file
  system: on a shared (NFS) file system, point `MLFLOW_TRACKING_URI` at an `mlflow server`.
* **Never fails a job.** Every entry point catches every error, logs one warning naming it (on
  stderr) and goes on without tracking; a live run waits at most `FLUSH_TIMEOUT_S` at the end.
  `PAG_TRACKING=0` turns all of it off.
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


# -- what a job's run holds ------------------------------------------------------------------------

MAX_LIST = 64  # a longer list of numbers is an array, not metrics: it goes to an artifact
CURVES_DIR = "curves"  # artifact folder of the arrays (CSV) and their plots (PNG)


def _key(kind: str, metrics_path: Path) -> str:
    return _key_of(f"{kind}\0{metrics_path}")


def split_arrays(tree: Any, prefix: str = "") -> tuple[Any, dict[str, dict[str, list]]]:
    """`tree` without its big arrays, and the arrays as tables: a mapping whose values include
    a list longer than `MAX_LIST` (the boundary PR curve: thresholds, precision, recall, f) is
    taken out whole, as one table under its dotted key; such a list elsewhere becomes a
    one-column table. Per-class and per-layer lists stay (they are metrics)."""
    if isinstance(tree, dict):
        if any(isinstance(v, list) and len(v) > MAX_LIST for v in tree.values()):
            columns = {k: v for k, v in tree.items() if isinstance(v, list)}
            rest = {k: v for k, v in tree.items() if not isinstance(v, list)}
            tables = {prefix[:-1] or "table": columns}
            kept, more = split_arrays(rest, prefix)
            return kept, {**tables, **more}
        kept: dict[str, Any] = {}
        tables: dict[str, dict[str, list]] = {}
        for key, value in tree.items():
            kept[key], found = split_arrays(value, f"{prefix}{key}.")
            tables.update(found)
        return kept, tables
    if isinstance(tree, list) and len(tree) > MAX_LIST:
        name = prefix[:-1] or "values"
        return None, {name: {name.rsplit(".", 1)[-1]: tree}}
    return tree, {}


def table_csv(columns: dict[str, list]) -> str:
    """A table's CSV text: one column per list (shorter ones padded with empty cells)."""
    names = list(columns)
    rows = max((len(v) for v in columns.values()), default=0)
    lines = [",".join(names)]
    for i in range(rows):
        cells = [columns[n][i] if i < len(columns[n]) else None for n in names]
        lines.append(",".join("" if c is None else json.dumps(c) for c in cells))
    return "\n".join(lines) + "\n"


def pr_figure(columns: dict[str, list], title: str):
    """A precision-recall curve as a matplotlib figure (Agg, no pyplot: nothing global)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    recall, precision = columns["recall"], columns["precision"]
    axes.plot(recall, precision, color="C0")
    if columns.get("f"):
        best = max(range(len(columns["f"])), key=lambda i: columns["f"][i])
        axes.plot([recall[best]], [precision[best]], "o", color="C3")
        axes.annotate(f"ODS F = {columns['f'][best]:.3f}", (recall[best], precision[best]))
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1), title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _is_pr_curve(columns: dict[str, list]) -> bool:
    return {"precision", "recall"} <= columns.keys()


_GIT: dict[str, str | None] = {}


def git_commit(where: str | os.PathLike | None = None) -> str | None:
    """The commit checked out in `where` (default: the working directory), None outside git."""
    import subprocess

    where = str(Path(where or Path.cwd()).resolve())
    if where not in _GIT:
        try:
            done = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
            )
            _GIT[where] = done.stdout.strip() if done.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            _GIT[where] = None
    return _GIT[where]


def source_tags(kind: str) -> dict[str, str]:
    """The tags MLflow's UI shows as a run's source, user and git commit."""
    import getpass

    tags = {"mlflow.source.name": f"pag {kind}", "mlflow.source.type": "LOCAL"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    with contextlib.suppress(Exception):
        tags["mlflow.user"] = getpass.getuser()
    return tags


def _tag_values(tags: dict[str, Any]) -> dict[str, str]:
    # budget is always tagged (`null` for dense); other unknowns are left out
    return {
        k: param_value(v)[:MAX_TAG_VALUE]
        for k, v in tags.items()
        if v is not None or k == "pag.budget"
    }


def _job_tags(kind, run_dir, metrics_path, params, metrics) -> dict[str, Any]:
    split = metrics.get("split") if kind == "evaluate" else None
    return {
        TAG_KEY: _key(kind, metrics_path),
        TAG_KIND: kind,
        TAG_RUN: run_dir.name,
        "pag.run_dir": str(run_dir),
        "pag.metrics_file": str(metrics_path),
        "pag.method": metrics.get("method", params.get("method")),
        "pag.budget": metrics.get("budget", params.get("budget")),
        "pag.params_hash": metrics.get("params_hash"),
        "pag.split": split,
        "pag.name": params.get("name"),
        "pag.dataset": params.get("dataset"),
        **_provenance_tags(metrics.get("provenance")),
        **source_tags(kind),
    }


def _run_name(run_dir: Path, kind: str, split: Any = None) -> str:
    return f"{run_dir.name}/{kind}" + (f"/{split}" if isinstance(split, str) else "")


def _final_points(metrics: dict[str, Any], logged: dict[tuple[str, int], float]) -> list:
    """(key, value, step) of a job's final metrics not already logged at the final step."""
    final_step = int(metrics.get("epochs") or 0)
    kept, _ = split_arrays(
        {k: v for k, v in metrics.items() if k != "history" and k not in META_KEYS}
    )
    return [
        (k, v, final_step)
        for k, v in numeric_leaves(kept).items()
        if logged.get((k, final_step)) != v
    ]


def _log_arrays(client, run_id: str, metrics: dict[str, Any]) -> None:
    """The big arrays of a job's metrics as CSV artifacts, PR curves also as PNG plots."""
    _, tables = split_arrays(metrics)
    for name, columns in tables.items():
        _retry(
            lambda n=name, c=columns: client.log_text(
                run_id, table_csv(c), f"{CURVES_DIR}/{n}.csv"
            ),
            "curve",
        )
        if _is_pr_curve(columns):
            with _quiet():
                figure = pr_figure(columns, name)
            _retry(
                lambda n=name, f=figure: client.log_figure(run_id, f, f"{CURVES_DIR}/{n}.png"),
                "curve plot",
            )


def _find_runs(client, experiment_id: str, key: str) -> list:
    from mlflow.entities import ViewType

    return _retry(
        lambda: client.search_runs(
            [experiment_id], f"tags.`{TAG_KEY}` = '{key}'", run_view_type=ViewType.ACTIVE_ONLY
        ),
        "search runs",
    )


def training_run_of(client, experiment_id: str, run_dir: Path) -> str | None:
    """The MLflow run of the training in `run_dir` (the newest), if it was tracked."""
    runs = _find_runs(client, experiment_id, _key("train", layout.train_metrics_file(run_dir)))
    return max(runs, key=lambda r: r.info.start_time).info.run_id if runs else None


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


class _JobFiles:
    """What a finished job left in its run directory, as MLflow logs it."""

    def __init__(self, run_dir: Path, kind: str, metrics_file: str | os.PathLike | None):
        self.run_dir, self.kind = run_dir.resolve(), kind
        self.metrics_path = (
            Path(metrics_file).resolve()
            if metrics_file
            else layout.train_metrics_file(self.run_dir)
        )
        self.params_path = layout.params_file(self.run_dir)
        self.params_bytes = self.params_path.read_bytes() if self.params_path.is_file() else b""
        self.metrics_bytes = self.metrics_path.read_bytes()
        self.params = (yaml.safe_load(self.params_bytes) or {}) if self.params_bytes else {}
        self.metrics = json.loads(self.metrics_bytes)
        self.figures = [  # (file, artifact folder)
            (path, str(path.parent.relative_to(base)))
            for base in dict.fromkeys([self.run_dir, self.metrics_path.parent])
            for name in FIGURE_DIRS
            if (base / name).is_dir()
            for path in sorted((base / name).rglob("*"))
            if path.is_file() and path.suffix.lower() in FIGURE_SUFFIXES
        ]
        final = layout.final_checkpoint(self.run_dir)
        self.checkpoint = final if kind == "train" and final.is_file() else None
        self.key = _key(kind, self.metrics_path)

    def content_hash(self, experiment: str) -> str:
        content = hashlib.sha256(self.params_bytes + b"\0" + self.metrics_bytes)
        content.update(f"\0{experiment}".encode())
        for path, _ in self.figures:
            content.update(f"\0{path}\0{path.stat().st_size}\0{path.stat().st_mtime_ns}".encode())
        return content.hexdigest()

    def log_files(self, client, run_id: str) -> None:
        # beside an evaluation's metrics: its gate, ponder and MultiPool maps
        samples = self.metrics_path.parent / layout.SAMPLES
        for path in (self.params_path, self.metrics_path, samples):
            if path.is_file():
                _retry(lambda p=path: client.log_artifact(run_id, str(p)), "artifact")
        for path, folder in self.figures:
            _retry(
                lambda p=path, f=folder: client.log_artifact(run_id, str(p), artifact_path=f),
                "artifact",
            )
        if self.checkpoint is not None:
            _retry(
                lambda: client.log_artifact(run_id, str(self.checkpoint), layout.CHECKPOINTS),
                "checkpoint",
            )
        _log_arrays(client, run_id, self.metrics)


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


ENABLE_ENV = "PAG_TRACKING"  # "0" or "off" turns tracking off (the test suite does)
PARENT_ENV = "PAG_MLFLOW_PARENT"  # the parent run id of a pipeline invocation, if any
EXPERIMENT_ENV = "PAG_MLFLOW_EXPERIMENT"  # the profile's experiment (the pipeline sets it)
DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it for every stage command it runs
TAG_RUN = "pag.run"  # the run's name (its directory): links its train and evaluate runs
TAG_TRAINED_BY = "pag.trained_by"  # an evaluation's: the MLflow run of the training
TAG_INVOCATION = "pag.invocation"  # a DVC parent's: the `dvc` process it groups
TAG_FRONT_END = "pag.front_end"

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


# -- live training runs ----------------------------------------------------------------------------

FLUSH_TIMEOUT_S = 30.0  # at the end, the longest a job waits for its tracking to catch up


class LiveTrainingRun:
    """A training job as an MLflow run for its real duration: a `TrainingObserver`
    (`pag.training.observer`) that `pag train` gives the training loop (rank 0).

    * on start: the run is created (or, when the job resumes from a checkpoint, the unfinished
      run of the same run directory and params hash is continued), with the flattened params,
      tags (run, method, budget, digests, source and git commit), the dataset as an input,
      under the pipeline's parent run;
    * every `log_every` steps: the step's loss terms as `batch.<term>`, the learning rate and
      temperature as `batch.lr`, `batch.temperature` (step = global step);
    * every epoch: its record as `log_run` logs it (`train.<term>`, `lr`, ...; step = epoch);
    * at the end: the final metrics, `params.yaml`, `train_metrics.json` and the final
      checkpoint as artifacts; the run is FINISHED, marked as `log_run` marks it (a later
      `log_run` of the same files changes nothing).

    Everything is sent from a background thread in the order it happened, so the loop never
    waits on the store; the first error is one warning and ends tracking for the job (training
    goes on); at the end the job waits at most `FLUSH_TIMEOUT_S` for the thread."""

    def __init__(self, experiment: str, *, uri: str | None = None):
        import queue

        self.experiment = _experiment_of(experiment)
        self.uri = uri
        self.run_id: str | None = None
        self.started = False  # on_start was called: training ran (it was not finished)
        self.broken = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = None
        self._log_every = 1
        self._run_dir: Path | None = None
        self._parent: tuple[str | None, bool] = (None, False)
        self._client = None
        self._logged = {True: 0, False: 0}  # the last step (per step) or epoch already logged

    # the observer interface (called by the training loop) ---------------------------------

    def on_start(self, start) -> None:
        import threading

        self.started = True
        self._log_every = max(1, int(start.params.training.log_every))
        self._run_dir = Path(start.run_dir).resolve()
        started = int(time.time() * 1000)  # the run starts now, however slow the store is
        self._queue.put(("call", lambda: self._open(start, started)))
        self._thread = threading.Thread(target=self._work, name="mlflow-tracking", daemon=True)
        self._thread.start()

    def on_step(self, step, values, lr, temperature) -> None:
        if step % self._log_every or self.broken:
            return
        now = int(time.time() * 1000)
        points = {f"batch.{k}": v for k, v in values.items()}
        points["batch.lr"] = lr
        if temperature is not None:
            points["batch.temperature"] = temperature
        self._queue.put(("metrics", [(k, float(v), now, step) for k, v in points.items()]))

    def on_epoch(self, record) -> None:
        if self.broken:
            return
        now = int(time.time() * 1000)
        self._queue.put(("metrics", [(k, v, now, s) for k, v, s in epoch_metrics([record])]))

    def on_end(self, metrics) -> None:
        self._queue.put(("call", self._finish))
        self.close()

    # for the CLI ------------------------------------------------------------------------------

    def abort(self, status: str = "FAILED") -> None:
        """The job failed (or was interrupted: "KILLED"): end the run so."""
        if self._thread is None:
            return
        self._queue.put(("call", lambda: self._terminate(status)))
        self.close()

    def close(self) -> None:
        """Wait (at most `FLUSH_TIMEOUT_S`) for everything to be sent."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(FLUSH_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning(
                "MLflow tracking: the store did not take the run in %.0f s; left unfinished",
                FLUSH_TIMEOUT_S,
            )
        self._thread = None

    # the background thread --------------------------------------------------------------------

    def _work(self) -> None:
        pending = None
        while True:
            item = pending if pending is not None else self._queue.get()
            pending = None
            if item is None:
                return
            if self.broken:
                continue
            try:
                if item[0] == "metrics":
                    points = list(item[1])
                    while len(points) < BATCH_METRICS:  # whatever else is waiting, in one batch
                        try:
                            more = self._queue.get_nowait()
                        except Exception:
                            break
                        if more is None or more[0] != "metrics":
                            pending = more
                            break
                        points.extend(more[1])
                    self._log_metrics(points)
                else:
                    item[1]()
            except Exception as exc:
                self.broken = True
                _warn(f"tracking training run {self._run_dir}", exc)

    def _log_metrics(self, points) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        metrics = [  # not again what the run logged before it was interrupted (and redoes)
            Metric(k[:MAX_KEY], v, t, s)
            for k, v, t, s in points
            if s > self._logged[k.startswith("batch.")]
        ]
        for batch in _chunks(metrics, BATCH_METRICS):
            _retry(lambda b=batch: self._client.log_batch(self.run_id, metrics=b), "metrics")

    def _open(self, start, started: int) -> None:
        from mlflow.entities import Param

        uri = init_store(self.uri)
        self.uri = uri
        client = self._client = _client(uri)
        experiment_id = get_or_create_experiment(client, self.experiment, uri)
        run_dir = self._run_dir
        params = yaml.safe_load(layout.params_file(run_dir).read_text()) or {}
        metrics_path = layout.train_metrics_file(run_dir)
        key = _key("train", metrics_path)
        params_hash = start.provenance.get("params_hash")
        self._parent = _job_parent(client, experiment_id, self.experiment, uri)
        parent = self._parent[0]
        resumed = None
        for run in _find_runs(client, experiment_id, key):
            tags = run.data.tags
            if (
                resumed is None
                and start.resumed_step > 0
                and run.info.status != "FINISHED"
                and tags.get("pag.params_hash") == params_hash
            ):
                resumed = run
            else:  # a run this one replaces (other params, started over, or finished before)
                _retry(lambda r=run: client.delete_run(r.info.run_id), "delete stale run")
        if resumed is not None:
            self.run_id = resumed.info.run_id
            for per_step, key in ((True, "batch.loss"), (False, "train.loss")):
                history = _retry(lambda k=key: client.get_metric_history(self.run_id, k), key)
                self._logged[per_step] = max((m.step for m in history), default=0)
            _retry(lambda: client.update_run(self.run_id, "RUNNING"), "resume run")
            if parent and resumed.data.tags.get(TAG_PARENT) != parent:
                _retry(lambda: client.set_tag(self.run_id, TAG_PARENT, parent), "parent tag")
            log.debug("train job %s continues MLflow run %s", run_dir, self.run_id)
            return
        tags = _job_tags("train", run_dir, metrics_path, params, {"params_hash": params_hash})
        tags.update(_provenance_tags(start.provenance))
        if parent:
            tags[TAG_PARENT] = parent
        run = _retry(
            lambda: client.create_run(
                experiment_id,
                start_time=started,
                tags=_tag_values(tags),
                run_name=_run_name(run_dir, "train"),
            ),
            "create run",
        )
        self.run_id = run.info.run_id
        log.debug(
            "train job %s is MLflow run %s (live; experiment %r)",
            run_dir,
            self.run_id,
            self.experiment,
        )
        param_list = [
            Param(k[:MAX_KEY], param_value(v)) for k, v in flatten(params).items() if k[:MAX_KEY]
        ]
        for batch in _chunks(param_list, BATCH_PARAMS):
            _retry(lambda b=batch: client.log_batch(self.run_id, params=b), "params")
        self._log_dataset(start)

    def _log_dataset(self, start) -> None:
        """The training split as the run's input: name, split, fingerprint and size only."""
        with _quiet():
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset
            from mlflow.entities import DatasetInput, InputTag

        params = start.params
        with warnings.catch_warnings():  # "can be interpreted in multiple ways" (all local)
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(Path(start.data_root).resolve().as_uri())
        fingerprint = start.provenance.get("data")
        dataset = MetaDataset(
            source,
            name=f"{params.dataset}/{params.train_split}",
            digest=(fingerprint or "")[:36] or None,
        )
        entity = dataset._to_mlflow_entity()
        context = [
            InputTag("mlflow.data.context", "train"),
            InputTag("pag.images", str(start.num_images)),
        ]
        _retry(
            lambda: self._client.log_inputs(self.run_id, [DatasetInput(entity, context)]),
            "dataset input",
        )

    def _finish(self) -> None:
        from mlflow.entities import Metric, RunTag

        if self.run_id is None:
            return
        job = _JobFiles(self._run_dir, "train", None)
        now = int(time.time() * 1000)
        logged = {(k, s): v for k, v, s in epoch_metrics(job.metrics.get("history") or [])}
        finals = [Metric(k[:MAX_KEY], v, now, s) for k, v, s in _final_points(job.metrics, logged)]
        client = self._client
        for batch in _chunks(finals, BATCH_METRICS):
            _retry(lambda b=batch: client.log_batch(self.run_id, metrics=b), "final metrics")
        job.log_files(client, self.run_id)
        content = job.content_hash(self.experiment)
        _retry(
            lambda: client.log_batch(self.run_id, tags=[RunTag(TAG_CONTENT, content)]), "content"
        )
        self._terminate("FINISHED")

    def _terminate(self, status: str) -> None:
        if self.run_id is None:
            return
        _retry(lambda: self._client.set_terminated(self.run_id, status), "end run")
        parent, ends = self._parent
        if ends and parent:
            _retry(lambda: self._client.set_terminated(parent, status), "end parent run")


def training_observer(experiment: str):
    """The observer `pag train` gives the training loop: a `LiveTrainingRun`, or the no-op one
    when tracking is off."""
    from pag.training.observer import NO_OBSERVER

    return LiveTrainingRun(experiment) if enabled() else NO_OBSERVER
