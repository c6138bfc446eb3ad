"""Tiny fixtures in the exact on-disk formats of NYU-Depth-v2, BSDS500 and Cityscapes, written
independently of the loaders (PIL, h5py, scipy directly) so the tests check the loaders
against the formats rather than against themselves. Imported by the tests as
`from fixtures_real import ...` (tests/ has no __init__.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

# --------------------------------------------------------------------------- generic helpers


def write_png(path: Path, array: np.ndarray) -> Path:
    """uint8 H x W (x 3) or uint16 H x W as PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def truncate_file(path: Path, keep: float = 0.5) -> None:
    """Cut a file to `keep` of its length, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_bytes(path: Path, offset: int, count: int = 16) -> None:
    """Invert `count` bytes starting at `offset` (bit rot / a damaged copy)."""
    data = bytearray(path.read_bytes())
    for i in range(offset, min(offset + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- MATLAB v7.3

MATLAB_V73_TEXT = (
    "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Jun  6 12:00:00 2012 "
    "HDF5 schema 1.00 ."
)


def matlab_v73_header() -> bytes:
    """The 128-byte header MATLAB writes into the 512-byte HDF5 userblock of a v7.3 file:
    116 bytes of text, 8 bytes subsystem offset, version 0x0200 and the endian mark 'IM'."""
    text = MATLAB_V73_TEXT.encode("ascii").ljust(116, b" ")
    return text + b" " * 8 + b"\x00\x02" + b"IM"


def write_matlab_v73(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """An HDF5 file that looks like MATLAB's v7.3: 512-byte userblock with the MATLAB header,
    one gzip-compressed dataset per variable chunked per frame (axis 0), and the
    MATLAB_class attribute MATLAB sets. `arrays` must already be in h5py (reversed) order."""
    classes = {np.uint8: "uint8", np.uint16: "uint16", np.float32: "single", np.float64: "double"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as handle:
        for name, array in arrays.items():
            chunks = (1, *array.shape[1:])
            dataset = handle.create_dataset(name, data=array, chunks=chunks, compression="gzip")
            dataset.attrs["MATLAB_class"] = np.bytes_(classes[array.dtype.type])
    with open(path, "r+b") as raw:
        raw.write(matlab_v73_header())
    return path


# --------------------------------------------------------------------------- NYU-Depth-v2

NYU_HEIGHT, NYU_WIDTH = 6, 8
NYU_FRAMES = 5
NYU_TRAIN = (2, 4, 5)  # 1-based, as in splits.mat
NYU_TEST = (1, 3)
RAW_WALL, RAW_FLOOR, RAW_OTHER, RAW_LAST = 21, 11, 5, 894
# mapClass entries the tests rely on (raw label -> 1-based 40-class id).
NYU_KNOWN_MAP = {RAW_WALL: 1, RAW_FLOOR: 2, RAW_OTHER: 5, RAW_LAST: 40}
NYU_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip

# Pixels with a special role in every frame (row, col).
PIX_UNLABELED = (0, 0)  # raw label 0, grey (invalid) normal, depth 0
PIX_OTHER = (0, 1)  # raw label 5, normal facing right (+x), instance 0
PIX_LAST = (0, 2)  # raw label 894, instance 2
FLOOR_ROW = 5  # the bottom row is floor, facing up (-y)


def ladicky_rgb(normal: tuple[float, float, float], negate: bool = False) -> tuple[int, ...]:
    """The RGB a Ladický PNG holds for a camera-frame normal (x right, y down, z forward,
    pointing at the camera): v = (n + 1) * 127.5 per axis, x in blue, y in green, z in red.
    `negate` writes the opposite vector, i.e. a file whose convention differs from it."""
    x, y, z = (-c for c in normal) if negate else normal
    return tuple(round((c + 1.0) * 127.5) for c in (z, y, x))


@dataclass
class NyuFixture:
    root: Path
    images: np.ndarray  # N x H x W x 3 uint8, as MATLAB sees it
    depths: np.ndarray  # N x H x W float32
    labels: np.ndarray  # N x H x W uint16
    instances: np.ndarray  # N x H x W uint8
    map_class: np.ndarray  # 894 values in 1..40
    normal_paths: dict[int, Path] = field(default_factory=dict)  # 1-based frame -> PNG

    @property
    def mat_path(self) -> Path:
        return self.root / "nyu_depth_v2_labeled.mat"


def nyu_frames(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Images, depths, labels, instances (N x H x W [x 3]) with the special pixels above."""
    shape = (NYU_FRAMES, NYU_HEIGHT, NYU_WIDTH)
    images = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    labels = np.full(shape, RAW_WALL, dtype=np.uint16)
    labels[:, FLOOR_ROW, :] = RAW_FLOOR
    labels[(slice(None), *PIX_UNLABELED)] = 0
    labels[(slice(None), *PIX_OTHER)] = RAW_OTHER
    labels[(slice(None), *PIX_LAST)] = RAW_LAST
    instances = np.ones(shape, dtype=np.uint8)
    instances[(slice(None), *PIX_OTHER)] = 0
    instances[(slice(None), *PIX_LAST)] = 2
    frame = np.arange(1, NYU_FRAMES + 1, dtype=np.float32)[:, None, None]
    depths = frame + np.linspace(0.5, 2.0, NYU_HEIGHT * NYU_WIDTH, dtype=np.float32).reshape(
        NYU_HEIGHT, NYU_WIDTH
    )
    depths[(slice(None), *PIX_UNLABELED)] = 0.0
    return images, depths.astype(np.float32), labels, instances


