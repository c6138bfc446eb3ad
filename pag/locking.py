"""Writers exclude each other: one process at a time writes a run directory, a dataset being
generated or fetched, a summary or a report folder.

The lock is an advisory `flock` on a small file beside the target (`.<name>.lock`, never
inside it, so that a DVC output directory hashes the same with or without it). The kernel
drops a lock when its process dies, however it dies, so a killed writer never leaves a lock
held: at most an unlocked file, which the next writer takes over. The last holder removes the
file when it lets go; a process that opened it just before then finds, once it holds the lock,
that the file is no longer the one at the path, and starts again with a new one. A second
writer fails at once with one line naming the target and the holder's pid; readers that must
not see a half-written target take the shared lock (several readers at once, no writer).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pag.errors import PagError


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


def _open(path: Path, target) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:  # a file where a folder should be, no permission
        where = f" ({exc.filename})" if exc.filename else ""
        raise PagError(f"{target}: cannot be written: {exc.strerror or exc}{where}") from None


def _is_current(fd: int, path: Path) -> bool:
    """Whether the locked file is still the one at `path` (not removed by its last holder)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def locked(
    target: str | os.PathLike, what: str, *, shared: bool = False, hint: str = ""
) -> Iterator[None]:
    """Hold the lock of `target` (exclusive, or shared) for the block, or raise a PagError at
    once when another process holds it (`what` says what the target is, `hint` what to do)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (Windows: writers are not excluded there)
        yield
        return
    path = lock_path(target)
    while True:
        fd = _open(path, target)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f" (pid {owner})" if owner.isdigit() else ""
            raise PagError(
                f"{target}: another process{by} is using this {what} (lock {path}); "
                + (hint or "wait for it to finish")
            ) from None
        if _is_current(fd, path):
            break
        os.close(fd)  # its last holder removed it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:  # the last holder removes the file (a reader: only when no other holds it)
            if shared:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)  # closing the descriptor releases the lock
