"""On-disk encodings shared by the datasets: PNG/JPEG reading with clear errors, 16-bit depth,
RGB-encoded normals, and one-pixel-wide boundaries from region ids."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pag.errors import DataError
from pag.fileio import write_bytes_atomic

# RGB value of a missing normal (decodes to a near-zero vector), as in Stanford-2D-3D.
NORMAL_INVALID_RGB = 128
# Decoded normals whose length lies outside this open interval are invalid (authors' code).
NORMAL_VALID_NORM = (0.8, 1.1)


def read_image(path: str | os.PathLike, *, mode: str | None = None) -> np.ndarray:
    """Decode an image file fully; a missing, truncated or corrupt file raises `DataError`.

    `mode`: "RGB" (H x W x 3 uint8), "L" (H x W uint8), "I;16" (H x W uint16); None keeps
    the file's own mode and checks nothing about it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                file_mode = img.mode
                array = np.asarray(img)
    except DataError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error ...
        raise DataError(f"{path}: cannot decode image (truncated or corrupt?): {exc}") from exc
    return _check_mode(path, file_mode, array, mode)


def _check_mode(path: Path, file_mode: str, array: np.ndarray, mode: str | None) -> np.ndarray:
    if mode is None:
        return array
    if mode == "RGB":
        if file_mode == "RGB":
            return array
        if file_mode in ("L", "P", "RGBA"):
            raise DataError(f"{path}: expected an RGB image, got PIL mode {file_mode}")
    elif mode == "L":
        if file_mode in ("L", "P"):
            return array.astype(np.uint8, copy=False)
    elif mode == "I;16":
        if file_mode in ("I;16", "I;16B", "I;16L", "I"):
            if array.dtype != np.uint16:
                if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
                    raise DataError(f"{path}: 16-bit PNG values outside 0..65535")
                array = array.astype(np.uint16)
            return array
    else:
        raise ValueError(f"unknown image mode {mode!r}")
    raise DataError(f"{path}: expected a {mode} image, got PIL mode {file_mode} {array.shape}")


def read_mat_v5(
    path: str | os.PathLike, variables: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Named variables of a MATLAB v5 .mat file (`optional` ones only when present). A missing,
    corrupt or incomplete file raises `DataError` naming it, because scipy's own errors do
    not say which file was at fault."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        import scipy.io  # imported here: heavy, and only the .mat datasets need it

        contents = scipy.io.loadmat(path, variable_names=[*variables, *optional])
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, zlib.error ...
        raise DataError(
            f"{path}: cannot read MATLAB v5 file (truncated or corrupt?): {exc}"
        ) from exc
    missing = [name for name in variables if name not in contents]
    if missing:
        raise DataError(f"{path}: expected MATLAB variable(s) {missing}, not found in the file")
    return contents


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes for uint8 (H x W or H x W x 3) or uint16 (H x W) arrays; deterministic for a
    given zlib level (1 is about twice as fast as 6 for ~15% larger files)."""
    encodable = (array.dtype == np.uint16 and array.ndim == 2) or (
        array.dtype == np.uint8 and array.ndim in (2, 3)
    )
    if not encodable:
        raise ValueError(f"cannot encode {array.dtype} array of shape {array.shape} as PNG")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_png(path: str | os.PathLike, array: np.ndarray) -> bytes:
    """Write a PNG atomically; return the bytes written (for digests)."""
    data = encode_png(array)
    write_bytes_atomic(path, data)
    return data


def encode_depth(depth_m: np.ndarray, scale: float, invalid: int) -> np.ndarray:
    """Metres to uint16 (value = round(depth * scale)); depth <= 0 or non-finite -> `invalid`."""
    valid = np.isfinite(depth_m) & (depth_m > 0)
    raw = np.full(depth_m.shape, invalid, dtype=np.uint16)
    top = 65534 if invalid == 65535 else 65535
    scaled = np.rint(np.where(valid, depth_m, 0.0) * scale)
    if (scaled[valid] > top).any() or (valid & (scaled < 1)).any():
        raise ValueError(f"depth outside the encodable range (0, {top / scale:.3f}] m")
    raw[valid] = scaled[valid].astype(np.uint16)
    return raw


def decode_depth(raw: np.ndarray, scale: float, invalid: int, min_raw: int = 1) -> np.ndarray:
    """uint16 to metres; the `invalid` code and values below `min_raw` become 0."""
    depth = raw.astype(np.float32) / np.float32(scale)
    depth[(raw == invalid) | (raw < min_raw)] = 0.0
    return depth


def encode_normals(normals: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors (H x W x 3) to RGB: v = round(127.5 * n + 127.5); invalid -> 128."""
    rgb = np.clip(np.rint(normals * 127.5 + 127.5), 0, 255).astype(np.uint8)
    if valid is not None:
        rgb[~valid] = NORMAL_INVALID_RGB
    return rgb


def decode_normals(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB to unit vectors: n = (v - 127.5) / 127.5, valid where |n| is in (0.8, 1.1), then
    renormalised; invalid pixels are all-zero. Returns (normals H x W x 3, valid H x W)."""
    n = rgb.astype(np.float32)
    n -= 127.5
    n /= 127.5
    norm = np.sqrt(np.einsum("...k,...k->...", n, n))
    lo, hi = NORMAL_VALID_NORM
    valid = (norm > lo) & (norm < hi)
    n /= np.where(valid, norm, np.inf)[..., None]  # invalid pixels become exactly zero
    return n, valid


def require_same_size(
    image_path: str | os.PathLike, image_hw: tuple[int, int], targets: dict
) -> None:
    """Every target file ({path: (height, width)}) must match the image's size."""
    for path, hw in targets.items():
        if tuple(hw) != tuple(image_hw):
            raise DataError(
                f"{path}: is {hw[0]} x {hw[1]}, but the image {Path(image_path).name} is "
                f"{image_hw[0]} x {image_hw[1]}"
            )


def boundaries_from_regions(regions: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundaries: a pixel is on a boundary when its region id differs from its
    right or lower neighbour. Returns uint8 0/1 of the same H x W shape."""
    edge = np.zeros(regions.shape, dtype=bool)
    edge[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    edge[:-1, :] |= regions[:-1, :] != regions[1:, :]
    return edge.astype(np.uint8)
