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
    """Collect every run's evaluation into results/<profile>/summary.csv (tidy), headline.json,
    curves.csv (`dvc plots show`) and each run's runs/<run>/headline.json (`dvc metrics
    show`)."""
    from pag.pipeline.plan import load_plan
    from pag.pipeline.summary import summarize as write_summary

    paths = write_summary(load_plan(profile))
    for path in paths[:3]:
        click.echo(f"wrote {path}")
    click.echo(f"wrote {len(paths) - 3} runs' headline.json ({paths[0].parent}/runs/<run>/)")


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
@click.option(
    "--stamp",
    type=click.Path(path_type=Path),
    help="With --check: write this file when up to date (the DVC `plan` stage's output).",
)
@click.option(
    "--offline-html",
    is_flag=True,
    help="Also write .dvc/plots/offline.html again (written anyway where missing).",
)
def dvc_yaml(profile: str, check: bool, stamp: Path | None, offline_html: bool) -> None:
    """Write the profile's dvc.yaml (the default profile's is ./dvc.yaml, others'
    pipelines/<name>/dvc.yaml) from the same plan the Snakefile runs."""
    from pag.pipeline import dvcyaml
    from pag.pipeline.plan import load_plan

    the_plan = load_plan(profile)
    path = dvcyaml.dvc_yaml_path(the_plan.name)
    if stamp is not None and not check:
        raise click.UsageError("--stamp goes with --check")
    if check:
        stale = dvcyaml.staleness(the_plan)
        if stale is not None:
            click.echo(stale, err=True)
            sys.exit(1)
        if stamp is not None:
            dvcyaml.write_stamp(the_plan, stamp)
        click.echo(f"{path} is up to date")
        return
    click.echo(f"wrote {dvcyaml.write(the_plan)}")
    offline = Path(dvcyaml.OFFLINE_HTML)
    if Path(".dvc").is_dir() and (offline_html or not offline.is_file()):
        from pag.pipeline import dvc_offline

        click.echo(f"wrote {dvc_offline.write(offline)} (`dvc plots show` without internet)")


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
