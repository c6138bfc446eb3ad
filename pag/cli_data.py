"""`pag data ...`: generate, download, verify and list datasets."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from pag.cli_options import FOLDER, count_option, data_root_option, profile_option, workers_option
from pag.paths import data_root, dataset_dir

log = logging.getLogger(__name__)


@click.group("data")
def data_group() -> None:
    """Generate, download, verify and list datasets."""


@data_group.command("synth")
@click.option(
    "--out",
    type=FOLDER,
    default=None,
    help="Output folder; default <data root>/synthetic.",
)
@profile_option(
    default=None,
    help="Render what this profile needs (its data: count, seed, size) into its data folder, "
    "instead of --out/--num/--seed/--height/--width.",
)
@click.option("--num", type=click.IntRange(min=1), default=None, help="Number of images.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed.")
@count_option(
    "--start", default=0, minimum=0, help="Index of the first image (images start..start+num-1)."
)
@click.option("--height", type=click.IntRange(min=16), default=None, help="[default: 96]")
@click.option("--width", type=click.IntRange(min=16), default=None, help="[default: 128]")
@click.option(
    "--focal-ratio",
    type=float,
    default=0.8,
    show_default=True,
    help="Focal length as a fraction of the width.",
)
@workers_option()
@data_root_option()
def synth(profile, out, num, seed, start, height, width, focal_ratio, workers, root) -> None:
    """Render procedural indoor scenes with ground truth for all four tasks: NUM images from
    SEED at HEIGHT x WIDTH, or with --profile what that profile needs, where it reads them."""
    from pydantic import ValidationError

    from pag.data.synthetic.writer import SynthParams, generate, split_counts
    from pag.errors import PagError

    if profile is not None:
        out, num, seed, height, width = _profile_synth(profile, out, num, seed, height, width)
    elif num is None or seed is None:
        raise click.UsageError("give --num and --seed, or --profile NAME")
    height, width = height or 96, width or 128

    try:
        params = SynthParams(seed=seed, height=height, width=width, focal_ratio=focal_ratio)
    except ValidationError as exc:
        problems = "; ".join(
            (f"--{e['loc'][0].replace('_', '-')}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise PagError(f"invalid generator parameters: {problems}") from None
    out = out if out is not None else dataset_dir("synthetic", root)
    manifest = generate(
        out, num, params, start=start, workers=workers, progress=sys.stderr.isatty()
    )
    counts = ", ".join(f"{k} {v}" for k, v in split_counts(manifest).items())
    click.echo(f"wrote images {start}..{start + num - 1} to {out} (manifest: {counts})")


def _profile_synth(profile: str, *given) -> tuple:
    """(out, num, seed, height, width) of the profile's synthetic data; explicit options
    beside --profile are refused, so the data is exactly what the profile's runs read."""
    from pag.pipeline.plan import data_command, dataset_path, load_plan

    if any(value is not None for value in given):
        raise click.UsageError(
            "--profile sets --out, --num, --seed, --height and --width; give either"
        )
    spec = load_plan(profile).profile
    if spec.data is None:
        raise click.UsageError(
            f"profile {spec.name} uses the {spec.dataset} dataset, which is fetched, not "
            f"rendered: {data_command(spec)}"
        )
    d = spec.data
    return Path(dataset_path(spec)), d.num, d.seed, d.height, d.width


@data_group.command("fetch")
@click.argument("name")
@data_root_option()
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--from",
    "source",
    type=click.Path(path_type=Path),
    default=None,
    help="Install from a local copy instead of downloading: the official archive (checked "
    "like a download), a folder holding it, or an extracted tree in the dataset's layout "
    "(checked by `pag data check` before it is moved into place).",
)
def fetch(name, root, no_progress, source) -> None:
    """Download dataset NAME (or install it from a local copy with --from), or print how to
    get it by hand where a login is needed."""
    from pag.data import dataset_class
    from pag.data.download import fetch as fetch_files

    cls = dataset_class(name)
    target = dataset_dir(name, root)
    if source is not None:
        from pag.data.install import install_from

        install_from(cls, target, source, echo=click.echo)
        return
    fetch_files(
        cls.fetch_spec, target, progress=not no_progress and sys.stderr.isatty(), echo=click.echo
    )


@data_group.command("check")
@click.argument("name")
@data_root_option()
def check(name, root) -> None:
    """Verify a prepared dataset: files, counts, checksums where known, every sample decodes."""
    from pag.data import CheckReport, dataset_class

    cls = dataset_class(name)
    target = dataset_dir(name, root)
    report = CheckReport(name, target)
    if not target.is_dir():
        report.add(f"{target}: no such directory (run `pag data fetch {name}`)")
    else:
        cls.check(target, report)
    for note in report.notes:
        log.info("note: %s", note)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if not report.ok:
        click.echo(f"{name}: {len(report.problems)} problem(s) in {target}", err=True)
        sys.exit(1)
    click.echo(f"{name}: ok ({report.checked} samples checked in {target})")


@data_group.command("list")
@data_root_option()
def list_datasets(root) -> None:
    """List the known datasets, their tasks and splits, and whether they are present."""
    from pag.data import dataset_class, dataset_names

    click.echo(f"data root: {data_root(root)}")
    for name in dataset_names():
        cls = dataset_class(name)
        folder = dataset_dir(name, root)
        present = "present" if folder.is_dir() and any(folder.iterdir()) else "absent"
        click.echo(
            f"{name:14s} tasks={','.join(cls.tasks):34s} splits={','.join(cls.splits):16s} "
            f"classes={len(cls.class_names):<3d} {present}"
        )
