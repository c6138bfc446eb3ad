"""The ablation table of a profile with `variants`: one line per method or variant and budget,
with the evaluation's activity, MACs, headline metrics, compute allocation and, for PAG lines
scored under extra gate rules, mIoU and activity with gates forced open, expected (noiseless
soft) and sampled. Values are mean ± sample s.d. over seeds."""

from __future__ import annotations

import math

import pandas as pd

from pag.pipeline.summary import COMPUTE_TASK, TRAINING_TASK
from pag.report.results import MissingInput, ReportData, plus_minus
from pag.report.table import Table

# (task, metric, column header)
_COLUMNS = (
    (COMPUTE_TASK, "activity", "activity"),
    ("semantic", "miou", "mIoU"),
    ("boundary", "ods", "ODS"),
    ("depth", "rmse", "depth RMSE"),
    ("normals", "mean", "normal mean °"),
    (COMPUTE_TASK, "allocation_ratio", "near/away"),
    ("semantic", "miou@open", "mIoU open"),
    ("semantic", "miou@expected", "mIoU expected"),
    ("semantic", "miou@sample", "mIoU sampled"),
    (COMPUTE_TASK, "activity@sample", "activity sampled"),
    (TRAINING_TASK, "grad_norm_max", "max grad norm"),
    (TRAINING_TASK, "decision_grad_norm_max", "max gate grad norm"),
)


def _cell(rows: pd.DataFrame, task: str, metric: str) -> str:
    values = rows.loc[(rows["task"] == task) & (rows["metric"] == metric), "value"]
    values = values.to_numpy(dtype=float)
    return plus_minus(values) if len(values) else ""


def ablation_table(data: ReportData) -> Table:
    df = data.df
    variants = dict(data.inputs.variants)
    if not variants:
        raise MissingInput("the profile has no variants: no ablation table")
    order = list(data.inputs.methods) or list(dict.fromkeys(df["method"]))
    present = [(t, m, h) for t, m, h in _COLUMNS if ((df["task"] == t) & (df["metric"] == m)).any()]
    header = ["line", "method", "budget", "seeds", "MACs %", *(h for _, _, h in present)]
    rows = []
    for name in order:
        mine = df[df["method"] == name]
        for budget, group in mine.groupby("budget", dropna=False, sort=False):
            rows.append(
                [
                    name,
                    variants.get(name, name),
                    "—" if math.isnan(budget) else f"{budget:g}",
                    str(group["seed"].nunique()),
                    f"{group.groupby('run')['macs_pct'].first().mean():.1f}",
                    *(_cell(group, t, m) for t, m, _ in present),
                ]
            )
    notes = [
        "Values: mean ± sample s.d. over seeds (ddof=1). activity: mean fraction of positions "
        "computing over the controlled blocks at evaluation (hard gates); near/away: residual "
        "units per pixel within 2 px of a boundary over those elsewhere; open / expected / "
        "sampled: the same PAG weights evaluated with every gate computing, with noiseless "
        "soft gates, and with one hard Gumbel sample per position; grad norms: the largest global "
        f"(and decision-parameter) gradient norm of any training step. Split: "
        f"{data.inputs.split}."
    ]
    return Table(
        "Ablation: PAG's fine-tuning protocol",
        header,
        rows,
        notes,
        numeric=[False, False] + [True] * (len(header) - 2),
    )
