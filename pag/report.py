"""The report step: the accuracy-versus-compute figure and the summary table from summary.csv.

Everything here is regenerated from the pipeline's one tidy CSV (one row per run, task and
metric), and the same input always gives byte-identical files, so the workflow tools that track
them (DVC, Snakemake) never see a change that is not one."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pag.errors import PagError
from pag.fileio import atomic_write

COLUMNS = (
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
# the order of the legend and of the table's rows
METHODS = ("dense", "multipool_avg", "mp_pag", "pag", "truncation", "layer_skip", "sact")
SWEPT = frozenset({"pag", "truncation", "layer_skip", "sact"})  # curves; the others are points
# the (task, metric) panels of the figure and columns of the table, in this order
HEADLINE = (
    ("semantic", "miou"),
    ("boundary", "ods"),
    ("depth", "rmse"),
    ("depth", "abs_rel"),
    ("normals", "mean"),
    ("normals", "within_11_25"),
)
HIGHER_IS_BETTER = frozenset({"miou", "pixel_acc", "ods", "ois", "ap", "delta1", "within_11_25"})
LOWER_IS_BETTER = frozenset({"abs_rel", "rmse", "mean", "median"})

FIGURE_PNG = "accuracy_vs_compute.png"
FIGURE_PDF = "accuracy_vs_compute.pdf"
TABLE_MD = "summary_table.md"
ERROR_BARS = "Mean over seeds; error bars ±1 s.d. over seeds (ddof=0)"

# seaborn 0.13's "colorblind" palette, copied so a method keeps its colour whatever seaborn
# release is installed (tests/test_report.py checks the copy) and no pyplot import is needed
_COLORBLIND = (
    "#0173b2",
    "#de8f05",
    "#029e73",
    "#d55e00",
    "#cc78bc",
    "#ca9161",
    "#fbafe4",
    "#949494",
    "#ece133",
    "#56b4e9",
)
# method -> (label, colour, marker, line style); fixed so every figure draws a method alike
_STYLE: dict[str, tuple[str, str, str, str]] = {
    "dense": ("Dense", _COLORBLIND[7], "*", "none"),
    "multipool_avg": ("MultiPool (avg)", _COLORBLIND[5], "s", "none"),
    "mp_pag": ("MP-PAG", _COLORBLIND[4], "D", "none"),
    "pag": ("PAG", _COLORBLIND[0], "o", "-"),
    "truncation": ("Truncation", _COLORBLIND[1], "v", "--"),
    "layer_skip": ("Layer skip", _COLORBLIND[2], "^", "-."),
    "sact": ("SACT", _COLORBLIND[3], "P", ":"),
}
_TASK_LABELS = {
    "semantic": "Semantic segmentation",
    "boundary": "Boundaries",
    "depth": "Depth",
    "normals": "Surface normals",
}
_METRIC_LABELS = {
    "miou": "mIoU",
    "pixel_acc": "pixel accuracy",
    "ods": "ODS F-measure",
    "ois": "OIS F-measure",
    "ap": "AP",
    "abs_rel": "Abs Rel",
    "rmse": "RMSE",
    "delta1": "δ < 1.25",
    "mean": "mean angle error (°)",
    "median": "median angle error (°)",
    "within_11_25": "within 11.25°",
}
# matplotlib's defaults plus paper sizes: fonts >= 8 pt at a 7 in figure, TrueType in the PDF
_RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 9,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "pdf.fonttype": 42,
}
_DPI = 200
_PANEL_COLUMNS = 3
_FIGURE_WIDTH_IN = 7.0  # a two-column paper's full width
_PANEL_HEIGHT_IN = 2.1
_LEGEND_HEIGHT_IN = 0.75


def make_report(summary_csv: Path, out_dir: Path, *, title: str | None = None) -> list[Path]:
    """Write the accuracy-versus-compute figure (PNG, PDF) and the summary table into `out_dir`.

    Everything is rendered in memory before anything is written, and each file is replaced
    atomically, so an error leaves no partial or half-updated report. Returns the written paths.
    """
    summary_csv, out_dir = Path(summary_csv), Path(out_dir)
    df = _load_summary(summary_csv)
    with _style():
        fig = _figure(df, title=title)
        outputs = {
            FIGURE_PNG: _render(fig, "png"),
            FIGURE_PDF: _render(fig, "pdf"),
            TABLE_MD: _table(df, title=title).encode(),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in outputs.items():
        path = out_dir / name
        with atomic_write(path) as handle:
            handle.write(data)
        written.append(path)
    return written


def _load_summary(path: Path) -> pd.DataFrame:
    """Read and check summary.csv, so a malformed file fails here with its name and line rather
    than as a KeyError or a silently wrong figure later.

    Adds `macs_pct` (effective MACs as % of the dataset's dense baseline, else of the run's own
    dense architecture) and `own_dense` (True where the latter was used)."""
    if not path.is_file():
        raise PagError(f"{path}: file not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise PagError(f"{path}: empty file (expected a header and rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PagError(f"{path}: not a readable CSV ({exc})") from None
    missing = [column for column in COLUMNS if column not in raw.columns]
    if missing:
        raise PagError(f"{path}: missing column(s) {missing}")
    if raw.empty:
        raise PagError(f"{path}: no rows (only a header)")

    df = pd.DataFrame({column: raw[column].str.strip() for column in COLUMNS})
    for column in ("run", "method", "dataset", "task", "metric"):
        empty = df.index[df[column] == ""]
        if len(empty):
            raise PagError(f"{path}: line {empty[0] + 2}: empty {column!r}")
    unknown = sorted(set(df["method"]) - set(METHODS))
    if unknown:
        raise PagError(f"{path}: unknown method(s) {unknown}; expected one of {list(METHODS)}")
    for column in ("budget", "seed", "value", "effective_macs", "dense_macs"):
        text = df[column]
        number = pd.to_numeric(text, errors="coerce").astype(float)
        valid = np.isfinite(number) | ((text == "") & (column == "budget"))
        if column == "seed":
            valid &= number == np.round(number)
        elif column == "dense_macs":
            valid &= number > 0
        elif column == "effective_macs":
            valid &= number >= 0
        if not valid.all():
            line = int(np.flatnonzero(~valid.to_numpy())[0])
            raise PagError(
                f"{path}: line {line + 2}: {column} {text.iloc[line]!r} is not "
                + ("an integer" if column == "seed" else "a valid number")
            )
        df[column] = number
    df["seed"] = df["seed"].astype(int)

    duplicated = df.duplicated(["run", "dataset", "task", "metric"])
    if duplicated.any():
        row = df[duplicated].iloc[0]
        raise PagError(
            f"{path}: more than one row for run {row['run']!r}, dataset {row['dataset']!r}, "
            f"{row['task']}/{row['metric']}"
        )
    inconsistent = df.groupby("run")[["method", "budget", "seed"]].nunique(dropna=False)
    inconsistent = inconsistent[(inconsistent > 1).any(axis=1)]
    if len(inconsistent):
        raise PagError(
            f"{path}: run {inconsistent.index[0]!r} has rows with different method, budget or seed"
        )
    if not _headline_panels(df):
        wanted = ", ".join(f"{task}/{metric}" for task, metric in HEADLINE)
        raise PagError(f"{path}: no headline metric present (expected one of {wanted})")

    dense_mean = df[df["method"] == "dense"].groupby("dataset")["effective_macs"].mean()
    reference = df["dataset"].map(dense_mean)
    df["own_dense"] = reference.isna()
    df["macs_pct"] = 100.0 * df["effective_macs"] / reference.fillna(df["dense_macs"])
    return df


def _headline_panels(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (dataset, task, metric) panels to draw: the headline metrics present, in the fixed
    order, per dataset (MACs and metrics are only comparable within a dataset)."""
    present = set(zip(df["dataset"], df["task"], df["metric"], strict=True))
    return [
        (dataset, task, metric)
        for dataset in sorted(set(df["dataset"]))
        for task, metric in HEADLINE
        if (dataset, task, metric) in present
    ]


