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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from pag.errors import PagError
from pag.fileio import atomic_write
from pag.report.ablation import ablation_table
from pag.report.activity import layer_activity
from pag.report.allocation import allocation_figure, allocation_table
from pag.report.compute import accuracy_vs_compute
from pag.report.curves import training_curves
from pag.report.qualitative import multipool_maps, ponder_maps, qualitative
from pag.report.readme import readme
from pag.report.results import (
    COLUMNS,
    HEADLINE,
    TASKS,
    MissingInput,
    ReportData,
    ReportInputs,
    RunFiles,
    dataset_ground_truth,
    load_summary,
)
from pag.report.style import DYNAMIC, METHODS, MULTIPOOL, render
from pag.report.table import Table
from pag.report.tables import matched_budget_table, multipool_table, paper_table, summary_table

__all__ = [
    "COLUMNS",
    "HEADLINE",
    "METHODS",
    "ReportInputs",
    "ReportResult",
    "RunFiles",
    "dataset_ground_truth",
    "make_report",
    "planned_files",
]

FIGURE_FORMATS = ("png", "pdf")
TABLE_FORMATS = ("md", "tex")


@dataclass(frozen=True)
class Output:
    """One figure or table: its file stem, what it shows (for README.md), and how to make it."""

    stem: str
    kind: str  # "figure" or "table"
    shows: str
    make: Callable[[ReportData], Figure | Table]

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
            "and ±1 s.d. over seeds.",
            accuracy_vs_compute,
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
                    lambda data, method=method: ponder_maps(data, method),
                )
            )
    if any(method in methods for method in DYNAMIC):
        out.append(
            Output(
                "layer_activity",
                "figure",
                "Per-layer activity: the fraction of positions each controlled block "
                "computes, per dynamic method and budget.",
                layer_activity,
            )
        )
    if any(method in methods for method in DYNAMIC):
        out.append(
            Output(
                "compute_allocation",
                "figure",
                "Where the compute goes: residual units per pixel within 2 px of a boundary "
                "over those elsewhere, per dynamic method and budget (random gate: 1.0).",
                allocation_figure,
            )
        )
        out.append(
            Output(
                "table_compute_allocation",
                "table",
                "Units computed per pixel near boundaries and away from them, and their ratio.",
                allocation_table,
            )
        )
    if "mp_pag" in methods:
        out.append(
            Output(
                "multipool_maps",
                "figure",
                "MultiPool maps: the branch (dilation, the original 3x3 or skip) MP-PAG "
                "chooses at each pixel.",
                multipool_maps,
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
                    lambda data, task=task: qualitative(data, task),
                )
            )
    out.append(
        Output(
            "training_curves",
            "figure",
            "Training curves: every loss term per epoch, the dense baseline first and "
            "the fine-tuned methods continuing from it.",
            training_curves,
        )
    )
    out.append(
        Output(
            "summary_table",
            "table",
            "Every method and budget: seeds, MACs % and the headline metrics.",
            summary_table,
        )
    )
    if any(method in methods for method in MULTIPOOL):
        out.append(
            Output(
                "table_multipool",
                "table",
                "Table 1: dense baseline vs MultiPool (average) vs MP-PAG per task, with MACs.",
                multipool_table,
            )
        )
    out.append(
        Output(
            "table_matched_budgets",
            "table",
            "Table 2: every method at 100/90/80/70/50 % of the dense compute, measured or "
            "interpolated along its curve (marked).",
            matched_budget_table,
        )
    )
    if any(method not in METHODS for method in methods):
        out.append(
            Output(
                "table_ablation",
                "table",
                "The ablation: every line (method or variant) with activity, MACs, headline "
                "metrics, compute allocation and PAG under other evaluation rules.",
                ablation_table,
            )
        )
    out.append(
        Output(
            "table_paper",
            "table",
            "Table 3: the published numbers, with their provenance, beside ours "
            '("not run" for datasets not run).',
            paper_table,
        )
    )
    return out


def planned_files(methods, tasks) -> list[str]:
    """The files a complete report of these methods and tasks writes (the pipeline's outputs)."""
    return [name for output in outputs_for(methods, tasks) for name in output.files] + ["README.md"]


@dataclass(frozen=True)
class ReportResult:
    written: list[Path]
    skipped: dict[str, str]  # output stem -> why


def make_report(inputs: ReportInputs, out_dir: str | Path) -> ReportResult:
    """Render every output the inputs allow, then write them (and README.md) into `out_dir`.

    A malformed summary.csv is a PagError and writes nothing; an output whose own inputs are
    missing or malformed is skipped, named in the result and in README.md."""
    out_dir = Path(out_dir)
    data = ReportData(inputs, load_summary(inputs.summary_csv, tuple(inputs.variants)))
    problems = _expectations(data)
    methods = list(inputs.methods) or data.methods
    tasks = list(inputs.tasks) or data.tasks
    rendered: dict[str, bytes] = {}
    made: list[Output] = []
    skipped: dict[str, str] = {}
    for output in outputs_for(methods, tasks):
        try:
            result = output.make(data)
        except MissingInput as exc:
            skipped[output.stem] = str(exc)
            continue
        except PagError as exc:
            skipped[output.stem] = str(exc)
            continue
        if isinstance(result, Table):
            rendered[f"{output.stem}.md"] = result.markdown().encode()
            rendered[f"{output.stem}.tex"] = result.latex(output.stem).encode()
        else:
            for fmt in FIGURE_FORMATS:
                rendered[f"{output.stem}.{fmt}"] = render(result, fmt)
        made.append(output)
    rendered["README.md"] = readme(data, made, skipped, problems).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, payload in rendered.items():
        path = out_dir / name
        with atomic_write(path) as handle:
            handle.write(payload)
        written.append(path)
    return ReportResult(written, {**{k: v for k, v in skipped.items()}, **problems})


def _expectations(data: ReportData) -> dict[str, str]:
    """What the profile promised and the summary lacks: methods without runs, tasks without
    their headline metrics."""
    problems = {}
    present = set(data.df["method"])
    for method in data.inputs.methods:
        if method not in present:
            problems[f"method {method}"] = (
                f"{method} is in the profile but has no runs in {data.inputs.summary_csv}"
            )
    for task in data.inputs.tasks:
        for t, metric in HEADLINE:
            if t == task and not ((data.df["task"] == task) & (data.df["metric"] == metric)).any():
                problems[f"metric {task}/{metric}"] = (
                    f"{task}/{metric} is absent from {data.inputs.summary_csv}"
                )
    return problems
