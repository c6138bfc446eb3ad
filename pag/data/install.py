"""Installing a dataset from a local copy (`pag data fetch NAME --from PATH`), for machines
without internet: a cluster node, or the real BSDS500 beside this checkout.

`PATH` is either the official archive (or a folder holding the dataset's archives under their
official names), checked exactly as a download is (size and digests) and then extracted as
`pag data fetch` extracts one; or an already extracted tree in the dataset's layout, which is
copied beside the target, checked by the dataset's own `check` (layout, counts, every sample)
and only then renamed into place. An archive's checksum cannot be checked for an extracted
tree: what was installed is recorded instead (`.installed` in the dataset folder: the source
and a digest of every file's path, size and sha256), which is the dataset's fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pag.data.base import CheckReport, DenseDataset, RemoteFile
from pag.data.download import extract_once, verify_file
from pag.errors import DataError
from pag.fileio import file_digest, write_bytes_atomic
from pag.locking import locked

INSTALLED = ".installed"


def install_from(
    cls: type[DenseDataset],
    dataset_dir: str | os.PathLike,
    source: str | os.PathLike,
    *,
    echo: Callable[[str], object] = print,
) -> None:
    """Install dataset `cls` into `dataset_dir` from the local `source` (see the module)."""
    dataset_dir, source = Path(dataset_dir), Path(source)
    if not source.exists():
        raise DataError(f"{source}: not found (--from: an archive or a folder)")
    hint = "wait for the other `pag data fetch` of this dataset"
    with locked(dataset_dir, "dataset folder", hint=hint):
        archives = _archives(cls, source)
        if archives:
            for remote, path in archives:
                _install_archive(remote, path, dataset_dir, echo)
        else:
            _install_tree(cls, source, dataset_dir, echo)


def _archives(cls: type[DenseDataset], source: Path) -> list[tuple[RemoteFile, Path]]:
    """The dataset's archives found at `source` (a file, or a folder holding them by name);
    [] for a folder holding none (an extracted tree)."""
    remotes = [r for r in cls.fetch_spec.files if r.extract]
    if source.is_file():
        named = [r for r in remotes if r.filename == source.name]
        if len(remotes) == 1 or named:
            return [(named[0] if named else remotes[0], source)]
        expected = ", ".join(r.filename for r in remotes) or "none (not an archive dataset)"
        raise DataError(f"{source}: not an archive of dataset '{cls.name}' (expected {expected})")
    found = [(r, source / r.filename) for r in remotes if (source / r.filename).is_file()]
    missing = [r.filename for r in remotes if not (source / r.filename).is_file()]
    if found and missing:
        raise DataError(f"{source}: holds {found[0][1].name} but not {', '.join(missing)}")
    return found


def _install_archive(remote: RemoteFile, path: Path, dataset_dir: Path, echo) -> None:
    """Check the archive as a download is checked, copy it in (a later `pag data fetch` then
    finds it verified) and extract it."""
    verify_file(path, size=remote.size, md5=remote.md5, sha256=remote.sha256)
    target = dataset_dir / remote.filename
    if not target.is_file() or os.path.getsize(target) != os.path.getsize(path):
        echo(f"copying {path} to {target}")
        dataset_dir.mkdir(parents=True, exist_ok=True)
        tmp = dataset_dir / f".{remote.filename}.copy.tmp"
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        verify_file(target, size=remote.size, md5=remote.md5, sha256=remote.sha256)
    extract_once(remote, target, dataset_dir, echo)


def _installed_text(source: Path, tree: Path) -> str:
    """What `.installed` records: the source, and a digest of every file's path, size and
    sha256 in `tree` (the marker itself left out)."""
    listing = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and p.name != INSTALLED):
        relative = path.relative_to(tree).as_posix()
        listing.update(f"{relative}\0{path.stat().st_size}\0{file_digest(path)}\n".encode())
    return f"{source.resolve()}\n{listing.hexdigest()}\n"


def _writable(tree: Path) -> None:
    """The modes a plain copy by this user would have: a read-only source (a shared data
    folder) must not make the installed copy undeletable."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _install_tree(cls: type[DenseDataset], source: Path, dataset_dir: Path, echo) -> None:
    """Copy an extracted tree beside the target, check it, then rename it into place."""
    marker = dataset_dir / INSTALLED
    if marker.is_file() and marker.read_text() == _installed_text(source, source):
        echo(f"{cls.name} is installed from {source} already")
        return
    if dataset_dir.exists() and any(dataset_dir.iterdir()):
        raise DataError(
            f"{dataset_dir}: already holds files; installing a folder over them could mix two "
            "copies: remove it, or give another --root"
        )
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset_dir.name}.install-", dir=dataset_dir.parent))
    try:
        echo(f"copying {source} to {dataset_dir}")
        shutil.copytree(source, tmp, dirs_exist_ok=True, copy_function=shutil.copyfile)
        _writable(tmp)
        report = CheckReport(cls.name, tmp)
        cls.check(tmp, report)
        if not report.ok:
            shown = "; ".join(p.replace(str(tmp), str(source)) for p in report.problems[:3])
            more = f" (and {len(report.problems) - 3} more)" if len(report.problems) > 3 else ""
            raise DataError(
                f"{source}: not a complete '{cls.name}' dataset: {shown}{more}; nothing was "
                "installed"
            )
        write_bytes_atomic(tmp / INSTALLED, _installed_text(source, tmp).encode())
        if dataset_dir.exists():
            dataset_dir.rmdir()  # empty, checked above
        os.replace(tmp, dataset_dir)
        echo(f"installed {cls.name} from {source} ({report.checked} samples checked)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
