"""`make_report`: render every output a report's inputs allow, then write them atomically."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from pag.errors import PagError
from pag.fileio import atomic_write, foreign_entries, names_shown, remove_temporaries
from pag.locking import locked
from pag.pipeline.report_outputs import FIGURE_FORMATS, TABLE_FORMATS, Output, outputs_for
from pag.report.readme import readme
from pag.report.results import HEADLINE, MissingInput, ReportData, ReportInputs, load_summary
from pag.report.style import render
from pag.report.table import Table


def _maker(output: Output):
    """The function that makes an output ("module:function", imported when drawn)."""
    module, name = output.maker.split(":")
    return getattr(importlib.import_module(module), name)


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
            result = _maker(output)(data, *output.args)
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
    written = []
    with locked(out_dir, "report folder", hint="wait for the other `pag report`"):
        leftovers = _report_files(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, payload in rendered.items():
            path = out_dir / name
            remove_temporaries(path)
            with atomic_write(path) as handle:
                handle.write(payload)
            written.append(path)
        for path in leftovers:  # an earlier report's outputs that this one does not hold
            if path.name not in rendered:
                path.unlink(missing_ok=True)
    return ReportResult(written, {**{k: v for k, v in skipped.items()}, **problems})


REPORT_SUFFIXES = tuple(f".{fmt}" for fmt in (*FIGURE_FORMATS, *TABLE_FORMATS))


def _report_files(out_dir: Path) -> list[Path]:
    """The files in `out_dir` from an earlier report, which this one replaces or removes (so
    the folder never shows a figure its README says is missing); anything else there means the
    folder is not a report's, and is refused before anything is written."""
    foreign = foreign_entries(out_dir, _is_report_file, "a report folder")
    if foreign:
        raise PagError(
            f"{out_dir}: holds files that are not a report's ({names_shown(foreign)}); the "
            "report replaces its folder's figures and tables: give it a folder of its own"
        )
    return sorted(p for p in out_dir.iterdir() if _is_report_file(p)) if out_dir.is_dir() else []


def _is_report_file(path: Path) -> bool:
    return path.is_file() and path.suffix in REPORT_SUFFIXES


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
