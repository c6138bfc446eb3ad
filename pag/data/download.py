"""Resumable, verified downloads, and `fetch`, which carries out a dataset's `FetchSpec`.

A download streams into `<dest>.part`, resumes a partial `.part` with an HTTP Range request,
and checks size and digests before the atomic rename to `dest`: a file at `dest` is always
complete, and verified whenever a checksum is known. Every failure is a one-line `PagError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import requests
from tqdm import tqdm

from pag.data.archive import safe_extract, unsafe_name_reason
from pag.data.base import FetchSpec, RemoteFile
from pag.errors import ChecksumError, DataError, DownloadError, PagError
from pag.fileio import file_digests, write_bytes_atomic
from pag.locking import locked

__all__ = ["download", "extract_once", "extracted_marker", "fetch", "verify_file"]

Echo = Callable[[str], None]

_CHUNK = 1 << 16
_HASH_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Verification


def _check(
    path: Path,
    size: int | None,
    md5: str | None,
    sha256: str | None,
    *,
    extra: tuple[str, ...] = (),
) -> tuple[tuple[str, str, str] | None, dict[str, str]]:
    """Check `path` against the known size (first) and digests. Returns (problem, digests):
    problem is (what, expected, actual) for the first failed check, else None; digests holds
    every digest computed, including the algorithms in `extra` (one pass over the file)."""
    if size is not None:
        actual_size = path.stat().st_size
        if actual_size != size:
            return ("size", f"{size} bytes", f"{actual_size} bytes"), {}
    expected = {
        name: value.strip().lower() for name, value in (("md5", md5), ("sha256", sha256)) if value
    }
    actual = file_digests(path, list(dict.fromkeys([*expected, *extra])))
    for name, value in expected.items():
        if actual[name] != value:
            return (name, value, actual[name]), actual
    return None, actual


def verify_file(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
) -> None:
    """Raise ChecksumError (naming the file, expected and actual value) unless `path` has the
    given size and digests; checks that are None are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    problem, _ = _check(path, size, md5, sha256)
    if problem is not None:
        what, expected, actual = problem
        raise ChecksumError(f"{path}: {what} mismatch: expected {expected}, got {actual}")


# --------------------------------------------------------------------------------------------
# Errors


