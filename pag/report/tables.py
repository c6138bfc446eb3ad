"""The report's tables, from summary.csv: the summary of every run, the MultiPool comparison,
every method at matched compute budgets, and the published numbers beside ours.

Values are means over seeds (± sample s.d., ddof=1); MACs are effective MACs per image as %
of the dense baseline of the same dataset."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pag.methods import registry
from pag.report.paper import (
    FLOOR_LABELS,
    FLOOR_SOURCE,
    PAPER_NUMBERS,
    REFERENCE_NUMBERS,
    REFERENCE_SOURCES,
    SOURCES,
    UNSUPPORTED,
)
from pag.report.results import (
    HEADLINE,
    SPREAD,
    MissingInput,
    ReportData,
    curve_points,
    headline_panels,
    plus_minus,
)
from pag.report.style import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    legend_order,
    method_label,
    metric_label,
    reference_method,
    style_of,
)
from pag.report.table import Table

MATCHED_BUDGETS = (100.0, 90.0, 80.0, 70.0, 50.0)  # % of dense compute
PAPER_BUDGET = 0.7  # the budget of the paper's headline PAG rows (the nearest one run is shown)
MATCH_TOLERANCE = 1.0  # percentage points within which a measured point counts as matched
_MEAN_SD = f"Values: mean ± {SPREAD}; — with one seed."


def _mean_sd(values: np.ndarray) -> str:
    return plus_minus(values)


def _metrics_present(df: pd.DataFrame) -> list[tuple[str, str]]:
    panels = headline_panels(df)
    return [(t, m) for t, m in HEADLINE if any(p[1:] == (t, m) for p in panels)]


def _run_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, run), indexed by run: dataset, method, budget, seed and mean
    MACs % over its rows (runs of different datasets may share a name)."""
    return (
        df.groupby(["dataset", "run"])
        .agg(
            method=("method", "first"),
            budget=("budget", "first"),
            seed=("seed", "first"),
            macs_pct=("macs_pct", "mean"),
            effective_macs=("effective_macs", "mean"),
        )
        .reset_index(level="dataset")
    )


def _groups(
    df: pd.DataFrame, methods: list[str] | None = None
) -> list[tuple[str, str, float, pd.DataFrame]]:
    """(dataset, method, budget, runs) per configuration, in method order and decreasing
    compute within a method."""
    runs = _run_table(df)
    records = [
        (dataset, method, float(budget), group)
        for (dataset, method, budget), group in runs.groupby(
            ["dataset", "method", "budget"], dropna=False, sort=False
        )
        if method in (legend_order() if methods is None else methods)
    ]
    records.sort(key=lambda r: (r[0], legend_order().index(r[1]), -r[3]["macs_pct"].mean()))
    return records


def _metric_cells(
    df: pd.DataFrame, runs: pd.Index, metrics: list[tuple[str, str]]
) -> tuple[list[str], list[float]]:
    """Per (task, metric): the cell ("mean ± s.d.", "—" without values) and the mean (NaN
    without values) over the runs, from one selection of their rows."""
    cells, means = [], []
    for task, metric in metrics:
        rows = df[df["run"].isin(runs) & (df["task"] == task) & (df["metric"] == metric)]
        values = rows["value"].to_numpy(dtype=float)
        cells.append("—" if values.size == 0 else _mean_sd(values))
        means.append(float(values.mean()) if values.size else math.nan)
    return cells, means


def best_rows(means: list[float | None], metric: str, among: list[str] | None = None) -> set[int]:
    """The rows holding the best mean of a column (all of them on a tie), by the metric's
    direction; with `among` (one label per row, e.g. the dataset), the best within each label.
    Metrics without a direction have no best."""
    if metric in HIGHER_IS_BETTER:
        sign = 1.0
    elif metric in LOWER_IS_BETTER:
        sign = -1.0
    else:
        return set()
    among = among or [""] * len(means)
    best: set[int] = set()
    for label in set(among):
        scored = [
            (sign * m, i)
            for i, m in enumerate(means)
            if among[i] == label and m is not None and not math.isnan(m)
        ]
        if scored:
            top = max(score for score, _ in scored)
            best |= {i for score, i in scored if score == top}
    return best


BEST_NOTE = "Bold: the best mean in its column"


