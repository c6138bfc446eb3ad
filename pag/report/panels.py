"""Image panels shared by the qualitative, ponder and MultiPool figures: one encoding per task.

Segmentation uses a fixed palette (the same class has the same colour in every figure), depth
a perceptually uniform colormap with a scale bar in metres, normals the usual RGB = (n + 1) / 2,
boundaries dark on white. Invalid ground truth is drawn grey."""

from __future__ import annotations

import colorsys

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from pag.report.style import COLORBLIND, FIGURE_WIDTH_IN, new_figure

IGNORE_LABEL = 255
INVALID_RGB = (0.6, 0.6, 0.6)
DEPTH_CMAP = "viridis"
PONDER_CMAP = "cividis"
BOUNDARY_CMAP = "gray_r"


def segmentation_palette(num_classes: int) -> np.ndarray:
    """num_classes x 3 RGB in [0, 1]: the colourblind palette first, then evenly spaced hues at
    two lightness levels, so class k keeps its colour whatever the number of classes."""
    colors = [tuple(int(h[i : i + 2], 16) / 255 for i in (1, 3, 5)) for h in COLORBLIND]
    extra = max(0, num_classes - len(colors))
    for index in range(extra):
        hue = (index * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
        lightness = 0.45 if index % 2 else 0.65
        colors.append(colorsys.hls_to_rgb(hue, lightness, 0.75))
    return np.array(colors[:num_classes], dtype=float)


def segmentation_rgb(labels: np.ndarray, num_classes: int) -> np.ndarray:
    palette = segmentation_palette(
        max(num_classes, int(labels[labels != IGNORE_LABEL].max(initial=0)) + 1)
    )
    rgb = np.empty((*labels.shape, 3))
    valid = labels != IGNORE_LABEL
    rgb[valid] = palette[labels[valid].astype(int)]
    rgb[~valid] = INVALID_RGB
    return rgb


def normals_rgb(normals: np.ndarray) -> np.ndarray:
    """H x W x 3 unit normals to RGB; zero vectors (invalid) grey."""
    normals = normals.astype(np.float64)
    rgb = np.clip((normals + 1.0) / 2.0, 0.0, 1.0)
    rgb[np.linalg.norm(normals, axis=-1) < 0.5] = INVALID_RGB
    return rgb


def depth_range(truth: np.ndarray | None, predictions: list[np.ndarray]) -> tuple[float, float]:
    """One scale for a row: the ground truth's valid range, else the predictions'."""
    if truth is not None and np.any(truth > 0):
        valid = truth[truth > 0]
    else:
        valid = np.concatenate([p.ravel().astype(np.float64) for p in predictions])
    low, high = float(np.min(valid)), float(np.max(valid))
    return low, high if high > low else low + 1.0


def image_grid(
    nrows: int, ncols: int, aspect: float, *, extra_width: float = 0.6, extra_height: float = 0.5
) -> tuple[Figure, np.ndarray]:
    """A figure of nrows x ncols image panels at the paper's width; `aspect` = H / W of the
    images, `extra_*` inches for colour bars, titles and legends."""
    panel = (FIGURE_WIDTH_IN - extra_width) / ncols
    fig = new_figure(FIGURE_WIDTH_IN, panel * aspect * nrows + extra_height + 0.15 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return fig, axes


def draw_task(
    ax: Axes,
    task: str,
    array: np.ndarray,
    *,
    num_classes: int = 0,
    depth_scale: tuple[float, float] | None = None,
    truth: bool = False,
):
    """Draw one task's map; returns the image artist (for a colour bar)."""
    if task == "semantic":
        return ax.imshow(segmentation_rgb(array, num_classes))
    if task == "normals":
        return ax.imshow(normals_rgb(array))
    if task == "boundary":
        values = array.astype(np.float64)
        values = values / 255.0 if array.dtype == np.uint8 and not truth else values
        return ax.imshow(np.clip(values, 0, 1), cmap=BOUNDARY_CMAP, vmin=0, vmax=1)
    if task == "depth":
        low, high = depth_scale or depth_range(array if truth else None, [array])
        values = np.ma.masked_where(array <= 0, array.astype(np.float64)) if truth else array
        cmap = _with_bad(DEPTH_CMAP)
        return ax.imshow(values, cmap=cmap, vmin=low, vmax=high)
    raise ValueError(f"unknown task {task!r}")


def _with_bad(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=INVALID_RGB)


def discrete_cmap(colors: list[str] | np.ndarray) -> tuple[ListedColormap, BoundaryNorm]:
    """A colormap with one colour per integer 0..n-1 (for branch indices and counts)."""
    cmap = ListedColormap(colors)
    return cmap, BoundaryNorm(np.arange(len(colors) + 1) - 0.5, len(colors))
