"""The method registry: every method the pipeline compares, described once.

A `Method` says how the method is applied to a dense model, what its budget knob means and
allows, whether it trains from scratch or fine-tunes the dense baseline's weights, which
decisions it takes at evaluation, which parameters make them, what the sparse executor can run
and how the report draws it. Params validation, the plan, training, evaluation, the sparse
executor and the report read these descriptions and name no method themselves, so adding a
method is one module (docs/adding-a-method.md).

Torch-free on purpose: the plan that Snakemake and DVC load reads it. A method's model code is
imported when `apply` is called."""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from pag.errors import PagError

# how gates decide at evaluation (`pag.models.gating.gate_rule`): the noiseless argmax, every
# gate computing, the expectation, or one seeded sample
GATE_RULES = ("hard", "open", "expected", "sample")
# the entry-point group through which an installed package adds its methods
ENTRY_POINT_GROUP = "pag.methods"


@dataclass(frozen=True)
class Budget:
    """A method's compute knob: what it means and its allowed range."""

    meaning: str
    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    at_most_blocks: bool = False  # the upper end is the trunk's number of residual blocks

    def check(self, method: str, budget: Any, total_blocks: int) -> float | int:
        """The validated budget, or a PagError saying what is allowed."""
        high = total_blocks if self.at_most_blocks else self.high
        opening = "(" if self.low_open else "["
        allowed = f"{self.meaning}, {opening}{self.low}, {'inf' if high is None else high}]"
        numeric = isinstance(budget, int | float) and not isinstance(budget, bool)
        if not numeric or not math.isfinite(budget):
            raise PagError(
                f"method {method!r} needs a finite numeric budget: {allowed}; got {budget!r}"
            )
        if self.integer and int(budget) != budget:
            raise PagError(f"method {method!r} needs an integer budget: {allowed}; got {budget!r}")
        too_low = self.low is not None and (
            budget <= self.low if self.low_open else budget < self.low
        )
        if too_low or (high is not None and budget > high):
            raise PagError(f"budget {budget!r} outside the range for {method!r}: {allowed}")
        return int(budget) if self.integer else float(budget)


# seaborn 0.13's "colorblind" palette, copied so a method keeps its colour whatever seaborn
# release is installed (tests/test_report.py checks the copy)
COLORBLIND = (
    "#0173b2",
    "#de8f05",
    "#029e73",
    "#d55e00",
    "#cc78bc",
    "#ca9161",
    "#fbafe4",
    "#949494",
    "#ece133",
    "#56b4e9",
)


class Style(NamedTuple):
    """How every figure draws a method: label, colour, marker, line style."""

    label: str
    color: str
    marker: str
    linestyle: Any


def no_blocks(model) -> list[str]:
    return []


def gated_blocks(model) -> list[str]:
    """Blocks carrying a gate (`block.gate`), in trunk order."""
    return [name for name, block in model.blocks() if block.gate is not None]


def all_blocks(model) -> list[str]:
    return [name for name, _ in model.blocks()]


@dataclass(frozen=True)
class Method:
    """One method of the comparison.

    `apply(model, budget, **options)` turns a freshly built dense `DensePredictionModel` into
    the method (options: `pag.models.build_model`'s keyword arguments); None leaves it dense.
    """

    name: str
    style: Style
    apply: Callable[..., None] | None = None
    budget: Budget | None = None
    # `model` keys (`pag.params.ModelParams`) the method reads beyond the trunk's: a change to
    # one reruns this method's runs and no other
    model_keys: tuple[str, ...] = ()
    # trained from scratch (the dense baseline, exactly one method); every other method
    # starts from its weights (the paper's plug-in-and-fine-tune protocol)
    from_scratch: bool = False
    # the accuracy reference: dense with the fine-tune the others get
    reference: bool = False
    # its run at the full budget is the reference run itself (its curve ends there at 100 %)
    full_model_is_reference: bool = False
    # the evaluation rules its gates can decide by (GATE_RULES); () for no gates
    gate_rules: tuple[str, ...] = ()
    # the blocks whose 3x3 stage it may skip (activity accounting), from the built model
    controlled_blocks: Callable[[Any], list[str]] = no_blocks
    # the sparse executor can run its decisions (`pag.sparse.SparseExecutor`)
    sparse: bool = False
    # name fragments of the parameters that make its decisions
    # (`training.decision_lr_mult` scales their learning rate)
    decision_params: tuple[str, ...] = ()
    # report: per-pixel (or per-image) ponder maps, per-layer activity, compute allocation
    dynamic: bool = False
    # report: a row of Table 1 (the dense baseline against MultiPool)
    multipool: bool = False
    # report: its MultiPool branch maps are drawn
    branch_maps: bool = False
    # report: the qualitative figures show the methods with a rank; of the swept ones only
    # the lowest-ranked present, at its highest and lowest budget
    showcase: int | None = None
    # report: its column in the table of published numbers ("ours: <label>")
    paper_label: str | None = None
    # legends and tables list methods by this, then by name
    order: int = 100
    # a refusal (message) for model params it cannot be built with, else None
    check_model: Callable[[Any], str | None] | None = None

    @property
    def swept(self) -> bool:
        """Has a budget knob, so it is a curve of budgets, not a point."""
        return self.budget is not None

    @property
    def gated(self) -> bool:
        return bool(self.gate_rules)

    def check_budget(self, budget: Any, total_blocks: int) -> float | int | None:
        """The validated budget (None for methods without a knob), or a PagError."""
        if self.budget is None:
            if budget is not None:
                raise PagError(f"method {self.name!r} has no budget knob; got budget={budget!r}")
            return None
        return self.budget.check(self.name, budget, total_blocks)


_REGISTRY: dict[str, Method] = {}
_loaded = False


def register(method: Method) -> Method:
    """Add a method; a name already taken by another description is an error."""
    known = _REGISTRY.get(method.name)
    if known is not None and known != method:
        raise PagError(f"method {method.name!r} is registered twice")
    unknown = sorted(set(method.gate_rules) - set(GATE_RULES))
    if unknown:
        raise PagError(f"method {method.name!r}: unknown gate rules {unknown}; see {GATE_RULES}")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests that register their own)."""
    _REGISTRY.pop(name, None)


def _load() -> None:
    """Import every method module of this package, then those installed packages declare
    under the `pag.methods` entry-point group; each registers its methods on import."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import pag.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "registry":
            importlib.import_module(f"{package.__name__}.{module.name}")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def methods() -> list[Method]:
    """Every registered method, in legend order."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda m: (m.order, m.name))


def names() -> list[str]:
    return [m.name for m in methods()]


def get(name: str) -> Method:
    """The method called `name`; an unknown name lists the known ones."""
    _load()
    if name not in _REGISTRY:
        raise PagError(f"unknown method {name!r}; expected one of {names()}")
    return _REGISTRY[name]


def _the_one(role: str, found: list[Method]) -> Method:
    if len(found) != 1:
        raise PagError(f"exactly one registered method must be the {role}; got {found}")
    return found[0]


def baseline() -> Method:
    """The method trained from scratch, which every other fine-tunes from."""
    return _the_one("baseline (from_scratch)", [m for m in methods() if m.from_scratch])


def reference() -> Method:
    """The accuracy reference of the report."""
    return _the_one("accuracy reference", [m for m in methods() if m.reference])


def decision_param_fragments() -> tuple[str, ...]:
    """Name fragments of every method's decision parameters."""
    return tuple(dict.fromkeys(f for m in methods() for f in m.decision_params))
