"""Profiles: the validated description of an experiment (dataset, tasks, model, methods and
their budget sweeps, training schedules, seeds). An invalid profile fails before anything runs,
naming the key. The training schedule (`TrainingParams`) is shared with single runs
(`pag.training.RunParams`)."""

from __future__ import annotations

import math
import os
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pag.errors import PagError
from pag.methods import registry
from pag.yamlio import load_yaml

TASK_NAMES = ("semantic", "boundary", "depth", "normals")


# the datasets `pag.data` registers, named here so that validating params (what the plan does
# for every pipeline job) does not import the data package and torch; registering a dataset
# not named here is an error
DATASET_NAMES = ("bsds500", "cityscapes", "nyuv2", "stanford2d3d", "synthetic")


def known_dataset(name: str) -> str:
    """A dataset name (for pydantic validators of profiles and run params)."""
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASET_NAMES)}")
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


def _leaf_at(value: Any, matches, path: str = "") -> str | None:
    """Where in `value` a leaf satisfies `matches` (a dotted path, "" for itself), or None."""
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            found = _leaf_at(item, matches, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    return path if matches(value) else None


# the largest magnitude a number in params may have: every integer up to it is exact as a
# float, and seeds, counts and sizes beyond it are mistakes (a seed of 1e29 overflowed torch)
MAX_MAGNITUDE = 2**53


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _is_huge(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and abs(value) > MAX_MAGNITUDE


def _checks_itself(annotation: Any) -> bool:
    """Whether a field's type takes booleans, or is a model that checks its own fields."""
    if annotation is bool or annotation is Any:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_checks_itself(arg) for arg in typing.get_args(annotation))


class Params(BaseModel):
    """Base of every params model: unknown keys, NaN and infinities are errors, and so are
    booleans where a number or a name is expected (YAML reads `yes`, `on` and `true` as
    booleans, and pydantic would take them for 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_leaves(cls, value: Any, info: ValidationInfo) -> Any:
        huge = _leaf_at(value, _is_huge)
        if huge is not None:
            at = f" at {huge}" if huge else ""
            raise ValueError(f"a number{at} is out of range (at most 2**53 in magnitude)")
        field = cls.model_fields.get(info.field_name or "")
        if field is None or _checks_itself(field.annotation):
            return value
        where = _leaf_at(value, _is_boolean)
        if where is not None:
            at = f" at {where}" if where else ""
            raise ValueError(f"a boolean{at} where a number or a name is expected")
        return value


class ModelParams(Params):
    """Trunk and method construction (see `pag.models.build_model`)."""

    depth: Literal[18, 26, 34, 50, 101] = 50
    width_multiplier: float = Field(default=1.0, gt=0, le=4)
    output_stride: Literal[8, 16, 32] = 8
    head_hidden: int = Field(default=256, ge=1)
    gate_mode: Literal["conv3x3", "residual"] = "conv3x3"
    hard_gates: bool = Field(
        default=False,
        description="PAG: straight-through hard Gumbel samples in training (else the authors' "
        "soft relaxed samples)",
    )
    gate_bias: float = Field(
        default=2.0, ge=-10, le=10, description="PAG: initial compute-minus-skip gate logit"
    )
    budget_source: Literal["samples", "probs", "decisions"] = Field(
        default="samples",
        description="PAG and layer_skip: the budget loss on the training samples (the "
        "authors', ConvNet-AIG's), on the noiseless gate probabilities (PAG), or on the "
        "decisions evaluation takes, straight-through",
    )
    sparsity_scope: Literal["layer", "global"] = "layer"
    truncation_mode: Literal["rebuild_heads", "shortcut"] = Field(
        default="rebuild_heads",
        description="truncation: remove the later blocks and rebuild the heads on the last "
        "kept block, or keep only the later blocks' shortcuts (heads unchanged)",
    )
    multipool_block: str = "layer4.1"
    dilations: tuple[int, ...] = (2, 4, 6, 8, 10)
    boundary_head: Literal["last_stage", "side_outputs"] = Field(
        default="last_stage",
        description="the boundary task's head: on the trunk's stride-8 output like every task, "
        "or HED's fused side outputs from the stem and every stage (docs/decisions.md)",
    )

    def build_kwargs(self) -> dict:
        return self.model_dump()

    def block_count(self) -> int:
        """Residual blocks of the trunk (`pag.models.resnet` builds from the same table)."""
        return sum(RESNET_STAGE_BLOCKS[self.depth])


# residual blocks per stage of each ResNet depth (torch-free: profiles are validated where
# torch is not imported)
RESNET_STAGE_BLOCKS = {
    18: (2, 2, 2, 2),
    26: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}


def check_method(method: str, budget: Any, model: ModelParams) -> float | int | None:
    """The one check of a method, its budget and the model it is built on, for profiles and
    run files alike: the validated budget, or a ValueError naming what is wrong."""
    try:
        spec = registry.get(method)
        budget = spec.check_budget(budget, model.block_count())
    except PagError as exc:
        raise ValueError(str(exc)) from None
    refusal = spec.check_model(model) if spec.check_model is not None else None
    if refusal is not None:
        raise ValueError(refusal)
    return budget


class TemperatureSchedule(Params):
    """`pag.models.gating.temperature_at`'s arguments; the defaults are the authors' schedule."""

    start: float = Field(default=1.0, gt=0)
    decay: float = Field(default=0.03, ge=0)
    every: int = Field(default=2, ge=1)
    minimum: float = Field(default=0.01, gt=0)
    final: float = Field(default=0.001, gt=0)

    def at(self, epoch: int) -> float:
        from pag.models.gating import temperature_at

        return temperature_at(epoch, **self.model_dump())


class TrainingParams(Params):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    poly_power: float = Field(default=0.9, ge=0, description="lr * (1 - step/total)^power")
    loss_weights: dict[str, float] = Field(default_factory=dict, description="default 1 per task")
    budget_weight: float = Field(default=1.0, ge=0)
    grad_clip: float | None = Field(
        default=None, gt=0, description="clip the global gradient norm to this (None: no clip)"
    )
    decision_lr_mult: float = Field(
        default=1.0,
        gt=0,
        description="lr multiplier of the gates, halting heads and MultiPool attention (the "
        "authors: 10)",
    )
    temperature: TemperatureSchedule | None = Field(
        default_factory=TemperatureSchedule,
        description="set every Gumbel gate's temperature per epoch; null keeps each module's",
    )
    checkpoint_every: int = Field(default=200, ge=1, description="steps")
    log_every: int = Field(default=20, ge=1, description="steps (plain log lines)")
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes")

    @field_validator("loss_weights")
    @classmethod
    def _finite_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for task, weight in weights.items():
            if not weight >= 0 or weight == float("inf"):
                raise ValueError(f"loss weight of {task!r} must be finite and >= 0, got {weight}")
        return weights


def distinct_seeds(seeds: list[int], key: str) -> list[int]:
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"{key} must be distinct integers >= 0, got {seeds}")
    return seeds


class Augmentation(Params):
    """Training-time augmentation beyond the random crop and flip every run gets: HED's and
    RCF's scales, and rotations restricted to multiples of 90 degrees, which are exact on
    1-pixel boundary maps (docs/decisions.md, "BSDS500 on 2 CPU cores")."""

    scales: list[float] = Field(
        default=[1.0], min_length=1, description="each sample resized by one, drawn uniformly"
    )
    rotations: list[Literal[0, 90, 180, 270]] = Field(
        default=[0], min_length=1, description="degrees counter-clockwise, drawn uniformly"
    )

    @field_validator("scales")
    @classmethod
    def _positive_scales(cls, scales: list[float]) -> list[float]:
        if not all(0.1 <= s <= 4 for s in scales):
            raise ValueError(f"scales must lie in [0.1, 4], got {scales}")
        return scales


class InputParams(Params):
    """What a run reads and at which scale; shared by a profile and a run file. Fields left at
    their defaults are left out of a run's resolved params and hash (`RunParams.resolved`)."""

    train_split: str | list[str] = Field(
        default="train", description="a split, or splits trained on together (train + val)"
    )
    input_scale: float = Field(
        default=1.0,
        gt=0.05,
        le=4,
        description="images are resized by this before the model sees them, in training and "
        "evaluation; predictions are resized back, so metrics stay at full resolution",
    )
    augmentation: Augmentation | None = None

    @field_validator("train_split")
    @classmethod
    def _distinct_splits(cls, split: str | list[str]) -> str | list[str]:
        if isinstance(split, list) and (not split or len(set(split)) != len(split)):
            raise ValueError(f"train_split must list distinct splits, got {split}")
        return split


class ExperimentParams(InputParams):
    """What a profile and each of its runs share: the dataset, tasks, training crop, model and
    inputs. One schema for both, so a profile and a run file are checked alike."""

    dataset: str
    tasks: dict[str, int | None]
    input_size: tuple[int, int] = Field(description="(height, width) of training crops")
    model: ModelParams = ModelParams()

    _known_dataset = field_validator("dataset")(lambda cls, name: known_dataset(name))
    _known_tasks = field_validator("tasks")(lambda cls, tasks: known_tasks(tasks))

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 8:
            raise ValueError(f"input_size must be at least 8 x 8, got {list(size)}")
        return size

    @model_validator(mode="after")
    def _rotatable(self) -> ExperimentParams:
        rotated = self.augmentation is not None and set(self.augmentation.rotations) != {0}
        if rotated and "normals" in self.tasks:
            raise ValueError(
                "augmentation.rotations: normals would need rotating with the image; use [0]"
            )
        return self

    def check_run(
        self, method: str, budget: Any, model: ModelParams, training: TrainingParams
    ) -> float | int | None:
        """The one check of a run, for profiles and run files alike: the method, its budget
        and the model it is built on (`check_method`), and a schedule weighting only these
        tasks. The validated budget, or a ValueError naming the key."""
        try:
            budget = check_method(method, budget, model)
        except ValueError as exc:
            raise ValueError(f"budget: {exc}") from None
        unknown = sorted(set(training.loss_weights) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"training.loss_weights: {unknown} are not among the tasks {list(self.tasks)}"
            )
        return budget


class SyntheticData(Params):
    """How `pag data synth` renders a profile's synthetic scenes (`pag.data.synthetic`)."""

    num: int = Field(ge=10, description="images; index % 10 == 8 is val, 9 is test")
    seed: int = Field(default=0, ge=0)
    height: int = Field(default=96, ge=16)
    width: int = Field(default=128, ge=16)


class EvaluationParams(Params):
    split: str = "val"
    save: int = Field(default=4, ge=0, description="images whose predictions are kept")
    gate_rule: Literal["hard", "sample"] = Field(
        default="hard",
        description="how learned gates (pag, random_gate, layer_skip) decide at evaluation: "
        "the noiseless hard argmax (the authors'), or one seeded Gumbel-max sample of the "
        "policy training optimised (ConvNet-AIG's released code)",
    )
    gate_rules: list[Literal["hard", "open", "expected", "sample"]] = Field(
        default_factory=list,
        description="gated runs: also score these rules, each in its own pass",
    )
    classical: list[Literal["gradient", "canny"]] = Field(
        default_factory=list,
        description="classical edge detectors scored on the split as a floor (`pag classical`; "
        "boundary profiles only)",
    )

    @field_validator("classical")
    @classmethod
    def _distinct_detectors(cls, detectors: list[str]) -> list[str]:
        if len(set(detectors)) != len(detectors):
            raise ValueError(f"detectors repeat ({detectors})")
        return detectors


class ResourceParams(Params):
    """Where and on what each training job runs. Same values, same numbers: the CPU thread
    count is part of a run's arithmetic, so it is fixed here, not by the scheduler."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(default=1, ge=1, description="CPU threads per job")
    gpus: int = Field(default=0, ge=0, description="GPUs per training job; > 1 runs torchrun")
    mem_mb: int = Field(default=4000, ge=100)
    runtime_min: int = Field(default=60, ge=1, description="wall-clock limit per training job")


PRETRAINED = ("imagenet",)


class Variant(Params):
    """A named variant of a method for ablations: the method's model built with some model
    keys changed (its training keys go in `method_training` under the variant's name). Its
    runs are named after the variant, so variants of one method sit side by side in a sweep,
    the summary and the ablation table."""

    method: str
    model: dict[str, Any] = Field(default_factory=dict, description="keys of `model` to change")

    @field_validator("method")
    @classmethod
    def _fine_tuned_method(cls, method: str) -> str:
        fine_tuned = [m.name for m in registry.methods() if not m.from_scratch]
        if method not in fine_tuned:
            raise ValueError(f"a variant's method must be one of {fine_tuned}, got {method!r}")
        return method

    @field_validator("model")
    @classmethod
    def _model_keys(cls, model: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(model) - set(ModelParams.model_fields))
        if unknown:
            raise ValueError(
                f"unknown model keys {unknown}; expected some of {list(ModelParams.model_fields)}"
            )
        return model


class Profile(ExperimentParams):
    """An experiment: dataset, tasks, model, the dense baseline's and the fine-tuning schedule,
    every method's budget sweep, seeds, evaluation and resources (`pag.pipeline` expands it
    into jobs)."""

    name: str = Field(pattern=r"^[a-z0-9_][a-z0-9_-]*$")
    data: SyntheticData | None = Field(
        default=None, description="synthetic dataset only: how to render it"
    )
    fetch_from: str | None = Field(
        default=None,
        description="fetched datasets: install from this local copy (an archive, a folder "
        "holding it, or an extracted tree; relative to the project) instead of downloading",
    )
    pretrained: Literal["imagenet"] | None = Field(
        default=None, description="initialise the dense baseline's trunk (torchvision weights)"
    )
    variants: dict[str, Variant] = Field(
        default_factory=dict,
        description="named method variants (ablations); usable as method names in `methods`",
    )
    methods: dict[str, list[float | int | None]]
    seeds: list[int] = Field(default=[0], min_length=1)
    method_seeds: dict[str, list[int]] = Field(
        default_factory=dict,
        description="per method, the seeds it runs with instead of `seeds` (a fine-tuned "
        "method's must be seeds of dense, whose weights it starts from)",
    )
    baseline: TrainingParams = Field(
        description="the dense baseline's schedule (from scratch or ImageNet)"
    )
    finetune: TrainingParams = Field(
        description="every other method's schedule, starting from the dense weights"
    )
    method_training: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per method, keys of `finetune` that method trains with instead",
    )
    evaluation: EvaluationParams = EvaluationParams()
    resources: ResourceParams = ResourceParams()

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, variants: dict) -> dict:
        for name in variants:
            taken = registry.names()
            if name in taken or not name.replace("_", "").isalnum() or not name.islower():
                raise ValueError(
                    f"variant name {name!r} must be lower-case letters, digits and '_', and "
                    f"not a method's name ({taken})"
                )
        return variants

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict, info: ValidationInfo) -> dict:
        variants = info.data.get("variants") or {}
        unknown = sorted(set(methods) - set(registry.names()) - set(variants))
        if unknown:
            raise ValueError(
                f"unknown method(s) {unknown}; expected some of {registry.names()}"
                + (f" or the profile's variants {list(variants)}" if variants else "")
            )
        if not methods:
            raise ValueError("at least one method is needed")
        for method, budgets in methods.items():
            if not budgets:
                raise ValueError(
                    f"{method}: give at least one budget (null for methods without one)"
                )
            if len(set(budgets)) != len(budgets):
                raise ValueError(f"{method}: budgets repeat ({budgets})")
        baseline = registry.baseline().name
        if methods.get(baseline) != [None]:
            raise ValueError(
                f"{baseline}: [null] is required: the dense baseline is what every method "
                "fine-tunes"
            )
        return methods

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        return distinct_seeds(seeds, "seeds")

    @field_validator("method_seeds")
    @classmethod
    def _distinct_method_seeds(cls, method_seeds: dict[str, list[int]]) -> dict[str, list[int]]:
        for method, seeds in method_seeds.items():
            distinct_seeds(seeds, f"method_seeds.{method}")
        return method_seeds

    def seeds_of(self, method: str) -> list[int]:
        """The seeds `method` (a name of `methods`) runs with."""
        return self.method_seeds.get(method, self.seeds)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        for name in self.variants:
            try:
                self.model_of(name)
            except ValidationError as exc:
                raise ValueError(f"variants.{name}.model: {_problems(exc)}") from None
        if self.evaluation.classical and "boundary" not in self.tasks:
            raise ValueError(
                "evaluation.classical: the classical edge detectors are scored on the boundary "
                f"task, which is not among this profile's tasks {list(self.tasks)}"
            )
        if self.fetch_from is not None and self.dataset == "synthetic":
            raise ValueError("fetch_from: the synthetic dataset is rendered, not fetched")
        if (self.dataset == "synthetic") != (self.data is not None):
            raise ValueError(
                "data: required for the synthetic dataset (how to render it)"
                if self.data is None
                else f"data: only the synthetic dataset is rendered; {self.dataset} is fetched"
            )
        if self.pretrained is not None and (
            self.model.depth not in (18, 34, 50, 101) or self.model.width_multiplier != 1
        ):
            raise ValueError(
                "pretrained: torchvision's ImageNet weights exist for ResNet-18/34/50/101 at "
                f"width 1, not ResNet-{self.model.depth} at width {self.model.width_multiplier}"
            )
        baseline = registry.baseline().name
        for method in self.method_seeds:
            if method not in self.methods:
                raise ValueError(
                    f"method_seeds.{method}: not a method of this profile ({list(self.methods)})"
                )
            if method != baseline:
                orphans = sorted(set(self.seeds_of(method)) - set(self.seeds_of(baseline)))
                if orphans:
                    raise ValueError(
                        f"method_seeds.{method}: seeds {orphans} have no {baseline} run to "
                        f"fine-tune from ({baseline} runs seeds {self.seeds_of(baseline)})"
                    )
        for method in self.method_training:
            if method not in self.methods or method == baseline:
                raise ValueError(
                    f"method_training.{method}: not a fine-tuned method of this profile "
                    f"(its methods: {[m for m in self.methods if m != baseline]})"
                )
            try:
                self.training_of(method)
            except ValidationError as exc:
                raise ValueError(f"method_training.{method}: {_problems(exc)}") from None
        for method, budget in self.runs():  # each run as its run file is checked
            try:
                self.check_run(
                    self.base_method(method),
                    budget,
                    self.model_of(method),
                    self.training_of(method),
                )
            except ValueError as exc:
                key, _, problem = str(exc).partition(": ")
                where = f"methods.{method}" if key == "budget" else self._schedule_key(method)
                raise ValueError(f"{where}: {problem}") from None
        return self

    def _schedule_key(self, method: str) -> str:
        """Where the loss weights `method` trains with are set in the profile."""
        if registry.get(self.base_method(method)).from_scratch:
            return "baseline.loss_weights"
        for name in (method, self.base_method(method)):
            if "loss_weights" in self.method_training.get(name, {}):
                return f"method_training.{name}.loss_weights"
        return "finetune.loss_weights"

    def base_method(self, name: str) -> str:
        """The method a name of `methods` builds: itself, or a variant's method."""
        return self.variants[name].method if name in self.variants else name

    def model_of(self, name: str) -> ModelParams:
        """The model params of a method or variant: `model`, with a variant's keys changed."""
        if name not in self.variants:
            return self.model
        return ModelParams.model_validate({**self.model.model_dump(), **self.variants[name].model})

    def training_of(self, method: str) -> TrainingParams:
        """The schedule a method trains with: `baseline` for dense, else `finetune` with the
        method's `method_training` keys replacing its own (a variant: its method's, then its
        own; a nested key such as `temperature.minimum` replaces only itself)."""
        if registry.get(self.base_method(method)).from_scratch:
            return self.baseline
        base = self.base_method(method)
        inherited = self.method_training.get(base, {}) if base != method else {}
        overrides = _merged_schedule(inherited, self.method_training.get(method, {}))
        if not overrides:
            return self.finetune
        return TrainingParams.model_validate(
            _merged_schedule(self.finetune.model_dump(), overrides)
        )

    def runs(self) -> list[tuple[str, float | int | None]]:
        """(method, budget) for every entry of the sweep, in profile order."""
        return [(method, budget) for method, budgets in self.methods.items() for budget in budgets]


def _problems(exc: ValidationError) -> str:
    """A nested model's validation errors on one line, each with its dotted key."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _merged_schedule(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A variant's training keys over its method's (one level of nesting merged, so a
    variant may change one key of the temperature schedule)."""
    merged = dict(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a YAML profile; errors name the file and the key."""
    path = Path(path)
    raw = load_yaml(path, "profile")
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
