"""What the report reads: the tidy summary, each run's evaluation, saved samples and training
history, and the ground truth of the saved images; every file checked as it is read, so a
malformed one fails with its name rather than as a wrong figure later."""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pag.errors import PagError
from pag.methods import registry
from pag.pipeline.summary import SUMMARY_COLUMNS
from pag.report.style import legend_order

COLUMNS = SUMMARY_COLUMNS  # summary.csv, as pag.pipeline.summary writes it
# the (task, metric) panels of the accuracy-versus-compute figure and the tables' columns
HEADLINE = (
    ("semantic", "miou"),
    ("boundary", "ods"),
    ("depth", "rmse"),
    ("depth", "abs_rel"),
    ("normals", "mean"),
    ("normals", "within_11_25"),
)
TASKS = ("semantic", "boundary", "depth", "normals")

GroundTruth = Callable[[Iterable[str]], dict[str, dict[str, np.ndarray]]]


class MissingInput(PagError):
    """An input one figure or table needs is absent: that output is skipped, with this message,
    and the others are still made."""


@dataclass(frozen=True)
class RunFiles:
    """The files of one run the report reads beyond summary.csv (any may be absent)."""

    evaluation: Path | None = None  # results/<profile>/runs/<run>/metrics.json
    samples: Path | None = None  # runs/<profile>/<run>/eval_<split>/samples.npz
    training: Path | None = None  # results/<profile>/runs/<run>/history.json (per-epoch history)


@dataclass
class ReportInputs:
    """Everything one report is made from. Only `summary_csv` is required; the rest lets the
    maps, qualitative figures and training curves be drawn, and `methods`/`tasks` (the
    profile's) let the report say what it expected and did not find."""

    summary_csv: Path
    runs: Mapping[str, RunFiles] = field(default_factory=dict)
    ground_truth: GroundTruth | None = None
    class_names: tuple[str, ...] = ()
    multipool_branches: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    profile: str | None = None
    title: str | None = None
    variants: Mapping[str, str] = field(default_factory=dict)  # ablation name -> method
    split: str = "evaluation"  # the split the runs were evaluated on, for titles
    classical: Path | None = None  # results/<profile>/classical.json (`pag classical`)


