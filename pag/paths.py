"""Where data lives: `--data-root`, else `$PAG_DATA`, else `data/` in the project."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "PAG_DATA"


def project_root() -> Path:
    """The checkout holding this package (editable install), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data root; dataset NAME then lives in `<root>/<NAME>`."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return project_root() / "data"


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / name
