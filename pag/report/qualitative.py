"""Qualitative predictions and the maps of learned computation, drawn from the saved samples.

* `qualitative(task)`: input, ground truth and the predictions of the showcase runs (dense,
  MP-PAG, PAG at its highest and lowest budget) for a few images of the evaluation split;
* `ponder_maps(method)`: input, ground truth, and per budget the prediction and the ponder map
  (per-pixel count of residual units computed), the authors' "accumulated ponder map";
* `multipool_maps`: the MultiPool branch (dilation) chosen at each pixel, with a legend.

All runs shown are the lowest seed's; images are the first saved ones common to every run."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pag.methods import registry
from pag.report.panels import (
    PONDER_CMAP,
    depth_range,
    discrete_cmap,
    draw_task,
    image_grid,
    segmentation_palette,
)
from pag.report.results import MissingInput, ReportData
from pag.report.style import COLORBLIND, TASK_LABELS, method_label, paper_style

MAX_IMAGES = 3
_MAX_LEGEND_CLASSES = 20


def _run_choice(data: ReportData, method: str, which: str = "all") -> list[tuple[str, str]]:
    """(run, column label) of `method` at the lowest seed: every budget by decreasing
    compute, or only the highest / lowest."""
    runs = data.runs_of(method)
    if runs.empty:
        return []
    runs = runs[runs["seed"] == runs["seed"].min()]
    if which == "highest":
        runs = runs.iloc[:1]
    elif which == "lowest":
        runs = runs.iloc[-1:]
    out = []
    for row in runs.itertuples():
        budget = None if math.isnan(row.budget) else row.budget
        out.append((row.run, f"{method_label(method, budget)}\n({row.macs_pct:.0f} % MACs)"))
    return out


def showcase_runs(data: ReportData) -> list[tuple[str, str]]:
    """The runs the qualitative figures compare (the methods' `showcase` ranks): dense and
    MP-PAG, then PAG at its highest and lowest budget (those present; without PAG, the next
    swept method)."""
    shown = sorted(
        (m for m in registry.methods() if m.showcase is not None and m.name in data.methods),
        key=lambda m: m.showcase,
    )
    chosen = [run for m in shown if not m.swept for run in _run_choice(data, m.name)]
    swept = next((m.name for m in shown if m.swept), None)
    if swept is not None:
        high, low = _run_choice(data, swept, "highest"), _run_choice(data, swept, "lowest")
        chosen += high + (low if low != high else [])
    return chosen


def _common_ids(data: ReportData, runs: list[str]) -> list[str]:
    if not runs:
        raise MissingInput("no runs to draw")
    first = list(data.samples(runs[0]))
    ids = [sid for sid in first if all(sid in data.samples(run) for run in runs[1:])]
    if not ids:
        raise MissingInput(f"runs {runs} have no saved image in common")
    return ids[:MAX_IMAGES]


def primary_task(data: ReportData) -> str:
    tasks = data.tasks
    if not tasks:
        raise MissingInput("no task in the summary")
    return "semantic" if "semantic" in tasks else tasks[0]


def _aspect(image: np.ndarray) -> float:
    return image.shape[0] / image.shape[1]


def _has_class_legend(data: ReportData) -> bool:
    names = data.inputs.class_names
    return bool(names) and len(names) <= _MAX_LEGEND_CLASSES


def _class_legend(fig: Figure, data: ReportData) -> None:
    """One legend naming every class colour (segmentation panels), below the panels."""
    if not _has_class_legend(data):
        return
    names = data.inputs.class_names
    palette = segmentation_palette(len(names))
    handles = [Patch(facecolor=palette[i], label=name) for i, name in enumerate(names)]
    handles.append(Patch(facecolor=(0.6, 0.6, 0.6), label="ignore / invalid"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 6),
        frameon=False,
        handlelength=1.0,
        columnspacing=1.0,
    )


def _draw_row(
    data: ReportData,
    task: str,
    sid: str,
    truth: dict,
    runs: list[str],
    input_ax,
    truth_ax,
    prediction_axes,
) -> object:
    """One image's row: the input, the ground truth and each run's prediction, depth on one
    scale (the ground truth's range). Returns the last prediction's artist (for a scale bar)."""
    saved = [data.samples(run)[sid] for run in runs]
    for run, arrays in zip(runs, saved, strict=True):
        if task not in arrays:
            raise MissingInput(f"run {run!r}: no saved {task} prediction for {sid!r}")
    # float16 on disk; matplotlib draws float32 and up
    predictions = [
        a[task].astype(np.float32) if task in ("depth", "normals") else a[task] for a in saved
    ]
    gt = truth[sid].get(task)
    scale = depth_range(gt, predictions) if task == "depth" else None
    classes = len(data.inputs.class_names)
    input_ax.imshow(saved[0]["image"])
    input_ax.set_ylabel(sid.split("/")[-1])
    if gt is None:
        truth_ax.text(
            0.5, 0.5, "no ground truth", ha="center", va="center", transform=truth_ax.transAxes
        )
    else:
        draw_task(truth_ax, task, gt, num_classes=classes, depth_scale=scale, truth=True)
    artist = None
    for ax, prediction in zip(prediction_axes, predictions, strict=True):
        artist = draw_task(ax, task, prediction, num_classes=classes, depth_scale=scale)
    return artist


def qualitative(data: ReportData, task: str) -> Figure:
    """Rows: images; columns: input, ground truth, one per showcase run."""
    runs = showcase_runs(data)
    names = [run for run, _ in runs]
    ids = _common_ids(data, names)
    truth = data.ground_truth(ids)
    first = data.samples(names[0])[ids[0]]["image"]
    with paper_style():
        fig, axes = image_grid(
            len(ids),
            2 + len(runs),
            _aspect(first),
            extra_width=0.9 if task == "depth" else 0.3,
            extra_height=0.9 if task == "semantic" else 0.55,
        )
        for r, sid in enumerate(ids):
            artist = _draw_row(data, task, sid, truth, names, axes[r, 0], axes[r, 1], axes[r, 2:])
            if task == "depth":
                bar = fig.colorbar(artist, ax=axes[r, :], fraction=0.02, pad=0.01)
                bar.set_label("m")
        axes[0, 0].set_title("input")
        axes[0, 1].set_title("ground truth")
        for c, (_, label) in enumerate(runs):
            axes[0, 2 + c].set_title(label)
        if task == "semantic":
            _class_legend(fig, data)
        fig.suptitle(f"{TASK_LABELS.get(task, task)}: {data.inputs.split} images")
    return fig


def _ponder_units(data: ReportData, run: str) -> int:
    """How many units a ponder map counts (the method's controlled blocks)."""
    try:
        activity = data.evaluation(run).get("activity") or {}
    except MissingInput:
        activity = {}
    return len(activity)


def ponder_maps(data: ReportData, method: str) -> Figure:
    """Rows: images; columns: input, ground truth, then per budget prediction and ponder map."""
    runs = _run_choice(data, method)
    if not runs:
        raise MissingInput(f"ponder_maps_{method}: no {method} runs in the summary")
    names = [run for run, _ in runs]
    ids = _common_ids(data, names)
    task = primary_task(data)
    truth = data.ground_truth(ids)
    for run in names:
        if "ponder" not in data.samples(run)[ids[0]]:
            raise MissingInput(f"run {run!r}: its samples hold no ponder map")
    highest = max(float(np.max(data.samples(run)[sid]["ponder"])) for run in names for sid in ids)
    units = max([_ponder_units(data, run) for run in names] + [math.ceil(highest)])
    first = data.samples(names[0])[ids[0]]["image"]
    # one colour per count of units, so every count can be read off the bar
    cmap, norm = discrete_cmap(matplotlib.colormaps[PONDER_CMAP].resampled(units + 1).colors)
    legend = task == "semantic" and _has_class_legend(data)
    with paper_style():
        fig, axes = image_grid(
            len(ids),
            2 + 2 * len(runs),
            _aspect(first),
            extra_width=0.8,
            extra_height=1.15 if legend else 0.75,
        )
        ponder = None
        for r, sid in enumerate(ids):
            _draw_row(data, task, sid, truth, names, axes[r, 0], axes[r, 1], axes[r, 2::2])
            for c, run in enumerate(names):
                ponder = axes[r, 3 + 2 * c].imshow(
                    np.rint(data.samples(run)[sid]["ponder"].astype(np.float32)),
                    cmap=cmap,
                    norm=norm,
                )
        axes[0, 0].set_title("input")
        axes[0, 1].set_title("ground truth")
        for c, (_, label) in enumerate(runs):
            name, macs = label.split("\n")
            axes[0, 2 + 2 * c].set_title(f"{name}\nprediction")
            axes[0, 3 + 2 * c].set_title(f"ponder\n{macs}")
        bar = fig.colorbar(ponder, ax=axes[:, -1], fraction=0.05, pad=0.02, shrink=1.0, aspect=30)
        bar.set_ticks(range(units + 1))
        bar.minorticks_off()
        bar.set_label(f"units computed (of {units})")
        if legend:
            _class_legend(fig, data)
        fig.suptitle(
            f"{method_label(method)} ponder maps: residual units computed per pixel "
            f"({TASK_LABELS.get(task, task).lower()} shown)"
        )
    return fig


def multipool_maps(data: ReportData) -> Figure:
    """Rows: images; columns: input, ground truth, MP-PAG prediction, the branch map of each
    MultiPool block; one legend naming the branches."""
    drawn = [m.name for m in registry.methods() if m.branch_maps]
    runs = [run for method in drawn for run in _run_choice(data, method)]
    if not runs:
        raise MissingInput(f"multipool_maps: no {' or '.join(drawn)} runs in the summary")
    run, label = runs[0]
    ids = _common_ids(data, [run])
    prefix = "multipool/"
    blocks = sorted(k[len(prefix) :] for k in data.samples(run)[ids[0]] if k.startswith(prefix))
    if not blocks:
        raise MissingInput(f"run {run!r}: its samples hold no MultiPool map")
    task = primary_task(data)
    truth = data.ground_truth(ids)
    count = 1 + max(
        int(data.samples(run)[sid][f"{prefix}{block}"].max()) for sid in ids for block in blocks
    )
    names = list(data.inputs.multipool_branches) or [f"branch {k}" for k in range(count)]
    if count > len(names):
        raise MissingInput(
            f"run {run!r}: MultiPool maps choose branch {count - 1} but only {len(names)} "
            f"branch names are known ({names})"
        )
    colors = [COLORBLIND[k % len(COLORBLIND)] for k in range(len(names))]
    cmap, norm = discrete_cmap(colors)
    first = data.samples(run)[ids[0]]["image"]
    height, width = first.shape[:2]
    with paper_style():
        fig, axes = image_grid(
            len(ids), 3 + len(blocks), _aspect(first), extra_width=0.2, extra_height=0.8
        )
        for r, sid in enumerate(ids):
            _draw_row(data, task, sid, truth, [run], axes[r, 0], axes[r, 1], axes[r, 2:3])
            for c, block in enumerate(blocks):
                # block resolution, stretched over the image so it lines up with the input
                axes[r, 3 + c].imshow(
                    data.samples(run)[sid][f"{prefix}{block}"],
                    cmap=cmap,
                    norm=norm,
                    extent=(0, width, height, 0),
                )
        axes[0, 0].set_title("input")
        axes[0, 1].set_title("ground truth")
        axes[0, 2].set_title(label.replace("\n", " "))
        for c, block in enumerate(blocks):
            axes[0, 3 + c].set_title(f"branch at {block}")
        handles = [Patch(facecolor=colors[k], label=name) for k, name in enumerate(names)]
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(handles), 7),
            frameon=False,
            title="MultiPool branch chosen per pixel",
            handlelength=1.0,
        )
        fig.suptitle("MP-PAG MultiPool maps")
    return fig