def _cause(exc: BaseException, timeout: float) -> str:
    """A short, human description of why a request failed."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:  # the exception, its causes/contexts, and exceptions carried in args/reason
        current = pending.pop()
        if any(current is known for known in seen):
            continue
        seen.append(current)
        for nested in (
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            *current.args,
        ):
            if isinstance(nested, BaseException):
                pending.append(nested)
    names = {type(e).__name__ for e in seen}
    if isinstance(exc, requests.exceptions.Timeout) or any(
        isinstance(e, socket.timeout | TimeoutError) for e in seen
    ):
        return f"timed out after {timeout:g} s"
    if "NameResolutionError" in names or any(isinstance(e, socket.gaierror) for e in seen):
        return "cannot resolve the host name (no network, or a wrong URL)"
    if any(isinstance(e, ConnectionRefusedError) for e in seen):
        return "connection refused"
    if any(isinstance(e, ConnectionResetError) for e in seen):
        return "connection reset by the server"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS/SSL error"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return "invalid URL"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken while receiving data"
    innermost = seen[-1] if seen else exc
    text = " ".join(str(innermost).split())
    return f"{type(innermost).__name__}: {text}" if text else type(innermost).__name__


def _by_hand(url: str, dest: Path) -> str:
    return f"download {url} by hand and place it at {dest}"


def _download_error(url: str, dest: Path, cause: str) -> DownloadError:
    return DownloadError(f"cannot download {url}: {cause}; {_by_hand(url, dest)}")


# --------------------------------------------------------------------------------------------
# Download


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class _Restart(Exception):
    """The partial file cannot be resumed: start again from byte 0."""


def _stream_once(
    session: requests.Session,
    url: str,
    dest: Path,
    part: Path,
    *,
    size: int | None,
    progress: bool,
    timeout: float,
) -> None:
    """One request: resume `part` if it has bytes, else start it; return when complete."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        _unlink(part)
        offset = 0
    headers = {"Accept-Encoding": "identity"}  # byte ranges and sizes refer to the raw file
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset:
            # Nothing left to send: the part is complete if the server's total says so
            match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
            total = int(match.group(1)) if match else size
            if total is not None and total == offset:
                return
            raise _Restart
        if status >= 400:
            reason = response.reason or ""
            raise _download_error(url, dest, f"HTTP {status} {reason}".strip())
        mode = "wb"
        if offset and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise _Restart
            mode = "ab"
        elif offset:
            offset = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        expected_total = size
        if expected_total is None and length is not None and length.isdigit():
            expected_total = offset + int(length)
        received = offset
        with (
            open(part, mode) as out,
            tqdm(
                total=expected_total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=None if progress else True,  # None: off when not a terminal
                leave=False,
            ) as bar,
        ):
            for chunk in response.iter_content(chunk_size=_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if size is not None and received > size:
                    break  # the server sends more than the file should have: stop reading
        if size is not None and received > size:
            return  # the size check that follows reports it
        if length is not None and length.isdigit() and received < offset + int(length):
            raise _download_error(
                url,
                dest,
                f"connection closed after {received} of {offset + int(length)} bytes "
                "(run again to resume)",
            )


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30,
    session: requests.Session | None = None,
    echo: Echo = print,
) -> Path:
    """Download `url` to `dest` and return `dest`.

    Streams into `<dest>.part` and resumes an existing `.part` with a Range request (a server
    that ignores Range, or answers 416, makes it start again from zero). Size and digests are
    checked before the atomic rename to `dest`; a mismatch deletes the `.part` and raises
    ChecksumError. If `dest` exists and matches the known size/digests, nothing is downloaded;
    with nothing known, an existing `dest` is kept as is. When no digest is known, the sha256
    of the new file is reported through `echo` so that it can be recorded.
    Network and HTTP failures raise a one-line DownloadError naming the URL and where to put
    the file by hand.
    """
    dest = Path(dest)
    known = size is not None or bool(md5) or bool(sha256)
    if dest.is_file():
        if not known:
            return dest
        problem, _ = _check(dest, size, md5, sha256)
        if problem is None:
            return dest
        what, expected, actual = problem
        echo(
            f"{dest}: existing file does not match ({what}: expected {expected}, got {actual}); "
            "downloading it again"
        )
    elif dest.exists():
        raise DownloadError(f"{dest}: exists and is not a file; {_by_hand(url, dest)}")

    part = _part_path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if session is None:
                session = stack.enter_context(requests.Session())
            for attempt in range(2):
                try:
                    _stream_once(
                        session,
                        url,
                        dest,
                        part,
                        size=size,
                        progress=progress,
                        timeout=timeout,
                    )
                    break
                except _Restart:
                    _unlink(part)
                    if attempt:
                        raise _download_error(
                            url, dest, "the server does not send the requested byte ranges"
                        ) from None
    except requests.exceptions.RequestException as exc:
        have = part.stat().st_size if part.exists() else 0
        kept = f" ({have} bytes kept in {part.name}; run again to resume)" if have else ""
        raise _download_error(url, dest, _cause(exc, timeout) + kept) from exc
    except OSError as exc:
        raise DownloadError(
            f"cannot download {url}: cannot write {part}: {exc.strerror or exc}"
        ) from exc

    record = not (md5 or sha256)
    problem, digests = _check(part, size, md5, sha256, extra=("sha256",) if record else ())
    if problem is not None:
        _unlink(part)
        what, expected, actual = problem
        raise ChecksumError(
            f"{dest}: {what} mismatch for the file downloaded from {url}: expected {expected}, "
            f"got {actual}; the partial file was deleted"
        )
    os.replace(part, dest)
    if record:
        echo(
            f"{dest.name}: no checksum recorded; "
            f"sha256={digests['sha256']} size={dest.stat().st_size}"
        )
    return dest


