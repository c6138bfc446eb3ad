"""The report's outputs: each figure and table, what it shows, and how to make it, for a
profile's methods and tasks. Light on purpose (no matplotlib, pandas or torch): the plan reads
`planned_files` to declare the report job's outputs, and every pipeline job imports the plan;
the functions that draw are imported when an output is made."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pag.report.groups import DYNAMIC, METHODS, MULTIPOOL

TASKS = ("semantic", "boundary", "depth", "normals")


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """`module.name`, imported when first called."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = name
    return call


FIGURE_FORMATS = ("png", "pdf")
TABLE_FORMATS = ("md", "tex")


@dataclass(frozen=True)
class Output:
    """One figure or table: its file stem, what it shows (for README.md), and how to make it."""

    stem: str
    kind: str  # "figure" or "table"
    shows: str
    make: Callable[[Any], Any]  # ReportData -> Figure | Table

    @property
    def files(self) -> list[str]:
        formats = FIGURE_FORMATS if self.kind == "figure" else TABLE_FORMATS
        return [f"{self.stem}.{fmt}" for fmt in formats]


def outputs_for(
    methods: list[str] | tuple[str, ...], tasks: list[str] | tuple[str, ...]
) -> list[Output]:
    """The outputs a report of these methods and tasks holds, in README order."""
    out = [
        Output(
            "accuracy_vs_compute",
            "figure",
            "Accuracy versus compute: every headline metric against effective MACs as % of "
            "the dense baseline; curves for the swept methods, points for the others, mean "
            "and ±1 sample s.d. over seeds.",
            _lazy("pag.report.compute", "accuracy_vs_compute"),
        ),
    ]
    for method in DYNAMIC:
        if method in methods:
            out.append(
                Output(
                    f"ponder_maps_{method}",
                    "figure",
                    f"Ponder maps of {method}: input, ground truth, and at each budget the "
                    "prediction and the per-pixel count of residual units computed.",
                    lambda data, method=method: _lazy("pag.report.qualitative", "ponder_maps")(
                        data, method
                    ),
                )
            )
    if any(method in methods for method in DYNAMIC):
        out.append(
            Output(
                "layer_activity",
                "figure",
                "Per-layer activity: the fraction of positions each controlled block "
                "computes, per dynamic method and budget.",
                _lazy("pag.report.activity", "layer_activity"),
            )
        )
    if any(method in methods for method in DYNAMIC):
        out.append(
            Output(
                "compute_allocation",
                "figure",
                "Where the compute goes: residual units per pixel within 2 px of a boundary "
                "over those elsewhere, per dynamic method and budget (random gate: 1.0).",
                _lazy("pag.report.allocation", "allocation_figure"),
            )
        )
        out.append(
            Output(
                "table_compute_allocation",
                "table",
                "Units computed per pixel near boundaries and away from them, and their ratio.",
                _lazy("pag.report.allocation", "allocation_table"),
            )
        )
    if "mp_pag" in methods:
        out.append(
            Output(
                "multipool_maps",
                "figure",
                "MultiPool maps: the branch (dilation, the original 3x3 or skip) MP-PAG "
                "chooses at each pixel.",
                _lazy("pag.report.qualitative", "multipool_maps"),
            )
        )
    for task in TASKS:
        if task in tasks:
            out.append(
                Output(
                    f"qualitative_{task}",
                    "figure",
                    f"Qualitative {task} predictions of the dense baseline, MP-PAG and PAG at its "
                    "highest and lowest budget, beside input and ground truth.",
                    lambda data, task=task: _lazy("pag.report.qualitative", "qualitative")(
                        data, task
                    ),
                )
            )
    out.append(
        Output(
            "training_curves",
            "figure",
            "Training curves: every loss term per epoch, the dense baseline first and "
            "the fine-tuned methods continuing from it.",
            _lazy("pag.report.curves", "training_curves"),
        )
    )
    out.append(
        Output(
            "summary_table",
            "table",
            "Every method and budget: seeds, MACs % and the headline metrics.",
            _lazy("pag.report.tables", "summary_table"),
        )
    )
    if any(method in methods for method in MULTIPOOL):
        out.append(
            Output(
                "table_multipool",
                "table",
                "Table 1: dense baseline vs MultiPool (average) vs MP-PAG per task, with MACs.",
                _lazy("pag.report.tables", "multipool_table"),
            )
        )
    out.append(
        Output(
            "table_matched_budgets",
            "table",
            "Table 2: every method at 100/90/80/70/50 % of the dense compute, measured or "
            "interpolated along its curve (marked).",
            _lazy("pag.report.tables", "matched_budget_table"),
        )
    )
    if any(method not in METHODS for method in methods):
        out.append(
            Output(
                "table_ablation",
                "table",
                "The ablation: every line (method or variant) with activity, MACs, headline "
                "metrics, compute allocation and PAG under other evaluation rules.",
                _lazy("pag.report.ablation", "ablation_table"),
            )
        )
    out.append(
        Output(
            "table_paper",
            "table",
            "Table 3: the published numbers, with their provenance, beside ours "
            '("not run" for datasets not run).',
            _lazy("pag.report.tables", "paper_table"),
        )
    )
    return out


def planned_files(methods, tasks) -> list[str]:
    """The files a complete report of these methods and tasks writes (the pipeline's outputs)."""
    return [name for output in outputs_for(methods, tasks) for name in output.files] + ["README.md"]
