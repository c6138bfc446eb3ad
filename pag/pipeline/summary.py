"""The summary: every run's evaluation in one tidy table, plus what `dvc metrics`/`dvc plots` read.

`summarize(plan)` reads `results/<profile>/runs/<run>/metrics.json` of every run of the plan
and writes, atomically, into `results/<profile>/`:

* `summary.csv`: one row per (run, task, metric) with columns `SUMMARY_COLUMNS`: the run's
  method, budget, seed and dataset, the metric's value, and the run's effective and dense MACs
  per image (dense: of the run's own architecture). Dynamic methods add rows of task
  `compute`: `activity` (mean over controlled blocks), `near_boundary`, `far_from_boundary`
  and `allocation_ratio` (`compute_allocation`), and evaluations with extra gate rules add
  `<metric>@<rule>` rows under each task and `activity@<rule>` under `compute`; rows of
  task `training` hold the run's gradient norms (`grad_norm_last_epoch`, `grad_norm_max`, and
  the same of `decision_grad_norm`) from its training metrics;
* `headline.json`: per run, the headline metrics and MACs as % of the dense baseline;
* `curves.csv`: one row per run with the headline metrics as columns (`dvc plots`);

and into each run's `results/<profile>/runs/<run>/headline.json` its own headline metrics, flat
(`run_headline`): the files `dvc metrics show` lists, one row per run.

A run without an evaluation, or an evaluation of another method or budget than its name says,
is an error naming the file: a summary never silently leaves a run out. Results older than
the profile (trained with other params, evaluated on another split or with other gate rules,
or on another version of the data than they were trained on: `check_current`) are refused,
naming every stale run and why; `pag report` refuses them too.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from pag.errors import PagError
from pag.fileio import atomic_write, read_json, remove_temporaries, write_json_atomic
from pag.locking import locked
from pag.methods import registry
from pag.pipeline import plan as layout
from pag.pipeline.plan import Plan, Run, evaluation_settings, run_params
from pag.training.run_params import (
    RunParams,
    comparable_params,
    differing_keys,
    validate_run_params,
)

SUMMARY_COLUMNS = (
    "run",
    "method",
    "budget",
    "seed",
    "dataset",
    "task",
    "metric",
    "value",
    "effective_macs",
    "dense_macs",
)
TASK_ORDER = ("semantic", "boundary", "depth", "normals")
# per task, the metric the paper's comparisons use first (dvc metrics, curves.csv)
HEADLINE = {
    "semantic": ("miou", "pixel_acc"),
    "boundary": ("ods",),
    "depth": ("rmse", "abs_rel", "delta1"),
    "normals": ("mean", "within_11_25"),
}
_NOT_METRICS = {"num_images", "num_skipped"}
# summary rows of what a dynamic method computes (task "compute"): the mean activity over its
# controlled blocks, where its compute goes (`compute_allocation`), and each extra gate rule's
# headline metrics as "<metric>@<rule>" under their task
COMPUTE_TASK = "compute"
# summary rows from the training run (task "training"): gradient norms, mean over the last
# epoch and the largest single step, of all parameters and of the decision parameters
TRAINING_TASK = "training"
_ALLOCATION = {
    "near_boundary": "near_boundary",
    "far_from_boundary": "far_from_boundary",
    "ratio": "allocation_ratio",
}


def _scalar_metrics(section: dict[str, Any]) -> dict[str, float | None]:
    """A task's scalar metrics (counts, flags, per-class lists and curves left out)."""
    scalars = {}
    for key, value in section.items():
        if key in _NOT_METRICS or isinstance(value, bool):
            continue
        if value is None or isinstance(value, int | float):
            scalars[key] = None if value is None else float(value)
    return scalars


