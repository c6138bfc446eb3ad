"""Atomic writes and digests: nothing half-written is ever left where a complete file belongs."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import IO, Any

from pag.errors import PagError

_CHUNK = 1 << 20
_TMP_IDS = itertools.count()  # unique temporary names within a process


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; written files get the mode a plain open() would give them
_FILE_MODE = 0o666 & ~_umask()


def _discard(tmp: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _naming(exc: OSError, path: Path, tmp: str | os.PathLike) -> OSError:
    """A failed write (a full disk, a file-size limit) names the file being written, not its
    temporary or nothing: the CLI prints the name with the reason."""
    if exc.filename is not None and os.fspath(exc.filename) != os.fspath(tmp):
        return exc
    named = OSError(exc.errno, exc.strerror or str(exc), str(path))
    named.__cause__ = exc
    return named


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, durable: bool = True
) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    `durable` also fsyncs before the rename (survives power loss, not only crashes); bulk
    writers of regenerable files whose digests are recorded elsewhere may skip it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # no permission, a read-only or full file system: name the target
        raise _naming(exc, path, exc.filename or "") from None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise _naming(exc, path, tmp)  # noqa: B904  (the cause is set, or it is exc itself)
    except BaseException:
        _discard(tmp)
        raise


def remove_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers of `path` killed mid-write left beside it
    (`atomic_write` and `write_bytes_atomic` name them `.<name>.*.tmp`); `path` itself is
    never touched. Only for files no other live process is writing. Returns what went."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """`atomic_write` for bytes in hand, with the fewest system calls (bulk writers use it)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{next(_TMP_IDS)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as for open()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        _discard(tmp)
        if isinstance(exc, OSError):
            raise _naming(exc, path, tmp)  # noqa: B904  (the cause is set, or it is exc itself)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """A JSON object read from `path`; a missing, damaged or hostile file (not a JSON object,
    or nested past the parser's recursion limit) is a PagError naming it and `what`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PagError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise PagError(f"{path}: {what} is not UTF-8 text ({exc.reason})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PagError(f"{path}: {what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise PagError(f"{path}: {what} is nested too deep to be read") from None
    if not isinstance(value, dict):
        raise PagError(f"{path}: {what} must be a JSON object, got a {type(value).__name__}")
    return value


def foreign_entries(folder: Path, ours: Callable[[Path], bool], kind: str) -> list[str]:
    """The names in `folder` that `ours` does not claim, sorted (the temporaries and lock files
    writers leave beside their files, `.*.tmp` and `.*.lock`, are nobody's); [] for a folder
    not made yet. A command checks its output folder with it before writing there: a foreign
    entry means the folder belongs to another command. A file where the folder should be is a
    PagError saying it must be `kind`."""
    if folder.exists() and not folder.is_dir():
        raise PagError(f"{folder}: exists and is not a folder; expected {kind}")
    if not folder.is_dir():
        return []
    return sorted(
        path.name
        for path in folder.iterdir()
        if not ours(path) and not (path.name.startswith(".") and path.name.endswith(_LEFT_BEHIND))
    )


_LEFT_BEHIND = (".tmp", ".lock")


def names_shown(names: list[str], most: int = 5) -> str:
    """Names for a message: the first `most`, then "..."."""
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def file_digests(path: str | os.PathLike, algorithms: list[str]) -> dict[str, str]:
    """Hex digests of a file for each algorithm, in one pass over it."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    if hashers:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    return file_digests(path, [algorithm])[algorithm]


def bytes_digest(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()
