"""Cityscapes (Cordts et al., CVPR 2016), fine annotations: 2975 train / 500 val / 1525 test
street scenes at 1024 x 2048, with semantic labels mapped to the 19 standard train ids.

Layout of `<root>/cityscapes` (manual download, see `fetch_spec`)::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png       8-bit label ids
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png    16-bit
    camera/{split}/{city}/{city}_{seq}_{frame}_camera.json               optional
    disparity/{split}/{city}/{city}_{seq}_{frame}_disparity.png          optional, 16-bit

Semantic: label ids map to train ids exactly as cityscapesscripts/helpers/labels.py
(mcordts/cityscapesScripts) does; every other id, including void and the ignored classes
(parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer), is 255. The
test split's public ground truth is a dummy, so its semantic map is all ignore.

Instance: in `instanceIds`, pixels of objects of instance classes hold label_id * 1000 +
object number (>= 1000); everything else (stuff, crowd regions) holds the plain label id.
The sample's `instance` keeps the >= 1000 values as the object id and sets the rest to 0.

Depth (optional task, not in `tasks`): when both `disparity/` and `camera/` exist, depth in
metres is baseline * fx / d with disparity d = (p - 1) / 256 for a pixel value p > 0 (p = 0
is invalid; p = 1 means d = 0, infinitely far, and is invalid too). Intrinsics come from the
camera json whenever `camera/` exists.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from pag.data.base import CheckReport, DenseDataset, FetchSpec, Transform, register
from pag.data.codecs import read_image, require_same_size
from pag.data.sample import IGNORE_INDEX, Sample, make_sample
from pag.errors import DataError

# label id -> train id, from cityscapesscripts' labels.py; all other ids are ignored (255).
LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CLASS_NAMES_19 = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
INSTANCE_MIN_ID = 1000
IMAGE_SUFFIX = "_leftImg8bit.png"

MANUAL_INSTRUCTIONS = """\
Cityscapes needs an account: register and log in at https://www.cityscapes-dataset.com/login/,
then download from https://www.cityscapes-dataset.com/downloads/
  gtFine_trainvaltest.zip        (241 MB, required)
  leftImg8bit_trainvaltest.zip   (11 GB, required)
  camera_trainvaltest.zip        (2 MB, optional: intrinsics, and depth with disparity)
  disparity_trainvaltest.zip     (optional: depth; needs camera_trainvaltest.zip too)
and unzip each into <data root>/cityscapes, so that it holds leftImg8bit/, gtFine/ and
optionally camera/ and disparity/, each with train/, val/ and test/ inside.
(`pip install cityscapesscripts` provides `csDownload`, which does the download with your
credentials.) Then run `pag data check cityscapes`."""


def _train_id_table() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in LABEL_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    lut.flags.writeable = False
    return lut


_TRAIN_ID_TABLE = _train_id_table()


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (H x W uint8) to the 19 train ids, 255 = ignore."""
    return _TRAIN_ID_TABLE[label_ids.astype(np.uint8)]


def object_ids(instance_ids: np.ndarray) -> np.ndarray:
    """instanceIds values >= 1000 (label_id * 1000 + n) as int32 object ids, others 0."""
    ids = instance_ids.astype(np.int32)
    ids[ids < INSTANCE_MIN_ID] = 0
    return ids


@dataclass(frozen=True)
class Camera:
    """What the loader uses from a `_camera.json` file."""

    intrinsics: np.ndarray  # 3 x 3
    baseline: float  # metres

    @property
    def fx(self) -> float:
        return float(self.intrinsics[0, 0])


def read_camera(path: Path) -> Camera:
    """Intrinsics (fx, fy, u0, v0) and stereo baseline from a Cityscapes camera json."""
    try:
        data = json.loads(path.read_text())
        intrinsic, baseline = data["intrinsic"], float(data["extrinsic"]["baseline"])
        fx, fy = float(intrinsic["fx"]), float(intrinsic["fy"])
        u0, v0 = float(intrinsic["u0"]), float(intrinsic["v0"])
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: expected JSON with intrinsic.fx/fy/u0/v0 and extrinsic.baseline: {exc!r}"
        ) from exc
    if not (fx > 0 and fy > 0 and baseline > 0):  # also rejects NaN
        raise DataError(f"{path}: fx, fy and baseline must be positive")
    return Camera(np.array([[fx, 0.0, u0], [0.0, fy, v0], [0.0, 0.0, 1.0]]), baseline)


def disparity_to_depth(raw: np.ndarray, camera: Camera) -> np.ndarray:
    """16-bit disparity PNG values to depth in metres; p <= 1 (no or zero disparity) -> 0."""
    valid = raw > 1
    disparity = (raw.astype(np.float64) - 1.0) / 256.0
    depth = np.zeros(raw.shape, dtype=np.float32)
    depth[valid] = camera.baseline * camera.fx / disparity[valid]
    return depth


