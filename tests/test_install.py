"""`pag data fetch NAME --from PATH`: a dataset installed from a local copy, an archive checked
as a download is, or an extracted tree checked by the dataset's own `check` before it is moved
into place (pag.data.install)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import ClassVar

import pytest
from fixtures_real import BSDS_DATA, make_bsds

from pag.data.base import FetchSpec, RemoteFile
from pag.data.bsds500 import BSDS500
from pag.data.install import INSTALLED, install_from
from pag.errors import ChecksumError, DataError


class ToyBSDS(BSDS500):
    """The fixture's BSR tree: 2 / 1 / 1 images (not registered)."""

    expected_counts: ClassVar[dict[str, int]] = {"train": 2, "val": 1, "test": 1}


def quiet(_: str) -> None:
    pass


def test_an_extracted_tree_is_checked_then_moved_into_place(tmp_path):
    source = tmp_path / "copy"
    make_bsds(source)
    for path in [source, *source.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # a read-only shared folder
    target = tmp_path / "data" / "bsds500"
    install_from(ToyBSDS, target, source, echo=quiet)
    assert (target / BSDS_DATA / "images" / "train" / "2092.jpg").is_file()
    assert len(ToyBSDS(target, "train")) == 2
    assert os.access(target / BSDS_DATA / "images", os.W_OK)  # the copy is the user's
    fingerprint = ToyBSDS.fingerprint(target)
    assert fingerprint is not None and (target / INSTALLED).read_text().startswith(str(source))
    install_from(ToyBSDS, target, source, echo=quiet)  # again: nothing to do
    assert ToyBSDS.fingerprint(target) == fingerprint
    assert sorted(p.name for p in target.parent.iterdir()) == ["bsds500"]


def test_an_incomplete_tree_installs_nothing(tmp_path):
    source = tmp_path / "copy"
    make_bsds(source)
    (source / BSDS_DATA / "groundTruth" / "val" / "3096.mat").unlink()
    target = tmp_path / "data" / "bsds500"
    with pytest.raises(DataError, match=r"not a complete 'bsds500' dataset: .*3096\.mat"):
        install_from(ToyBSDS, target, source, echo=quiet)
    assert list((tmp_path / "data").iterdir()) == []  # no target, no temporary copy


def toy_archive(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    make_bsds(tree)
    archive = tmp_path / "BSR_bsds500.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree / "BSR", arcname="BSR")
    return archive


def test_an_archive_is_checked_as_a_download_then_extracted(tmp_path):
    archive = toy_archive(tmp_path)
    target = tmp_path / "data" / "bsds500"
    # the real archive's size and md5: the toy one is refused, and nothing is installed
    with pytest.raises(ChecksumError, match=r"BSR_bsds500\.tgz: size mismatch"):
        install_from(ToyBSDS, target, archive, echo=quiet)
    assert not target.exists()

    class Matching(ToyBSDS):
        fetch_spec = FetchSpec(
            files=(
                RemoteFile(
                    "https://example.invalid/BSR_bsds500.tgz",
                    "BSR_bsds500.tgz",
                    size=archive.stat().st_size,
                    md5=hashlib.md5(archive.read_bytes()).hexdigest(),
                    extract=True,
                ),
            )
        )

    install_from(Matching, target, archive.parent, echo=quiet)  # a folder holding it
    assert len(Matching(target, "test")) == 1
    assert (target / "BSR_bsds500.tgz").read_bytes() == archive.read_bytes()
    assert (target / ".BSR_bsds500.tgz.extracted").is_file()
    assert Matching.fingerprint(target) is not None


def test_a_source_that_is_not_there_or_not_the_datasets_archive(tmp_path):
    with pytest.raises(DataError, match="not found"):
        install_from(ToyBSDS, tmp_path / "t", tmp_path / "nothing", echo=quiet)
    other = tmp_path / "other.zip"
    other.write_bytes(b"x")

    class TwoArchives(ToyBSDS):
        fetch_spec = FetchSpec(
            files=(RemoteFile("u", "a.tgz", extract=True), RemoteFile("v", "b.tgz", extract=True))
        )

    with pytest.raises(DataError, match=r"not an archive of dataset 'bsds500' \(expected a.tgz"):
        install_from(TwoArchives, tmp_path / "t", other, echo=quiet)
