"""The synthetic scenes as a dataset: reads what `pag data synth` wrote, via its manifest."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pag.data.base import CheckReport, DenseDataset, FetchSpec, Transform, register
from pag.data.codecs import decode_depth, decode_normals, read_image
from pag.data.sample import Sample, make_sample
from pag.data.synthetic.scene import CLASSES
from pag.data.synthetic.writer import (
    MANIFEST,
    MODALITIES,
    SPLITS,
    SYNTH_HINT,
    load_manifest,
    relative_path,
    split_counts,
    split_of,
)
from pag.errors import DataError
from pag.fileio import file_digest

_SAMPLE_KEY = {"rgb": "image"}  # the sample key of each modality whose name differs


@register
class SyntheticScenes(DenseDataset):
    """Procedural indoor scenes with exact ground truth for all four tasks (the default)."""

    name = "synthetic"
    splits = SPLITS
    tasks = ("semantic", "boundary", "depth", "normals")
    class_names = CLASSES
    fetch_spec = FetchSpec(
        manual="The synthetic dataset is generated, not downloaded: " + SYNTH_HINT
    )

    @classmethod
    def missing_hint(cls) -> str:
        return SYNTH_HINT

    def __init__(self, root: str | os.PathLike, split: str, transform: Transform | None = None):
        super().__init__(root, split, transform)
        self.manifest = load_manifest(self.root)
        encoding = self.manifest["encoding"]
        self.depth_scale = float(encoding["depth"]["scale"])
        self.depth_invalid = int(encoding["depth"]["invalid"])
        self.intrinsics = np.asarray(self.manifest["intrinsics"], dtype=np.float32)
        if list(self.manifest["classes"]) != list(CLASSES):
            raise DataError(
                f"{self.root / 'manifest.json'}: classes {self.manifest['classes']} differ from "
                f"this version's {list(CLASSES)}; regenerate the dataset"
            )
        self.size = (int(self.manifest["params"]["height"]), int(self.manifest["params"]["width"]))
        self.entries = [e for e in self.manifest["images"] if e["split"] == split]
        if not self.entries:
            raise DataError(f"{self.root / 'manifest.json'}: split '{split}' has no images")

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, index: int, modality: str) -> Path:
        return self.root / self.entries[index]["files"][modality]["path"]

    def files(self, index: int) -> dict[str, Path]:
        return {_SAMPLE_KEY.get(m, m): self.path(index, m) for m in MODALITIES}

    def load(self, index: int) -> Sample:
        entry = self.entries[index]
        rgb = read_image(self.path(index, "rgb"), mode="RGB")
        depth = decode_depth(
            read_image(self.path(index, "depth"), mode="I;16"), self.depth_scale, self.depth_invalid
        )
        normals, _ = decode_normals(read_image(self.path(index, "normals"), mode="RGB"))
        semantic = read_image(self.path(index, "semantic"), mode="L")
        instance = read_image(self.path(index, "instance"), mode="I;16")
        boundary = read_image(self.path(index, "boundary"), mode="L") > 127
        arrays = (rgb, depth, normals, semantic, instance, boundary)
        for modality, array in zip(MODALITIES, arrays, strict=True):
            if array.shape[:2] != self.size:  # names the file at fault, the image included
                height, width = array.shape[:2]
                raise DataError(
                    f"{self.path(index, modality)}: is {height} x {width}, but the manifest's "
                    f"images are {self.size[0]} x {self.size[1]}"
                )
        return make_sample(
            f"{self.split}/{entry['id']}",
            rgb,
            semantic=semantic,
            depth=depth,
            normals=normals,
            boundary=boundary,
            instance=instance.astype(np.int32),
            intrinsics=self.intrinsics,
        )

    @classmethod
    def fingerprint(cls, root: str | os.PathLike) -> str | None:
        """The manifest's sha256: it lists every file's digest and the generator's params."""
        path = Path(root) / MANIFEST
        return file_digest(path) if path.is_file() else None

    @classmethod
    def check(cls, root: str | os.PathLike, report: CheckReport) -> None:
        """Every listed file exists with the recorded sha256 and lies in its own split's
        folder, under the name its index gives; then every sample decodes."""
        root = Path(root)
        try:
            manifest = load_manifest(root)
        except DataError as exc:
            report.add(str(exc))
            return
        indices: set[int] = set()
        for entry in manifest["images"]:
            if entry["index"] in indices:
                report.add(f"{root / MANIFEST}: image {entry['index']} is listed twice")
            indices.add(entry["index"])
            if entry["split"] != split_of(entry["index"]):
                report.add(
                    f"{root / MANIFEST}: image {entry['index']} is listed in split "
                    f"{entry['split']!r}, but its index puts it in {split_of(entry['index'])!r}"
                )
            for modality, info in entry["files"].items():
                if info["path"] != relative_path(entry["index"], modality):
                    report.add(
                        f"{root / MANIFEST}: {modality} of image {entry['id']} (split "
                        f"{entry['split']!r}) points at {info['path']}, expected "
                        f"{relative_path(entry['index'], modality)}"
                    )
            for modality, info in entry["files"].items():
                path = root / info["path"]
                if not path.is_file():
                    report.add(f"{path}: missing ({modality} of image {entry['id']})")
                elif (digest := file_digest(path)) != info["sha256"]:
                    report.add(
                        f"{path}: sha256 {digest} differs from the manifest's {info['sha256']}"
                    )
        listed = {info["path"] for entry in manifest["images"] for info in entry["files"].values()}
        unlisted = sorted(
            path.relative_to(root).as_posix()
            for split in SPLITS
            for path in (root / split).glob("*.png")
            if path.relative_to(root).as_posix() not in listed
        )
        if unlisted:
            report.note(
                f"{len(unlisted)} files in {root} are not in its manifest (first: {unlisted[0]}): "
                "left by an interrupted `pag data synth`, or by another generator; unused"
            )
        # decoded too when a checksum differs, so that the problem itself is named; small
        # sets may lack a split: check the ones generated
        splits = [split for split, count in split_counts(manifest).items() if count]
        cls.check_samples(root, report, splits)
