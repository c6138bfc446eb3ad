"""Run parameters: the validated description of one training run (`pag train --params FILE`).

A run file names the dataset and tasks, the model (`pag.params.ModelParams`), one method and its
budget, an optional checkpoint to start from, the training schedule, the seed and where to run.
An invalid file fails before anything is written, with every problem naming its key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pag.errors import PagError
from pag.methods import registry
from pag.params import (  # noqa: F401  (TrainingParams, TemperatureSchedule: re-exported)
    ExperimentParams,
    ModelParams,
    TemperatureSchedule,
    TrainingParams,
)
from pag.yamlio import load_yaml

# keys that say where things are, not what is computed: they may change between a run's
# start and its resumption, and are left out of the params hash (a pipeline tracks the
# contents of the files they name)
LOCATION_KEYS = ("data_root", "init_from", "pretrained", "experiment")
# keys added after runs were recorded (`RunParams.resolved`)
OMITTED_AT_DEFAULT = ("input_scale", "augmentation", "model.boundary_head")


class RunParams(ExperimentParams):
    """One training run. `init_from` paths are made absolute when validated."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    experiment: str | None = Field(
        default=None, description="MLflow experiment (pipelines: the profile); else the name"
    )
    data_root: str | None = Field(default=None, description="else --data-root, $PAG_DATA, data/")
    method: str = Field(default_factory=lambda: registry.baseline().name)
    budget: float | int | None = None
    init_from: str | None = Field(default=None, description="checkpoint whose weights start")
    pretrained: str | None = Field(
        default=None,
        description="torchvision ImageNet checkpoint for the trunk (when init_from is unset)",
    )
    training: TrainingParams
    seed: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, ge=1, description="else the environment's")
    device: Literal["cpu", "cuda", "auto"] = "cpu"

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in registry.names():
            raise ValueError(f"unknown method {method!r}; expected one of {registry.names()}")
        return method

    @field_validator("init_from", "pretrained")
    @classmethod
    def _existing_checkpoint(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is None:
            return None
        resolved = Path(path).expanduser().absolute()
        check = (info.context or {}).get("check_files", True)
        if check and not resolved.is_file():
            raise ValueError(f"checkpoint {resolved} not found")
        return str(resolved)

    @model_validator(mode="after")
    def _consistent(self) -> RunParams:
        budget = self.check_run(self.method, self.budget, self.model, self.training)
        object.__setattr__(self, "budget", budget)
        return self

    def resolved(self) -> dict[str, Any]:
        """Every key with its value, defaults included (what RUN_DIR/params.yaml holds),
        except the keys added since runs were first recorded when they hold their defaults:
        a run that does not use them keeps the params and hash it had before they existed."""
        dumped = self.model_dump(mode="json")
        # the key order params.yaml and checkpoints have always had (pickled dicts keep their
        # order, so the inherited input keys first would change every checkpoint's bytes)
        data = {key: dumped[key] for key in _RESOLVED_ORDER}
        for path in OMITTED_AT_DEFAULT:
            *parents, key = path.split(".")
            owner, section = data, RunParams
            for parent in parents:
                owner = owner[parent]
                section = section.model_fields[parent].annotation
            if owner[key] == section.model_fields[key].default:
                del owner[key]
        return data

    def digest(self) -> str:
        """sha256 of the resolved params without the location keys: checkpoints record it."""
        data = {k: v for k, v in self.resolved().items() if k not in LOCATION_KEYS}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def build_model(self):
        from pag.models import build_model

        return build_model(self.method, self.budget, tasks=self.tasks, **self.model.build_kwargs())


# the key order params.yaml and checkpoints have always had
_RESOLVED_ORDER = [
    "name",
    "experiment",
    "dataset",
    "data_root",
    "train_split",
    "tasks",
    "input_size",
    "model",
    "method",
    "budget",
    "init_from",
    "pretrained",
    "training",
    "seed",
    "threads",
    "device",
    "input_scale",
    "augmentation",
]


def _problems(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def validate_run_params(
    raw: Any, source: str | os.PathLike, *, check_files: bool = True
) -> RunParams:
    """Validate a mapping read from `source` (named in every error)."""
    if not isinstance(raw, dict):
        raise PagError(f"{source}: run params are a mapping of keys, got {type(raw).__name__}")
    try:
        return RunParams.model_validate(raw, context={"check_files": check_files})
    except ValidationError as exc:
        raise PagError(f"{source}: {_problems(exc)}") from None


def load_run_params(
    path: str | os.PathLike, *, overrides: dict[str, Any] | None = None, check_files: bool = True
) -> RunParams:
    """Read and validate a run params YAML; `overrides` replace top-level keys first (the CLI's
    `--init-from`). Errors name the file and the key."""
    raw = load_yaml(path, "run params file")
    if isinstance(raw, dict) and overrides:
        raw = {**raw, **overrides}
    return validate_run_params(raw, path, check_files=check_files)


def comparable_params(params: RunParams) -> dict[str, Any]:
    """The resolved params a result depends on: the location keys left out."""
    return {k: v for k, v in params.resolved().items() if k not in LOCATION_KEYS}


def differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved params dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys.extend(differing_keys(va, vb, f"{name}."))
        elif va != vb:
            keys.append(name)
    return keys


def resolve_threads(threads: int | None) -> int:
    """The configured thread count, else the environment's (`OMP_NUM_THREADS`, which Snakemake
    sets to a rule's `threads` for shell commands, or `MKL_NUM_THREADS`), else every core this
    process may use; never more than the machine's cores."""
    cores = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    if threads is None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            value = os.environ.get(var, "").strip()
            if value.isdigit() and int(value) > 0:
                threads = int(value)
                break
    return max(1, min(threads or cores, cores))