def read_evaluation(path: Path, run: Run, method: str | None = None) -> dict[str, Any]:
    """A run's evaluation, checked to be of the run's `method` (its own name's unless a
    variant's method is given) and budget."""
    method = run.method if method is None else method
    if not path.is_file():
        raise PagError(f"{path}: no evaluation of run {run.name} (run `pag evaluate` first)")
    metrics = read_json(path, "evaluation")
    if metrics.get("method") != method or metrics.get("budget") != run.budget:
        raise PagError(
            f"{path}: evaluates method {metrics.get('method')!r} budget "
            f"{metrics.get('budget')!r}, but run {run.name} is {method!r} {run.budget!r}"
        )
    if not isinstance(metrics.get("macs"), dict):
        raise PagError(f"{path}: no 'macs' section")
    return metrics


def expected_params(plan: Plan, run: Run) -> RunParams:
    source = f"{plan.profile_file} (run {run.name})"
    return validate_run_params(run_params(plan.profile, run), source, check_files=False)


def _provenance(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An evaluation's provenance and the training provenance within it ({} where absent:
    evaluations of an older pag record only the params hash)."""
    provenance = metrics.get("provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    training = provenance.get("training")
    return provenance, training if isinstance(training, dict) else {}


def staleness(plan: Plan, run: Run, root: Path = Path(".")) -> str | None:
    """Why the run's results are not what the profile asks for now (its evaluation, or its
    training metrics, made with other params or evaluated otherwise), or None."""
    path = root / layout.eval_metrics(plan.profile, run.name)
    metrics = read_evaluation(path, run, plan.profile.base_method(run.method))
    expected = expected_params(plan, run)
    provenance, training = _provenance(metrics)
    reasons = []
    if metrics.get("params_hash") != expected.digest():
        recorded = training.get("params")
        keys = (
            differing_keys(recorded, comparable_params(expected))
            if isinstance(recorded, dict)
            else []
        )
        reasons.append(f"trained with other params: {', '.join(keys) or 'params_hash'}")
    if training and provenance.get("data") != training.get("data"):
        reasons.append("evaluated on another version of the dataset than it was trained on")
    settings = evaluation_settings(plan.profile, run)
    recorded_rules = sorted(metrics.get("gate_rules") or {})
    found = {
        "split": metrics.get("split"),
        "gate_rule": metrics.get("gate_rule", "hard"),
        "gate_rules": recorded_rules,
    }
    settings["gate_rules"] = sorted(settings["gate_rules"])
    evaluated = [f"evaluation.{k}" for k in settings if found[k] != settings[k]]
    if evaluated:
        reasons.append(f"evaluated otherwise: {', '.join(evaluated)}")
    train_path = root / layout.train_metrics(plan.profile, run.name)
    if train_path.is_file():
        trained = read_json(train_path, "training metrics")
        if trained.get("params_hash") != expected.digest():
            reasons.append(f"{train_path} is of other params")
    return "; ".join(reasons) or None


def check_current(plan: Plan, root: Path = Path(".")) -> None:
    """Refuse results older than the profile: one line naming every stale run and why."""
    stale = {}
    for run in plan.runs():
        reason = staleness(plan, run, root)
        if reason is not None:
            stale[run.name] = reason
    if stale:
        shown = "; ".join(f"{name} ({why})" for name, why in list(stale.items())[:4])
        more = f"; and {len(stale) - 4} more" if len(stale) > 4 else ""
        raise PagError(
            f"{layout.results_dir(plan.profile)}: {len(stale)} of {len(plan.runs())} runs are "
            f"stale, made otherwise than {plan.profile_file} now asks: {shown}{more}; run the "
            "pipeline again (snakemake or dvc repro)"
        )


def summary_rows(plan: Plan, root: Path = Path(".")) -> list[dict[str, Any]]:
    rows = []
    for run in plan.runs():
        path = root / layout.eval_metrics(plan.profile, run.name)
        metrics = read_evaluation(path, run, plan.profile.base_method(run.method))
        macs = metrics["macs"]
        for task in TASK_ORDER:
            if task not in plan.profile.tasks:
                continue
            if not isinstance(metrics.get(task), dict):
                path = layout.eval_metrics(plan.profile, run.name)
                raise PagError(f"{path}: no metrics of task {task!r}")
            for metric, value in _scalar_metrics(metrics[task]).items():
                rows.append(_row(plan, run, macs, task, metric, value))
        for task, metric, value in _compute_values(metrics, plan.profile.tasks):
            rows.append(_row(plan, run, macs, task, metric, value))
        history = _training_history(root / layout.train_metrics(plan.profile, run.name))
        for metric, value in _gradient_values(history):
            rows.append(_row(plan, run, macs, TRAINING_TASK, metric, value))
    return rows


def _training_history(path: Path) -> list[dict[str, Any]]:
    """A run's per-epoch training records; [] where the training metrics are absent (a
    summary of evaluations copied without their runs)."""
    if not path.is_file():
        return []
    history = read_json(path, "training metrics").get("history") or []
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise PagError(f"{path}: 'history' is not a list of per-epoch records")
    return history


def _gradient_values(history: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Gradient norms of the training run: the last epoch's mean and the largest step's."""
    values = []
    for name in ("grad_norm", "decision_grad_norm"):
        last = (history[-1].get("train") or {}).get(name) if history else None
        peaks = [h.get("train_max", {}).get(name) for h in history]
        peaks = [p for p in peaks if p is not None]
        if last is not None:
            values.append((f"{name}_last_epoch", float(last)))
        if peaks:
            values.append((f"{name}_max", float(max(peaks))))
    return values


