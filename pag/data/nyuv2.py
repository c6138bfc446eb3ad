"""NYU-Depth-v2, labeled subset: 1449 indoor RGB-D frames with 40-class semantics, instances,
depth in metres and Ladický et al. surface normals, in the standard 795 / 654 split.

Layout of `<root>/nyuv2` (what `pag data fetch nyuv2` leaves there)::

    nyu_depth_v2_labeled.mat    MATLAB v7.3 (HDF5), read lazily with h5py
    splits.mat                  v5: trainNdxs (795x1), testNdxs (654x1), 1-based
    classMapping40.mat          v5: mapClass (1x894) raw label -> 1..40 (Gupta et al. 2013)
    train/NNNNN.png, test/NNNNN.png         Ladický normals (the zip's own layout), or
    nyu_normals_gt/{train,test}/NNNNN.png   the same unzipped into a folder of its name

h5py shows MATLAB arrays with their axes reversed: `images` is N x 3 x 640 x 480 and
`depths`, `labels`, `instances` are N x 640 x 480, so each frame is transposed back to
480 x 640 (VainF/nyuv2-python-toolkit: extract_nyuv2.py does the same).

Normals: evidence for the on-disk format of `nyu_normals_gt.zip` (Ladický, Zeisl, Pollefeys,
ECCV 2014), and the convention chosen here
---------------------------------------------------------------------------------------
* Files: one 8-bit RGB PNG per labeled frame, named by the frame's **1-based** index in the
  .mat, zero-padded to 5 digits, under `train/` and `test/` following splits.mat.
  xapharius/pytorch-nyuv2: nyuv2/nyuv2.py unzips into `nyu_normals_gt/`, uses
  `nyu_normals_gt/{train,test}` and strips the first digit to match its 4-digit
  1-based ids; MARSLab-UMN/TiltedImageSurfaceNormal: dataset_loader/dataset_loader_nyud.py
  reads `nyu_normals_gt/test/%05d.png % image_id`; kaykanloo/msc-project:
  MATLAB/NYUDataSet/buildDataSet.m reads `%05d.png` for ii = 1:1449 (all 1449 frames).
* Decoding: the two public decoders agree on "reverse the channel order, then 1 - 2 v / 255"
  (kaykanloo/msc-project: MATLAB/NYUDataSet/ladickyToNormals.m; the TiltedImage loader above
  does `255 - v` then swaps channels 0 and 2). TiltedImage keeps only pixels whose decoded
  z is > 0, and rotates normals with the same matrix it applies to pixel rays through K, so
  its frame is x right, y down, z forward with normals pointing *away* from the camera.
  Negating that gives this module's convention, in the sample contract's frame
  (x right, y down, z forward) with normals pointing *towards* the camera, out of the
  visible surface::

      n = 2 * (B, G, R) / 255 - 1      (file channel B -> x, G -> y, R -> z)

  so a floor (facing up) is about (0, -1, 0) and a wall facing the camera (0, 0, -1). This
  is what an OpenCV writer produces from a camera-frame (x, y, z) array, since OpenCV
  stores channel 0 as blue.
* Invalid pixels: grey, which decodes to a near-zero vector; like the decoders above, a
  pixel is valid when the decoded length lies in `codecs.NORMAL_VALID_NORM`, and is then
  renormalised; invalid pixels are all-zero. (Evaluation protocols such as Bansal et al.'s
  additionally keep only pixels with valid raw Kinect depth; that is the metric's choice.)
* Evidence is thin (two third-party decoders, no statement by the authors). On the first
  real download `check` therefore verifies the convention on the data itself: floor pixels
  must have a clearly negative mean y, and most valid normals must face the camera
  (n . ray < 0). If it reports a problem, fix `decode_ladicky_normals` before training.

Instances: NYU numbers instances within each raw class (the toolbox's get_instance_masks
pairs `labels` with `instances`), so the id returned is raw_label * 1000 + instance, unique
within a frame; 0 = none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import torch

from pag.data.base import CheckReport, DenseDataset, FetchSpec, RemoteFile, Transform, register
from pag.data.codecs import decode_normals, read_image, read_mat_v5
from pag.data.sample import IGNORE_INDEX, Sample, make_sample
from pag.errors import DataError, PagError
from pag.fileio import file_digest

LABELED_MAT = "nyu_depth_v2_labeled.mat"
SPLITS_MAT = "splits.mat"
MAPPING_MAT = "classMapping40.mat"
NORMALS_ZIP = "nyu_normals_gt.zip"
NORMALS_SUBDIR = "nyu_normals_gt"

_TOOLKIT_RAW = "https://raw.githubusercontent.com/VainF/nyuv2-python-toolkit/master"
LABELED_URL = "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat"
SPLITS_URL = f"{_TOOLKIT_RAW}/{SPLITS_MAT}"
MAPPING_URL = f"{_TOOLKIT_RAW}/{MAPPING_MAT}"
NORMALS_URL = "https://www.inf.ethz.ch/personal/ladickyl/nyu_normals_gt.zip"
SPLITS_MD5 = "08e3c3aea27130ac7c01ffd739a4535f"
MAPPING_MD5 = "e377c88729dd63af81205ac9a8634a19"

# RGB camera of the NYU toolbox (camera_params.m), as copied verbatim by many loaders.
NYU_RGB_INTRINSICS = np.array(
    [
        [5.1885790117450188e02, 0.0, 3.2558244941119034e02],
        [0.0, 5.1946961112127485e02, 2.5373616633400465e02],
        [0.0, 0.0, 1.0],
    ]
)

# The 40 classes of Gupta et al. (className in classMapping40.mat), spelling as in the file.
CLASS_NAMES_40 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
FLOOR_CLASS = CLASS_NAMES_40.index("floor")
NUM_RAW_LABELS = 894
INSTANCE_STRIDE = 1000
_SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}
_FRAME_KEYS = ("images", "depths", "labels", "instances")
_NORMAL_NAME = re.compile(r"^(\d{5})\.png$")


def read_splits(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """0-based frame indices per split from splits.mat, whose indices are 1-based."""
    contents = read_mat_v5(path, tuple(_SPLIT_KEYS.values()))
    splits: dict[str, np.ndarray] = {}
    for split, key in _SPLIT_KEYS.items():
        raw = np.asarray(contents[key]).ravel()
        if raw.size == 0 or not np.issubdtype(raw.dtype, np.number):
            raise DataError(f"{path}: '{key}' must be a non-empty numeric vector")
        if np.any(raw != np.round(raw)) or raw.min() < 1:
            raise DataError(f"{path}: '{key}' must hold 1-based integer indices")
        indices = raw.astype(np.int64) - 1
        if len(np.unique(indices)) != len(indices):
            raise DataError(f"{path}: '{key}' repeats indices")
        splits[split] = indices
    if np.intersect1d(splits["train"], splits["test"]).size:
        raise DataError(f"{path}: trainNdxs and testNdxs overlap")
    return splits


def read_class_mapping(path: str | os.PathLike) -> np.ndarray:
    """Lookup table raw label (0..894) -> 40-class index 0..39, with 0 (unlabeled) -> 255."""
    raw = np.asarray(read_mat_v5(path, ("mapClass",))["mapClass"]).ravel()
    if raw.size != NUM_RAW_LABELS or np.any(raw != np.round(raw)):
        raise DataError(f"{path}: 'mapClass' must hold {NUM_RAW_LABELS} integers, got {raw.size}")
    if raw.min() < 1 or raw.max() > len(CLASS_NAMES_40):
        raise DataError(f"{path}: 'mapClass' values must lie in 1..{len(CLASS_NAMES_40)}")
    lut = np.full(NUM_RAW_LABELS + 1, IGNORE_INDEX, dtype=np.int64)
    lut[1:] = raw.astype(np.int64) - 1
    return lut


def read_class_names(path: str | os.PathLike) -> list[str] | None:
    """The `className` cell array of classMapping40.mat as plain strings; None if absent."""
    contents = read_mat_v5(path, (), optional=("className",))
    if "className" not in contents:
        return None
    cells = [np.asarray(cell).ravel() for cell in np.asarray(contents["className"]).ravel()]
    return [str(cell[0]) if cell.size else "" for cell in cells]


def decode_ladicky_normals(rgb: np.ndarray) -> np.ndarray:
    """Ladický PNG (H x W x 3 uint8, RGB as PIL reads it) to camera-frame unit normals facing
    the camera: n = 2 (B, G, R) / 255 - 1; invalid (grey) pixels become all-zero. See the
    module docstring for the evidence."""
    normals, _valid = decode_normals(rgb[..., ::-1])
    return normals


def open_labeled_mat(path: str | os.PathLike) -> h5py.File:
    """Open the v7.3 labeled .mat read-only; a missing or corrupt file raises `DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected the NYU-Depth-v2 labeled .mat")
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError for truncated or damaged files
        raise DataError(
            f"{path}: cannot open as MATLAB v7.3 / HDF5 (truncated or corrupt?): {exc}"
        ) from exc


def labeled_frame_shape(handle: h5py.File, path: Path) -> tuple[int, int, int]:
    """(count, height, width) of the labeled .mat, after checking its four datasets agree."""
    try:
        shapes = {key: handle[key].shape for key in _FRAME_KEYS if key in handle}
    except Exception as exc:
        raise DataError(f"{path}: cannot read the dataset headers (corrupt?): {exc}") from exc
    missing = [key for key in _FRAME_KEYS if key not in shapes]
    if missing:
        raise DataError(f"{path}: missing dataset(s) {missing}; expected {list(_FRAME_KEYS)}")
    if len(shapes["images"]) != 4 or shapes["images"][1] != 3:
        raise DataError(f"{path}: 'images' must be N x 3 x W x H in h5py, got {shapes['images']}")
    count, _channels, width, height = shapes["images"]
    for key in _FRAME_KEYS[1:]:
        if shapes[key] != (count, width, height):
            raise DataError(f"{path}: '{key}' is {shapes[key]}, expected {(count, width, height)}")
    return count, height, width


def read_labeled_frame(handle: h5py.File, path: Path, index: int) -> dict[str, np.ndarray]:
    """Frame `index` (0-based) of every dataset, transposed back to H x W (x 3)."""
    frame: dict[str, np.ndarray] = {}
    for key in _FRAME_KEYS:
        try:
            raw = np.asarray(handle[key][index])
        except Exception as exc:  # a damaged compressed chunk fails here
            raise DataError(f"{path}: cannot read '{key}'[{index}] (corrupt?): {exc}") from exc
        frame[key] = raw.transpose(2, 1, 0) if key == "images" else raw.T
    return frame


def semantic_40(labels: np.ndarray, lut: np.ndarray, where: str) -> np.ndarray:
    """Raw NYU labels to 40-class indices (255 = unlabeled)."""
    if labels.size and labels.max() >= len(lut):
        raise DataError(f"{where}: raw label {int(labels.max())} exceeds {len(lut) - 1}")
    return lut[labels.astype(np.int64)]


def instance_ids(labels: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Frame-unique instance ids raw_label * 1000 + instance; 0 where either is 0."""
    labels = labels.astype(np.int32)
    instances = instances.astype(np.int32)
    ids = labels * INSTANCE_STRIDE + instances
    ids[(labels == 0) | (instances == 0)] = 0
    return ids


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """Metres as float32, with non-finite or non-positive values set to 0 (invalid)."""
    depth = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))


def find_normals_dir(root: Path) -> Path | None:
    """Where the unzipped normals live: `nyu_normals_gt/` if present, else the dataset dir
    itself when it holds the zip's `train/` or `test/` folders."""
    for candidate in (root / NORMALS_SUBDIR, root):
        if any((candidate / split).is_dir() for split in _SPLIT_KEYS):
            return candidate
    return None


def index_normals(root: Path) -> dict[int, Path]:
    """1-based frame number -> normals PNG, over both split folders of the zip."""
    normals_dir = find_normals_dir(root)
    if normals_dir is None:
        raise DataError(
            f"{root}: no Ladický normals found; expected {NORMALS_SUBDIR}/{{train,test}}/NNNNN.png "
            f"or {{train,test}}/NNNNN.png from {NORMALS_ZIP} (or pass normals=False)"
        )
    found: dict[int, Path] = {}
    for split in _SPLIT_KEYS:
        folder = normals_dir / split
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            match = _NORMAL_NAME.match(path.name)
            if match is None:
                continue
            number = int(match.group(1))
            if number in found:
                raise DataError(f"{path}: frame {number} also has normals at {found[number]}")
            found[number] = path
    if not found:
        raise DataError(f"{normals_dir}: no NNNNN.png normal maps under train/ or test/")
    return found


@register
class NYUDepthV2(DenseDataset):
    """NYU-Depth-v2 labeled frames: image, 40-class semantic, depth, normals, instance and the
    RGB intrinsics; splits "train" (795) and "test" (654) from splits.mat.

    `normals=False` skips the Ladický normals (no `normals` key), for setups without the zip.
    The HDF5 file is opened on first access in each process, so DataLoader workers each get
    their own handle.
    """

    name = "nyuv2"
    splits = ("train", "test")
    tasks = ("semantic", "depth", "normals")
    class_names = CLASS_NAMES_40
    fetch_spec = FetchSpec(
        files=(
            RemoteFile(url=LABELED_URL, filename=LABELED_MAT),
            RemoteFile(url=SPLITS_URL, filename=SPLITS_MAT, size=2626, md5=SPLITS_MD5),
            RemoteFile(url=MAPPING_URL, filename=MAPPING_MAT, size=10474, md5=MAPPING_MD5),
            RemoteFile(url=NORMALS_URL, filename=NORMALS_ZIP, extract=True),
        )
    )
    # What `check` expects of a complete download (class attributes so tests can shrink them).
    expected_images: ClassVar[int] = 1449
    expected_split_sizes: ClassVar[dict[str, int]] = {"train": 795, "test": 654}
    expected_md5: ClassVar[dict[str, str]] = {SPLITS_MAT: SPLITS_MD5, MAPPING_MAT: MAPPING_MD5}

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Transform | None = None,
        *,
        normals: bool = True,
    ):
        super().__init__(root, split, transform)
        self.mat_path = self.root / LABELED_MAT
        self.indices = read_splits(self.root / SPLITS_MAT)[split]
        self.lut = read_class_mapping(self.root / MAPPING_MAT)
        with open_labeled_mat(self.mat_path) as handle:
            self.num_frames, self.height, self.width = labeled_frame_shape(handle, self.mat_path)
        if self.indices.max() >= self.num_frames:
            raise DataError(
                f"{self.root / SPLITS_MAT}: index {int(self.indices.max()) + 1} exceeds the "
                f"{self.num_frames} frames of {self.mat_path}"
            )
        self.normal_paths = self._normals_for_split() if normals else None
        self._handle: h5py.File | None = None
        self._handle_pid: int | None = None

    def _normals_for_split(self) -> list[Path]:
        found = index_normals(self.root)
        paths = []
        for index in self.indices:
            number = int(index) + 1
            if number not in found:
                raise DataError(
                    f"{self.root}: no normals for frame {number:05d}; expected "
                    f"{{train,test}}/{number:05d}.png from {NORMALS_ZIP}"
                )
            paths.append(found[number])
        return paths

    def _labeled(self) -> h5py.File:
        """This process's handle on the labeled .mat (h5py handles do not survive fork)."""
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = open_labeled_mat(self.mat_path)
            self._handle_pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_handle_pid"] = None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Sample:
        frame_index = int(self.indices[index])
        sample_id = f"{frame_index + 1:05d}"
        frame = read_labeled_frame(self._labeled(), self.mat_path, frame_index)
        where = f"{self.mat_path}[{frame_index}]"
        normals = None
        if self.normal_paths is not None:
            normals = self._read_normals(self.normal_paths[index])
        return make_sample(
            sample_id,
            np.ascontiguousarray(frame["images"], dtype=np.uint8),
            semantic=semantic_40(frame["labels"], self.lut, where),
            depth=clean_depth(frame["depths"]),
            normals=normals,
            instance=instance_ids(frame["labels"], frame["instances"]),
            intrinsics=NYU_RGB_INTRINSICS,
        )

    def _read_normals(self, path: Path) -> np.ndarray:
        rgb = read_image(path, mode="RGB")
        if rgb.shape[:2] != (self.height, self.width):
            raise DataError(
                f"{path}: normal map is {rgb.shape[:2]}, frames are {(self.height, self.width)}"
            )
        return decode_ladicky_normals(rgb)

    @classmethod
    def check(cls, root: str | os.PathLike, report: CheckReport) -> None:
        """Files present, checksums, frame and split counts, normals coverage, every sample,
        and finally the normal convention on the data itself (see module docstring)."""
        root = Path(root)
        missing = [
            name for name in (LABELED_MAT, SPLITS_MAT, MAPPING_MAT) if not (root / name).is_file()
        ]
        for name in missing:
            report.add(f"{root / name}: missing; run `pag data fetch {cls.name}`")
        if missing:
            return
        for name, md5 in cls.expected_md5.items():
            digest = file_digest(root / name, "md5")
            if digest != md5:
                report.add(f"{root / name}: md5 {digest}, expected {md5}")
        try:
            cls._check_counts(root, report)
        except PagError as exc:
            report.add(str(exc))
            return  # the frames or splits cannot be read: nothing further can be checked
        try:
            cls._check_normals_count(root, report)
        except PagError as exc:
            report.add(str(exc))
        super().check(root, report)
        _check_normal_convention(cls, root, report)

    @classmethod
    def _check_counts(cls, root: Path, report: CheckReport) -> None:
        with open_labeled_mat(root / LABELED_MAT) as handle:
            count, _height, _width = labeled_frame_shape(handle, root / LABELED_MAT)
        if count != cls.expected_images:
            report.add(f"{root / LABELED_MAT}: {count} frames, expected {cls.expected_images}")
        for split, indices in read_splits(root / SPLITS_MAT).items():
            expected = cls.expected_split_sizes[split]
            if len(indices) != expected:
                report.add(
                    f"{root / SPLITS_MAT}: {split} has {len(indices)} indices, expected {expected}"
                )
        names = read_class_names(root / MAPPING_MAT)
        if names is not None and [n.lower() for n in names] != list(CLASS_NAMES_40):
            report.add(
                f"{root / MAPPING_MAT}: className {names} differs from the 40 names expected"
            )

    @classmethod
    def _check_normals_count(cls, root: Path, report: CheckReport) -> None:
        if find_normals_dir(root) is None:
            return  # reported by the base check, which cannot build the splits
        found = len(index_normals(root))
        if found != cls.expected_images:
            report.add(f"{root}: {found} Ladický normal maps, expected {cls.expected_images}")


# How many test frames the convention check looks at, and what it accepts.
CONVENTION_FRAMES = 50
FLOOR_MAX_MEAN_Y = -0.5  # floors face up, which is -y in the camera frame
MIN_FACING_FRACTION = 0.75  # visible surfaces face the camera: n . ray < 0


def _check_normal_convention(cls: type[NYUDepthV2], root: Path, report: CheckReport) -> None:
    """Report when decoded normals contradict the geometry: floors must face up and most
    surfaces must face the camera. Catches a wrong channel order or sign on real data."""
    try:
        dataset = cls(root, "test")
    except PagError:
        return  # already reported by the base check
    floor_y: list[torch.Tensor] = []
    facing: list[torch.Tensor] = []
    for index in range(min(CONVENTION_FRAMES, len(dataset))):
        try:
            sample = dataset.load(index)
        except PagError:
            continue  # already reported by the base check
        normals = sample["normals"]
        valid = normals.norm(dim=0) > 0
        floor_y.append(normals[1][valid & (sample["semantic"] == FLOOR_CLASS)])
        facing.append((normals * _pixel_rays(*valid.shape)).sum(dim=0)[valid] < 0)
    floor = torch.cat(floor_y) if floor_y else torch.empty(0)
    if floor.numel() and floor.mean() > FLOOR_MAX_MEAN_Y:
        report.add(
            f"{root}: floor normals have mean y {floor.mean():.2f} (expected < {FLOOR_MAX_MEAN_Y}, "
            "floors face -y): the Ladický decoding in pag/data/nyuv2.py does not fit this data"
        )
    faces = torch.cat(facing) if facing else torch.empty(0, dtype=torch.bool)
    if faces.numel() and faces.float().mean() < MIN_FACING_FRACTION:
        report.add(
            f"{root}: only {faces.float().mean():.0%} of valid normals face the camera "
            f"(expected >= {MIN_FACING_FRACTION:.0%}): the Ladický decoding does not fit this data"
        )


def _pixel_rays(height: int, width: int) -> torch.Tensor:
    """3 x H x W viewing rays K^-1 (u, v, 1) of the NYU RGB camera."""
    k = torch.as_tensor(NYU_RGB_INTRINSICS, dtype=torch.float32)
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)])
