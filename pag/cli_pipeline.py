"""Pipeline commands: the plan, its summary and report, `dvc.yaml`, ImageNet weights."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from pag.cli_options import FILE, FOLDER, data_hint, profile_option, workers_option

log = logging.getLogger(__name__)


@click.command("plan")
@profile_option()
def plan(profile: str) -> None:
    """Print the profile's jobs, one JSON object per line: name, command, inputs, outputs,
    profile keys, threads (what Snakemake and DVC run)."""
    from pag.pipeline.plan import load_plan

    for job in load_plan(profile).jobs:
        record = {
            "name": job.name,
            "cmd": job.cmd,
            "deps": list(job.deps),
            "outs": list(job.outs) + list(job.results),
            "params": list(job.params),
            "threads": job.threads,
        }
        click.echo(json.dumps(record))


@click.command("summarize")
@profile_option()
def summarize(profile: str) -> None:
    """Collect every run's evaluation into results/<profile>/summary.csv (tidy), headline.json
    (`dvc metrics show`) and curves.csv (`dvc plots show`)."""
    from pag.pipeline.plan import load_plan
    from pag.pipeline.summary import summarize as write_summary

    for path in write_summary(load_plan(profile)):
        click.echo(f"wrote {path}")


@click.command("trivial")
@profile_option()
def trivial(profile: str) -> None:
    """Score trivial constant predictors (majority class, mean depth, mean normal, constant
    boundary map) fitted on the training split: results/<profile>/trivial.json."""
    from pag.pipeline.plan import load_plan
    from pag.pipeline.trivial import write_trivial

    plan = load_plan(profile)
    with data_hint(plan):
        click.echo(f"wrote {write_trivial(plan)}")


@click.command("classical")
@profile_option()
@workers_option("Processes scoring images in parallel (the result does not depend on it).")
def classical(profile: str, workers: int) -> None:
    """Score the classical edge detectors of the profile's evaluation.classical (Gaussian
    gradient magnitude, Canny) on its evaluation split against every annotator:
    results/<profile>/classical.json."""
    from pag.pipeline.classical import write_classical
    from pag.pipeline.plan import load_plan

    plan = load_plan(profile)
    with data_hint(plan):
        click.echo(f"wrote {write_classical(plan, workers=workers)}")


@click.command("report")
@profile_option()
@click.option(
    "--out",
    type=FOLDER,
    default=None,
    help="Output folder [default: paper_figures/<profile>].",
)
def report(profile: str, out: Path | None) -> None:
    """Figures and tables of a profile's results: accuracy versus compute, ponder, activity and
    MultiPool maps, qualitative predictions, training curves, the paper's tables (Markdown and
    LaTeX) and a README, from results/<profile>/, the runs' samples and the dataset."""
    from pag.pipeline.plan import figures_dir, load_plan
    from pag.pipeline.report_inputs import report_inputs
    from pag.pipeline.summary import check_current
    from pag.report import make_report

    plan = load_plan(profile)
    check_current(plan)  # results older than the profile are refused, naming the runs
    with data_hint(plan):
        result = make_report(report_inputs(plan), out or Path(figures_dir(plan.profile)))
    for path in result.written:
        click.echo(f"wrote {path}")
    for what, why in result.skipped.items():
        log.warning("%s: %s", what, why)


@click.command("dvc-yaml")
@profile_option()
@click.option("--check", is_flag=True, help="Only check that the file is up to date.")
def dvc_yaml(profile: str, check: bool) -> None:
    """Write the profile's dvc.yaml (the default profile's is ./dvc.yaml, others'
    pipelines/<name>/dvc.yaml) from the same plan the Snakefile runs."""
    from pag.pipeline import dvcyaml
    from pag.pipeline.plan import load_plan

    the_plan = load_plan(profile)
    path = dvcyaml.dvc_yaml_path(the_plan.name)
    if check:
        if not dvcyaml.is_current(the_plan):
            click.echo(
                f"{path} is not up to date: run `pag dvc-yaml --profile {profile}`", err=True
            )
            sys.exit(1)
        click.echo(f"{path} is up to date")
        return
    click.echo(f"wrote {dvcyaml.write(the_plan)}")


@click.group("weights")
def weights_group() -> None:
    """Pretrained weights for the trunk."""


@weights_group.command("fetch")
@click.option("--depth", type=click.Choice(["18", "34", "50", "101"]), required=True)
@click.option("--out", type=FILE, required=True)
def fetch_weights(depth: str, out: Path) -> None:
    """Download torchvision's ImageNet ResNet checkpoint (sha256 prefix checked)."""
    from pag.weights import fetch_imagenet

    click.echo(f"wrote {fetch_imagenet(int(depth), out, progress=sys.stderr.isatty())}")
