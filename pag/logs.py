"""Diagnostics: the `pag` logger hierarchy and its one set-up, done by the command line.

A command's results (JSON lines, `wrote PATH`) go to stdout with `click.echo`; everything else
it has to say (notes, warnings, progress, debug detail) goes through
`logging.getLogger(__name__)` in its module and from there to stderr, at the level that
`pag -v` / `pag -q` chose. Library code that runs outside the command line (Snakemake, a
notebook) logs the same way; without `configure`, Python shows its warnings and hides the
rest.
"""

from __future__ import annotations

import logging
import sys

ROOT = "pag"
# verbosity (-v count minus -q count) -> the level shown
LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _Formatter(logging.Formatter):
    """One line a record: info as it is, the other levels with their name in front
    (`warning: ...`), debug lines with the module that wrote them."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {message}"
        if record.levelno < logging.WARNING:
            return message
        return f"{'warning' if record.levelno < logging.ERROR else 'error'}: {message}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (tests and click's runner replace it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it
        pass


def level_of(verbosity: int) -> int:
    return LEVELS[max(min(LEVELS), min(max(LEVELS), verbosity))]


def configure(verbosity: int = 0) -> None:
    """Show the `pag` loggers' records on stderr from the level `verbosity` picks (0: info and
    up; 1: debug too; -1: warnings and errors; -2: errors). Calling it again replaces the
    earlier set-up."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(level_of(verbosity))
