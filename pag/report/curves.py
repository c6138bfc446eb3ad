"""Training curves from the runs' tracked per-epoch metrics (the same values MLflow holds).

One panel per loss term; the dense baseline's epochs come first and each fine-tuned run
continues from them (it starts from the baseline's weights), so the protocol reads left to
right. Lines are means over seeds, one per (method, budget), coloured by method."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pag.methods import registry
from pag.report.results import MissingInput, ReportData
from pag.report.style import (
    FIGURE_WIDTH_IN,
    legend_order,
    new_figure,
    paper_style,
    style_of,
)

_TERM_ORDER = ("loss", "semantic", "boundary", "depth", "normals", "budget")
_TERM_LABELS = {"loss": "total loss", "budget": "budget loss"}
_COLUMNS = 3
_LOG_SPAN = 20.0  # a panel whose values span more than this factor gets a log axis


def _histories(data: ReportData) -> dict[tuple[str, float | None], list[list[dict]]]:
    """(method, budget) -> the histories of its seeds' runs."""
    out: dict[tuple[str, float | None], list[list[dict]]] = {}
    for method in data.methods:
        for row in data.runs_of(method).itertuples():
            budget = None if math.isnan(row.budget) else row.budget  # NaN keys never match
            out.setdefault((method, budget), []).append(data.history(row.run))
    return out


def _mean_curve(histories: list[list[dict]], term: str) -> np.ndarray | None:
    """The term's per-epoch mean over seeds; None where a run lacks it or it is always 0
    (the dense baseline's budget loss)."""
    series = [[h.get("train", {}).get(term) for h in history] for history in histories]
    if any(value is None for s in series for value in s):
        return None
    length = min(len(s) for s in series)
    if length == 0:
        return None
    curve = np.mean(np.array([s[:length] for s in series], dtype=float), axis=0)
    return None if not np.any(curve) else curve


def training_curves(data: ReportData) -> Figure:
    histories = _histories(data)
    if not histories:
        raise MissingInput("training_curves: no run histories")
    dense = registry.baseline().name
    baseline = [h for (method, _), runs in histories.items() if method == dense for h in runs]
    offset = min(len(h) for h in baseline) if baseline else 0
    terms = sorted(
        {
            term
            for runs in histories.values()
            for h in runs
            for e in h
            for term in e.get("train", {})
        },
        key=lambda t: (_TERM_ORDER.index(t) if t in _TERM_ORDER else len(_TERM_ORDER), t),
    )
    if not terms:
        raise MissingInput("training_curves: the histories hold no training losses")
    ncols = min(_COLUMNS, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    with paper_style():
        fig = new_figure(FIGURE_WIDTH_IN, 1.9 * nrows + 0.7)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(terms) :]:
            ax.remove()
        for ax, term in zip(axes, terms, strict=False):
            drawn = []
            for (method, _budget), runs in sorted(
                histories.items(), key=lambda kv: legend_order().index(kv[0][0])
            ):
                curve = _mean_curve(runs, term)
                if curve is None:
                    continue
                drawn.append(curve)
                start = 1 if method == dense else offset + 1
                _, color, _, _ = style_of(method)
                ax.plot(
                    np.arange(start, start + len(curve)),
                    curve,
                    color=color,
                    marker=".",
                    markersize=3,
                    lw=1.6 if method == dense else 0.9,
                    alpha=1.0 if method == dense else 0.8,
                )
            if offset:
                ax.axvline(offset + 0.5, color="0.5", lw=0.6, ls="--")
            values = np.concatenate(drawn) if drawn else np.zeros(0)
            positive = values[values > 0]
            if positive.size and positive.max() > _LOG_SPAN * positive.min():
                ax.set_yscale("log")  # e.g. SACT's ponder cost beside the task losses
            ax.set_title(_TERM_LABELS.get(term, f"{term} loss"))
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        methods = [m for m in legend_order() if any(k[0] == m for k in histories)]
        fig.legend(
            handles=[Line2D([], [], color=style_of(m).color, lw=1.6) for m in methods],
            labels=[style_of(m).label for m in methods],
            loc="outside lower center",
            ncols=min(len(methods), 7),
            frameon=False,
            title="training loss per epoch, mean over seeds; dashed: fine-tuning starts",
        )
    return fig