def _row(plan: Plan, run: Run, macs: dict, task: str, metric: str, value) -> dict[str, Any]:
    return {
        "run": run.name,
        "method": run.method,
        "budget": run.budget,
        "seed": run.seed,
        "dataset": plan.profile.dataset,
        "task": task,
        "metric": metric,
        "value": value,
        "effective_macs": float(macs["effective"]),
        "dense_macs": float(macs["dense"]),
    }


def _compute_values(metrics: dict[str, Any], tasks) -> list[tuple[str, str, float | None]]:
    """(task, metric, value) of a run's activity, compute allocation and gate rules."""
    values: list[tuple[str, str, float | None]] = []
    activity = metrics.get("activity") or {}
    if activity:
        values.append((COMPUTE_TASK, "activity", sum(activity.values()) / len(activity)))
    allocation = metrics.get("compute_allocation") or {}
    for key, metric in _ALLOCATION.items():
        if key in allocation:
            values.append((COMPUTE_TASK, metric, allocation[key]))
    for rule, section in sorted((metrics.get("gate_rules") or {}).items()):
        values.append((COMPUTE_TASK, f"activity@{rule}", section.get("activity_mean")))
        for task in TASK_ORDER:
            if task in tasks and isinstance(section.get(task), dict):
                for metric in HEADLINE[task]:
                    if metric in section[task]:
                        values.append((task, f"{metric}@{rule}", section[task][metric]))
    # undefined values (a ratio of nothing computed anywhere) are left out, not written empty
    return [(task, metric, value) for task, metric, value in values if value is not None]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def write_csv(path: Path, columns: tuple[str, ...] | list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())


def baseline_macs(rows: list[dict[str, Any]]) -> float:
    """Mean effective MACs per image of the dense baseline's runs (100 %)."""
    dense = registry.baseline().name
    per_run = {row["run"]: row["effective_macs"] for row in rows if row["method"] == dense}
    if not per_run:
        raise PagError("no dense baseline run in the summary: MACs % cannot be computed")
    return sum(per_run.values()) / len(per_run)


