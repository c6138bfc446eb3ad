"""`pag evaluate`: run a finished run's checkpoint on a split and write its metrics.json."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from pag.cli_options import FILE, FOLDER, data_hint, data_root_option


@click.command("evaluate")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=FOLDER,
    help="Run directory written by `pag train` (params.yaml, checkpoints/final.pt).",
)
@click.option("--split", default="val", show_default=True, help="Dataset split to evaluate.")
@click.option(
    "--out",
    type=FILE,
    default=None,
    help="Metrics file; default RUN_DIR/eval_<split>/metrics.json.",
)
@click.option(
    "--samples",
    type=FILE,
    default=None,
    help="Where the saved predictions go; default RUN_DIR/eval_<split>/samples.npz.",
)
@data_root_option("the params' data_root, else ")
@click.option(
    "--save",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Save the first N images' predictions and gate/ponder/MultiPool maps to "
    "RUN_DIR/eval_<split>/samples.npz (0: none).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "auto"]),
    default="cpu",
    show_default=True,
    help="Where to run the model.",
)
@click.option(
    "--sparse",
    is_flag=True,
    help="Predict with the sparse executor (pag.sparse), which computes only the positions "
    "the model's gates activate, and add per-image latency of the dense forward and the "
    "executor to metrics.json.",
)
@click.option(
    "--gate-rule",
    type=click.Choice(["hard", "sample"]),
    default="hard",
    show_default=True,
    help="How gates decide: the noiseless hard argmax, or one seeded Gumbel-max sample per "
    "decision (the stochastic policy training optimised).",
)
@click.option(
    "--gate-rules",
    default="",
    help="Comma-separated further evaluation rules for the gates (hard, open, expected, "
    "sample; see pag.models.gating.GATE_RULES), each scored in its own pass into "
    "metrics.json's gate_rules.",
)
def evaluate(
    run_dir: Path,
    split: str,
    out: Path | None,
    samples: Path | None,
    root: Path | None,
    save: int,
    device: str,
    sparse: bool,
    gate_rule: str,
    gate_rules: str,
) -> None:
    """Evaluate RUN_DIR/checkpoints/final.pt on a split at full image size: every task's
    metrics, dense and effective MACs per image, per-layer activity, written to
    RUN_DIR/eval_<split>/metrics.json (or --out), and a few predictions and maps for figures
    in RUN_DIR/eval_<split>/samples.npz (or --samples)."""
    import time

    from pag.training.evaluate import evaluate as evaluate_run

    started = int(time.time() * 1000)  # the MLflow run's start
    with _profile_hint(run_dir):
        metrics = evaluate_run(
            run_dir,
            split,
            out=out,
            data_root=root,
            save=save,
            device=device,
            samples=samples,
            sparse=sparse,
            gate_rules=tuple(r.strip() for r in gate_rules.split(",") if r.strip()),
            gate_rule=gate_rule,
        )
    from pag.run_layout import eval_metrics_file
    from pag.tracking import track_job  # MLflow mirrors the finished job; it cannot fail it
    from pag.training.evaluate import load_run

    params, _ = load_run(run_dir)
    metrics_file = out if out is not None else eval_metrics_file(run_dir, split)
    track_job(
        run_dir,
        "evaluate",
        experiment=params.experiment or params.name,
        metrics_file=metrics_file,
        start_time=started,
    )
    keys = ("split", "num_images", "method", "budget", "macs", "activity", "latency")
    summary = {k: metrics[k] for k in keys if k in metrics}
    click.echo(json.dumps({"run": str(run_dir), **summary}))


def _profile_hint(run_dir: Path):
    """A missing dataset's hint for the profile a pipeline run belongs to (its params'
    `experiment`, where params/<experiment>.yaml exists); none for other runs."""
    from pag.errors import PagError
    from pag.pipeline.plan import load_plan, profile_path
    from pag.training.run_dir import read_run_params

    try:
        params = read_run_params(Path(run_dir))
        profile = params.experiment if params is not None else None
        if profile and Path(profile_path(profile)).is_file():
            return data_hint(load_plan(profile))
    except PagError:
        pass  # the evaluation itself names what is wrong with the run directory
    return contextlib.nullcontext()
