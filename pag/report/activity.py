"""Per-layer activity: for each dynamic method, the fraction of positions each controlled block
computes over the evaluation split, one line per budget (mean over seeds).

It shows where a method spends its compute: PAG's per-pixel gates, layer skipping's per-image
block gates, SACT's halting units."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pag.report.results import MissingInput, ReportData
from pag.report.style import (
    FIGURE_WIDTH_IN,
    dynamic_methods,
    method_label,
    new_figure,
    paper_style,
    style_of,
)


def _activity(data: ReportData, method: str) -> list[tuple[str, dict[str, float]]]:
    """(label, {block: mean activity over seeds}) per budget, decreasing compute."""
    runs = data.runs_of(method)
    curves = []
    for budget, group in runs.groupby("budget", sort=False, dropna=False):
        per_run = [data.evaluation(run).get("activity") or {} for run in group["run"]]
        blocks = list(per_run[0])
        if not blocks:
            raise MissingInput(f"run {group['run'].iloc[0]!r}: its evaluation has no activity")
        if any(list(a) != blocks for a in per_run):
            raise MissingInput(f"{method} budget {budget:g}: runs report different blocks")
        means = {b: float(np.mean([a[b] for a in per_run])) for b in blocks}
        label = f"{method_label(method, None if math.isnan(budget) else budget)} "
        label += f"({group['macs_pct'].mean():.0f} % MACs)"
        curves.append((label, means))
    return curves


def layer_activity(data: ReportData) -> Figure:
    methods = [m for m in dynamic_methods() if m in data.methods]
    if not methods:
        raise MissingInput("layer_activity: no PAG, layer-skip or SACT runs in the summary")
    curves = {method: _activity(data, method) for method in methods}
    with paper_style():
        fig = new_figure(FIGURE_WIDTH_IN, 3.4)
        axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
        for ax, method in zip(axes, methods, strict=True):
            _, color, marker, linestyle = style_of(method)
            entries = curves[method]
            for k, (label, means) in enumerate(entries):
                shade = 1.0 - 0.55 * k / max(1, len(entries) - 1)  # lighter: less compute
                x = np.arange(len(means))
                ax.plot(
                    x,
                    list(means.values()),
                    color=color,
                    alpha=shade,
                    marker=marker,
                    linestyle=linestyle if linestyle != "none" else "-",
                    markersize=3,
                    lw=1.0,
                    label=label,
                )
            blocks = list(entries[0][1])
            ax.set_xticks(np.arange(len(blocks)), blocks, rotation=90)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(style_of(method).label)
            ax.set_xlabel("block")
        axes[0].set_ylabel("fraction of positions computed")
        # one shared legend below the panels (inside, it would hide the lines it explains);
        # legends fill column by column, so each method's budgets share a column
        handles = [line for ax in axes for line in ax.get_lines()]
        fig.legend(
            handles=handles,
            labels=[line.get_label() for line in handles],
            loc="outside lower center",
            ncols=len(methods),
            frameon=False,
            fontsize=7,
        )
        fig.suptitle(f"Per-layer activity on the {data.inputs.split} split (mean over seeds)")
    return fig
