"""A run's state: what it trains (`Training`), where it is (`RunState`), and the checkpoints
that save and restore them (`save_last`, `save_final`) or start it (`StartingWeights`).

The global torch generator (Gumbel noise and anything else random in a forward) is seeded
once, before the model is built; its state, with numpy's and Python's, is saved in every
`last.pt` and restored on resumption, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pag.errors import PagError
from pag.training import checkpoint, distributed
from pag.training.distributed import World
from pag.training.provenance import Provenance
from pag.training.run_params import RunParams


@dataclass
class Training:
    """What the steps of a run work on."""

    params: RunParams
    model: torch.nn.Module
    net: torch.nn.Module  # `model`, or its DDP wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    world: World


@dataclass
class RunState:
    """Where a run is: `step` optimizer steps done in all; `position` of them in `epoch`."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # loss sums over the epoch so far
    peaks: dict[str, float] = field(default_factory=dict)  # gradient-norm maxima, likewise
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch means
    images: int = 0  # images trained on, all processes of the run together
    seconds: float = 0.0  # time spent in training steps, likewise

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "sums": dict(self.sums),
            "peaks": dict(self.peaks),
            "history": [dict(h) for h in self.history],
            "images": self.images,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(**data)


class StartingWeights:
    """The weights a new run starts from (`init_from` or `pretrained`), read once before the
    run directory is touched, so that a checkpoint the safe loader refuses writes nothing."""

    def __init__(self, path: str | None):
        self._weights = checkpoint.model_weights(path) if path is not None else None

    def weights(self) -> dict[str, torch.Tensor]:
        if self._weights is None:
            raise PagError("no starting checkpoint was given")
        return self._weights


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def check_finite_weights(model: torch.nn.Module, step: int, path: Path) -> None:
    """Weights (or BatchNorm statistics) can turn NaN or Inf while the loss is still finite,
    after an overflowing gradient: such a state is never saved over the last good one. Every
    rank holds the same weights, so every rank stops here."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PagError(
                f"step {step}: '{name}' is not finite after the optimizer step; nothing was "
                f"saved over {path}, which holds the last good state"
            )


def save_last(
    training: Training, path: Path, state: RunState, provenance: Provenance | None = None
) -> None:
    """Write `last.pt` (collective under torchrun: every rank calls it, rank 0 writes)."""
    world = training.world
    check_finite_weights(training.model, state.step, Path(path))
    rng = checkpoint.rng_states()
    every_rng = distributed.gather_objects(rng, world)
    if not world.main:
        return
    payload = {
        "format": checkpoint.FORMAT,
        "params_hash": training.params.digest(),
        "model": cpu_state(training.model),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "state": state.to_dict(),
        "rng": rng,
    }
    if provenance is not None:
        payload["provenance"] = provenance.to_dict()
    if world.distributed:
        payload["world_size"] = world.size
        payload["rng_ranks"] = every_rng
    checkpoint.save(path, payload)


def save_final(path: Path, model: torch.nn.Module, step: int, provenance: Provenance) -> None:
    """Write `final.pt`: the weights and what they were trained from."""
    checkpoint.save(
        path,
        {
            "format": checkpoint.FORMAT,
            "model": cpu_state(model),
            "step": step,
            "params_hash": provenance.params_hash,
            "provenance": provenance.to_dict(),
        },
    )


@dataclass
class Saver:
    """`save_last` of one run, called with its state (every `checkpoint_every` steps and at
    the end)."""

    training: Training
    path: Path
    provenance: Provenance

    def __call__(self, state: RunState) -> None:
        save_last(self.training, self.path, state, self.provenance)
