"""Checkpoints: written atomically, read with `torch.load(weights_only=True)`.

`last.pt` holds everything a run needs to continue exactly where it stopped: model, optimizer
and LR-scheduler state, the step, epoch and position within the epoch, the loss sums of the
epoch so far, the per-epoch history, every random generator's state and the hash of the
resolved params. Every object in it is a tensor, a number, a string, None, or a list, tuple or
dict of those, so the safe `weights_only` unpickler reads it. `final.pt` holds only the weights.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pag.errors import PagError
from pag.fileio import atomic_write, remove_temporaries
from pag.run_layout import FINAL, LAST, checkpoint_dir

FORMAT = 1


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Restoring state from a checkpoint read safely but lacking a key or a tensor, or holding
    one of the wrong shape or type, is a PagError naming the file (not a KeyError)."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PagError(
            f"{path}: not a complete checkpoint of this run ({type(exc).__name__}: {first}); "
            "delete it to start the run over"
        ) from None


def save(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically and durably (temp file, fsync, rename). It is
    serialised in memory first: torch's zip writer turns a failing write (a full disk) into
    an opaque RuntimeError, a plain write gives an OSError naming `path`."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with the safe unpickler; a damaged or foreign file is a PagError."""
    path = Path(path)
    if not path.is_file():
        raise PagError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or objects the safe loader refuses
        raise PagError(f"{path}: not a readable checkpoint ({_reason(exc)})") from None
    if not isinstance(payload, dict):
        raise PagError(f"{path}: not a pag checkpoint (a {type(payload).__name__})")
    return payload


def _reason(exc: Exception) -> str:
    """One line on why torch.load failed. For objects the safe unpickler refuses, which global
    (torch's own message runs to many lines and advises loading the file unsafely, which a
    refusal must never repeat)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    refused = re.search(r"\bGLOBAL ([\w.]+)", text)
    if refused:
        return f"it holds {refused.group(1)}, which the safe loader refuses to run or build"
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and "weights_only" not in line and "documentation" not in line
    ]
    if "Weights only load failed" in text:
        return "the safe loader refused it" + (f": {lines[0]}" if lines else "")
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def model_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of any checkpoint: `last.pt`, `final.pt`, or a bare state dict."""
    payload = load(path)
    state = payload.get("model", payload)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PagError(f"{path}: holds no model weights")
    return state


def remove_stale_temporaries(run_dir: str | os.PathLike) -> None:
    """Temporary files a killed writer left behind (the complete files are never touched)."""
    for name in (LAST, FINAL):
        remove_temporaries(checkpoint_dir(run_dir) / name)


# -- random generator states -------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python `random` states, as safe types."""
    # the legacy global generator: what third-party code drawing from np.random uses
    key, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": str(key),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            n["key"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
