"""The methods the pipeline compares, one module each, read through `pag.methods.registry`.

Each module here registers its `Method` descriptions when imported; the registry imports them
all (and those of installed packages, entry-point group `pag.methods`) on first use."""

from pag.methods.registry import (
    GATE_RULES,
    Budget,
    Method,
    Style,
    baseline,
    get,
    methods,
    names,
    reference,
    register,
)

__all__ = [
    "GATE_RULES",
    "Budget",
    "Method",
    "Style",
    "baseline",
    "get",
    "methods",
    "names",
    "reference",
    "register",
]
