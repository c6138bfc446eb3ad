"""Training progress: a tqdm bar per epoch on a terminal, plain log lines everywhere else."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Reports steps of one epoch at a time.

    On a terminal (`stream.isatty()`), a tqdm bar per epoch shows the running loss and
    images/s. Otherwise (CI, cluster logs) a line every `log_every` steps of the run, e.g.
    ``epoch 1 step 20/40 loss 1.234 12.3 img/s``, with images/s over the steps since the
    previous line, and one summary line per epoch."""

    def __init__(
        self,
        epochs: int,
        steps_per_epoch: int,
        log_every: int,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.epochs, self.steps_per_epoch, self.log_every = epochs, steps_per_epoch, log_every
        self.bar: tqdm | None = None
        self._since = time.perf_counter()
        self._images = 0

    def start_epoch(self, epoch: int, position: int) -> None:
        """`epoch` is 0-based; `position` is the number of its steps already done (resume)."""
        self.epoch = epoch
        self._since, self._images = time.perf_counter(), 0
        if self.tty:
            self.bar = tqdm(
                total=self.steps_per_epoch,
                initial=position,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                unit="step",
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
            )

    def step(self, step: int, position: int, images: int, loss: float) -> None:
        """After global step `step` (1-based), the `position`-th step of the epoch."""
        self._images += images
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self._since, 1e-9)
            self.bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{self._images / elapsed:.1f}")
            self.bar.update(1)
        elif step % self.log_every == 0:
            now = time.perf_counter()
            rate = self._images / max(now - self._since, 1e-9)
            self._since, self._images = now, 0
            self.write(
                f"epoch {self.epoch + 1} step {position}/{self.steps_per_epoch} "
                f"loss {loss:.4g} {rate:.1f} img/s"
            )

    def end_epoch(self, summary: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.tty:
            values = " ".join(f"{k} {v:.4g}" for k, v in summary.items())
            self.write(f"epoch {self.epoch + 1}/{self.epochs} done: {values}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