def per_run_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per run: identity, MACs % of dense and the headline metrics as columns."""
    dense = baseline_macs(rows)
    table: dict[str, dict[str, Any]] = {}
    columns = ["run", "method", "budget", "seed", "macs_pct"]
    for row in rows:
        entry = table.setdefault(
            row["run"],
            {
                **{key: row[key] for key in ("run", "method", "budget", "seed")},
                "macs_pct": 100.0 * row["effective_macs"] / dense,
            },
        )
        if row["task"] == TRAINING_TASK:
            continue
        if row["task"] == COMPUTE_TASK:
            if row["metric"] in ("activity", "allocation_ratio"):
                entry[row["metric"]] = row["value"]
                if row["metric"] not in columns:
                    columns.append(row["metric"])
        elif row["metric"] in HEADLINE[row["task"]]:
            column = f"{row['task']}_{row['metric']}"
            entry[column] = row["value"]
            if column not in columns:
                columns.append(column)
    return columns, list(table.values())


def training_history(plan: Plan, run: Run, root: Path = Path(".")) -> dict[str, Any]:
    """The run's per-epoch training history, from its training metrics, as the pipeline
    commits it (the report's training curves redraw from it without the run directory)."""
    path = root / layout.train_metrics(plan.profile, run.name)
    record = read_json(path, "training metrics")
    history = record.get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise PagError(f"{path}: 'history' must be a list of per-epoch records")
    return {"run": run.name, "params_hash": record.get("params_hash"), "history": history}


def read_samples(plan: Plan, run: Run, root: Path = Path(".")) -> bytes:
    """The run's saved samples, as its evaluation wrote them (copied, byte for byte)."""
    path = root / layout.eval_samples(plan.profile, run.name)
    if not path.is_file():
        raise PagError(f"{path}: no saved samples of run {run.name} (run `pag evaluate` first)")
    return path.read_bytes()


# a run's own headline file (`dvc metrics show`: one row per file, these as its columns):
# numbers only, its identity is its path
RUN_HEADLINE_SKIPPED = ("run", "method", "budget", "seed", "allocation_ratio")


def run_headline(run: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """One run's row of `curves.csv` as its `headline.json`: MACs % of dense, the headline
    metrics and (dynamic methods) the mean activity."""
    return {k: run[k] for k in columns if k in run and k not in RUN_HEADLINE_SKIPPED}


def summarize(plan: Plan, root: Path = Path(".")) -> list[Path]:
    """Write summary.csv, headline.json and curves.csv of the plan's results, and each run's
    headline.json, training history and (each method's lowest seed) saved samples beside its
    evaluation; return the paths. Results older than the profile are refused
    (`check_current`)."""
    check_current(plan, root)
    rows = summary_rows(plan, root)
    histories = {
        root / layout.train_history(plan.profile, run.name): training_history(plan, run, root)
        for run in plan.runs()
    }
    samples = {  # the saved images the report draws: each method's lowest seed
        root / layout.committed_samples(plan.profile, run.name): read_samples(plan, run, root)
        for run in layout.drawn_runs(plan.profile)
    }
    out = root / layout.results_dir(plan.profile)
    summary, headline, curves = (out / name for name in layout.SUMMARY_FILES)
    per_run = {run.name: root / layout.run_headline(plan.profile, run.name) for run in plan.runs()}
    with locked(summary, "summary", hint="wait for the other `pag summarize`"):
        for path in (summary, headline, curves, *per_run.values()):
            remove_temporaries(path)  # what a summary killed while writing left
        write_csv(summary, SUMMARY_COLUMNS, rows)
        columns, runs = per_run_table(rows)
        write_csv(curves, columns, runs)
        nested = {
            run["run"]: {
                k: run[k] for k in columns if k in run and k not in ("run", "method", "seed")
            }
            for run in runs
        }
        write_json_atomic(headline, nested)
        for run in runs:
            write_json_atomic(per_run[run["run"]], run_headline(run, columns))
        for path, history in histories.items():
            remove_temporaries(path)
            write_json_atomic(path, history)
        for path, payload in samples.items():
            remove_temporaries(path)
            with atomic_write(path, "wb") as handle:
                handle.write(payload)
    return [summary, headline, curves, *per_run.values(), *histories, *samples]
