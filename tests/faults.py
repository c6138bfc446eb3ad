"""Fault injection for the reliability suite (tests/test_reliability_*.py), in one place.

* **Counting.** The `tally` fixture counts the faults a test injects, the bad inputs it tries
  and the runs it loses. With `PAG_FAULT_COUNTS=FILE` the session's totals are written to FILE
  as JSON (what docs/reliability.md reports). tests/conftest.py registers the hooks.
* **Faults inside a `pag` process.** `python tests/faults.py ARGS...` runs `pag ARGS...` in
  this process with the fault `$PAG_FAULT` armed (`pag_with_fault` starts it):

  - `kill-before-step:N`: SIGKILL itself just before optimizer step N;
  - `kill-before-replace:NAME:K`, `kill-after-replace:NAME:K`: SIGKILL itself just before or
    just after the K-th atomic rename onto a file called NAME (every complete file of the
    project arrives by `os.replace`, see pag.fileio);
  - `torn-replace:NAME:K`: cut the K-th temporary file of NAME to half its bytes, then
    SIGKILL (what a kill in the middle of writing it leaves);
  - `enospc-replace:NAME:K`: cut it likewise, then fail with ENOSPC (a disk that fills up
    while the file is written);
  - `kill-at:MODULE.ATTR:K`: SIGKILL itself on the K-th call of MODULE.ATTR;
  - `fsize:BYTES`: the kernel refuses to grow any file beyond BYTES (RLIMIT_FSIZE: a real
    failing write(2), EFBIG, in whichever writer hits it).
* **Helpers**: the `pag` CLI in-process, a small synthetic dataset, run params files, a
  snapshot of a tree (to prove that nothing was written), a file server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

FAULTS_PY = Path(__file__).resolve()
COUNTS_ENV = "PAG_FAULT_COUNTS"
FAULT_ENV = "PAG_FAULT"

# -- counting ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the reliability tests injected and tried, by kind, and what they lost."""

    faults: Counter = field(default_factory=Counter)
    bad_inputs: Counter = field(default_factory=Counter)
    runs_expected: int = 0
    runs_found: int = 0
    outcomes: Counter = field(default_factory=Counter)
    tests: set = field(default_factory=set)

    def fault(self, kind: str, count: int = 1) -> None:
        self.faults[kind] += count

    def bad_input(self, kind: str, count: int = 1) -> None:
        self.bad_inputs[kind] += count

    def runs(self, expected: int, found: int) -> None:
        """Runs that should have been recorded, and how many were."""
        self.runs_expected += expected
        self.runs_found += found

    def summary(self) -> dict:
        return {
            "faults_injected": sum(self.faults.values()),
            "bad_inputs_tried": sum(self.bad_inputs.values()),
            "runs_expected": self.runs_expected,
            "runs_lost": self.runs_expected - self.runs_found,
            "tests": dict(sorted(self.outcomes.items())),
            "faults_by_kind": dict(sorted(self.faults.items())),
            "bad_inputs_by_kind": dict(sorted(self.bad_inputs.items())),
        }


TALLY = Tally()


@pytest.fixture
def tally(request) -> Tally:
    TALLY.tests.add(request.node.nodeid)
    return TALLY


def pytest_runtest_logreport(report) -> None:
    """Outcomes of the reliability tests (one per test: its call, or the phase that failed)."""
    if "test_reliability_" not in report.nodeid:
        return
    if report.when == "call" or report.outcome != "passed":
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        TALLY.outcomes[outcome] += 1


def pytest_sessionfinish(session) -> None:
    target = os.environ.get(COUNTS_ENV, "").strip()
    if target and TALLY.tests:
        summary = {"command": " ".join(["pytest", *sys.argv[1:]]), **TALLY.summary()}
        Path(target).write_text(json.dumps(summary, indent=2) + "\n")


# -- faults inside a pag process -------------------------------------------------------------------


def _sigkill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(spec: str) -> None:
    """Install the fault `spec` (see the module docstring) in this process."""
    kind, _, arg = spec.partition(":")
    if kind == "fsize":
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a dead process
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(arg), int(arg)))
    elif kind == "kill-before-step":
        import inspect

        from pag.training import loop

        original = loop.train_step
        signature = inspect.signature(original)

        def train_step(*args, **kwargs):
            if signature.bind(*args, **kwargs).arguments["step"] == int(arg):
                _sigkill()
            return original(*args, **kwargs)

        loop.train_step = train_step
    elif kind == "kill-at":
        _arm_call(*arg.rsplit(":", 1))
    elif kind.endswith("-replace"):
        name, _, nth = arg.rpartition(":")
        _arm_replace(kind.removesuffix("-replace"), name, int(nth))
    else:
        raise ValueError(f"unknown fault {spec!r}")


