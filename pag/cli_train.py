"""`pag train`: train one model from a run params file into a run directory (resumable)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import click

from pag.cli_options import (
    FILE,
    FOLDER,
    data_hint,
    data_root_option,
    params_option,
    profile_option,
)


@click.command("train")
@params_option()
@profile_option(
    default=None,
    help="Instead of --params: a profile (params/<name>.yaml, or its file) and one of its runs "
    "(--run).",
)
@click.option(
    "--run",
    "run_name",
    metavar="RUN",
    default=None,
    help="With --profile: the run, e.g. pag-0.5-s0.",
)
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=FOLDER,
    help="Run directory: params.yaml, checkpoints/, train_metrics.json. Resumed when it exists.",
)
@click.option(
    "--init-from",
    type=FILE,
    default=None,
    help="Start from this checkpoint's weights (a dense run's final.pt: the paper's "
    "plug-in-and-fine-tune protocol); recorded in the run's params.",
)
@data_root_option("the params' data_root, else ")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "auto"]),
    default=None,
    help="Override the params' device (default cpu; auto = cuda when present); recorded in "
    "the run's params.",
)
@click.option(
    "--replace-stale",
    is_flag=True,
    help="If RUN_DIR holds a run with other params, discard it and start over (pipelines) "
    "instead of refusing.",
)
def train(
    params_file: Path | None,
    profile: str | None,
    run_name: str | None,
    run_dir: Path,
    init_from: Path | None,
    root: Path | None,
    device: str | None,
    replace_stale: bool,
) -> None:
    """Train the model a run params file describes, writing RUN_DIR/params.yaml,
    RUN_DIR/checkpoints/{last,final}.pt and RUN_DIR/train_metrics.json.

    Started again with the same command, a run resumes from its last checkpoint and ends
    exactly as an uninterrupted run would; other params for an existing RUN_DIR are refused
    (or with --replace-stale discarded).

    With --profile and --run, the run params are the profile's for that run (what the
    pipeline runs; `pag plan --profile P` lists the runs)."""
    from pag.training import load_run_params
    from pag.training import train as train_run
    from pag.training.observer import NO_OBSERVER
    from pag.training.run_params import validate_run_params

    overrides: dict = {}
    if init_from is not None:
        overrides["init_from"] = str(init_from)
    if device is not None:
        overrides["device"] = device
    if (params_file is None) == (profile is None) or (profile is None) != (run_name is None):
        raise click.UsageError("give either --params FILE, or --profile NAME and --run RUN")
    hint = contextlib.nullcontext()
    if profile is not None:
        from pag.pipeline.plan import load_plan, run_params

        plan = load_plan(profile)
        source = f"{profile} (run {run_name})"
        params = validate_run_params({**run_params(plan.profile, run_name), **overrides}, source)
        hint = data_hint(plan)
    else:
        source = str(params_file)
        params = load_run_params(params_file, overrides=overrides)
    from pag import tracking  # a tracking failure is a warning; it never fails the run

    experiment = params.experiment or params.name
    main = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 reports and tracks
    observer = tracking.training_observer(experiment) if main else NO_OBSERVER
    try:
        with hint:
            metrics = train_run(
                params,
                run_dir,
                data_root=root,
                source=source,
                replace_stale=replace_stale,
                observer=observer,
            )
    except BaseException as exc:
        if isinstance(observer, tracking.LiveTrainingRun):
            observer.abort("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    if not main:
        return
    if not getattr(observer, "started", False):  # finished before: MLflow gets its files
        tracking.track_job(run_dir, "train", experiment=experiment)
    summary = {k: metrics[k] for k in ("steps", "epochs", "images_per_s")}
    click.echo(json.dumps({"run": str(run_dir), "train": metrics["train"], **summary}))
