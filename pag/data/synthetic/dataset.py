"""The synthetic scenes as a dataset: reads what `pag data synth` wrote, via its manifest."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pag.data.base import CheckReport, DenseDataset, FetchSpec, Transform, register
from pag.data.codecs import decode_depth, decode_normals, read_image, require_same_size
from pag.data.sample import Sample, make_sample
from pag.data.synthetic.scene import CLASSES
from pag.data.synthetic.writer import MODALITIES, SPLITS, load_manifest, split_counts
from pag.errors import DataError
from pag.fileio import file_digest


@register
class SyntheticScenes(DenseDataset):
    """Procedural indoor scenes with exact ground truth for all four tasks (the default)."""

    name = "synthetic"
    splits = SPLITS
    tasks = ("semantic", "boundary", "depth", "normals")
    class_names = CLASSES
    fetch_spec = FetchSpec(
        manual="The synthetic dataset is generated, not downloaded: "
        "pag data synth --out <data root>/synthetic --num 1000 --seed 0"
    )

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
        self.entries = [e for e in self.manifest["images"] if e["split"] == split]
        if not self.entries:
            raise DataError(f"{self.root / 'manifest.json'}: split '{split}' has no images")

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, index: int, modality: str) -> Path:
        return self.root / self.entries[index]["files"][modality]["path"]

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
        targets = zip(MODALITIES[1:], (depth, normals, semantic, instance, boundary), strict=True)
        sizes = {self.path(index, m): a.shape[:2] for m, a in targets}
        require_same_size(self.path(index, "rgb"), rgb.shape[:2], sizes)
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
    def check(cls, root: str | os.PathLike, report: CheckReport) -> None:
        """Every listed file exists with the recorded sha256, then every sample decodes."""
        root = Path(root)
        try:
            manifest = load_manifest(root)
        except DataError as exc:
            report.add(str(exc))
            return
        for entry in manifest["images"]:
            for modality, info in entry["files"].items():
                path = root / info["path"]
                if not path.is_file():
                    report.add(f"{path}: missing ({modality} of image {entry['id']})")
                elif (digest := file_digest(path)) != info["sha256"]:
                    report.add(
                        f"{path}: sha256 {digest} differs from the manifest's {info['sha256']}"
                    )
        if report.ok:  # small sets may lack a split: check the ones generated
            splits = [split for split, count in split_counts(manifest).items() if count]
            cls.check_samples(root, report, splits)
