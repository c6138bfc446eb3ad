"""A run directory's checks and bookkeeping: is `--out` a run directory, was it started with
these params, is it finished; writing its params, and discarding a stale run.

Where each file lies is `pag.run_layout`'s. A run directory of an older pag holds its training
metrics as `metrics.json`: it is still recognised as a run directory, and training in it with
the same params renames the file to `train_metrics.json` (`adopt_legacy_metrics`), so a
finished run of older code is found finished, not trained again (nor its metrics lost).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from pag import run_layout as layout
from pag.errors import PagError
from pag.fileio import atomic_write, foreign_entries, names_shown, read_json
from pag.training.provenance import Provenance, comparable_params
from pag.training.run_params import RunParams, differing_keys, validate_run_params
from pag.yamlio import load_yaml

log = logging.getLogger(__name__)


def read_run_params(run_dir: Path) -> RunParams | None:
    path = layout.params_file(run_dir)
    if not path.is_file():
        return None
    return validate_run_params(load_yaml(path, "run params"), path, check_files=False)


def check_same_params(
    run_dir: Path, params: RunParams, source: str, *, replace_stale: bool = False
) -> bool | None:
    """True when `run_dir` was started with these params, False when it holds no run; other
    params are refused, or with `replace_stale` give None (the caller discards that run)."""
    try:
        recorded = read_run_params(run_dir)
    except PagError:
        if not replace_stale:
            raise
        return None
    if recorded is None:
        return False
    differing = differing_keys(comparable_params(recorded), comparable_params(params))
    if differing and replace_stale:
        return None
    if differing:
        raise PagError(
            f"{run_dir} was started with other params ({', '.join(differing)} differ from "
            f"{source}); use another --out, or the same params to resume"
        )
    return True


def check_run_dir(run_dir: Path) -> None:
    """`run_dir` is new, or a run directory: anything else there means --out points at another
    command's folder (a results or data folder), whose files a run would write over."""
    foreign = foreign_entries(run_dir, _in_run_dir, "a run directory (--out)")
    if foreign:
        raise PagError(
            f"{run_dir}: holds files that are not a training run's ({names_shown(foreign)}); "
            "--out must be a new folder or a `pag train` run directory"
        )


def _in_run_dir(path: Path) -> bool:
    if path.name == layout.LEGACY_TRAIN_METRICS:
        return is_legacy_metrics(path)
    return path.name in layout.RUN_DIR_ENTRIES or layout.is_eval_dir(path.name)


def is_legacy_metrics(path: Path) -> bool:
    """Whether `path` is what an older `pag train` wrote as `metrics.json` (not an
    evaluation's or a summary's); a damaged one beside its run's params.yaml counts (reading
    it names the damage)."""
    try:
        return {"steps", "history", "params_hash"} <= set(read_json(path))
    except PagError:
        return layout.params_file(path.parent).is_file()


def adopt_legacy_metrics(run_dir: Path) -> None:
    """An older pag's training metrics (`metrics.json`) renamed to `train_metrics.json`,
    where the run directory holds no `train_metrics.json` yet."""
    legacy = run_dir / layout.LEGACY_TRAIN_METRICS
    current = layout.train_metrics_file(run_dir)
    if current.exists() or not legacy.is_file() or not is_legacy_metrics(legacy):
        return
    legacy.replace(current)
    log.warning(
        "%s: renamed %s to %s (training metrics have that name now)",
        run_dir,
        legacy.name,
        current.name,
    )


def train_metrics_of(run_dir: Path) -> Path | None:
    """The run's training metrics: `train_metrics.json`, or an older pag's `metrics.json`
    (under torchrun, rank 0 may rename the one to the other meanwhile: looked for again)."""
    current, legacy = layout.train_metrics_file(run_dir), run_dir / layout.LEGACY_TRAIN_METRICS
    for path in (current, legacy, current):
        if path.is_file() and (path == current or is_legacy_metrics(path)):
            return path
    return None


def discard_run(run_dir: Path) -> None:
    """Remove a run's training state (params, checkpoints, metrics) so it can start over."""
    shutil.rmtree(layout.checkpoint_dir(run_dir), ignore_errors=True)
    layout.train_metrics_file(run_dir).unlink(missing_ok=True)
    layout.timing_file(run_dir).unlink(missing_ok=True)
    legacy = run_dir / layout.LEGACY_TRAIN_METRICS
    if legacy.is_file() and is_legacy_metrics(legacy):
        legacy.unlink()
    layout.params_file(run_dir).unlink(missing_ok=True)


def write_params(run_dir: Path, params: RunParams) -> None:
    text = (
        "# Resolved run params, written by `pag train` (defaults filled in). Resuming this run\n"
        "# needs the same params.\n" + yaml.safe_dump(params.resolved(), sort_keys=False)
    )
    with atomic_write(layout.params_file(run_dir), "w") as handle:
        handle.write(text)


def finished_metrics(run_dir: Path, provenance: Provenance) -> dict[str, Any]:
    """A finished run's training metrics, checked to be of the run its final.pt holds."""
    path = train_metrics_of(run_dir) or layout.train_metrics_file(run_dir)
    metrics = read_json(path, "training metrics")
    if metrics.get("params_hash") != provenance.params_hash:
        raise PagError(
            f"{path}: not the training metrics of {run_dir}'s final.pt (params_hash "
            f"{metrics.get('params_hash')!r}, final.pt's {provenance.params_hash!r})"
        )
    if "images_per_s" not in metrics:  # an older pag wrote it into the training metrics
        metrics["images_per_s"] = read_timing(run_dir).get("images_per_s")
    return metrics


def read_timing(run_dir: Path) -> dict[str, Any]:
    """How fast the run trained (`timing.json`: `images_per_s`, `images`, `seconds`), or {}
    where it is absent or unreadable: timings are informative, never required."""
    path = layout.timing_file(run_dir)
    try:
        timing = read_json(path, "timing") if path.is_file() else {}
    except PagError:
        return {}
    return timing if isinstance(timing, dict) else {}