def nyu_normal_rgb(negate: bool = False) -> np.ndarray:
    """One Ladický normal map: walls facing the camera, the floor row facing up, one pixel
    facing right, one grey (invalid) pixel."""
    rgb = np.empty((NYU_HEIGHT, NYU_WIDTH, 3), dtype=np.uint8)
    rgb[:] = ladicky_rgb((0.0, 0.0, -1.0), negate)
    rgb[FLOOR_ROW, :] = ladicky_rgb((0.0, -1.0, 0.0), negate)
    rgb[PIX_OTHER] = ladicky_rgb((1.0, 0.0, 0.0), negate)
    rgb[PIX_UNLABELED] = (128, 128, 128)
    return rgb


def make_nyu(
    root: Path, *, normals_layout: str = "zip", negate_normals: bool = False, seed: int = 0
) -> NyuFixture:
    """Write `<root>` as after `pag data fetch nyuv2`: the v7.3 labeled .mat, splits.mat,
    classMapping40.mat and the normals zip's train/ and test/ folders ("zip"), or the same
    under nyu_normals_gt/ ("nested"), or none ("none")."""
    rng = np.random.default_rng(seed)
    images, depths, labels, instances = nyu_frames(rng)
    fixture = NyuFixture(root, images, depths, labels, instances, nyu_map_class())
    write_matlab_v73(
        fixture.mat_path,
        {
            "images": images.transpose(0, 3, 2, 1).copy(),  # MATLAB H x W x 3 x N, reversed
            "depths": depths.transpose(0, 2, 1).copy(),
            "rawDepths": depths.transpose(0, 2, 1).copy(),
            "labels": labels.transpose(0, 2, 1).copy(),
            "instances": instances.transpose(0, 2, 1).copy(),
        },
    )
    scipy.io.savemat(
        root / "splits.mat",
        {
            "trainNdxs": np.array(NYU_TRAIN, dtype=np.float64)[:, None],
            "testNdxs": np.array(NYU_TEST, dtype=np.float64)[:, None],
        },
    )
    class_names = np.empty((1, len(NYU_CLASS_NAMES)), dtype=object)
    class_names[0, :] = NYU_CLASS_NAMES
    scipy.io.savemat(
        root / "classMapping40.mat",
        {"mapClass": fixture.map_class[None, :].astype(np.float64), "className": class_names},
    )
    if normals_layout != "none":
        base = root / "nyu_normals_gt" if normals_layout == "nested" else root
        for split, numbers in (("train", NYU_TRAIN), ("test", NYU_TEST)):
            for number in numbers:
                path = base / split / f"{number:05d}.png"
                fixture.normal_paths[number] = write_png(path, nyu_normal_rgb(negate_normals))
    return fixture


def nyu_map_class() -> np.ndarray:
    """894 raw labels -> 1..40, cycling, with the entries of NYU_KNOWN_MAP set."""
    map_class = (np.arange(894) % 40 + 1).astype(np.int64)
    for raw, mapped in NYU_KNOWN_MAP.items():
        map_class[raw - 1] = mapped
    return map_class


# --------------------------------------------------------------------------- BSDS500

BSDS_DATA = Path("BSR", "BSDS500", "data")
# split -> [(image id, height, width)]: one portrait and one landscape image in train.
BSDS_IMAGES = {
    "train": [("2092", 5, 4), ("100075", 4, 6)],
    "val": [("3096", 4, 6)],
    "test": [("100007", 6, 4)],
}
BSDS_ANNOTATORS = 5  # the real release: 4 to 9 per image, 5 for most (tests/test_bsds500_real.py)


