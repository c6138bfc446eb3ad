"""Safe archive extraction: the one place where downloaded archives are unpacked.

`safe_extract` checks every member of a tar or zip archive *before* writing anything, refusing
absolute paths, `..` components, links that resolve outside the target (following the links the
archive itself creates, in archive order), and device/fifo members. It then unpacks into a
temporary directory beside the target and moves the result in only when everything succeeded,
so a corrupt or hostile archive never leaves half its contents behind.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from pag.errors import DataError, UnsafeArchiveError

__all__ = ["archive_kind", "safe_extract"]

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
_DRIVE = re.compile(r"^[A-Za-z]:")
# How the OS here splits a path: links are resolved with this; names are *checked* with both.
_NATIVE_SEP = r"[/\\]" if os.name == "nt" else "/"
_MAX_LINK_HOPS = 40  # like the kernel's MAXSYMLINKS: more means a loop

# Decompression bombs: what an archive may expand to. A ceiling on the total, and on the
# ratio of the total to the archive's size once the total is large enough to matter (real
# datasets' archives expand 1-10x; bombs 1000x and more).
MAX_EXTRACTED_BYTES = 256 * 2**30
MAX_RATIO = 100
RATIO_FROM_BYTES = 64 * 2**20

# What a broken archive raises while being read, on top of the format-specific errors.
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)


def archive_kind(archive: str | os.PathLike) -> str:
    """'tar' (plain or gzip/bzip2/xz-compressed) or 'zip', from the file's content; the suffix
    only breaks a tie. Raises DataError if the file is neither."""
    path = Path(archive)
    if not path.is_file():
        raise DataError(f"{path}: archive not found")
    name = path.name.lower()
    try:
        if name.endswith(".zip") and zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
        if zipfile.is_zipfile(path):
            return "zip"
    except OSError as exc:
        raise DataError(f"{path}: cannot read archive: {exc}") from exc
    expected = "tar" if name.endswith(_TAR_SUFFIXES) else "zip" if name.endswith(".zip") else None
    hint = f" (named like a {expected}: probably truncated or corrupt)" if expected else ""
    raise DataError(f"{path}: not a tar or zip archive{hint}")


def safe_extract(
    archive: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool = False
) -> list[Path]:
    """Unpack `archive` (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz or .zip) into `dest`.

    Raises UnsafeArchiveError (naming the archive and the member) for absolute member paths,
    `..` components, symlinks/hardlinks resolving outside `dest`, and device or fifo members;
    DataError for a corrupt or truncated archive, or when a member would replace an existing
    file in `dest` (unless `overwrite`) or a file would replace a directory (always). In every
    error case `dest` is left as it was. Existing directories in `dest` are merged into.

    Returns the path in `dest` of every file, link and directory from the archive, sorted.
    """
    archive = Path(archive)
    dest = Path(dest)
    kind = archive_kind(archive)
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest}: cannot extract {archive.name} here: not a directory")
    beside = dest.absolute()
    try:
        beside.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.extract-", dir=beside.parent))
    except OSError as exc:
        raise DataError(f"{dest}: cannot extract {archive.name}: {_one_line(exc)}") from exc
    try:
        if kind == "tar":
            _extract_tar(archive, tmp)
        else:
            _extract_zip(archive, tmp)
        _check_extracted_links(archive, tmp)
        created = sorted(dest / path.relative_to(tmp) for path in _walk(tmp))
        try:
            _move_into(archive, tmp, dest, overwrite=overwrite)
        except OSError as exc:
            raise DataError(
                f"{dest}: cannot move the contents of {archive.name} into place: {_one_line(exc)}"
            ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return created


# --------------------------------------------------------------------------------------------
# Member checks


def _unsafe(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: unsafe member {member!r}: {why}; nothing was extracted")


def _split(name: str, sep: str = r"[/\\]") -> list[str]:
    """Path components of an archive name. By default '/' and '\\' both separate: the name
    checks use this, since the same archive unpacked on Windows would split on '\\'."""
    return [part for part in re.split(sep, name) if part not in ("", ".")]


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name))


def unsafe_name_reason(name: str) -> str | None:
    """Why `name` cannot be used as a path inside a target folder, or None if it can."""
    if "\x00" in name:
        return "NUL byte in name"
    if _is_absolute(name):
        return "absolute path"
    if ".." in _split(name):
        return "'..' component (path traversal)"
    return None


def _check_name(archive: Path, name: str, *, is_dir: bool) -> list[str]:
    reason = unsafe_name_reason(name)
    if reason:
        raise _unsafe(archive, name, reason)
    parts = _split(name, _NATIVE_SEP)  # where the OS here will put it
    if not parts and not is_dir:
        raise _unsafe(archive, name, "empty name")
    return parts


class _LinkModel:
    """The symlinks the archive has created so far, keyed by their real location (components
    relative to the extraction root), so that paths can be resolved the way the OS will."""

    def __init__(self) -> None:
        self.links: dict[tuple[str, ...], str] = {}

    def resolve(self, parts: list[str], *, follow_last: bool = True) -> tuple[str, ...] | None:
        """The real location of `parts` (relative to the root), following archive symlinks;
        None if it leaves the root, names an absolute link target, or loops."""
        pending = list(reversed(parts))
        current: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not current:
                    return None
                current.pop()
                continue
            current.append(part)
            target = self.links.get(tuple(current))
            if target is not None and (pending or follow_last):
                hops += 1
                if hops > _MAX_LINK_HOPS or _is_absolute(target):
                    return None
                current.pop()
                pending.extend(reversed(re.split(_NATIVE_SEP, target)))
        return tuple(current)


def _validate_tar(archive: Path, members: list[tarfile.TarInfo]) -> None:
    model = _LinkModel()
    hardlinks: list[tuple[tarfile.TarInfo, list[str]]] = []
    for member in members:
        name = member.name
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            kind = (
                "character device"
                if member.ischr()
                else "block device"
                if member.isblk()
                else "fifo"
                if member.isfifo()
                else f"member of type {member.type!r}"
            )
            raise _unsafe(archive, name, f"{kind} (only files, directories and links allowed)")
        parts = _check_name(archive, name, is_dir=member.isdir())
        if member.issym() or member.islnk():
            link = member.linkname
            if not link or "\x00" in link:
                raise _unsafe(archive, name, f"invalid link target {link!r}")
            if _is_absolute(link):
                raise _unsafe(archive, name, f"link to absolute path {link!r}")
            parent = model.resolve(parts[:-1])
            if parent is None:
                raise _unsafe(archive, name, "parent directory resolves outside the target")
            if member.issym():
                # relative to the directory holding the link, as the OS will resolve it
                if model.resolve([*parent, *re.split(_NATIVE_SEP, link)]) is None:
                    raise _unsafe(archive, name, f"symlink to {link!r} points outside the target")
                model.links[(*parent, parts[-1])] = link
            else:
                # hardlink targets are archive names, relative to the root; os.link follows
                # a symlink at the target, so resolve it completely
                link_parts = _split(link, _NATIVE_SEP)
                if ".." in _split(link) or model.resolve(link_parts) is None:
                    raise _unsafe(archive, name, f"hardlink to {link!r} points outside the target")
                model.links.pop((*parent, parts[-1]), None)
                hardlinks.append((member, link_parts))
        elif parts and model.resolve(parts) is None:
            # writing a file (or a directory) through links the archive made earlier
            raise _unsafe(archive, name, "resolves outside the target through a symlink")
    # A link that was safe when it was made can be redirected by a later one: check the links
    # of the final tree again.
    for location, link in model.links.items():
        if model.resolve([*location[:-1], *re.split(_NATIVE_SEP, link)]) is None:
            shown = "/".join(location)
            raise _unsafe(archive, shown, f"symlink to {link!r} points outside the target")
    for member, link_parts in hardlinks:
        if model.resolve(link_parts) is None:
            raise _unsafe(archive, member.name, f"hardlink to {member.linkname!r} escapes")


def _check_expansion(archive: Path, total: int, limit: int = MAX_EXTRACTED_BYTES) -> None:
    """Refuse, before writing anything, an archive whose members add up to more than `limit`
    bytes or expand more than `MAX_RATIO` times its own size."""
    if total > limit:
        raise _unsafe(archive, "*", f"members total {total} bytes, more than the {limit} allowed")
    size = max(archive.stat().st_size, 1)
    if total > RATIO_FROM_BYTES and total > MAX_RATIO * size:
        raise _unsafe(
            archive,
            "*",
            f"members expand {total / size:.0f} times the archive's size (at most {MAX_RATIO} "
            "allowed): a decompression bomb",
        )


def _extract_tar(archive: Path, tmp: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads the whole archive: truncation shows up here
            _validate_tar(archive, members)
            _check_expansion(archive, sum(m.size for m in members if m.isreg()))
            # second line of defence: Python's own "data" filter
            tar.extractall(tmp, members=members, filter="data")
    except tarfile.FilterError as exc:
        member = getattr(exc, "tarinfo", None)
        name = member.name if member is not None else "?"
        raise _unsafe(archive, name, str(exc)) from exc
    except (*_READ_ERRORS, OSError) as exc:
        raise _read_or_write_error(archive, tmp, exc, "corrupt or truncated archive") from exc


def _validate_zip(archive: Path, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        mode = info.external_attr >> 16
        if (
            info.create_system == 3
            and mode
            and (
                stat.S_ISCHR(mode)
                or stat.S_ISBLK(mode)
                or stat.S_ISFIFO(mode)
                or stat.S_ISSOCK(mode)
            )
        ):
            raise _unsafe(archive, info.filename, "device, fifo or socket member")
        _check_name(archive, info.filename, is_dir=info.is_dir())
        # zipfile writes symlink members as small regular files holding the target: harmless


def _extract_zip(archive: Path, tmp: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _validate_zip(archive, infos)
            _check_expansion(archive, sum(info.file_size for info in infos))
            for info in infos:
                parts = _split(info.filename)
                target = tmp.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    _copy_at_most(archive, info.filename, src, out, info.file_size)
    except (*_READ_ERRORS, OSError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: encrypted member; NotImplementedError: unsupported compression method
        raise _read_or_write_error(archive, tmp, exc, "corrupt or unreadable archive") from exc


def _copy_at_most(archive: Path, name: str, src, out, declared: int) -> None:
    """Copy a member, refusing one that decompresses to more than its header declared (the
    declared sizes are what `_check_expansion` judged)."""
    written = 0
    while chunk := src.read(1 << 20):
        written += len(chunk)
        if written > declared:
            raise _unsafe(archive, name, f"decompresses to more than its declared {declared} bytes")
        out.write(chunk)


def _read_or_write_error(archive: Path, tmp: Path, exc: BaseException, corrupt: str) -> DataError:
    """A system error (a full disk: ENOSPC, EFBIG, EDQUOT) is not a corrupt archive; format
    errors, gzip's BadGzipFile included, carry no errno."""
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = exc.strerror or _one_line(exc)
        return DataError(f"{archive}: cannot extract it beside {tmp.parent}: {reason}")
    return DataError(f"{archive}: {corrupt}: {_one_line(exc)}")


