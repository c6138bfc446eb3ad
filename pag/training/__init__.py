"""Training: validated run params, the resumable deterministic loop, checkpoints, progress.

The names below are imported on first use, so what reads run params alone (the plan, the
summary, `pag dvc-yaml`) does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "train": "pag.training.loop",
    "model_weights": "pag.training.checkpoint",
    "RunParams": "pag.training.run_params",
    "load_run_params": "pag.training.run_params",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
