"""What the training loop tells an onlooker while it runs (live tracking: `pag.tracking`).

The loop calls an observer on rank 0 only, at the start (after the run directory is written),
after every step, after every epoch and at the end (after `train_metrics.json` is written). An
observer only reads what it is given: it never changes what the loop computes, and it must not
raise (the default does nothing; `pag.tracking.LiveTrainingRun` catches its own errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainingStart:
    """What an observer learns when a run starts or resumes."""

    params: Any  # RunParams
    run_dir: Path
    provenance: dict[str, Any]  # Provenance.brief(): params hash, data and init digests
    data_root: Path
    num_images: int  # of the training split
    total_steps: int
    resumed_step: int  # 0 for a fresh start


class TrainingObserver:
    """The default observer: nothing happens."""

    def on_start(self, start: TrainingStart) -> None:
        """Training starts (or resumes at `start.resumed_step`)."""

    def on_step(
        self, step: int, values: dict[str, float], lr: float, temperature: float | None
    ) -> None:
        """After global step `step` (1-based): its loss terms, the learning rate it used
        next and the gates' temperature."""

    def on_epoch(self, record: dict[str, Any]) -> None:
        """After an epoch: its record in `train_metrics.json`'s history (1-based `epoch`)."""

    def on_end(self, metrics: dict[str, Any]) -> None:
        """After `train_metrics.json` and the final checkpoint are written."""


NO_OBSERVER = TrainingObserver()