# --------------------------------------------------------------------------------------------
# After extraction


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        found.extend(base / name for name in dirnames)
        found.extend(base / name for name in filenames)
    return found


def _check_extracted_links(archive: Path, tmp: Path) -> None:
    """Last check on the real files: every symlink must resolve inside the extraction root."""
    root = os.path.realpath(tmp)
    for path in _walk(tmp):
        if path.is_symlink():
            real = os.path.realpath(path)
            if os.path.commonpath([real, root]) != root:
                raise _unsafe(archive, str(path.relative_to(tmp)), "symlink resolves outside")
        elif path.is_dir():
            # make sure the owner can move things out of (and clean up) every directory
            mode = path.stat().st_mode
            if mode & stat.S_IRWXU != stat.S_IRWXU:
                path.chmod(mode | stat.S_IRWXU)


def _plan_moves(
    archive: Path, src_dir: Path, dst_dir: Path, overwrite: bool, moves: list[tuple[Path, Path]]
) -> None:
    for entry in sorted(src_dir.iterdir()):
        target = dst_dir / entry.name
        src_is_dir = entry.is_dir() and not entry.is_symlink()
        if not os.path.lexists(target):
            moves.append((entry, target))
        elif src_is_dir and target.is_dir():
            _plan_moves(archive, entry, target, overwrite, moves)
        elif src_is_dir or (target.is_dir() and not target.is_symlink()):
            raise DataError(
                f"{target}: cannot extract {archive.name}: a file and a directory would "
                "replace each other; remove it and try again"
            )
        elif not overwrite:
            raise DataError(
                f"{target}: already exists; not overwritten by {archive.name} "
                "(remove it, or extract with overwrite=True)"
            )
        else:
            moves.append((entry, target))


def _move_into(archive: Path, tmp: Path, dest: Path, *, overwrite: bool) -> None:
    moves: list[tuple[Path, Path]] = []
    if dest.is_dir():
        _plan_moves(archive, tmp, dest, overwrite, moves)  # every conflict is found first
    else:
        dest.mkdir(parents=True)
        moves = [(entry, dest / entry.name) for entry in sorted(tmp.iterdir())]
    for src, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