def _arm_call(target: str, nth: str) -> None:
    """SIGKILL on the `nth` call of `target`, a dotted module path and attribute
    (`mlflow.tracking.MlflowClient.log_batch`)."""
    import importlib

    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        with contextlib.suppress(ImportError):
            owner = importlib.import_module(".".join(parts[:split]))
            break
    for name in parts[split:-1]:
        owner = getattr(owner, name)
    original = getattr(owner, parts[-1])
    calls = []

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(nth):
            _sigkill()
        return original(*args, **kwargs)

    setattr(owner, parts[-1], wrapper)


def _arm_replace(action: str, name: str, nth: int) -> None:
    original = os.replace
    seen = Counter()

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name != name:
            return original(src, dst, *args, **kwargs)
        seen[name] += 1
        if seen[name] != nth:
            return original(src, dst, *args, **kwargs)
        if action == "kill-before":
            _sigkill()
        if action in ("torn", "enospc"):
            os.truncate(src, os.path.getsize(src) // 2)
            if action == "torn":
                _sigkill()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        result = original(src, dst, *args, **kwargs)
        if action == "kill-after":
            _sigkill()
        return result

    os.replace = replace


def start_pag(
    args: list[str], fault: str | None = None, *, env: dict | None = None
) -> subprocess.Popen:
    """Start `pag ARGS` in a fresh process with `fault` armed; output piped as text."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    environment.pop(FAULT_ENV, None)
    if fault:
        environment[FAULT_ENV] = fault
    command = [sys.executable, str(FAULTS_PY), *map(str, args)]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def pag_with_fault(
    args: list[str], fault: str | None = None, *, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `pag ARGS` in a fresh process with `fault` armed; output captured as text."""
    return finish(start_pag(args, fault, env=env), timeout)


def kill_group_when(
    command: list[str], cwd: Path, env: dict, log: Path, ready, timeout: float = 600
) -> None:
    """Run `command` in its own process group (output to `log`); SIGKILL the whole group
    (the front-end and every job it started) as soon as `ready()` is true."""
    import time

    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                raise AssertionError(f"finished before the kill:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {timeout} s:\n{log.read_text()}")
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def killed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGKILL


# -- pag in this process ---------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def pag_cli(args: list[str]) -> CliResult:
    """`pag ARGS` in this process (as the installed entry point runs it: PagError and OSError
    become one `error:` line and exit code 1)."""
    from pag.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["pag", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return CliResult(code, out.getvalue(), err.getvalue())


# -- data, params, trees -------------------------------------------------------------------------

# a run that trains in about a second: 14 training images, 7 steps per epoch, 3 epochs
RUN = {
    "name": "faults",
    "dataset": "synthetic",
    "tasks": {"semantic": 10, "boundary": None, "depth": None, "normals": None},
    "input_size": [40, 56],
    "model": {"depth": 26, "width_multiplier": 0.125, "head_hidden": 8},
    "method": "dense",
    "training": {"epochs": 3, "batch_size": 2, "lr": 0.01, "checkpoint_every": 3},
    "seed": 1,
    "threads": 1,
}
SYNTH_SIZE = (48, 64)


def make_synthetic(root: Path, num: int = 16) -> Path:
    """`num` synthetic scenes at 48 x 64 in `root/synthetic` (train: 8 of every 10)."""
    from pag.data.synthetic import SynthParams, generate

    height, width = SYNTH_SIZE
    generate(
        root / "synthetic", num, SynthParams(seed=0, height=height, width=width), progress=False
    )
    return root


def write_run_params(path: Path, changes: dict | None = None, training: dict | None = None) -> Path:
    raw = {**RUN, **(changes or {})}
    raw["training"] = {**RUN["training"], **(training or {})}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_reference(tmp: Path, data_root: Path, training: dict | None = None):
    """An uninterrupted run of the test params, trained in this process: (run dir, metrics),
    what a faulted run must end with."""
    from pag.training import load_run_params, train

    params = load_run_params(write_run_params(tmp / "params.yaml", training=training))
    metrics = train(params, tmp / "run", data_root=data_root, stream=io.StringIO(), tty=False)
    return tmp / "run", metrics


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of everything under `root`: equal snapshots mean nothing was written.
    The lock files beside targets (`.<name>.lock`, pag.locking) are left out: a writer takes
    its lock before it can find what is wrong, and the file holds no result."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if not (path.name.startswith(".") and path.name.endswith(".lock"))
    }


def temporaries(root: Path) -> list[Path]:
    """Temporary files of the atomic writers (`.<name>.*.tmp`) anywhere under `root`."""
    return sorted(root.rglob(".*.tmp"))


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class _QuietHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    if os.environ.get(FAULT_ENV):
        arm(os.environ[FAULT_ENV])
    from pag.cli import main

    sys.argv = ["pag", *sys.argv[1:]]
    main()
