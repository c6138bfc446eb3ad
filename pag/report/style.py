"""How every report figure looks: one style per method, paper-sized fonts, byte-stable files.

Each method keeps one label, colour, marker and line style in every figure (its `pag.methods`
description), colours come from a colourblind-safe palette, fonts stay >= 8 pt at a two-column
paper's width, and rendering drops the timestamps that would make a rerun differ from the last
run."""

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

from pag.methods import registry
from pag.methods.registry import COLORBLIND, Style  # noqa: F401  (COLORBLIND: re-exported)


def style_of(method: str) -> Style:
    """A registered method's style (`pag.methods`), the same in every figure."""
    return registry.get(method).style


def legend_order() -> list[str]:
    """Every registered method, in the order legends and tables list them."""
    return registry.names()


def dynamic_methods() -> list[str]:
    """Methods with ponder maps, per-layer activity and compute allocation, in legend order."""
    return [m.name for m in registry.methods() if m.dynamic]


def is_swept(method: str) -> bool:
    """Drawn as a curve of budgets (it has a budget knob), not a point."""
    return registry.get(method).swept


def is_outlined(method: str) -> bool:
    """Drawn as an outline: the reference, whose point sits on the dense baseline's (both at
    100 % of the MACs), so neither hides the other."""
    return registry.get(method).reference if method in registry.names() else False


def reference_method() -> str:
    """The accuracy reference every method is compared with."""
    return registry.reference().name


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
    """A method's display label (a variant's name as it is), with the budget when given."""
    label = style_of(method).label if method in registry.names() else method
    return label if budget is None or math.isnan(budget) else f"{label} {budget:g}"


def metric_label(metric: str) -> str:
    """Axis label with the direction of improvement, so a reader need not know each metric."""
    arrow = " ↑" if metric in HIGHER_IS_BETTER else " ↓" if metric in LOWER_IS_BETTER else ""
    return METRIC_LABELS.get(metric, metric) + arrow


def marker_area(method: str) -> float:
    """Scatter area in pt²; the star is drawn larger, as it looks smaller at the same area."""
    return 70.0 if style_of(method).marker == "*" else 30.0


def legend_handle(method: str) -> Line2D:
    """A proxy artist per method, so a shared legend does not depend on which panel drew it."""
    style = style_of(method)
    size = math.sqrt(marker_area(method)) if not is_swept(method) else 4.0
    return Line2D(
        [],
        [],
        color=style.color,
        marker=style.marker,
        linestyle=style.linestyle,
        markersize=size,
        markerfacecolor="none" if is_outlined(method) else style.color,
    )


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
