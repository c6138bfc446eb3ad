"""The options several `pag` commands share, defined once so that each means one thing:

* `--profile NAME` a profile: `params/<NAME>.yaml`, or a profile file's path;
* `--params FILE` a standalone run params file (`params/examples/tiny_run.yaml`);
* `--data-root DIR` (alias `--root`) the data root;
* `--workers N` processes working in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import click

from pag.errors import PagError

log = logging.getLogger(__name__)

FILE = click.Path(dir_okay=False, path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)


def is_profile_name(text: str) -> bool:
    """A bare name (`tiny`) rather than a file (`params/tiny.yaml`), as
    `pag.pipeline.plan.load_plan` tells them apart."""
    return not text.endswith((".yaml", ".yml")) and os.sep not in text


def known_profiles() -> list[str]:
    """The profile names in the profile folder (its `*.yaml` files), sorted."""
    from pag.pipeline.plan import PROFILES_DIR

    return sorted(path.stem for path in Path(PROFILES_DIR).glob("*.yaml"))


def _check_profile(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A profile name must name a file in the profile folder; a wrong one is refused with the
    names that exist. Files are read (and their errors reported) by the command."""
    if value is None or not is_profile_name(value):
        return value
    from pag.pipeline.plan import PROFILES_DIR, profile_path

    path = Path(profile_path(value))
    if not path.is_file():
        names = known_profiles()
        there = ", ".join(names) if names else "none (run pag from the project root)"
        raise PagError(
            f"unknown profile {value!r} (no {path}); the profiles in {PROFILES_DIR}/ are: "
            f"{there}; or give a profile file's path"
        )
    log.debug("profile %r is %s", value, path)
    return value


@contextlib.contextmanager
def data_hint(plan) -> Iterator[None]:
    """A missing dataset's error, completed with the command that makes it for this profile
    (its count, seed and size, or its fetch), as the pipeline's data job runs it."""
    from pag.errors import DataMissing
    from pag.pipeline.plan import data_command

    try:
        yield
    except DataMissing as exc:
        profile = plan.profile
        short = f" (or `pag data synth --profile {profile.name}`)" if profile.data else ""
        raise PagError(
            f"{exc.what}; profile {profile.name} makes it with `{data_command(profile)}`{short}"
        ) from None


def profile_option(default: str | None = "synthetic", help: str = ""):
    """`--profile NAME`: a profile by name (params/<NAME>.yaml) or file."""
    return click.option(
        "--profile",
        metavar="NAME",
        default=default,
        show_default=default is not None,
        callback=_check_profile,
        help=help or "Profile name (params/<name>.yaml) or file.",
    )


def params_option(help: str = "Run params YAML (e.g. params/examples/tiny_run.yaml)."):
    """`--params FILE`: a standalone run params file."""
    return click.option("--params", "params_file", type=FILE, default=None, help=help)


def data_root_option(first_default: str = ""):
    """The `--data-root`/`--root` option every command that reads data takes."""
    return click.option(
        "--data-root",
        "--root",
        "root",
        type=FOLDER,
        default=None,
        help=f"Data root holding <root>/<NAME>; default {first_default}$PAG_DATA, else data/ "
        "in the project.",
    )


def count_option(*decls: str, default: int, help: str, minimum: int = 1):
    """An integer option of at least `minimum`, its default shown."""
    kind = click.IntRange(min=minimum)
    return click.option(*decls, type=kind, default=default, show_default=True, help=help)


def workers_option(help: str = "Parallel worker processes."):
    """`--workers N`: processes working in parallel (results do not depend on it)."""
    return count_option("--workers", default=1, help=help)