def bsds_annotations(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K segmentations (uint16, ids from 1) and their boundary maps (bool), per annotator; the
    boundaries derived from the segmentations as in the real files (`boundaries_of`)."""
    from pag.data.bsds500 import boundaries_of

    rng = np.random.default_rng(seed)
    segments = rng.integers(1, 4, (BSDS_ANNOTATORS, height, width)).astype(np.uint16)
    boundaries = np.stack([boundaries_of(segment) for segment in segments])
    return segments, boundaries


def write_bsds_mat(path: Path, segments: np.ndarray, boundaries: np.ndarray) -> Path:
    """A groundTruth .mat as in BSDS500: a 1 x K cell array of structs with Segmentation
    and Boundaries (savemat writes dicts as structs, logical arrays as uint8)."""
    cell = np.empty((1, len(segments)), dtype=object)
    for k in range(len(segments)):
        cell[0, k] = {"Segmentation": segments[k], "Boundaries": boundaries[k]}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"groundTruth": cell})
    return path


def make_bsds(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the extracted BSR layout under `root`; returns id -> (segments, boundaries)."""
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, images in BSDS_IMAGES.items():
        image_dir = root / BSDS_DATA / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        (image_dir / "Thumbs.db").write_bytes(b"not an image")  # the real archive has these
        for seed, (image_id, height, width) in enumerate(images):
            rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(image_dir / f"{image_id}.jpg", quality=95)
            segments, boundaries = bsds_annotations(height, width, seed=int(image_id))
            write_bsds_mat(
                root / BSDS_DATA / "groundTruth" / split / f"{image_id}.mat", segments, boundaries
            )
            truth[image_id] = (segments, boundaries)
    return truth


# --------------------------------------------------------------------------- Cityscapes

CS_HEIGHT, CS_WIDTH = 4, 6
# split -> [(city, "seq_frame")]
CS_FRAMES = {
    "train": [
        ("aachen", "000000_000019"),
        ("aachen", "000001_000019"),
        ("bochum", "000000_000313"),
    ],
    "val": [("frankfurt", "000000_000294")],
    "test": [("berlin", "000000_000019")],
}
CS_CAMERA = {
    "extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1,
                  "yaw": -0.0195, "z": 1.22},
    "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137},
}  # fmt: skip
# label ids in the first row, covering trained, ignored and void classes.
CS_LABEL_ROW = np.array([7, 26, 33, 9, 0, 23], dtype=np.uint8)
# instanceIds in the first row: car objects, a crowd of persons (plain id), road, void.
CS_INSTANCE_ROW = np.array([26001, 26002, 24, 7, 0, 33000], dtype=np.uint16)
# disparity PNG values in the first row: invalid (0), zero disparity (1), d = 1, 2, 0.5, 100.
CS_DISPARITY_ROW = np.array([0, 1, 257, 513, 129, 25601], dtype=np.uint16)


def cityscapes_stem(city: str, frame: str) -> str:
    return f"{city}_{frame}"


def make_cityscapes(root: Path, *, camera: bool = True, disparity: bool = True) -> Path:
    """Write leftImg8bit/, gtFine/ and optionally camera/ and disparity/ as unzipped from the
    official packages; every frame has the rows above and road (7) elsewhere."""
    for split, frames in CS_FRAMES.items():
        for city, frame in frames:
            stem = cityscapes_stem(city, frame)
            rng = np.random.default_rng(len(stem))
            image = rng.integers(0, 256, (CS_HEIGHT, CS_WIDTH, 3), dtype=np.uint8)
            write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            gt = root / "gtFine" / split / city
            labels = np.full((CS_HEIGHT, CS_WIDTH), 7, dtype=np.uint8)
            labels[0] = CS_LABEL_ROW
            write_png(gt / f"{stem}_gtFine_labelIds.png", labels)
            instances = np.full((CS_HEIGHT, CS_WIDTH), 7, dtype=np.uint16)
            instances[0] = CS_INSTANCE_ROW
            write_png(gt / f"{stem}_gtFine_instanceIds.png", instances)
            if camera:
                path = root / "camera" / split / city / f"{stem}_camera.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(CS_CAMERA, indent=2))
            if disparity:
                raw = np.full((CS_HEIGHT, CS_WIDTH), 257, dtype=np.uint16)
                raw[0] = CS_DISPARITY_ROW
                write_png(root / "disparity" / split / city / f"{stem}_disparity.png", raw)
    return root
