"""What the report writes: each figure and table, what it shows, and which function of
`pag.report` makes it, for a profile's methods and tasks.

Data, not drawing: the plan reads `planned_files` to declare the report job's outputs without
importing the report package (matplotlib, pandas); `pag.report.make` resolves `maker` when it
draws. Which outputs a report holds follows the methods' descriptions (`pag.methods`)."""

from __future__ import annotations

from dataclasses import dataclass

from pag.methods import registry

TASKS = ("semantic", "boundary", "depth", "normals")
FIGURE_FORMATS = ("png", "pdf")
TABLE_FORMATS = ("md", "tex")


@dataclass(frozen=True)
class Output:
    """One figure or table: its file stem, what it shows (for README.md), and the function
    that makes it ("module:function", called with the report data and then `args`)."""

    stem: str
    kind: str  # "figure" or "table"
    shows: str
    maker: str
    args: tuple = ()

    @property
    def files(self) -> list[str]:
        formats = FIGURE_FORMATS if self.kind == "figure" else TABLE_FORMATS
        return [f"{self.stem}.{fmt}" for fmt in formats]


def outputs_for(
    methods: list[str] | tuple[str, ...], tasks: list[str] | tuple[str, ...]
) -> list[Output]:
    """The outputs a report of these methods (and variants) and tasks holds, in README order."""
    present = [m for m in registry.methods() if m.name in methods]
    dynamic = [m for m in present if m.dynamic]
    out = [
        Output(
            "accuracy_vs_compute",
            "figure",
            "Accuracy versus compute: every headline metric against effective MACs as % of "
            "the dense baseline; curves for the swept methods, points for the others, mean "
            "and ±1 sample s.d. over seeds.",
            "pag.report.compute:accuracy_vs_compute",
        ),
    ]
    out += [
        Output(
            f"ponder_maps_{m.name}",
            "figure",
            f"Ponder maps of {m.name}: input, ground truth, and at each budget the "
            "prediction and the per-pixel count of residual units computed.",
            "pag.report.qualitative:ponder_maps",
            (m.name,),
        )
        for m in dynamic
    ]
    if dynamic:
        out += [
            Output(
                "layer_activity",
                "figure",
                "Per-layer activity: the fraction of positions each controlled block "
                "computes, per dynamic method and budget.",
                "pag.report.activity:layer_activity",
            ),
            Output(
                "compute_allocation",
                "figure",
                "Where the compute goes: residual units per pixel within 2 px of a boundary "
                "over those elsewhere, per dynamic method and budget (random gate: 1.0).",
                "pag.report.allocation:allocation_figure",
            ),
            Output(
                "table_compute_allocation",
                "table",
                "Units computed per pixel near boundaries and away from them, and their ratio.",
                "pag.report.allocation:allocation_table",
            ),
        ]
    if any(m.branch_maps for m in present):
        out.append(
            Output(
                "multipool_maps",
                "figure",
                "MultiPool maps: the branch (dilation, the original 3x3 or skip) MP-PAG "
                "chooses at each pixel.",
                "pag.report.qualitative:multipool_maps",
            )
        )
    out += [
        Output(
            f"qualitative_{task}",
            "figure",
            f"Qualitative {task} predictions of the dense baseline, MP-PAG and PAG at its "
            "highest and lowest budget, beside input and ground truth.",
            "pag.report.qualitative:qualitative",
            (task,),
        )
        for task in TASKS
        if task in tasks
    ]
    out += [
        Output(
            "training_curves",
            "figure",
            "Training curves: every loss term per epoch, the dense baseline first and "
            "the fine-tuned methods continuing from it.",
            "pag.report.curves:training_curves",
        ),
        Output(
            "summary_table",
            "table",
            "Every method and budget: seeds, MACs % and the headline metrics.",
            "pag.report.tables:summary_table",
        ),
    ]
    if any(m.multipool for m in present):
        out.append(
            Output(
                "table_multipool",
                "table",
                "Table 1: dense baseline vs MultiPool (average) vs MP-PAG per task, with MACs.",
                "pag.report.tables:multipool_table",
            )
        )
    out.append(
        Output(
            "table_matched_budgets",
            "table",
            "Table 2: every method at 100/90/80/70/50 % of the dense compute, measured or "
            "interpolated along its curve (marked).",
            "pag.report.tables:matched_budget_table",
        )
    )
    if any(method not in registry.names() for method in methods):
        out.append(
            Output(
                "table_ablation",
                "table",
                "The ablation: every line (method or variant) with activity, MACs, headline "
                "metrics, compute allocation and PAG under other evaluation rules.",
                "pag.report.ablation:ablation_table",
            )
        )
    out.append(
        Output(
            "table_paper",
            "table",
            "Table 3: the published numbers, with their provenance, beside ours "
            '("not run" for datasets not run).',
            "pag.report.tables:paper_table",
        )
    )
    return out


def planned_files(methods, tasks) -> list[str]:
    """The files a complete report of these methods and tasks writes (the pipeline's outputs)."""
    return [name for output in outputs_for(methods, tasks) for name in output.files] + ["README.md"]
