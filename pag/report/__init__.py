"""The report step: `results/<profile>/` in, `paper_figures/<profile>/` out.

`make_report(inputs, out_dir)` draws every figure and table that its inputs allow:

* accuracy versus compute (the paper's central comparison) and the summary table, from
  summary.csv alone;
* ponder maps per dynamic method, per-layer activity, MultiPool maps, qualitative predictions
  per task, from the runs' evaluations, saved samples and the dataset's ground truth;
* training curves, from the runs' per-epoch histories;
* tables in Markdown and LaTeX: MultiPool, matched budgets, published numbers beside ours;
* README.md: what each file shows, what was skipped and why, and what the data can show.

An output whose inputs are missing is skipped with a message naming what is missing, and the
others are still made. Everything is rendered in memory before anything is written and each file
is replaced atomically; the same inputs give byte-identical files, so the workflow tools that
track them never see a change that is not one."""

from __future__ import annotations

import importlib
from typing import Any

from pag.pipeline.report_outputs import Output, outputs_for, planned_files

__all__ = [
    "COLUMNS",
    "HEADLINE",
    "Output",
    "ReportInputs",
    "ReportResult",
    "RunFiles",
    "dataset_ground_truth",
    "make_report",
    "outputs_for",
    "planned_files",
]

# imported on first use: drawing needs matplotlib and pandas
_LAZY = {
    "make_report": "pag.report.make",
    "ReportResult": "pag.report.make",
    "FIGURE_FORMATS": "pag.pipeline.report_outputs",
    "TABLE_FORMATS": "pag.pipeline.report_outputs",
    "COLUMNS": "pag.report.results",
    "HEADLINE": "pag.report.results",
    "MissingInput": "pag.report.results",
    "ReportData": "pag.report.results",
    "ReportInputs": "pag.report.results",
    "RunFiles": "pag.report.results",
    "dataset_ground_truth": "pag.report.results",
    "load_summary": "pag.report.results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pag.report' has no attribute {name!r}")
