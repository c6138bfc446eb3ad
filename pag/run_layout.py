"""Where things are: the files of a run directory, and where the pipeline puts each profile's.

A run directory (`pag train --out RUN_DIR`; the pipeline's `runs/<profile>/<run>/`)::

    params.yaml                the resolved run params (`pag train`)
    checkpoints/last.pt        everything needed to resume (`pag train`)
    checkpoints/final.pt       the trained weights and their provenance (`pag train`)
    train_metrics.json         per-epoch history and final training losses (`pag train`)
    timing.json                how fast it trained (`images_per_s`; not a pipeline output, so
                               a rerun with the same results leaves dvc.lock as it was)
    eval_<split>/metrics.json  an evaluation's metrics (`pag evaluate`)
    eval_<split>/samples.npz   a few images' predictions and maps, for figures (`pag evaluate`)
    figures/                   images a run's own tools may add (logged by `pag.tracking`)

A project (both front-ends run at its root)::

    data/<profile>/<dataset>/                 the dataset (`data_root` = data/<profile>)
    runs/<profile>/<run>/                     run directories (not committed)
    results/<profile>/runs/<run>/metrics.json a run's evaluation (committed)
    results/<profile>/runs/<run>/samples.npz  its saved predictions and maps (committed for
                                              each method's lowest seed, which figures show)
    results/<profile>/runs/<run>/history.json its per-epoch training history (committed)
    results/<profile>/runs/<run>/headline.json  its headline metrics, one row of
                                              `dvc metrics show` (committed, `pag summarize`)
    results/<profile>/summary.csv             the summary (committed): the tidy table,
    results/<profile>/headline.json           headline metrics per run (`dvc metrics show`),
    results/<profile>/curves.csv              and one row per run (`dvc plots`)
    results/<profile>/trivial.json, classical.json   the floors (committed)
    paper_figures/<profile>/                  the report (committed)

Files with different contents have different names. Before `train_metrics.json` and
`headline.json`, both were called `metrics.json`; `LEGACY_TRAIN_METRICS` is how a run
directory of an older pag is recognised (`pag.training.run_dir`).

This module imports neither torch, numpy nor matplotlib: the plan, and so Snakemake and
`pag dvc-yaml`, read it.
"""

from __future__ import annotations

import os
from pathlib import Path

# -- a run directory ----------------------------------------------------------------------------

PARAMS = "params.yaml"
TRAIN_METRICS = "train_metrics.json"
TIMING = "timing.json"  # wall-clock measurements: kept out of every file the pipeline tracks
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
FINAL = "final.pt"
FIGURES = "figures"
EVAL_PREFIX = "eval_"
EVAL_METRICS = "metrics.json"  # in eval_<split>/, or where `pag evaluate --out` puts it
SAMPLES = "samples.npz"
LEGACY_TRAIN_METRICS = "metrics.json"  # the training metrics' name in older run directories

# what `pag train` writes into a run directory (evaluation adds eval_<split>/)
RUN_DIR_ENTRIES = (PARAMS, TRAIN_METRICS, TIMING, CHECKPOINTS, FIGURES)


def params_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / PARAMS


def train_metrics_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / TRAIN_METRICS


def timing_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / TIMING


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS


def last_checkpoint(run_dir: str | os.PathLike) -> Path:
    return checkpoint_dir(run_dir) / LAST


def final_checkpoint(run_dir: str | os.PathLike) -> Path:
    return checkpoint_dir(run_dir) / FINAL


def eval_dir(run_dir: str | os.PathLike, split: str) -> Path:
    return Path(run_dir) / f"{EVAL_PREFIX}{split}"


def eval_metrics_file(run_dir: str | os.PathLike, split: str) -> Path:
    return eval_dir(run_dir, split) / EVAL_METRICS


def samples_file(run_dir: str | os.PathLike, split: str) -> Path:
    return eval_dir(run_dir, split) / SAMPLES


def is_eval_dir(name: str) -> bool:
    return name.startswith(EVAL_PREFIX)


# -- a project's folders (relative to its root, '/'-separated: the plan's paths) ----------------

DATA = "data"
RUNS = "runs"
RESULTS = "results"
PAPER_FIGURES = "paper_figures"
SUMMARY_CSV = "summary.csv"
HEADLINE_FILE = "headline.json"
CURVES = "curves.csv"
SUMMARY_FILES = (SUMMARY_CSV, HEADLINE_FILE, CURVES)  # what `pag summarize` writes, in this order
TRIVIAL = "trivial.json"
CLASSICAL = "classical.json"


def profile_data_root(profile: str) -> str:
    return f"{DATA}/{profile}"


def profile_run_dir(profile: str, run: str) -> str:
    return f"{RUNS}/{profile}/{run}"


def profile_results_dir(profile: str) -> str:
    return f"{RESULTS}/{profile}"


HISTORY = "history.json"  # a run's per-epoch training history, as the report draws it


def committed_run_dir(profile: str, run: str) -> str:
    """Where the pipeline commits what a run's figures and tables are made from."""
    return f"{profile_results_dir(profile)}/{RUNS}/{run}"


def committed_eval_metrics(profile: str, run: str) -> str:
    """A run's evaluation as the pipeline commits it (`pag evaluate --out`)."""
    return f"{committed_run_dir(profile, run)}/{EVAL_METRICS}"


def committed_samples(profile: str, run: str) -> str:
    """The few images' predictions and maps the report draws (`pag evaluate --samples`)."""
    return f"{committed_run_dir(profile, run)}/{SAMPLES}"


def committed_history(profile: str, run: str) -> str:
    """The run's per-epoch training history (`pag summarize` copies it from training's
    metrics), so the training curves redraw without the run directory."""
    return f"{committed_run_dir(profile, run)}/{HISTORY}"


def run_headline(profile: str, run: str) -> str:
    """A run's headline metrics and MACs % of dense (`pag summarize`; `dvc metrics show`)."""
    return f"{committed_run_dir(profile, run)}/{HEADLINE_FILE}"


def dvc_yaml_stamp(profile: str) -> str:
    """What the DVC `plan` stage writes once `pag dvc-yaml --check` found the profile's
    dvc.yaml current: every stage runs after it, so a stale dvc.yaml stops `dvc repro` first."""
    return f"{RUNS}/{profile}/dvc-yaml.checked"


def profile_figures_dir(profile: str) -> str:
    return f"{PAPER_FIGURES}/{profile}"
