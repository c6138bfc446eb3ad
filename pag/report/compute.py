"""The paper's central comparison: accuracy versus compute, one panel per headline metric.

x is effective MACs as % of the dense baseline, y the metric; swept methods (PAG, random gate,
truncation, layer skipping, SACT) are curves through their budgets, the others single points;
each point is the mean over seeds with ±1 sample s.d. (ddof=1) error bars. A dotted line across
each panel marks the dense baseline fine-tuned with the others' schedule (`dense_ft`), the
reference every method is compared with."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pag.report.results import SPREAD, ReportData, curve_points, headline_panels
from pag.report.style import (
    FIGURE_WIDTH_IN,
    TASK_LABELS,
    is_outlined,
    is_swept,
    legend_handle,
    legend_order,
    marker_area,
    metric_label,
    new_figure,
    paper_style,
    reference_method,
    style_of,
)

ERROR_BARS = (
    f"Mean over seeds; error bars ±1 {SPREAD}; dotted line: dense + fine-tune, the reference"
)
_PANEL_COLUMNS = 3
_PANEL_HEIGHT_IN = 2.1
_LEGEND_HEIGHT_IN = 0.75


def accuracy_vs_compute(data: ReportData) -> Figure:
    """One panel per headline metric present, one shared legend below the panels."""
    df, title = data.df, data.inputs.title
    panels = headline_panels(df)
    several_datasets = len({dataset for dataset, _, _ in panels}) > 1
    ncols = min(_PANEL_COLUMNS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    with paper_style():
        fig = new_figure(FIGURE_WIDTH_IN, _PANEL_HEIGHT_IN * nrows + _LEGEND_HEIGHT_IN)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(panels) :]:
            ax.remove()
        for ax, (dataset, task, metric) in zip(axes, panels, strict=False):
            rows = df[(df["dataset"] == dataset) & (df["task"] == task) & (df["metric"] == metric)]
            panel_title = TASK_LABELS.get(task, task)
            if several_datasets:
                panel_title = f"{dataset}: {panel_title}"
            _plot_panel(ax, rows, title=panel_title, ylabel=metric_label(metric))
            ax.set_xlabel(
                "MACs (% of own dense arch.)" if rows["own_dense"].any() else "MACs (% of dense)"
            )
        methods = [method for method in legend_order() if method in set(df["method"])]
        fig.legend(
            handles=[legend_handle(method) for method in methods],
            labels=[style_of(method).label for method in methods],
            loc="outside lower center",
            ncols=min(len(methods), 4),
            title=ERROR_BARS,
            frameon=False,
        )
        if title:
            fig.suptitle(title)
    return fig


def _plot_panel(ax: Axes, rows: pd.DataFrame, *, title: str, ylabel: str) -> None:
    """Swept methods as one line each (mean per budget, ordered by MACs), the others as single
    markers; error bars are the sample s.d. over seeds. Methods without this metric are skipped."""
    stats = curve_points(rows)
    reference = stats[stats["method"] == reference_method()]
    if not reference.empty:  # the accuracy every method is compared with, across the panel
        color = style_of(reference_method()).color
        ax.axhline(float(reference["mean"].mean()), color=color, lw=0.6, ls=":")
    for method in legend_order():
        points = stats[stats["method"] == method].sort_values(["macs_pct", "budget"])
        if points.empty:
            continue
        _, color, marker, linestyle = style_of(method)
        x, y = points["macs_pct"].to_numpy(), points["mean"].to_numpy()
        ax.errorbar(
            x,
            y,
            yerr=points["std"].fillna(0.0).to_numpy(),
            fmt="none",
            ecolor=color,
            elinewidth=0.8,
        )
        if is_swept(method):
            ax.plot(x, y, color=color, marker=marker, linestyle=linestyle, markersize=4, lw=1.2)
        elif is_outlined(method):  # over the dense point it sits on, which stays visible
            ax.scatter(
                x,
                y,
                marker=marker,
                s=marker_area(method),
                facecolors="none",
                edgecolors=color,
                linewidths=1.0,
                zorder=4,
            )
        else:
            ax.scatter(x, y, color=color, marker=marker, s=marker_area(method), zorder=3)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.margins(x=0.08, y=0.12)
