"""The one sample type every dataset returns, so later code never special-cases a dataset.

A sample is a dict. `image` is always present; targets appear when the dataset has them:

==============  ==========================  =============================================
key             type / shape                meaning
==============  ==========================  =============================================
``image``       float32, 3 x H x W          RGB in [0, 1] (normalisation is a transform)
``semantic``    int64, H x W                class index, ``IGNORE_INDEX`` (255) = ignore
``depth``       float32, H x W              metres along the optical axis (or ray length
                                            for panoramas), 0 = invalid
``normals``     float32, 3 x H x W          unit vectors, all-zero where invalid; in the
                                            camera frame (x right, y down, z forward) for
                                            pinhole images; panoramas (no single camera
                                            frame) say which frame in their loader
``boundary``    uint8, K x H x W            one binary map per annotator (K >= 1)
``instance``    int32, K x H x W            region / instance ids per annotator, 0 = none
``intrinsics``  float32, 3 x 3              pinhole camera matrix, where the camera is known;
                                            pixel (row v, column u) has its centre at
                                            image coordinates (u + 0.5, v + 0.5)
``id``          str                         stable identifier of the sample within its split
==============  ==========================  =============================================
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import torch

from pag.errors import DataError

IGNORE_INDEX = 255
TARGET_KEYS = ("semantic", "depth", "normals", "boundary", "instance")
SPATIAL_KEYS = ("image", *TARGET_KEYS)
TASKS = ("semantic", "boundary", "depth", "normals")


class Sample(TypedDict, total=False):
    image: torch.Tensor
    semantic: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    boundary: torch.Tensor
    instance: torch.Tensor
    intrinsics: torch.Tensor
    id: str


def make_sample(
    sample_id: str,
    image: np.ndarray,
    *,
    semantic: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    boundary: np.ndarray | None = None,
    instance: np.ndarray | None = None,
    intrinsics: np.ndarray | None = None,
) -> Sample:
    """Build a sample from decoded numpy arrays in HWC / HW / KHW layout."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(
            f"{sample_id}: image must be H x W x 3 uint8, got {image.dtype} {image.shape}"
        )
    out: Sample = {
        "id": sample_id,
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0,
    }
    if semantic is not None:
        out["semantic"] = torch.from_numpy(np.ascontiguousarray(semantic, dtype=np.int64))
    if depth is not None:
        out["depth"] = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))
    if normals is not None:
        chw = normals.transpose(2, 0, 1)
        out["normals"] = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))
    if boundary is not None:
        b = boundary[None] if boundary.ndim == 2 else boundary
        out["boundary"] = torch.from_numpy(np.ascontiguousarray(b, dtype=np.uint8))
    if instance is not None:
        i = instance[None] if instance.ndim == 2 else instance
        out["instance"] = torch.from_numpy(np.ascontiguousarray(i, dtype=np.int32))
    if intrinsics is not None:
        out["intrinsics"] = torch.as_tensor(np.asarray(intrinsics, dtype=np.float32))
    return out


_EXPECTED = {
    "image": (torch.float32, 3),
    "semantic": (torch.int64, 2),
    "depth": (torch.float32, 2),
    "normals": (torch.float32, 3),
    "boundary": (torch.uint8, 3),
    "instance": (torch.int32, 3),
}


def validate_sample(
    sample: dict[str, Any], num_classes: int | None = None, files: dict[str, Any] | None = None
) -> None:
    """Check a sample against the contract above; raise `DataError` naming the key at fault,
    and the file it was read from when `files` ({key: path}) says."""
    sample_id = sample.get("id", "<no id>")
    files = files or {}

    def where(key: str) -> str:
        return f"{files[key]} ({sample_id})" if key in files else str(sample_id)

    if "image" not in sample:
        raise DataError(f"{sample_id}: sample has no 'image'")
    unknown = set(sample) - {*SPATIAL_KEYS, "intrinsics", "id"}
    if unknown:
        raise DataError(f"{sample_id}: unknown sample keys {sorted(unknown)}")
    height, width = sample["image"].shape[-2:]
    for key, (dtype, ndim) in _EXPECTED.items():
        if key not in sample:
            continue
        value = sample[key]
        if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.ndim != ndim:
            got = f"{getattr(value, 'dtype', type(value))} with {getattr(value, 'ndim', '?')} dims"
            raise DataError(f"{where(key)}: '{key}' must be {dtype} with {ndim} dims, got {got}")
        if tuple(value.shape[-2:]) != (height, width):
            raise DataError(
                f"{where(key)}: '{key}' is {tuple(value.shape[-2:])}, image is {(height, width)}"
            )
    if sample["image"].shape[0] != 3:
        raise DataError(
            f"{where('image')}: 'image' must have 3 channels, got {sample['image'].shape[0]}"
        )
    if sample["image"].numel() == 0:
        raise DataError(f"{where('image')}: 'image' is empty")
    if "normals" in sample:
        n = sample["normals"]
        if n.shape[0] != 3:
            raise DataError(f"{where('normals')}: 'normals' must have 3 channels, got {n.shape[0]}")
        # squared lengths within those of 1 -+ 1e-3 (Tensor.norm over dim 0 is ~100x slower,
        # and this runs on every training sample)
        squared = (n * n).sum(dim=0)
        lo, hi = torch.where(squared > 0, squared, 1.0).aminmax()  # invalid pixels count as 1
        if not (1 - 1e-3) ** 2 <= lo <= hi <= (1 + 1e-3) ** 2:
            raise DataError(f"{where('normals')}: 'normals' are not unit vectors where valid")
    if "depth" in sample:
        lo, hi = sample["depth"].aminmax()  # NaN propagates, and fails the test
        if not 0 <= lo <= hi < float("inf"):
            raise DataError(f"{where('depth')}: 'depth' must be finite and >= 0 (0 = invalid)")
    if "semantic" in sample and num_classes is not None:
        s = sample["semantic"]
        lo, hi = s.aminmax()
        if lo < 0 or (hi >= num_classes and ((s >= num_classes) & (s != IGNORE_INDEX)).any()):
            bad = (s != IGNORE_INDEX) & ((s < 0) | (s >= num_classes))
            labels = sorted(set(s[bad].tolist()))[:5]
            raise DataError(
                f"{where('semantic')}: 'semantic' has labels {labels} outside "
                f"0..{num_classes - 1} and != {IGNORE_INDEX}"
            )
    if "intrinsics" in sample and tuple(sample["intrinsics"].shape) != (3, 3):
        raise DataError(f"{where('intrinsics')}: 'intrinsics' must be 3 x 3")


def collate_samples(batch: list[Sample]) -> dict[str, Any]:
    """Stack samples into a batch; keys whose shapes differ (BSDS annotator counts) stay lists."""
    out: dict[str, Any] = {}
    keys = set(batch[0])
    for sample in batch[1:]:
        if set(sample) != keys:
            raise DataError(
                f"cannot batch samples with different keys: {sorted(keys)} vs {sorted(sample)}"
            )
    for key in sorted(keys):
        values = [s[key] for s in batch]  # type: ignore[literal-required]
        if isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
