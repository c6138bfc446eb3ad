"""How every report figure looks: one style per method, paper-sized fonts, byte-stable files.

Each method keeps one label, colour, marker and line style in every figure, colours come from
a colourblind-safe palette, fonts stay >= 8 pt at a two-column paper's width, and rendering
drops the timestamps that would make a rerun differ from the last run."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pag.report.groups import DYNAMIC, METHODS, MULTIPOOL, REFERENCE, SWEPT  # noqa: F401

# seaborn 0.13's "colorblind" palette, copied so a method keeps its colour whatever seaborn
# release is installed (tests/test_report.py checks the copy) and no pyplot import is needed
COLORBLIND = (
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
STYLE: dict[str, tuple[str, str, str, Any]] = {
    "dense": ("Dense", COLORBLIND[7], "*", "none"),
    "dense_ft": ("Dense + fine-tune", "#000000", "X", "none"),
    "random_gate": ("Random gate", COLORBLIND[9], "x", (0, (5, 1, 1, 1, 1, 1))),
    "multipool_avg": ("MultiPool (avg)", COLORBLIND[5], "s", "none"),
    "mp_pag": ("MP-PAG", COLORBLIND[4], "D", "none"),
    "pag": ("PAG", COLORBLIND[0], "o", "-"),
    "truncation": ("Truncation", COLORBLIND[1], "v", "--"),
    "layer_skip": ("Layer skip", COLORBLIND[2], "^", "-."),
    "sact": ("SACT", COLORBLIND[3], "P", ":"),
}
TASK_LABELS = {
    "semantic": "Semantic segmentation",
    "boundary": "Boundaries",
    "depth": "Depth",
    "normals": "Surface normals",
}
METRIC_LABELS = {
    "miou": "mIoU",
    "pixel_acc": "pixel accuracy",
    "mean_acc": "mean accuracy",
    "ods": "ODS F-measure",
    "ois": "OIS F-measure",
    "ap": "AP",
    "abs_rel": "Abs Rel",
    "sq_rel": "Sq Rel",
    "rmse": "RMSE",
    "rmse_log": "RMSE log",
    "delta1": "δ < 1.25",
    "mean": "mean angle error (°)",
    "median": "median angle error (°)",
    "within_11_25": "within 11.25°",
    "within_22_5": "within 22.5°",
    "within_30": "within 30°",
}
HIGHER_IS_BETTER = frozenset(
    {"miou", "pixel_acc", "mean_acc", "ods", "ois", "ap", "delta1"}
    | {"within_11_25", "within_22_5", "within_30"}
)
LOWER_IS_BETTER = frozenset({"abs_rel", "sq_rel", "rmse", "rmse_log", "mean", "median"})

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
    "image.interpolation": "nearest",
}
DPI = 200
FIGURE_WIDTH_IN = 7.0  # a two-column paper's full width


def method_label(method: str, budget: float | None = None) -> str:
    label = STYLE[method][0] if method in STYLE else method
    return label if budget is None or math.isnan(budget) else f"{label} {budget:g}"


def metric_label(metric: str) -> str:
    """Axis label with the direction of improvement, so a reader need not know each metric."""
    arrow = " ↑" if metric in HIGHER_IS_BETTER else " ↓" if metric in LOWER_IS_BETTER else ""
    return METRIC_LABELS.get(metric, metric) + arrow


def marker_area(method: str) -> float:
    """Scatter area in pt²; the star is drawn larger, as it looks smaller at the same area."""
    return 70.0 if STYLE[method][2] == "*" else 30.0


def legend_handle(method: str) -> Line2D:
    """A proxy artist per method, so a shared legend does not depend on which panel drew it."""
    _, color, marker, linestyle = STYLE[method]
    size = math.sqrt(marker_area(method)) if method not in SWEPT else 4.0
    return Line2D([], [], color=color, marker=marker, linestyle=linestyle, markersize=size)


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """matplotlib's defaults plus `_RC`, whatever the user's matplotlibrc says, so a figure
    (and its bytes) depend on the input alone."""
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A figure built with the object-oriented API (no pyplot, no GUI backend, no global
    state), laid out by matplotlib's constrained layout so labels do not overlap."""
    return Figure(figsize=(width, height), layout="constrained")


def render(fig: Figure, fmt: str) -> bytes:
    """The figure's bytes, without the timestamp and version metadata that would make reruns
    differ."""
    metadata = {"Software": None} if fmt == "png" else {"CreationDate": None}
    buffer = io.BytesIO()
    with paper_style():
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()