def load_summary(path: Path, variants: Iterable[str] = ()) -> pd.DataFrame:
    """Read and check summary.csv (methods: the registered ones and the profile's `variants`).

    Adds `macs_pct` (effective MACs as % of the dataset's dense baseline, else of the run's own
    dense architecture) and `own_dense` (True where the latter was used)."""
    path = Path(path)
    if not path.is_file():
        raise PagError(f"{path}: file not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise PagError(f"{path}: empty file (expected a header and rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PagError(f"{path}: not a readable CSV ({exc})") from None
    missing = [column for column in COLUMNS if column not in raw.columns]
    if missing:
        raise PagError(f"{path}: missing column(s) {missing}")
    if raw.empty:
        raise PagError(f"{path}: no rows (only a header)")

    df = pd.DataFrame({column: raw[column].str.strip() for column in COLUMNS})
    for column in ("run", "method", "dataset", "task", "metric"):
        empty = df.index[df[column] == ""]
        if len(empty):
            raise PagError(f"{path}: line {empty[0] + 2}: empty {column!r}")
    unknown = sorted(set(df["method"]) - set(legend_order()) - set(variants))
    if unknown:
        known = [*legend_order(), *variants]
        raise PagError(f"{path}: unknown method(s) {unknown}; expected one of {known}")
    for column in ("budget", "seed", "value", "effective_macs", "dense_macs"):
        text = df[column]
        number = pd.to_numeric(text, errors="coerce").astype(float)
        valid = np.isfinite(number) | ((text == "") & (column == "budget"))
        if column == "seed":
            valid &= number == np.round(number)
        elif column == "dense_macs":
            valid &= number > 0
        elif column == "effective_macs":
            valid &= number >= 0
        if not valid.all():
            line = int(np.flatnonzero(~valid.to_numpy())[0])
            raise PagError(
                f"{path}: line {line + 2}: {column} {text.iloc[line]!r} is not "
                + ("an integer" if column == "seed" else "a valid number")
            )
        df[column] = number
    df["seed"] = df["seed"].astype(int)

    duplicated = df.duplicated(["run", "dataset", "task", "metric"])
    if duplicated.any():
        row = df[duplicated].iloc[0]
        raise PagError(
            f"{path}: more than one row for run {row['run']!r}, dataset {row['dataset']!r}, "
            f"{row['task']}/{row['metric']}"
        )
    inconsistent = df.groupby("run")[["method", "budget", "seed"]].nunique(dropna=False)
    inconsistent = inconsistent[(inconsistent > 1).any(axis=1)]
    if len(inconsistent):
        raise PagError(
            f"{path}: run {inconsistent.index[0]!r} has rows with different method, budget or seed"
        )
    if not headline_panels(df):
        wanted = ", ".join(f"{task}/{metric}" for task, metric in HEADLINE)
        raise PagError(f"{path}: no headline metric present (expected one of {wanted})")

    dense_mean = (
        df[df["method"] == registry.baseline().name].groupby("dataset")["effective_macs"].mean()
    )
    reference = df["dataset"].map(dense_mean)
    df["own_dense"] = reference.isna()
    df["macs_pct"] = 100.0 * df["effective_macs"] / reference.fillna(df["dense_macs"])
    return df


def headline_panels(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (dataset, task, metric) headline metrics present, in the fixed order, per dataset
    (MACs and metrics are only comparable within a dataset)."""
    present = set(zip(df["dataset"], df["task"], df["metric"], strict=True))
    return [
        (dataset, task, metric)
        for dataset in sorted(set(df["dataset"]))
        for task, metric in HEADLINE
        if (dataset, task, metric) in present
    ]


SPREAD = "sample s.d. over seeds (ddof=1)"  # the statistic of every ± and error bar


def sample_sd(values) -> float:
    """The sample standard deviation (ddof=1); NaN for fewer than two values (no spread is
    known from one seed)."""
    values = np.asarray(values, dtype=float)
    return float(np.std(values, ddof=1)) if values.size > 1 else math.nan


def plus_minus(values, decimals: int = 3) -> str:
    """ "mean ± sample s.d." of `values`, with "—" for the s.d. of a single value."""
    sd = sample_sd(values)
    spread = "—" if math.isnan(sd) else f"{sd:.{decimals}f}"
    return f"{np.mean(values):.{decimals}f} ± {spread}"


def curve_points(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, budget) of one metric's rows: mean MACs % and the value's mean and sample
    s.d. over seeds, with the number of seeds: the points a curve is drawn through."""
    records = []
    for (method, budget), group in rows.groupby(["method", "budget"], dropna=False, sort=False):
        values = group["value"].to_numpy(dtype=float)
        records.append(
            {
                "method": method,
                "budget": float(budget),
                "macs_pct": float(group["macs_pct"].mean()),
                "mean": float(np.mean(values)),
                "std": sample_sd(values),
                "seeds": int(group["seed"].nunique()),
            }
        )
    columns = ["method", "budget", "macs_pct", "mean", "std", "seeds"]
    return pd.DataFrame(records, columns=columns)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MissingInput(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PagError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PagError(f"{path}: expected a JSON object ({what})")
    return value


def load_samples(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """A `samples.npz` (see pag.training.evaluate) as {sample id: {key: array}}, keys such as
    "image", "semantic", "ponder", "gate/layer1.0". Read without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise MissingInput(f"{path}: samples not found") from None
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise PagError(f"{path}: not a readable samples.npz ({exc})") from None
    if "ids" not in arrays:
        raise PagError(f"{path}: no 'ids' array (expected the saved sample ids)")
    samples: dict[str, dict[str, np.ndarray]] = {}
    for sid in arrays["ids"].tolist():
        prefix = f"{sid}/"
        entries = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        if "image" not in entries:
            raise PagError(f"{path}: sample {sid!r} has no image")
        samples[sid] = entries
    return samples


@dataclass
class ReportData:
    """The inputs, read once and shared by every figure and table."""

    inputs: ReportInputs
    df: pd.DataFrame
    _samples: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)
    _truth: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _evaluations: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def runs_of(self, method: str) -> pd.DataFrame:
        """One row per run of `method`: run, budget, seed and mean MACs %, budgets in the
        profile's order of decreasing compute (highest MACs first), then seeds."""
        rows = self.df[self.df["method"] == method]
        runs = rows.groupby("run", sort=False).agg(
            budget=("budget", "first"), seed=("seed", "first"), macs_pct=("macs_pct", "mean")
        )
        return runs.reset_index().sort_values(["macs_pct", "seed"], ascending=[False, True])

    @property
    def methods(self) -> list[str]:
        present = set(self.df["method"])
        return [method for method in legend_order() if method in present]

    @property
    def tasks(self) -> list[str]:
        present = set(self.df["task"])
        return [task for task in TASKS if task in present]

    def samples(self, run: str) -> dict[str, dict[str, np.ndarray]]:
        """The saved samples of `run`; MissingInput when the run has none on disk."""
        if run not in self._samples:
            files = self.inputs.runs.get(run)
            if files is None or files.samples is None:
                raise MissingInput(f"run {run!r}: no samples.npz given")
            self._samples[run] = load_samples(files.samples)
        return self._samples[run]

    def evaluation(self, run: str) -> dict[str, Any]:
        files = self.inputs.runs.get(run)
        if files is None or files.evaluation is None:
            raise MissingInput(f"run {run!r}: no evaluation metrics.json given")
        if run not in self._evaluations:  # read once: activity and ponder figures share it
            self._evaluations[run] = read_json(files.evaluation, "evaluation metrics")
        return self._evaluations[run]

    def classical(self) -> dict[str, Any] | None:
        """The classical detectors' floor (`pag classical`), checked: None when not given."""
        path = self.inputs.classical
        if path is None:
            return None
        record = read_json(path, "classical floor (run `pag classical`)")
        detectors = record.get("detectors")
        if not isinstance(record.get("dataset"), str) or not isinstance(detectors, dict):
            raise PagError(f"{path}: expected 'dataset' and 'detectors' (as pag classical writes)")
        for name, entry in detectors.items():
            scores = entry.get("boundary") if isinstance(entry, dict) else None
            if not isinstance(scores, dict) or not all(
                isinstance(scores.get(key), int | float) for key in ("ods", "ois", "ap")
            ):
                raise PagError(f"{path}: detector {name!r} lacks boundary ods, ois and ap")
        return record

    def history(self, run: str) -> list[dict[str, Any]]:
        files = self.inputs.runs.get(run)
        if files is None or files.training is None:
            raise MissingInput(f"run {run!r}: no training metrics.json given")
        record = read_json(files.training, "training metrics")
        history = record.get("history")
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise PagError(f"{files.training}: 'history' must be a list of per-epoch records")
        return history

    def ground_truth(self, ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """Ground truth of the saved images, by id; MissingInput without a dataset."""
        if self.inputs.ground_truth is None:
            raise MissingInput("no dataset given for the ground truth of the saved images")
        wanted = [sid for sid in ids if sid not in self._truth]
        if wanted:
            found = self.inputs.ground_truth(wanted)
            missing = [sid for sid in wanted if sid not in found]
            if missing:
                raise PagError(f"saved sample(s) {missing} not found in the dataset")
            self._truth.update(found)
        return {sid: self._truth[sid] for sid in ids}


def dataset_ground_truth(dataset: Any) -> GroundTruth:
    """A ground-truth lookup over a `pag.data` dataset (channel-last numpy arrays; boundary:
    the union of the annotators' maps). Evaluation saves a split's first images, so a scan from
    the start finds them at once."""

    def lookup(ids: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
        wanted, found = set(ids), {}
        for index in range(len(dataset)):
            if not wanted - found.keys():
                break
            sample = dataset[index]
            if sample["id"] in wanted:
                found[sample["id"]] = _truth_arrays(sample)
        return found

    return lookup


def _truth_arrays(sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for task in TASKS:
        value = sample.get(task)
        if value is None:
            continue
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        if task == "normals":
            array = array.transpose(1, 2, 0)
        elif task == "boundary":
            array = array.max(axis=0) if array.ndim == 3 else array
        out[task] = array
    return out