def format_macs(macs: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if macs >= scale:
            return f"{macs / scale:.1f} {unit}"
    return f"{macs:.0f}"


def summary_table(data: ReportData) -> Table:
    """Every (method, budget): seeds, MACs % and each headline metric."""
    df = data.df
    metrics = _metrics_present(df)
    datasets = sorted(set(df["dataset"]))
    header = ["method", "budget", "seeds", "MACs % of dense"]
    header += [f"{t}: {metric_label(m)}" for t, m in metrics]
    rows, means, row_datasets = [], [], []
    for dataset, method, budget, group in _groups(df):
        cells, row_means = _metric_cells(df[df["dataset"] == dataset], group.index, metrics)
        means.append(row_means)
        row_datasets.append(dataset)
        row = [
            method_label(method),
            "—" if math.isnan(budget) else f"{budget:g}",
            str(group["seed"].nunique()),
            f"{group['macs_pct'].mean():.1f}",
            *cells,
        ]
        rows.append([dataset, *row] if len(datasets) > 1 else row)
    first = 4
    if len(datasets) > 1:
        header.insert(0, "dataset")
        first = 5
    best = {
        (r, first + k)
        for k, (_, metric) in enumerate(metrics)
        for r in best_rows([row[k] for row in means], metric, row_datasets)
    }
    own = sorted(set(df.loc[df["own_dense"], "dataset"]))
    note = (
        f"Values: mean ± {SPREAD}. {BEST_NOTE}. MACs: effective MACs per "
        "image as % of the dense baseline's mean MACs"
    )
    if own:
        note += f" (no dense run for {', '.join(own)}: % of each run's own dense architecture)"
    numeric = [name not in ("dataset", "method") for name in header]
    title = data.inputs.title or "Summary: " + ", ".join(datasets)
    return Table(title, header, rows, [note + "."], numeric=numeric, best=best)


def multipool_table(data: ReportData) -> Table:
    """Table 1: the dense baseline against MultiPool averaging and MP-PAG, per task, with MACs."""
    df = data.df
    multipool = [m.name for m in registry.methods() if m.multipool]
    if not set(multipool) & set(df["method"]):
        raise MissingInput(
            f"table_multipool: no MultiPool runs in the summary (methods {', '.join(multipool)})"
        )
    metrics = _metrics_present(df)
    datasets = sorted(set(df["dataset"]))
    header = ["method", "seeds", "MACs / image", "MACs % of dense"]
    header += [f"{t}: {metric_label(m)}" for t, m in metrics]
    rows, groups, means = [], [], []
    for dataset, method, _budget, group in _groups(df, [registry.baseline().name, *multipool]):
        cells, row_means = _metric_cells(df[df["dataset"] == dataset], group.index, metrics)
        means.append(row_means)
        rows.append(
            [
                method_label(method)
                if len(datasets) == 1
                else f"{dataset}: {method_label(method)}",
                str(group["seed"].nunique()),
                format_macs(group["effective_macs"].mean()),
                f"{group['macs_pct'].mean():.1f}",
                *cells,
            ]
        )
        groups.append(dataset)
    best = {
        (r, 4 + k)
        for k, (_, metric) in enumerate(metrics)
        for r in best_rows([row[k] for row in means], metric, groups)
    }
    notes = [
        _MEAN_SD,
        f"{BEST_NOTE}.",
        "MACs: effective MACs per image (MP-PAG runs one conv branch per pixel; the average "
        "runs them all).",
    ]
    title = "Dense baseline, MultiPool (average) and MP-PAG"
    numeric = [False] + [True] * (len(header) - 1)
    return Table(title, header, rows, notes, numeric=numeric, groups=groups, best=best)


def value_at(points: pd.DataFrame, target: float, tolerance: float = MATCH_TOLERANCE):
    """A method's metric at `target` MACs %: ("measured", mean, s.d.) for a point within
    `tolerance` percentage points (the nearest), else ("interpolated", value, None) linearly
    between the two measured points around it, else None (no extrapolation). Points at equal
    MACs are averaged first."""
    if points.empty:
        return None
    merged = points.groupby("macs_pct", sort=True).agg(mean=("mean", "mean"), std=("std", "mean"))
    x = merged.index.to_numpy(dtype=float)
    distance = np.abs(x - target)
    nearest = int(np.argmin(distance))
    if distance[nearest] <= tolerance:
        return "measured", float(merged["mean"].iloc[nearest]), float(merged["std"].iloc[nearest])
    if not x[0] < target < x[-1]:
        return None
    right = int(np.searchsorted(x, target))
    x0, x1 = x[right - 1], x[right]
    y0, y1 = merged["mean"].iloc[right - 1], merged["mean"].iloc[right]
    return "interpolated", float(y0 + (y1 - y0) * (target - x0) / (x1 - x0)), None


def matched_budget_table(data: ReportData, budgets=MATCHED_BUDGETS) -> Table:
    """Table 2: every method's headline metrics at matched compute (% of dense), measured or
    interpolated along its accuracy-versus-compute curve (marked †)."""
    df = data.df
    header = ["dataset", "metric", "method", *(f"{b:g} %" for b in budgets)]
    rows, groups, values = [], [], []
    for dataset, task, metric in headline_panels(df):
        rows_metric = df[
            (df["dataset"] == dataset) & (df["task"] == task) & (df["metric"] == metric)
        ]
        points = curve_points(rows_metric)
        for method in legend_order():
            mine = points[points["method"] == method]
            if mine.empty:
                continue
            if registry.get(method).full_model_is_reference:  # 100 %: the reference run
                mine = pd.concat([mine, points[points["method"] == reference_method()]])
            cells, found_values = [], []
            for budget in budgets:
                found = value_at(mine, budget)
                found_values.append(None if found is None else found[1])
                if found is None:
                    cells.append("—")
                elif found[0] == "measured":
                    spread = "—" if math.isnan(found[2]) else f"{found[2]:.3f}"
                    cells.append(f"{found[1]:.3f} ± {spread}")
                else:
                    cells.append(f"{found[1]:.3f}†")
            if all(cell == "—" for cell in cells):
                continue  # no run near any of the budgets (the MultiPool methods, often)
            label = f"{task}: {metric_label(metric)}"
            rows.append([dataset, label, style_of(method).label, *cells])
            groups.append(f"{dataset}/{task}/{metric}")
            values.append((metric, found_values))
    best: set[tuple[int, int]] = set()
    for group in dict.fromkeys(groups):  # one (dataset, task, metric): its methods compete
        members = [r for r, g in enumerate(groups) if g == group]
        metric = values[members[0]][0]
        for k in range(len(budgets)):
            winners = best_rows([values[r][1][k] for r in members], metric)
            best |= {(members[i], 3 + k) for i in winners}
    notes = [
        f"A value is measured (mean ± {SPREAD}) where a run's mean MACs lie within "
        f"{MATCH_TOLERANCE:g} percentage point of the budget; † marks a value interpolated "
        "linearly in MACs between the method's two nearest measured budgets; — the budget "
        "lies outside the method's measured range (no extrapolation). Methods with no value "
        "at any of these budgets are left out. Truncation keeping every block is the dense "
        "model with the same fine-tune, so its curve ends in the dense + fine-tune runs at "
        "100 %."
    ]
    notes.append(f"{BEST_NOTE} within each metric, measured or interpolated.")
    title = "Every method at matched compute (effective MACs as % of the dense baseline)"
    numeric = [False] * 3 + [True] * len(budgets)
    return Table(title, header, rows, notes, numeric=numeric, groups=groups, best=best)


def paper_table(data: ReportData) -> Table:
    """Table 3: the published numbers (with their provenance) beside ours on the same dataset,
    task and metric, or "not run" for a dataset this report has no runs of; for the datasets
    shown, published numbers of other detectors and humans (`REFERENCE_NUMBERS`) and our
    measured classical floors (`pag classical`), with their sources."""
    df = data.df
    datasets = set(df["dataset"])
    ours_columns = [  # (method, budget): a swept method at its budget nearest the paper's
        (m, _budget_nearest(df, m.name, PAPER_BUDGET) if m.swept else None)
        for m in registry.methods()
        if m.paper_label is not None
    ]
    header = ["dataset", "task", "metric", "published", "source"]
    header += [
        f"ours: {m.paper_label}" + (f" λ = {budget:g}" if budget is not None else "")
        for m, budget in ours_columns
    ]
    rows: list[list[str]] = []
    for number in PAPER_NUMBERS:
        published = f"{number.value:g}{(' ' + number.unit) if number.unit == '%' else number.unit}"
        ours = []
        for method, budget in ours_columns:
            if number.dataset in UNSUPPORTED:
                ours.append(UNSUPPORTED[number.dataset])
            elif number.dataset not in datasets:
                ours.append("not run")
            else:
                ours.append(_ours(df, number, method.name, budget))
        rows.append(
            [
                number.dataset,
                number.task,
                metric_label(number.metric),
                published,
                number.source,
                *ours,
            ]
        )
    notes = [
        "Published: the values the public record attributes to Kong & Fowlkes; the paper's own "
        "tables are not available. Ours: mean ± sample s.d. over seeds (ddof=1), in the "
        "published unit.",
        *(f"{tag}: {meaning}." for tag, meaning in SOURCES.items()),
    ]
    numeric = [False] * 3 + [True, False, True, True, True]
    title = "Published numbers beside ours"
    others, floors, missing = _other_detectors(data, datasets)
    if missing:
        notes.append(f"No classical floor: {missing}.")
    if not others:
        return Table(title, header, rows, notes, numeric=numeric)
    # the published detectors and our classical floors, after PAG's numbers
    groups = ["PAG"] * len(rows) + [row[0] for row in others]
    if floors:
        header.append("ours: classical floor")
        numeric.append(True)
        rows = [[*row, "—"] for row in rows]
    rows += others
    for tag, meaning in REFERENCE_SOURCES.items():
        if any(row[4].startswith(tag) for row in others):
            notes.append(f"{tag}: {meaning}.")
    return Table(title, header, rows, notes, numeric=numeric, groups=groups)


_ODS_OIS_AP = "ODS / OIS / AP ↑"


def _triple(values, decimals: int) -> str:
    return " / ".join("—" if v is None else f"{v:.{decimals}f}" for v in values)


def _other_detectors(
    data: ReportData, datasets: set[str]
) -> tuple[list[list[str]], bool, str | None]:
    """Rows of the published reference detectors (`REFERENCE_NUMBERS`) of the datasets shown,
    then our measured classical floors (classical.json; a last column then holds them),
    whether there are floors, and why the floors are missing (None if not expected)."""
    try:
        floor = data.classical()
    except MissingInput as exc:
        floor, missing = None, str(exc)
    else:
        missing = None
    shown = datasets | ({floor["dataset"]} if floor else set())
    order = list(FLOOR_LABELS)  # the floors in a fixed order (classical.json sorts them)
    floors = sorted(
        [] if floor is None else floor["detectors"].items(),
        key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]),
    )
    rows = []
    for ref in REFERENCE_NUMBERS:
        if ref.dataset in shown:
            published = _triple((ref.ods, ref.ois, ref.ap), ref.decimals)
            row = [ref.dataset, f"{ref.task}: {ref.method}", _ODS_OIS_AP, published, ref.source]
            rows.append(row + ["—"] * (4 if floors else 3))
    for name, entry in floors:
        sigma = (entry.get("settings") or {}).get("sigma")
        label = FLOOR_LABELS.get(name, name)
        label += f", σ = {sigma:g}" if isinstance(sigma, int | float) else ""
        scores = entry["boundary"]
        where = f"{FLOOR_SOURCE}: {floor.get('split')} split, {floor.get('num_images')} images"
        measured = _triple((scores["ods"], scores["ois"], scores["ap"]), 3)
        rows.append([floor["dataset"], f"boundary: {label}", _ODS_OIS_AP, "—", where])
        rows[-1] += ["—", "—", "—", measured]
    return rows, bool(floors), missing


def _budget_nearest(df: pd.DataFrame, method: str, target: float) -> float | None:
    budgets = sorted(set(df.loc[df["method"] == method, "budget"].dropna()))
    return min(budgets, key=lambda b: (abs(b - target), -b)) if budgets else None


def _ours(df: pd.DataFrame, number, method: str, budget: float | None) -> str:
    rows = df[
        (df["dataset"] == number.dataset)
        & (df["task"] == number.task)
        & (df["metric"] == number.metric)
        & (df["method"] == method)
    ]
    if budget is not None:
        rows = rows[np.isclose(rows["budget"], budget)]
    if rows.empty:
        return "—"
    values = rows["value"].to_numpy(dtype=float) * number.scale
    decimals = 3 if number.scale == 1.0 and number.unit != "°" else 2
    return plus_minus(values, decimals)
