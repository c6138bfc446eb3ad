"""safe_extract: hostile archives are refused before anything is written; good ones unpack
exactly; failures leave the target untouched."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pag.data import archive as archive_mod
from pag.data.archive import archive_kind, safe_extract
from pag.errors import DataError, UnsafeArchiveError

# --------------------------------------------------------------------------------------------
# Building archives


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def make_tar(path: Path, members, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def tree(root: Path) -> dict[str, bytes | str | None]:
    """{relative path: file bytes, 'link->target', or None for directories}."""
    found: dict[str, bytes | str | None] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = f"link->{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = None
            else:
                found[rel] = path.read_bytes()
    return found


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A target that already holds one file, so 'unchanged' is a real check."""
    target = tmp_path / "dest"
    target.mkdir()
    (target / "existing.txt").write_bytes(b"keep me")
    return target


def assert_untouched(tmp_path: Path, dest: Path, archive: Path) -> None:
    assert tree(dest) == {"existing.txt": b"keep me"}
    # nothing escaped and no temporary extraction directory was left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dest.name, archive.name])


# --------------------------------------------------------------------------------------------
# Hostile tar archives

# case: (members, the member the error must name, the reason it must give)
UNSAFE_TARS = {
    "absolute": ([_file("/abs/evil.txt")], "/abs/evil.txt", "absolute path"),
    "dotdot": ([_file("../evil.txt")], "../evil.txt", "'..'"),
    "nested-dotdot": ([_file("a/../../evil.txt")], "a/../../evil.txt", "'..'"),
    "symlink-etc-passwd": ([_link("passwd", "/etc/passwd")], "passwd", "absolute"),
    "symlink-outside": ([_link("out", "../outside")], "out", "points outside the target"),
    "symlink-deep-outside": (
        [_dir("a"), _link("a/out", "../../outside")],
        "a/out",
        "points outside the target",
    ),
    "hardlink-outside": (
        [_link("hl", "../outside", tarfile.LNKTYPE)],
        "hl",
        "points outside the target",
    ),
    "hardlink-absolute": ([_link("hl", "/etc/passwd", tarfile.LNKTYPE)], "hl", "absolute"),
    "char-device": ([_special("null", tarfile.CHRTYPE)], "null", "character device"),
    "block-device": ([_special("sda", tarfile.BLKTYPE)], "sda", "block device"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "pipe", "fifo"),
    # each link stays inside on its own, but s -> '.' makes s/s/s/../../.. climb out
    "symlink-chain": (
        [_link("s", "."), _link("t", "s/s/s/../../..")],
        "t",
        "points outside the target",
    ),
    # t is fine when made (s is a directory), but s is later replaced by a link to '.'
    "link-redirected-later": (
        [_dir("s"), _link("t", "s/.."), _link("s", ".")],
        "t",
        "points outside the target",
    ),
    # ... and a file is then written through t
    "write-through-link": (
        [_dir("s"), _link("t", "s/.."), _link("s", "."), _file("t/x")],
        "t/x",
        "through a symlink",
    ),
    # on POSIX 'x\\s' is one (odd) directory name, not x/s: t climbs out from it
    "backslash-directory": (
        [_dir("x\\s"), _link("t", "x\\s/../..")],
        "t",
        "points outside the target",
    ),
    # hardlink to a file behind a symlink that leaves the target
    "hardlink-via-symlink": (
        [_link("s", "."), _link("hl", "s/../x", tarfile.LNKTYPE)],
        "hl",
        "points outside the target",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TARS))
def test_unsafe_tar_is_refused_before_writing(tmp_path: Path, dest: Path, case: str) -> None:
    members, bad_member, reason = UNSAFE_TARS[case]
    # a harmless first member proves that nothing at all is extracted
    archive = make_tar(tmp_path / "bad.tar.gz", [_file("good.txt", b"good"), *members])
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest)
    message = str(info.value)
    assert str(archive) in message
    assert repr(bad_member) in message
    assert reason in message
    assert_untouched(tmp_path, dest, archive)
    assert not (tmp_path / "outside").exists()