# --------------------------------------------------------------------------------------------
# Fetch


def extracted_marker(dataset_dir: str | os.PathLike, filename: str) -> Path:
    """The marker `fetch` writes after extracting `filename`: `<dir>/.<filename>.extracted`."""
    target = Path(dataset_dir) / filename
    return target.parent / f".{target.name}.extracted"


def _check_filename(remote: RemoteFile) -> None:
    reason = "empty name" if not remote.filename else unsafe_name_reason(remote.filename)
    if reason:
        raise DownloadError(
            f"{remote.url}: invalid filename {remote.filename!r} ({reason}; "
            "must be a relative path)"
        )


def _marker_text(remote: RemoteFile, archive: Path) -> str:
    """What the extraction marker records: a re-downloaded archive no longer matches it."""
    info = archive.stat()
    return f"{remote.url}\n{info.st_size} {info.st_mtime_ns}\n"


def _fetch_one(remote, dataset_dir: Path, failures: list[str], progress: bool, echo) -> None:
    """Download, verify and extract one file of a dataset; a failure is added to `failures`."""
    try:
        _check_filename(remote)
        target = dataset_dir / remote.filename
        download(
            remote.url,
            target,
            size=remote.size,
            md5=remote.md5,
            sha256=remote.sha256,
            progress=progress,
            echo=echo,
        )
        if remote.extract:
            extract_once(remote, target, dataset_dir, echo)
    except PagError as exc:
        failures.append(str(exc))


def extract_once(remote: RemoteFile, archive: Path, dataset_dir: Path, echo: Echo) -> None:
    """Extract `archive` into `dataset_dir` unless its marker says this very file was (files
    left by an interrupted extraction are overwritten); the marker is written afterwards."""
    marker = extracted_marker(dataset_dir, remote.filename)
    text = _marker_text(remote, archive)
    if marker.exists() and marker.read_text() == text:
        return
    echo(f"extracting {archive.name} into {dataset_dir}")
    safe_extract(archive, dataset_dir, overwrite=True)
    write_bytes_atomic(marker, text.encode())


def fetch(
    spec: FetchSpec,
    dataset_dir: str | os.PathLike,
    *,
    progress: bool = True,
    echo: Echo = print,
) -> None:
    """Carry out `spec` for the dataset living in `dataset_dir`.

    Downloads every `RemoteFile` to `dataset_dir / filename` (skipping verified files),
    extracts those with `extract=True` into `dataset_dir` with `safe_extract` (skipped when the
    marker `.<filename>.extracted` exists; the marker is written atomically afterwards; files
    left by an interrupted extraction are overwritten), then prints `spec.manual` when set,
    with `{dataset_dir}` replaced by the directory. A failure does not stop the other files:
    one DownloadError listing every failure is raised at the end.
    """
    dataset_dir = Path(dataset_dir)
    failures: list[str] = []
    hint = "wait for the other `pag data fetch` of this dataset"
    with locked(dataset_dir, "dataset folder", hint=hint) if spec.files else nullcontext():
        for remote in spec.files:
            _fetch_one(remote, dataset_dir, failures, progress, echo)
    if spec.manual:
        echo(f"{dataset_dir.name}: manual steps (files go under {dataset_dir}):")
        echo(spec.manual.replace("{dataset_dir}", str(dataset_dir)))
    if failures:
        count = len(failures)
        listing = "; ".join(f"[{i}] {text}" for i, text in enumerate(failures, 1))
        raise DownloadError(
            f"{count} of {len(spec.files)} file(s) for {dataset_dir} failed: {listing}"
        )
