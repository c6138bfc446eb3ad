"""Input checks shared by the metrics: one error type, messages that name the argument."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pag.errors import PagError


class MetricError(PagError, ValueError):
    """Metric inputs are malformed: wrong shape, non-finite values, labels out of range,
    empty input. The message names the argument and says what was expected."""


def as_array(value: Any, name: str) -> np.ndarray:
    """Convert to a numpy array (CPU torch tensors work too) or raise `MetricError`."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype.itemsize < 4:  # bf16/fp16: numpy lacks bf16
            value = value.float()
        return value.numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{name}: expected a numpy array, got {type(value).__name__}") from exc
    if arr.dtype == object:
        raise MetricError(f"{name}: expected a numeric array, got {type(value).__name__}")
    return arr


def split_images(value: Any, name: str, image_ndim: int) -> list[np.ndarray]:
    """Turn one image, a stacked batch (one more leading axis) or a list of either into a
    list of single-image arrays of `image_ndim` dimensions."""
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise MetricError(f"{name}: got an empty list; expected at least one image")
        out: list[np.ndarray] = []
        for i, item in enumerate(value):
            out.extend(split_images(as_array(item, f"{name}[{i}]"), f"{name}[{i}]", image_ndim))
        return out
    arr = as_array(value, name)
    if arr.ndim == image_ndim:
        return [arr]
    if arr.ndim == image_ndim + 1:
        if arr.shape[0] == 0:
            raise MetricError(f"{name}: got an empty batch; expected at least one image")
        return list(arr)
    raise MetricError(
        f"{name}: expected a {image_ndim}-D image or a batch of them ({image_ndim + 1}-D), "
        f"got shape {arr.shape}"
    )


def check_same_count(a: Sequence[Any], b: Sequence[Any], name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise MetricError(f"{name_b}: has {len(b)} images but {name_a} has {len(a)}")


def split_pred_gt_mask(
    pred: Any, gt: Any, mask: Any, image_ndim: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[Any]]:
    """The per-image lists of an accumulator's update: pred and gt with `image_ndim` dims per
    image, mask (H x W per image) or None for each image, counts checked."""
    preds = split_images(pred, "pred", image_ndim)
    gts = split_images(gt, "gt", image_ndim)
    check_same_count(preds, gts, "pred", "gt")
    masks: list[Any] = [None] * len(gts)
    if mask is not None:
        masks = split_images(mask, "mask", 2)
        check_same_count(gts, masks, "gt", "mask")
    return preds, gts, masks


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise MetricError(f"{name_b}: shape {b.shape} does not match {name_a} shape {a.shape}")


def check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise MetricError(f"{name}: contains {bad} NaN or Inf values; expected finite numbers")


def check_integer(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "iub":
        raise MetricError(
            f"{name}: expected integer class labels, got dtype {arr.dtype} "
            "(take the argmax of scores first)"
        )


def as_mask(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean validity mask of the given shape (bool, or 0/1 numbers)."""
    arr = as_array(value, name)
    if arr.shape != shape:
        raise MetricError(f"{name}: shape {arr.shape} does not match the image shape {shape}")
    if arr.dtype == bool:
        return arr
    check_finite(arr, name)
    if not np.isin(arr, (0, 1)).all():
        raise MetricError(f"{name}: expected a boolean mask (or 0/1 values)")
    return arr.astype(bool)
