"""BSDS500 (Arbeláez, Maire, Fowlkes, Malik, TPAMI 2011): 500 natural images, each with the
boundary maps and segmentations of several human annotators.

Layout of `<root>/bsds500` after extracting BSR_bsds500.tgz::

    BSR/BSDS500/data/images/{train,val,test}/<id>.jpg          200 / 100 / 200 images
    BSR/BSDS500/data/groundTruth/{train,val,test}/<id>.mat     MATLAB v5

Each ground-truth file holds `groundTruth`, a 1 x K cell array of annotator structs with the
fields `Segmentation` (region ids) and `Boundaries` (binary). The annotators are kept apart
(K x H x W), because the benchmark matches predictions against each of them; averaging them
into a soft label is a training transform's choice. Portrait images stay portrait: some
loaders transpose them to landscape, which would also require transposing the ground truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from pag.data.base import CheckReport, DenseDataset, FetchSpec, RemoteFile, Transform, register
from pag.data.codecs import read_image, read_mat_v5, require_same_size
from pag.data.sample import Sample, make_sample
from pag.errors import DataError

BSDS_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
BSDS_ARCHIVE = "BSR_bsds500.tgz"
BSDS_SIZE = 70763455
BSDS_MD5 = "0b17383ff0b21fe43d2f28e624203169"  # single third-party source: verify on download
DATA_SUBDIR = Path("BSR", "BSDS500", "data")


def read_ground_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(boundaries K x H x W uint8 0/1, segments K x H x W int32) from a BSDS .mat file."""
    cells = np.asarray(read_mat_v5(path, ("groundTruth",))["groundTruth"]).ravel()
    if cells.size == 0:
        raise DataError(f"{path}: 'groundTruth' holds no annotators")
    boundaries, segments = [], []
    for k, cell in enumerate(cells):
        boundary, segment = _annotator_maps(path, k, cell)
        boundaries.append(boundary)
        segments.append(segment)
    shapes = {b.shape for b in boundaries} | {s.shape for s in segments}
    if len(shapes) != 1:
        raise DataError(f"{path}: annotator maps differ in size: {sorted(shapes)}")
    return np.stack(boundaries), np.stack(segments)


def _annotator_maps(path: str | os.PathLike, k: int, cell: object) -> tuple[np.ndarray, np.ndarray]:
    """One annotator's (Boundaries as uint8 0/1, Segmentation as int32); each field sits two
    levels of MATLAB array wrapping deep in what scipy returns."""
    struct = np.asarray(cell)
    fields = struct.dtype.names or ()
    if "Boundaries" not in fields or "Segmentation" not in fields:
        raise DataError(
            f"{path}: annotator {k} has fields {list(fields)}, expected Segmentation and Boundaries"
        )
    boundary = np.asarray(struct["Boundaries"].ravel()[0])
    segment = np.asarray(struct["Segmentation"].ravel()[0])
    if boundary.ndim != 2 or segment.ndim != 2:
        raise DataError(
            f"{path}: annotator {k} maps must be 2-D, got {boundary.shape}, {segment.shape}"
        )
    return (boundary != 0).astype(np.uint8), segment.astype(np.int32)


def boundaries_of(segmentation: np.ndarray) -> np.ndarray:
    """The boundary map BSDS500 stores beside a segmentation, as bool: the benchmark's
    `seg2bdry(seg, 'imageSize')` (a pixel is on a boundary when a segment changes to its right
    or below, at it or at its neighbour in the half-pixel grid), thinned as MATLAB's
    `bwmorph(..., 'thin', Inf)`. Measured on the release: every one of the 2,696 annotator
    maps of the 500 images equals this of its own `Segmentation`."""
    from pag.metrics._thin import thin

    seg = np.asarray(segmentation)
    down = np.zeros(seg.shape, bool)
    down[:-1] = seg[:-1] != seg[1:]
    right = np.zeros(seg.shape, bool)
    right[:, :-1] = seg[:, :-1] != seg[:, 1:]
    edges = np.zeros(seg.shape, bool)
    edges[:-1, :-1] = right[:-1, :-1] | right[1:, :-1] | down[:-1, :-1] | down[:-1, 1:]
    edges[-1, :] = right[-1, :]  # seg2bdry copies its last half-pixel row and column inwards
    edges[:, -1] = down[:, -1]
    edges[-1, -1] = False
    return thin(edges).astype(bool)


@register
class BSDS500(DenseDataset):
    """BSDS500 images with per-annotator `boundary` and `instance` (segment ids) maps;
    splits "train", "val", "test"."""

    name = "bsds500"
    splits = ("train", "val", "test")
    tasks = ("boundary",)
    fetch_spec = FetchSpec(
        files=(
            RemoteFile(
                url=BSDS_URL, filename=BSDS_ARCHIVE, size=BSDS_SIZE, md5=BSDS_MD5, extract=True
            ),
        )
    )
    expected_counts: ClassVar[dict[str, int]] = {"train": 200, "val": 100, "test": 200}

    def __init__(self, root: str | os.PathLike, split: str, transform: Transform | None = None):
        super().__init__(root, split, transform)
        self.image_dir = self.root / DATA_SUBDIR / "images" / split
        self.gt_dir = self.root / DATA_SUBDIR / "groundTruth" / split
        self.images = list_images(self.image_dir)
        self.gt_paths = [self.gt_dir / f"{image.stem}.mat" for image in self.images]
        for image, gt in zip(self.images, self.gt_paths, strict=True):
            if not gt.is_file():
                raise DataError(f"{gt}: missing ground truth for image {image}")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        image_path, gt_path = self.images[index], self.gt_paths[index]
        image = read_image(image_path, mode="RGB")
        boundaries, segments = read_ground_truth(gt_path)
        require_same_size(image_path, image.shape[:2], {gt_path: boundaries.shape[1:]})
        return make_sample(image_path.stem, image, boundary=boundaries, instance=segments)

    @classmethod
    def check(cls, root: str | os.PathLike, report: CheckReport) -> None:
        """Image counts per split (200 / 100 / 200), then every sample."""
        for split, expected in cls.expected_counts.items():
            folder = Path(root) / DATA_SUBDIR / "images" / split
            found = len(list(folder.glob("*.jpg"))) if folder.is_dir() else 0
            if found != expected:
                report.add(f"{folder}: {found} images, expected {expected}")
        super().check(root, report)


def list_images(folder: Path) -> list[Path]:
    """The split's .jpg files in name order (the archive also holds e.g. Thumbs.db)."""
    if not folder.is_dir():
        raise DataError(
            f"{folder}: folder not found; expected the BSDS500 layout {DATA_SUBDIR}/..."
        )
    images = sorted(folder.glob("*.jpg"))
    if not images:
        raise DataError(f"{folder}: no .jpg images; expected a non-empty split")
    return images