def _group_stats(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (method, budget) of one panel's rows: mean MACs % and the value's mean and s.d.
    (ddof=0) over seeds, the points and error bars the panel draws."""
    stats = []
    for (method, budget), group in rows.groupby(["method", "budget"], dropna=False, sort=False):
        values = group["value"].to_numpy(dtype=float)
        stats.append(
            {
                "method": method,
                "budget": float(budget),
                "macs_pct": float(group["macs_pct"].mean()),
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
            }
        )
    return stats


def _figure(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """One panel per headline metric present, with one shared legend below the panels; built
    with the object-oriented API (no pyplot, no GUI backend, no global figure state)."""
    panels = _headline_panels(df)
    several_datasets = len({dataset for dataset, _, _ in panels}) > 1
    ncols = min(_PANEL_COLUMNS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    with _style():
        fig = Figure(
            figsize=(_FIGURE_WIDTH_IN, _PANEL_HEIGHT_IN * nrows + _LEGEND_HEIGHT_IN),
            layout="constrained",
        )
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(panels) :]:
            ax.remove()
        for ax, (dataset, task, metric) in zip(axes, panels, strict=False):
            rows = df[(df["dataset"] == dataset) & (df["task"] == task) & (df["metric"] == metric)]
            panel_title = _TASK_LABELS.get(task, task)
            if several_datasets:
                panel_title = f"{dataset}: {panel_title}"
            _plot_panel(ax, rows, title=panel_title, ylabel=_metric_label(metric))
            ax.set_xlabel(
                "MACs (% of own dense arch.)" if rows["own_dense"].any() else "MACs (% of dense)"
            )
        methods = [method for method in METHODS if method in set(df["method"])]
        handles = [_legend_handle(method) for method in methods]
        fig.legend(
            handles=handles,
            labels=[_STYLE[method][0] for method in methods],
            loc="outside lower center",
            ncols=min(len(handles), 4),
            title=ERROR_BARS,
            frameon=False,
        )
        if title:
            fig.suptitle(title)
    return fig


def _plot_panel(ax: Axes, rows: pd.DataFrame, *, title: str, ylabel: str) -> None:
    """Swept methods as one line each (mean per budget, ordered by MACs), the others as single
    markers; error bars are the s.d. over seeds. Methods without this metric are skipped."""
    stats = pd.DataFrame(_group_stats(rows))
    for method in METHODS:
        points = stats[stats["method"] == method].sort_values(["macs_pct", "budget"])
        if points.empty:
            continue
        _, color, marker, linestyle = _STYLE[method]
        x, y = points["macs_pct"].to_numpy(), points["mean"].to_numpy()
        ax.errorbar(x, y, yerr=points["std"].to_numpy(), fmt="none", ecolor=color, elinewidth=0.8)
        if method in SWEPT:
            ax.plot(x, y, color=color, marker=marker, linestyle=linestyle, markersize=4, lw=1.2)
        else:
            ax.scatter(x, y, color=color, marker=marker, s=_marker_area(method), zorder=3)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.margins(x=0.08, y=0.12)


def _table(df: pd.DataFrame, *, title: str | None = None) -> str:
    """The Markdown summary: one row per (method, budget) with seeds, MACs % and each headline
    metric as mean ± s.d. over seeds; a dataset column only when there are several."""
    panels = _headline_panels(df)
    metrics = [
        (task, metric) for task, metric in HEADLINE if any(p[1:] == (task, metric) for p in panels)
    ]
    datasets = sorted(set(df["dataset"]))
    keys = ["dataset", "method", "budget"]
    # MACs % and seeds per run first, so a run with more rows than another does not weigh more
    runs = df.groupby("run").agg(
        dataset=("dataset", "first"),
        method=("method", "first"),
        budget=("budget", "first"),
        seed=("seed", "first"),
        macs_pct=("macs_pct", "mean"),
    )
    records = []
    for (dataset, method, budget), group in runs.groupby(keys, dropna=False, sort=False):
        in_group = df["run"].isin(group.index)
        cells = {}
        for task, metric in metrics:
            rows = df[in_group & (df["task"] == task) & (df["metric"] == metric)]
            if rows.empty:
                cells[(task, metric)] = "—"
            else:
                values = rows["value"].to_numpy(dtype=float)
                cells[(task, metric)] = f"{np.mean(values):.3f} ± {np.std(values):.3f}"
        records.append((dataset, method, float(budget), group, cells))
    records.sort(
        key=lambda r: (r[0], METHODS.index(r[1]), -r[2] if not math.isnan(r[2]) else -math.inf)
    )

    header = ["method", "budget", "seeds", "MACs % of dense", *(f"{t} {m}" for t, m in metrics)]
    if len(datasets) > 1:
        header.insert(0, "dataset")
    lines = [
        f"# {title or 'Summary: ' + ', '.join(datasets)}",
        "",
        "| " + " | ".join(header) + " |",
        "|"
        + "|".join(["---" if name in ("dataset", "method") else "---:" for name in header])
        + "|",
    ]
    for dataset, method, budget, group, cells in records:
        row = [
            method,
            "—" if math.isnan(budget) else f"{budget:g}",
            str(group["seed"].nunique()),
            f"{group['macs_pct'].mean():.1f}",
            *(cells[key] for key in metrics),
        ]
        if len(datasets) > 1:
            row.insert(0, dataset)
        lines.append("| " + " | ".join(row) + " |")
    own = sorted(set(df.loc[df["own_dense"], "dataset"]))
    note = (
        "Values: mean ± s.d. over seeds (population s.d., ddof=0). MACs: effective MACs per "
        "image as % of the dense baseline's mean MACs"
    )
    if own:
        note += f" (no dense run for {', '.join(own)}: % of each run's own dense architecture)"
    lines += ["", note + ".", ""]
    return "\n".join(lines)


def _metric_label(metric: str) -> str:
    """Axis label with the direction of improvement, so a reader need not know each metric."""
    arrow = " ↑" if metric in HIGHER_IS_BETTER else " ↓" if metric in LOWER_IS_BETTER else ""
    return _METRIC_LABELS.get(metric, metric) + arrow


def _marker_area(method: str) -> float:
    """Scatter area in pt²; the star is drawn larger, as it looks smaller at the same area."""
    return 70.0 if _STYLE[method][2] == "*" else 30.0


def _legend_handle(method: str) -> Line2D:
    """A proxy artist per method, so the shared legend does not depend on which panel drew it."""
    _, color, marker, linestyle = _STYLE[method]
    size = math.sqrt(_marker_area(method)) if method not in SWEPT else 4.0
    return Line2D([], [], color=color, marker=marker, linestyle=linestyle, markersize=size)


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """matplotlib's defaults plus `_RC`, whatever the user's matplotlibrc says, so the figure
    (and its bytes) depend on the input alone."""
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        yield


def _render(fig: Figure, fmt: str) -> bytes:
    """The figure's bytes, without the timestamp and version metadata that would make reruns
    differ."""
    metadata = {"Software": None} if fmt == "png" else {"CreationDate": None}
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=_DPI, metadata=metadata)
    return buffer.getvalue()