def test_unsafe_member_named_even_when_target_does_not_exist(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "bad.tar", [_file("../evil.txt")], mode="w")
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil\.txt"):
        safe_extract(archive, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_data_filter_is_a_second_line_of_defence(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with our own checks switched off, tarfile's "data" filter must still refuse
    monkeypatch.setattr(archive_mod, "_validate_tar", lambda archive, members: None)
    monkeypatch.setattr(archive_mod, "_check_extracted_links", lambda archive, tmp: None)
    archive = make_tar(tmp_path / "bad.tar.gz", [_link("passwd", "/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="passwd"):
        safe_extract(archive, dest)
    assert_untouched(tmp_path, dest, archive)


def test_extracted_links_are_checked_on_disk(tmp_path: Path) -> None:
    # the last check, on the real files before anything is moved into the target
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "inside").symlink_to("..")
    archive_mod._check_extracted_links(tmp_path / "x.tar", root)  # inside: fine
    (root / "sub" / "escape").symlink_to("../..")
    with pytest.raises(UnsafeArchiveError, match="escape"):
        archive_mod._check_extracted_links(tmp_path / "x.tar", root)


# --------------------------------------------------------------------------------------------
# Hostile zip archives


@pytest.mark.parametrize(
    "bad_name",
    ["..\\x.txt", "/x.txt", "\\x.txt", "C:\\x.txt", "c:/x.txt", "../x.txt", "a/../../x.txt"],
)
def test_unsafe_zip_is_refused_before_writing(tmp_path: Path, dest: Path, bad_name: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", {"good.txt": b"good", bad_name: b"evil"})
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest)
    assert str(archive) in str(info.value)
    assert repr(bad_name) in str(info.value)
    assert_untouched(tmp_path, dest, archive)


def test_zip_device_member_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "dev.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("null")
        info.create_system = 3
        info.external_attr = (stat.S_IFCHR | 0o666) << 16
        zf.writestr(info, b"")
    with pytest.raises(UnsafeArchiveError, match="'null'"):
        safe_extract(archive, dest)
    assert_untouched(tmp_path, dest, archive)


# --------------------------------------------------------------------------------------------
# Good archives


GOOD_MEMBERS = [
    _dir("data"),
    _file("data/a.txt", b"alpha"),
    _file("data/sub/b.bin", bytes(range(256)) * 4),
    _link("data/link.txt", "a.txt"),
    _link("data/hard.txt", "data/a.txt", tarfile.LNKTYPE),
    _file("top.txt", b"top"),
]
GOOD_TREE = {
    "existing.txt": b"keep me",
    "data": None,
    "data/a.txt": b"alpha",
    "data/sub": None,
    "data/sub/b.bin": bytes(range(256)) * 4,
    "data/link.txt": "link->a.txt",
    "data/hard.txt": b"alpha",
    "top.txt": b"top",
}


@pytest.mark.parametrize(
    ("filename", "mode"),
    [
        ("good.tar", "w"),
        ("good.tar.gz", "w:gz"),
        ("good.tgz", "w:gz"),
        ("good.tar.bz2", "w:bz2"),
        ("good.tar.xz", "w:xz"),
        ("good.bin", "w:gz"),  # detected by content, not by suffix
    ],
)
def test_good_tar_extracts_exactly(tmp_path: Path, dest: Path, filename: str, mode: str) -> None:
    archive = make_tar(tmp_path / filename, GOOD_MEMBERS, mode=mode)
    assert archive_kind(archive) == "tar"
    created = safe_extract(archive, dest)
    assert tree(dest) == GOOD_TREE
    expected = sorted(dest / name for name in GOOD_TREE if name != "existing.txt")
    assert created == expected
    assert (dest / "data" / "link.txt").read_bytes() == b"alpha"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dest", filename])


@pytest.mark.parametrize("filename", ["good.zip", "good.tar"])  # a zip with a misleading name
def test_good_zip_extracts_exactly(tmp_path: Path, dest: Path, filename: str) -> None:
    archive = make_zip(
        tmp_path / filename,
        {"data/": b"", "data/a.txt": b"alpha", "data/sub/b.txt": b"beta", "top.txt": b"top"},
    )
    assert archive_kind(archive) == "zip"
    created = safe_extract(archive, dest)
    assert tree(dest) == {
        "existing.txt": b"keep me",
        "data": None,
        "data/a.txt": b"alpha",
        "data/sub": None,
        "data/sub/b.txt": b"beta",
        "top.txt": b"top",
    }
    assert created == sorted(
        dest / n for n in ["data", "data/a.txt", "data/sub", "data/sub/b.txt", "top.txt"]
    )


def test_extract_creates_missing_target(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"x/y.txt": b"y"})
    target = tmp_path / "new" / "dir"
    assert safe_extract(archive, target) == [target / "x", target / "x" / "y.txt"]
    assert (target / "x" / "y.txt").read_bytes() == b"y"


def test_existing_directories_are_merged(tmp_path: Path, dest: Path) -> None:
    (dest / "data").mkdir()
    (dest / "data" / "old.txt").write_bytes(b"old")
    archive = make_zip(tmp_path / "a.zip", {"data/new.txt": b"new"})
    safe_extract(archive, dest)
    assert tree(dest) == {
        "existing.txt": b"keep me",
        "data": None,
        "data/old.txt": b"old",
        "data/new.txt": b"new",
    }


def test_existing_file_is_not_overwritten_unless_asked(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"new.txt": b"new", "existing.txt": b"replaced"})
    with pytest.raises(DataError, match=r"existing\.txt.*already exists"):
        safe_extract(archive, dest)
    assert_untouched(tmp_path, dest, archive)  # not even new.txt was added
    safe_extract(archive, dest, overwrite=True)
    assert tree(dest) == {"existing.txt": b"replaced", "new.txt": b"new"}


def test_file_never_replaces_directory(tmp_path: Path, dest: Path) -> None:
    (dest / "data").mkdir()
    archive = make_zip(tmp_path / "a.zip", {"data": b"a file"})
    with pytest.raises(DataError, match="file and a directory"):
        safe_extract(archive, dest, overwrite=True)
    assert tree(dest) == {"existing.txt": b"keep me", "data": None}


# --------------------------------------------------------------------------------------------
# Broken archives


def _incompressible(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def test_truncated_tar_gz_is_a_data_error(tmp_path: Path, dest: Path) -> None:
    full = make_tar(
        tmp_path / "full.tar.gz",
        [_file(f"f{i}.bin", _incompressible(50_000, i)) for i in range(4)],
    )
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    full.unlink()
    with pytest.raises(DataError) as info:
        safe_extract(archive, dest)
    assert not isinstance(info.value, UnsafeArchiveError)
    assert str(archive) in str(info.value)
    assert_untouched(tmp_path, dest, archive)


def test_truncated_zip_is_a_data_error(tmp_path: Path, dest: Path) -> None:
    full = make_zip(tmp_path / "full.zip", {"a.bin": _incompressible(10_000, 1)})
    archive = tmp_path / "cut.zip"
    archive.write_bytes(full.read_bytes()[:5_000])
    full.unlink()
    with pytest.raises(DataError, match=r"cut\.zip"):
        safe_extract(archive, dest)
    assert_untouched(tmp_path, dest, archive)


def test_corrupt_late_member_leaves_nothing_half_extracted(tmp_path: Path, dest: Path) -> None:
    # the first member extracts fine, the second fails its CRC: dest must not get the first
    archive = tmp_path / "late.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("first.txt", b"first member is fine")
        zf.writestr("second.txt", b"SECOND-MEMBER-PAYLOAD")
    data = archive.read_bytes()
    archive.write_bytes(data.replace(b"SECOND-MEMBER-PAYLOAD", b"SECOND-MEMBER-PAYLOAX"))
    with pytest.raises(DataError, match=r"late\.zip"):
        safe_extract(archive, dest)
    assert_untouched(tmp_path, dest, archive)


def test_not_an_archive(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "notes.tar.gz"
    archive.write_bytes(b"this is not an archive at all" * 20)
    with pytest.raises(DataError, match=r"notes\.tar\.gz.*not a tar or zip"):
        safe_extract(archive, dest)
    assert_untouched(tmp_path, dest, archive)


def test_missing_archive(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.zip: archive not found"):
        safe_extract(tmp_path / "missing.zip", dest)
