"""`pag flops`: compute accounting for every method and budget of a profile."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("flops")
@click.option(
    "--params",
    "params_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Profile YAML (e.g. params/synthetic.yaml).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Random images to average effective MACs over.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def flops(params_file: Path, batch: int, seed: int) -> None:
    """Dense and effective MACs per image for every method and budget (JSON lines).

    Models are freshly built (gates, halting heads and MultiPool at their initialisation)
    and run on random inputs of the profile's size: exact for dense, truncation and
    MultiPool-average; for learned policies, trained checkpoints give the real effective
    numbers when they are evaluated."""
    import torch

    from pag.flops import measure_macs, to_flops
    from pag.models import build_model
    from pag.params import load_profile

    profile = load_profile(params_file)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *profile.input_size, generator=generator)
    kwargs = {"tasks": profile.tasks, **profile.model.build_kwargs()}
    torch.manual_seed(seed)
    baseline = measure_macs(build_model("dense", **kwargs), x).dense
    for method, budget in profile.runs():
        torch.manual_seed(seed)
        report = measure_macs(build_model(method, budget, **kwargs), x)
        effective = float(report.effective.mean())
        record = {
            "profile": profile.name,
            "method": method,
            "budget": budget,
            "input_size": list(profile.input_size),
            "unit": "MACs per image",
            "dense_macs": report.dense,
            "effective_macs": effective,
            "effective_flops": to_flops(effective),
            "fraction_of_dense_baseline": effective / baseline,
        }
        click.echo(json.dumps(record))
