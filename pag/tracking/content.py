"""What a job's MLflow run holds: params, metrics and tags read from its run directory, and
the arrays that become CSV and PNG artifacts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from pag import run_layout as layout
from pag.tracking.store import (
    FIGURE_DIRS,
    FIGURE_SUFFIXES,
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    META_KEYS,
    TAG_KEY,
    TAG_KIND,
    TAG_RUN,
    _quiet,
    _retry,
)

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
