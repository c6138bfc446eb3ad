"""Profiles: the validated description of an experiment (dataset, tasks, model, methods and
their budget sweeps). An invalid profile fails before anything runs, naming the key.

This holds the parts the models need; the pipeline adds training, seeds and evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pag.errors import PagError
from pag.models.model import METHODS, check_budget

TASK_NAMES = ("semantic", "boundary", "depth", "normals")


def known_dataset(name: str) -> str:
    """A registered dataset name (for pydantic validators of profiles and run params)."""
    from pag.data import dataset_names

    if name not in dataset_names():
        raise ValueError(f"unknown dataset {name!r}; expected one of {dataset_names()}")
    return name


def known_tasks(tasks: dict[str, int | None]) -> dict[str, int | None]:
    """A non-empty subset of the four tasks; semantic gives its number of classes."""
    unknown = sorted(set(tasks) - set(TASK_NAMES))
    if unknown or not tasks:
        raise ValueError(
            f"tasks must be a non-empty subset of {list(TASK_NAMES)}, got {list(tasks)}"
        )
    if "semantic" in tasks and (tasks["semantic"] is None or tasks["semantic"] < 2):
        raise ValueError("tasks.semantic must be the number of classes (>= 2)")
    return tasks


class ModelParams(BaseModel):
    """Trunk and method construction (see `pag.models.build_model`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: Literal[18, 26, 34, 50, 101] = 50
    width_multiplier: float = Field(default=1.0, gt=0, le=4)
    output_stride: Literal[8, 16, 32] = 8
    head_hidden: int = Field(default=256, ge=1)
    gate_mode: Literal["conv3x3", "residual"] = "conv3x3"
    sparsity_scope: Literal["layer", "global"] = "layer"
    multipool_block: str = "layer4.1"
    dilations: tuple[int, ...] = (2, 4, 6, 8, 10)

    def build_kwargs(self) -> dict:
        return self.model_dump()


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    dataset: str
    tasks: dict[str, int | None]
    input_size: tuple[int, int] = Field(description="(height, width) of training crops")
    model: ModelParams = ModelParams()
    methods: dict[str, list[float | int | None]]

    _known_dataset = field_validator("dataset")(lambda cls, name: known_dataset(name))
    _known_tasks = field_validator("tasks")(lambda cls, tasks: known_tasks(tasks))

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict) -> dict:
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; expected some of {list(METHODS)}")
        if not methods:
            raise ValueError("at least one method is needed")
        for method, budgets in methods.items():
            if not budgets:
                raise ValueError(
                    f"{method}: give at least one budget (null for methods without one)"
                )
        return methods

    @model_validator(mode="after")
    def _budgets_in_range(self) -> Profile:
        from pag.models.resnet import _DEPTHS

        blocks = sum(_DEPTHS[self.model.depth][1])
        for method, budgets in self.methods.items():
            for budget in budgets:
                try:
                    check_budget(method, budget, blocks)
                except PagError as exc:
                    raise ValueError(f"methods.{method}: {exc}") from None
        return self

    def runs(self) -> list[tuple[str, float | int | None]]:
        """(method, budget) for every entry of the sweep, in profile order."""
        return [(method, budget) for method, budgets in self.methods.items() for budget in budgets]


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a YAML profile; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise PagError(f"{path}: profile not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PagError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise PagError(f"{path}: a profile is a mapping of keys, got {type(raw).__name__}")
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise PagError(f"{path}: " + "; ".join(lines)) from None
