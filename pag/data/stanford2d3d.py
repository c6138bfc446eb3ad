"""Stanford 2D-3D-Semantics panoramas (Armeni et al., 2017) with the PAG authors' area split.

Two on-disk layouts under the dataset dir ``<data root>/stanford2d3d`` are read; the
``layout`` option picks one ("auto", the default, detects it; "official"; "processed").

**official**: the dataset as distributed (the ``noXYZ`` area archives), full-resolution
equirectangular panoramas (2048 x 4096)::

    area_N/pano/rgb/camera_{uuid}_{room}_frame_equirectangular_domain_rgb.png
    area_N/pano/depth/camera_{uuid}_{room}_frame_equirectangular_domain_depth.png
    area_N/pano/normal/camera_{uuid}_{room}_frame_equirectangular_domain_normals.png
    area_N/pano/semantic/camera_{uuid}_{room}_frame_equirectangular_domain_semantic.png
    assets/semantic_labels.json   (from github.com/alexsax/2D-3D-Semantics)

for N in 1, 2, 3, 4, 5a, 5b, 6. Sample ids are ``area_N/camera_{uuid}_{room}``. The
semantic PNG is RGB holding a 24-bit index R*65536 + G*256 + B into ``semantic_labels.json``
(a JSON list of ``class_instance_roomType_roomNum_areaNum`` strings). The index #0D0D0D
(855309, beyond the list) marks missing mesh and class ``<UNK>`` marks unlabelled points:
both become 255 (ignore). Any other index beyond the list is an error (for instance a
``semantic_pretty`` image put in ``semantic/``). Samples also carry ``instance``: the 24-bit
index itself (a distinct id per object instance), 0 where missing or ``<UNK>``. An RGBA
PNG is accepted for rgb/normal/semantic; its alpha channel is dropped, as MATLAB's
``imread`` and OpenCV do.

**processed**: the authors' own format, the one their code trains and evaluates on
(704 x 2048; the demo files val001/val002 in their repository are in it)::

    processed/train/<id>_rgb.png       8-bit RGB
    processed/train/<id>_depth.png     16-bit, 1/512 m, 65535 = missing
    processed/train/<id>_normals.png   8-bit RGB, 127.5-centred
    processed/train/<id>_semantic.png  8-bit, 0..12 = CLASS_NAMES, 255 = ignore
    processed/val/...                  same

Sample ids are ``<split>/<id>`` (e.g. ``val/val001``). A semantic value outside 0..12 other
than 255 is an error naming the file.

Split (the authors' ``imdb.mat``; not the dataset's usual fold 1): train = areas 1, 2, 5a,
5b, 6 (190 + 299 + 143 + 230 + 208 = 1,070 panoramas), val = areas 3, 4 (85 + 258 = 343).
`Stanford2D3D.check` compares the counts found with these and reports any difference as a
note.

Decoding (the authors' ``getBatch``):

* depth: ``raw / 512`` metres; raw 65535 (missing) and raw <= 1 (the authors keep only
  raw > 1) become 0. In panoramas depth is the distance from the camera centre (ray
  length), not z-depth. Panoramas have no pinhole intrinsics, so samples have none.
* normals: ``n = (v - 127.5) / 127.5``, valid where ``0.8 < |n| < 1.1``, renormalised;
  all-zero elsewhere (#808080, missing mesh, decodes to a near-zero vector).
  Official-layout normals are in the dataset's **global** (world) frame, as the dataset
  README states for panoramas; they are returned unchanged, in that frame, not in the camera
  frame of `pag.data.sample`. The authors convert them to a per-column "local" frame
  (``main000_calibrateNormal_*.m``) with one manual click "on the wall" per panorama; that
  calibration cannot be reproduced without the clicks and is not done here. Processed-layout
  normals are returned as stored. Measured on the authors' two demo files (val001, val002):
  the azimuth of wall normals turns by -0.174 deg per column, i.e. -360 deg / 2048, so those
  files hold the authors' per-column *local* normals, not global ones. In them the second
  component is vertical and positive downwards (floor about -0.99, ceiling +0.99) and the
  third points back towards the camera (99 % of wall pixels have a positive third one):
  not the x right / y down / z forward camera frame of `pag.data.sample`.
* semantic: int64, 255 = ignore.

`AuthorsCrop` / `authors_crop` maps an official-layout panorama to the authors' 704 x 2048
geometry: a 2x downsample (2048 x 4096 -> 1024 x 2048; 2 x 2 area averaging for the image,
nearest, i.e. the top-left pixel of each 2 x 2 block, for labels, depth, normals, instance),
then the central 704 rows (rows 160..863, elevation about +-61.9 deg). This geometry is an
inference (the authors' code does not say how their files were made). Evidence for it: on
the two demo files, the camera height above the floor (depth * sin(-elevation) over floor
pixels), and the ceiling height, are constant across rows (coefficient of variation of the
per-row medians 0.7-1.8 %) when row r is placed at row r + 160 of a 1024-row, 180-degree
grid, against 5-20 % when the offset is moved by 20 rows; it also supports depth being ray
length in these files. The best offset per 256-column band lies between 157 and 161 (a
small camera tilt), and a fit over all pixels prefers 158, so offsets 158..160 cannot be told
apart from these two panoramas. The sampling phase of the authors' downsample (which pixel of
each 2 x 2 block they kept, or whether they filtered) is unknown.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from pag.data.base import CheckReport, DenseDataset, FetchSpec, Transform, register
from pag.data.codecs import decode_depth, decode_normals, read_image, require_same_size
from pag.data.sample import IGNORE_INDEX, Sample, make_sample
from pag.errors import DataError, PagError

CLASS_NAMES = (
    "clutter",
    "beam",
    "board",
    "bookcase",
    "ceiling",
    "chair",
    "column",
    "door",
    "floor",
    "sofa",
    "table",
    "wall",
    "window",
)
UNKNOWN_CLASS = "<UNK>"
AREAS = ("area_1", "area_2", "area_3", "area_4", "area_5a", "area_5b", "area_6")
SPLIT_AREAS: dict[str, tuple[str, ...]] = {
    "train": ("area_1", "area_2", "area_5a", "area_5b", "area_6"),
    "val": ("area_3", "area_4"),
}
# Panoramas per area in the authors' imdb.mat (paper.md §4.1).
AUTHORS_AREA_COUNTS: dict[str, int] = {
    "area_1": 190,
    "area_2": 299,
    "area_3": 85,
    "area_4": 258,
    "area_5a": 143,
    "area_5b": 230,
    "area_6": 208,
}
AUTHORS_SPLIT_COUNTS: dict[str, int] = {
    split: sum(AUTHORS_AREA_COUNTS[a] for a in areas) for split, areas in SPLIT_AREAS.items()
}
OFFICIAL_SIZE = (2048, 4096)  # H x W of the distributed panoramas
AUTHORS_SIZE = (704, 2048)  # H x W of the authors' processed panoramas
AUTHORS_FACTOR = 2
AUTHORS_TOP = 160  # first kept row of the 1024-row downsample: (1024 - 704) / 2

DEPTH_SCALE = 512.0  # raw units per metre
DEPTH_INVALID = 65535
DEPTH_MIN_RAW = 2  # the authors keep raw > 1
MISSING_INDEX = 0x0D0D0D  # 855309: semantic colour of missing mesh

LAYOUTS = ("auto", "official", "processed")
MODALITIES = ("rgb", "depth", "normals", "semantic")
# modality -> (folder under area_N/pano, file-name suffix) in the official layout
OFFICIAL_FOLDERS = {
    "rgb": ("rgb", "rgb"),
    "depth": ("depth", "depth"),
    "normals": ("normal", "normals"),
    "semantic": ("semantic", "semantic"),
}
_OFFICIAL_RE = re.compile(
    r"^(?P<key>camera_.+?)_frame_equirectangular_domain__?(?P<mod>rgb|depth|normals|semantic)\.png$"
)
_PROCESSED_RE = re.compile(r"^(?P<key>.+)_(?P<mod>rgb|depth|normals|semantic)\.png$")

LICENCE_FORM_URL = "https://goo.gl/forms/2YSPaO2UKmn5Td5m2"
CHECKSUM_URL = "https://github.com/alexsax/2D-3D-Semantics/wiki/Checksum-Values-for-Data"
LABELS_URL = (
    "https://raw.githubusercontent.com/alexsax/2D-3D-Semantics/master/assets/semantic_labels.json"
)

_MANUAL = f"""\
Stanford-2D-3D-Semantics needs a licence agreement, so it cannot be fetched automatically.
1. Fill in the licence form {LICENCE_FORM_URL}
   (linked from https://github.com/alexsax/2D-3D-Semantics); it leads to the data folders.
2. From the `noXYZ` folder (110 GB in all; the `withXYZ` variant is not needed) download the
   seven area archives: area_1_no_xyz.tar, area_2_no_xyz.tar, area_3_no_xyz.tar,
   area_4_no_xyz.tar, area_5a_no_xyz.tar, area_5b_no_xyz.tar, area_6_no_xyz.tar.
3. Verify each archive (e.g. `md5sum area_3_no_xyz.tar`) against the values on
   {CHECKSUM_URL}
4. Extract them into <data root>/stanford2d3d/ (data root: --data-root, else $PAG_DATA, else
   ./data) so that the panoramas lie in
     <data root>/stanford2d3d/area_N/pano/rgb/camera_*_frame_equirectangular_domain_rgb.png
   and likewise pano/depth (*_depth.png), pano/normal (*_normals.png) and pano/semantic
   (*_semantic.png), for N = 1, 2, 3, 4, 5a, 5b, 6. If an archive unpacks to
   area_N_no_xyz/area_N/, move area_N up one level. Only these four pano folders are read:
   area_N/data (perspective images), area_N/3d, pano/pose, pano/global_xyz and
   pano/semantic_pretty may be deleted.
5. Save assets/semantic_labels.json of https://github.com/alexsax/2D-3D-Semantics
   ({LABELS_URL}) as <data root>/stanford2d3d/assets/semantic_labels.json.
6. Run `pag data check stanford2d3d`; it compares the panoramas per area with the PAG
   authors' split (train = areas 1, 2, 5a, 5b, 6: 1,070; val = areas 3, 4: 343).
Panoramas already in the authors' 704 x 2048 format go in
<data root>/stanford2d3d/processed/{{train,val}}/<id>_{{rgb,depth,normals,semantic}}.png instead
(see the docstring of pag.data.stanford2d3d)."""


# ------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------


def load_semantic_labels(path: str | os.PathLike) -> np.ndarray:
    """Read ``semantic_labels.json``; return a lookup table: entry index -> class index
    (0..12, or 255 for ``<UNK>``), int64. A missing file, bad JSON or an entry whose class is
    not one of CLASS_NAMES / ``<UNK>`` raises `DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: file not found; expected the JSON list of "
            "'class_instance_roomType_roomNum_areaNum' labels from "
            "github.com/alexsax/2D-3D-Semantics assets/semantic_labels.json"
        )
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(labels, list) or not labels:
        raise DataError(f"{path}: expected a non-empty JSON list of label strings")
    lut = np.full(len(labels), IGNORE_INDEX, dtype=np.int64)
    class_index = {name: i for i, name in enumerate(CLASS_NAMES)}
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise DataError(f"{path}: entry {i} is {label!r}, expected a string")
        name = label.split("_", 1)[0]
        if name == UNKNOWN_CLASS:
            continue
        if name not in class_index:
            raise DataError(
                f"{path}: entry {i} {label!r} has class {name!r}; expected one of "
                f"{[*CLASS_NAMES, UNKNOWN_CLASS]}"
            )
        lut[i] = class_index[name]
    return lut


def decode_semantic_index(rgb: np.ndarray) -> np.ndarray:
    """24-bit index R*65536 + G*256 + B of an H x W x 3 uint8 image, as int64."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def semantic_from_index(
    index: np.ndarray, lut: np.ndarray, path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Class map (int64, 255 = ignore) and instance map (int32, 0 = none) from 24-bit label
    indices. MISSING_INDEX is ignored; any other index beyond `lut` raises `DataError`."""
    inside = index < len(lut)
    missing = index == MISSING_INDEX
    bad = ~inside & ~missing
    if bad.any():
        values = sorted({int(v) for v in np.unique(index[bad])[:5]})
        raise DataError(
            f"{path}: {int(bad.sum())} pixels hold label indices {values} beyond the "
            f"{len(lut)} entries of semantic_labels.json and not #0D0D0D (missing); is this a "
            "semantic_pretty image?"
        )
    safe = np.where(inside, index, 0)
    semantic = np.where(inside, lut[safe], IGNORE_INDEX).astype(np.int64)
    instance = np.where(semantic != IGNORE_INDEX, index, 0).astype(np.int32)
    return semantic, instance


def read_rgb_or_rgba(path: str | os.PathLike) -> np.ndarray:
    """An 8-bit RGB or RGBA PNG as H x W x 3 uint8 (alpha dropped); other modes: DataError."""
    array = read_image(path)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[..., :3])
    raise DataError(f"{path}: expected an 8-bit RGB(A) image, got {array.dtype} {array.shape}")


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """16-bit depth PNG -> metres (float32), 0 where raw is 65535 or <= 1."""
    raw = read_image(path, mode="I;16")
    return decode_depth(raw, DEPTH_SCALE, DEPTH_INVALID, min_raw=DEPTH_MIN_RAW)


def read_processed_semantic(path: str | os.PathLike) -> np.ndarray:
    """8-bit processed-layout labels -> int64; a value outside 0..12 other than 255 raises."""
    labels = read_image(path, mode="L")
    bad = (labels >= len(CLASS_NAMES)) & (labels != IGNORE_INDEX)
    if bad.any():
        values = sorted(int(v) for v in np.unique(labels[bad]))[:5]
        raise DataError(
            f"{path}: {int(bad.sum())} pixels hold labels {values}; expected "
            f"0..{len(CLASS_NAMES) - 1} or {IGNORE_INDEX} (ignore)"
        )
    return labels.astype(np.int64)


# ------------------------------------------------------------------------------------------
# the authors' geometry
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorsCrop:
    """Official panorama -> the authors' geometry: downsample by `factor` (image: area
    average over factor x factor blocks; semantic, depth, normals, instance, boundary:
    nearest, the top-left pixel of each block), then keep rows `top` .. `top + height - 1`.
    The defaults map 2048 x 4096 to 704 x 2048 (rows 160..863 of 1024). The geometry is an
    inference (see the module docstring for the evidence)."""

    factor: int = AUTHORS_FACTOR
    top: int = AUTHORS_TOP
    height: int = AUTHORS_SIZE[0]

    def __call__(self, sample: Sample) -> Sample:
        sid = sample.get("id", "<no id>")
        f = self.factor
        height, width = sample["image"].shape[-2:]
        if height % f or width % f or height // f < self.top + self.height:
            raise DataError(
                f"{sid}: authors_crop needs an image whose size divides by {f} and has at "
                f"least {f * (self.top + self.height)} rows (an official-layout panorama, "
                f"{OFFICIAL_SIZE[0]} x {OFFICIAL_SIZE[1]}); got {height} x {width}"
            )
        if "intrinsics" in sample:
            raise DataError(f"{sid}: authors_crop is for panoramas, which have no intrinsics")
        rows = slice(self.top, self.top + self.height)
        out: Sample = dict(sample)  # type: ignore[assignment]
        image = sample["image"]
        pooled = image.reshape(image.shape[0], height // f, f, width // f, f).mean(dim=(2, 4))
        out["image"] = pooled[:, rows].contiguous()
        for key in ("semantic", "depth", "normals", "instance", "boundary"):
            if key in sample:
                value: torch.Tensor = sample[key]  # type: ignore[literal-required]
                out[key] = value[..., ::f, ::f][..., rows, :].contiguous()  # type: ignore[literal-required]
        return out


authors_crop = AuthorsCrop()


# ------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------


def official_name(key: str, suffix: str) -> str:
    """File name of one modality of an official panorama: key = camera_{uuid}_{room}."""
    return f"{key}_frame_equirectangular_domain_{suffix}.png"


@dataclass(frozen=True)
class _Entry:
    sample_id: str
    group: str  # area (official) or split (processed)
    paths: dict[str, Path]


def detect_layout(root: str | os.PathLike) -> str:
    """'official' or 'processed', from which folders exist in the dataset dir `root`."""
    root = Path(root)
    official = [a for a in AREAS if (root / a).is_dir()] or (
        ["assets"] if (root / "assets" / "semantic_labels.json").is_file() else []
    )
    processed = (root / "processed").is_dir()
    if official and processed:
        raise DataError(
            f"{root}: holds both the official layout ({official[0]}/...) and the processed "
            "layout (processed/); pass layout='official' or layout='processed'"
        )
    if official:
        return "official"
    if processed:
        return "processed"
    nested = sorted(p.name for p in root.glob("area_*_no_xyz") if p.is_dir())
    hint = f" ({nested[0]}/ found: move the area_N folders inside up one level)" if nested else ""
    raise DataError(
        f"{root}: no Stanford-2D-3D layout found{hint}; expected either the official layout "
        "area_N/pano/{rgb,depth,normal,semantic}/camera_*_frame_equirectangular_domain_*.png "
        "(N = 1, 2, 3, 4, 5a, 5b, 6) with assets/semantic_labels.json, or the processed layout "
        "processed/{train,val}/<id>_{rgb,depth,normals,semantic}.png; "
        "run `pag data fetch stanford2d3d` for instructions"
    )


@register
class Stanford2D3D(DenseDataset):
    """Stanford-2D-3D panoramas, PAG authors' split; see the module docstring.

    `layout`: "auto" (default; detect), "official" or "processed".
    """

    name: ClassVar[str] = "stanford2d3d"
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    tasks: ClassVar[tuple[str, ...]] = ("semantic", "depth", "normals")
    class_names: ClassVar[tuple[str, ...]] = CLASS_NAMES
    fetch_spec: ClassVar[FetchSpec] = FetchSpec(manual=_MANUAL)

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Transform | None = None,
        layout: str = "auto",
    ):
        super().__init__(root, split, transform)
        if layout not in LAYOUTS:
            raise PagError(f"stanford2d3d: unknown layout {layout!r}; expected one of {LAYOUTS}")
        self.layout = detect_layout(self.root) if layout == "auto" else layout
        self._lut: np.ndarray | None = None
        if self.layout == "official":
            self._lut = load_semantic_labels(self.root / "assets" / "semantic_labels.json")
            self.entries = self._index_official()
        else:
            self.entries = self._index_processed()
        self.group_counts: dict[str, int] = {}
        for entry in self.entries:
            self.group_counts[entry.group] = self.group_counts.get(entry.group, 0) + 1

    # -- indexing --------------------------------------------------------------------------

    def _index_official(self) -> list[_Entry]:
        entries: list[_Entry] = []
        for area in SPLIT_AREAS[self.split]:
            area_dir = self.root / area
            if not area_dir.is_dir():
                hint = ""
                if (self.root / f"{area}_no_xyz" / area).is_dir():
                    hint = f" ({area}_no_xyz/{area} exists: move {area} up one level)"
                raise DataError(
                    f"{area_dir}: folder not found{hint}; split '{self.split}' needs "
                    f"{', '.join(SPLIT_AREAS[self.split])} from the noXYZ archives, each with "
                    "pano/{rgb,depth,normal,semantic}/"
                )
            found: dict[str, dict[str, Path]] = {}
            for modality, (folder, _suffix) in OFFICIAL_FOLDERS.items():
                folder_path = area_dir / "pano" / folder
                if not folder_path.is_dir():
                    raise DataError(
                        f"{folder_path}: folder not found; expected {area}/pano/{folder}/ with "
                        f"camera_*_frame_equirectangular_domain_{OFFICIAL_FOLDERS[modality][1]}"
                        ".png files"
                    )
                for path in folder_path.iterdir():
                    match = _OFFICIAL_RE.match(path.name)
                    if match and match["mod"] == OFFICIAL_FOLDERS[modality][1]:
                        found.setdefault(match["key"], {})[modality] = path
            if not found:
                raise DataError(
                    f"{area_dir / 'pano' / 'rgb'}: no panoramas "
                    "(camera_*_frame_equirectangular_domain_rgb.png) found"
                )
            for key in sorted(found):
                expected = {
                    m: area_dir / "pano" / folder / official_name(key, suffix)
                    for m, (folder, suffix) in OFFICIAL_FOLDERS.items()
                }
                self._require_all(found[key], expected)
                entries.append(_Entry(f"{area}/{key}", area, found[key]))
        return entries

    def _index_processed(self) -> list[_Entry]:
        split_dir = self.root / "processed" / self.split
        if not split_dir.is_dir():
            raise DataError(
                f"{split_dir}: folder not found; the processed layout needs "
                f"processed/{self.split}/<id>_{{rgb,depth,normals,semantic}}.png"
            )
        found: dict[str, dict[str, Path]] = {}
        for path in split_dir.iterdir():
            match = _PROCESSED_RE.match(path.name)
            if match and path.is_file():
                found.setdefault(match["key"], {})[match["mod"]] = path
        if not found:
            raise DataError(
                f"{split_dir}: empty split; expected <id>_{{rgb,depth,normals,semantic}}.png files"
            )
        entries = []
        for key in sorted(found):
            self._require_all(found[key], {m: split_dir / f"{key}_{m}.png" for m in MODALITIES})
            entries.append(_Entry(f"{self.split}/{key}", self.split, found[key]))
        return entries

    @staticmethod
    def _require_all(paths: dict[str, Path], expected: dict[str, Path]) -> None:
        missing = [m for m in MODALITIES if m not in paths]
        if missing:
            have = next(iter(paths.values()))
            raise DataError(
                f"{expected[missing[0]]}: file not found; every panorama needs "
                f"{'/'.join(MODALITIES)} (missing {missing}, found {have})"
            )

    # -- loading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Sample:
        entry = self.entries[index]
        paths = entry.paths
        instance = None
        if self.layout == "official":
            assert self._lut is not None
            image = read_rgb_or_rgba(paths["rgb"])
            normals_rgb = read_rgb_or_rgba(paths["normals"])
            index_map = decode_semantic_index(read_rgb_or_rgba(paths["semantic"]))
            semantic, instance = semantic_from_index(index_map, self._lut, paths["semantic"])
        else:
            image = read_image(paths["rgb"], mode="RGB")
            normals_rgb = read_image(paths["normals"], mode="RGB")
            semantic = read_processed_semantic(paths["semantic"])
        depth = read_depth(paths["depth"])
        normals, _valid = decode_normals(normals_rgb)
        targets = {"depth": depth, "normals": normals, "semantic": semantic}
        require_same_size(
            paths["rgb"], image.shape[:2], {paths[m]: a.shape[:2] for m, a in targets.items()}
        )
        return make_sample(
            entry.sample_id,
            image,
            semantic=semantic,
            depth=depth,
            normals=normals,
            instance=instance,
        )

    # -- verification ----------------------------------------------------------------------

    @classmethod
    def check(cls, root: str | os.PathLike, report: CheckReport) -> None:
        """Counts per area (official) or split (processed) against the authors' split, image
        sizes against 2048 x 4096 / 704 x 2048 (both reported as notes), then the base check
        (layout, decoding, sample contract)."""
        for split in cls.splits:
            try:
                dataset = cls(root, split)
            except PagError:
                continue  # the base check below reports it
            if dataset.layout == "official":
                expected_counts = {a: AUTHORS_AREA_COUNTS[a] for a in SPLIT_AREAS[split]}
                size = OFFICIAL_SIZE
            else:
                expected_counts = {split: AUTHORS_SPLIT_COUNTS[split]}
                size = AUTHORS_SIZE
            for group, expected in expected_counts.items():
                found = dataset.group_counts.get(group, 0)
                if found != expected:
                    report.note(
                        f"{group} ({split}) has {found} panoramas; the PAG authors' split "
                        f"(imdb.mat) uses {expected}. The data may hold a different set than the "
                        "authors used (e.g. more panoramas in the official release, or a partial "
                        "download): loading works, but results are not on the authors' exact set"
                    )
            wrong = []
            for entry in dataset.entries:
                try:
                    with Image.open(entry.paths["rgb"]) as img:
                        if (img.height, img.width) != size:
                            wrong.append(f"{entry.paths['rgb']} ({img.height} x {img.width})")
                except Exception:  # undecodable: the base check reports it
                    continue
            if wrong:
                report.note(
                    f"{len(wrong)} of {len(dataset)} {dataset.layout}-layout images in "
                    f"'{split}' are not {size[0]} x {size[1]}, e.g. {wrong[0]}"
                )
        super().check(root, report)
