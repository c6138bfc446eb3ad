"""`pag flops`: compute accounting for every method and budget of a profile."""

from __future__ import annotations

import json

import click

from pag.cli_options import count_option, profile_option


@click.command("flops")
@profile_option()
@count_option("--batch", default=2, help="Random images to average effective MACs over.")
@click.option("--seed", type=int, default=0, show_default=True)
def flops(profile: str, batch: int, seed: int) -> None:
    """Dense and effective MACs per image for every method and budget (JSON lines).

    Models are freshly built (gates, halting heads and MultiPool at their initialisation)
    and run on random inputs of the profile's size: exact for dense, truncation and
    MultiPool-average; for learned policies, trained checkpoints give the real effective
    numbers when they are evaluated."""
    import torch

    from pag.flops import measure_macs, to_flops
    from pag.models import build_model
    from pag.pipeline.plan import load_plan

    spec = load_plan(profile).profile
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *spec.input_size, generator=generator)
    kwargs = {"tasks": spec.tasks, **spec.model.build_kwargs()}
    torch.manual_seed(seed)
    baseline = measure_macs(build_model(**kwargs), x).dense
    for method, budget in spec.runs():
        torch.manual_seed(seed)
        report = measure_macs(build_model(method, budget, **kwargs), x)
        effective = float(report.effective.mean())
        record = {
            "profile": spec.name,
            "method": method,
            "budget": budget,
            "input_size": list(spec.input_size),
            "unit": "MACs per image",
            "dense_macs": report.dense,
            "effective_macs": effective,
            "effective_flops": to_flops(effective),
            "fraction_of_dense_baseline": effective / baseline,
        }
        click.echo(json.dumps(record))
