"""Where the dynamic methods spend their compute, as numbers: residual units computed per pixel
near ground-truth boundaries (within 2 px) and away from them, and their ratio, per method and
budget (`compute_allocation` of each evaluation, via summary.csv's `compute` rows). The random
gate computes a uniformly random subset of positions, so its ratio is the 1.0 reference: a
learned policy that spends more on boundaries sits above it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pag.pipeline.summary import COMPUTE_TASK
from pag.report.results import MissingInput, ReportData, sample_sd
from pag.report.style import (
    FIGURE_WIDTH_IN,
    dynamic_methods,
    legend_handle,
    legend_order,
    method_label,
    new_figure,
    paper_style,
    style_of,
)
from pag.report.table import Table

_STAT = "mean ± sample s.d. over seeds (ddof=1; ± — with one seed)"


def allocation_points(df: pd.DataFrame) -> pd.DataFrame:
    """Per dynamic (method, budget): MACs %, and near, far and ratio as mean and s.d."""
    rows = df[(df["task"] == COMPUTE_TASK) & df["method"].isin(dynamic_methods())]
    if not (rows["metric"] == "allocation_ratio").any():
        raise MissingInput("no compute_allocation in the summary (no dynamic method evaluated)")
    records = []
    for (method, budget), group in rows.groupby(["method", "budget"], dropna=False, sort=False):
        record = {"method": method, "budget": float(budget)}
        record["macs_pct"] = float(group["macs_pct"].mean())
        record["seeds"] = int(group["seed"].nunique())
        for metric in ("near_boundary", "far_from_boundary", "allocation_ratio"):
            values = group.loc[group["metric"] == metric, "value"].to_numpy(dtype=float)
            record[metric] = float(np.mean(values)) if len(values) else math.nan
            record[f"{metric}_sd"] = sample_sd(values)
        records.append(record)
    out = pd.DataFrame(records)
    out["order"] = out["method"].map(legend_order().index)
    return out.sort_values(["order", "macs_pct"], ascending=[True, False]).drop(columns="order")


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.2f} ± {'—' if math.isnan(sd) else f'{sd:.2f}'}"


def allocation_table(data: ReportData) -> Table:
    points = allocation_points(data.df)
    header = ["method", "budget", "seeds", "MACs % of dense", "near boundary", "away", "ratio"]
    rows = [
        [
            style_of(p.method).label,
            f"{p.budget:g}",
            str(p.seeds),
            f"{p.macs_pct:.1f}",
            _pm(p.near_boundary, p.near_boundary_sd),
            _pm(p.far_from_boundary, p.far_from_boundary_sd),
            _pm(p.allocation_ratio, p.allocation_ratio_sd),
        ]
        for p in points.itertuples()
    ]
    notes = [
        "Residual units computed per pixel (PAG and random gate: gated blocks computing; layer "
        "skip: blocks executed; SACT: units executed) at pixels within 2 px of a ground-truth "
        "boundary and at the other pixels, pooled over the evaluation split; ratio = near / "
        f"away (the random gate's is the 1.0 reference). Values: {_STAT}.",
    ]
    title = "Where the compute goes: units per pixel near boundaries and away from them"
    return Table(title, header, rows, notes, numeric=[False] + [True] * (len(header) - 1))


def allocation_figure(data: ReportData) -> Figure:
    """Near/away ratio against MACs %, one line per dynamic method, the 1.0 reference."""
    points = allocation_points(data.df)
    methods = [m for m in dynamic_methods() if (points["method"] == m).any()]
    with paper_style():
        fig = new_figure(FIGURE_WIDTH_IN / 2, 2.8)
        ax = fig.subplots()
        ax.axhline(1.0, color="#555555", lw=0.8, ls="--")
        for method in methods:
            mine = points[points["method"] == method].sort_values("macs_pct")
            _, color, marker, linestyle = style_of(method)
            sd = mine["allocation_ratio_sd"].fillna(0.0).to_numpy()
            x, y = mine["macs_pct"].to_numpy(), mine["allocation_ratio"].to_numpy()
            ax.errorbar(x, y, yerr=sd, fmt="none", ecolor=color, elinewidth=0.8)
            ax.plot(x, y, color=color, marker=marker, linestyle=linestyle, lw=1.2, ms=4)
        ax.set_xlabel("MACs (% of dense)")
        ax.set_ylabel("units near / away from boundaries")
        ax.set_title("Compute within 2 px of a boundary")
        ax.margins(x=0.1, y=0.15)
        fig.legend(
            handles=[legend_handle(m) for m in methods],
            labels=[method_label(m) for m in methods],
            loc="outside lower center",
            ncols=2,
            title="mean; error bars: sample s.d. over seeds",
            frameon=False,
        )
    return fig