@dataclass(frozen=True)
class Item:
    """The files of one frame; `camera` / `disparity` are None when that package is absent."""

    stem: str
    image: Path
    label_ids: Path
    instance_ids: Path
    camera: Path | None
    disparity: Path | None


def scan_split(root: Path, split: str) -> tuple[list[Item], list[str]]:
    """Every frame of a split in (city, name) order, and the problems found: images without
    their gtFine files, camera or disparity files. Raises `DataError` when the split's image
    folder is missing or empty, or when disparity exists without camera."""
    image_root = root / "leftImg8bit" / split
    if not image_root.is_dir():
        raise DataError(f"{image_root}: folder not found; expected leftImg8bit/{split}/<city>/")
    images = sorted(image_root.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"{image_root}: no *{IMAGE_SUFFIX} images; expected a non-empty split")
    has_camera = (root / "camera" / split).is_dir()
    has_disparity = (root / "disparity" / split).is_dir()
    if has_disparity and not has_camera:
        raise DataError(
            f"{root / 'disparity' / split}: depth needs the baseline and fx from camera/{split}/, "
            "which is missing; unzip camera_trainvaltest.zip too"
        )
    items, problems = [], []
    for image in images:
        item = _item_for(root, split, image, has_camera, has_disparity)
        missing = [p for p in (item.label_ids, item.instance_ids, item.camera, item.disparity) if p]
        missing = [p for p in missing if not p.is_file()]
        problems += [f"{path}: missing (for image {image})" for path in missing]
        items.append(item)
    return items, problems


def _item_for(root: Path, split: str, image: Path, camera: bool, disparity: bool) -> Item:
    city, stem = image.parent.name, image.name[: -len(IMAGE_SUFFIX)]

    def beside(folder: str, suffix: str) -> Path:
        return root / folder / split / city / f"{stem}{suffix}"

    return Item(
        stem=stem,
        image=image,
        label_ids=beside("gtFine", "_gtFine_labelIds.png"),
        instance_ids=beside("gtFine", "_gtFine_instanceIds.png"),
        camera=beside("camera", "_camera.json") if camera else None,
        disparity=beside("disparity", "_disparity.png") if disparity else None,
    )


@register
class Cityscapes(DenseDataset):
    """Cityscapes fine: image, 19-class semantic, instance, and where the optional packages
    are unzipped, intrinsics (camera/) and depth (disparity/ + camera/)."""

    name = "cityscapes"
    splits = ("train", "val", "test")
    tasks = ("semantic",)  # depth is optional: only with disparity/ and camera/
    class_names = CLASS_NAMES_19
    fetch_spec = FetchSpec(manual=MANUAL_INSTRUCTIONS)
    expected_counts: ClassVar[dict[str, int]] = {"train": 2975, "val": 500, "test": 1525}

    def __init__(self, root: str | os.PathLike, split: str, transform: Transform | None = None):
        super().__init__(root, split, transform)
        self.items, problems = scan_split(self.root, split)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DataError(problems[0] + more)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Sample:
        item = self.items[index]
        image = read_image(item.image, mode="RGB")
        label_ids = read_image(item.label_ids, mode="L")
        instance_ids = read_image(item.instance_ids, mode="I;16")
        sizes = {item.label_ids: label_ids.shape, item.instance_ids: instance_ids.shape}
        require_same_size(item.image, image.shape[:2], sizes)
        camera = read_camera(item.camera) if item.camera else None
        depth = None
        if item.disparity is not None and camera is not None:
            raw = read_image(item.disparity, mode="I;16")
            require_same_size(item.image, image.shape[:2], {item.disparity: raw.shape})
            depth = disparity_to_depth(raw, camera)
        return make_sample(
            item.stem,
            image,
            semantic=train_ids(label_ids),
            instance=object_ids(instance_ids),
            depth=depth,
            intrinsics=camera.intrinsics if camera else None,
        )

    @classmethod
    def check(cls, root: str | os.PathLike, report: CheckReport) -> None:
        """Image counts per split (2975 / 500 / 1525), every image's gtFine (and optional
        camera / disparity) files, then every sample."""
        for split, expected in cls.expected_counts.items():
            try:
                items, problems = scan_split(Path(root), split)
            except DataError:
                continue  # the base check below reports it, once
            if len(items) != expected:
                report.add(f"{split}: {len(items)} images, expected {expected}")
            for problem in problems:
                report.add(f"{split}: {problem}")
        super().check(root, report)
