"""Monocular depth: the Eigen et al. (NIPS 2014) error metrics, averaged per image.

The protocol follows the common NYU evaluation code, ``cleinc/bts: pytorch/bts_eval.py``
(``compute_errors`` and ``eval``), which AdaBins (``shariqfarooq123/AdaBins: evaluate.py``)
and mmsegmentation (``mmseg/evaluation/metrics/depth_metric.py``) match:

1. Predictions are clipped to ``[min_depth, max_depth]`` (BTS clips; set ``clip_pred=False``
   for mmseg's behaviour). Without a cap only the lower clip applies.
2. A pixel is evaluated when ``gt > min_depth`` and, with a cap, ``gt < max_depth`` (so
   ``gt == 0``, the sample contract's "invalid", is always dropped), the optional `mask` is
   true, and it lies inside the optional Eigen crop.
3. For each image, over its T valid pixels (d = prediction, g = ground truth, natural logs):

   * ``abs_rel = mean(|d - g| / g)``; ``sq_rel = mean((d - g)^2 / g)``
   * ``rmse = sqrt(mean((d - g)^2))``; ``rmse_log = sqrt(mean((log d - log g)^2))``
   * ``log10 = mean(|log10 d - log10 g|)``
   * ``silog = 100 * sqrt(mean(e^2) - mean(e)^2)`` with ``e = log d - log g`` (the BTS /
     AdaBins variant, not mmseg's ``sqrt(mean(e^2) - 0.5 mean(e)^2)``)
   * ``delta{k} = mean(max(d/g, g/d) < 1.25^k)`` for k = 1, 2, 3 (fractions)

4. Each metric is the mean of the per-image values over the images that have at least one
   valid pixel. Images without any valid pixel are skipped, not counted as zero (BTS would
   produce NaN for them); the output says how many: ``num_images`` (averaged) and
   ``num_skipped``. If every image is skipped, the metrics are NaN.

The Eigen crop keeps rows 45..470 and columns 41..600 (0-based, inclusive) of a 480 x 640
map, i.e. ``[45:471, 41:601]``, exactly as BTS's ``--eigen_crop`` for NYU (its help text
attributes the crop to Eigen et al., NIPS 2014), AdaBins and mmseg's ``nyu_crop``. It is
defined only for 480 x 640 maps; other sizes are refused.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from pag.metrics._validate import (
    MetricError,
    as_mask,
    check_finite,
    check_same_shape,
    split_pred_gt_mask,
)

DEPTH_KEYS = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog",
    "delta1",
    "delta2",
    "delta3",
)
# rows 45..470 and columns 41..600 of the 480 x 640 NYU map (BTS --eigen_crop, AdaBins, mmseg)
EIGEN_CROP = (slice(45, 471), slice(41, 601))
EIGEN_CROP_SHAPE = (480, 640)
NYU_MAX_DEPTH = 10.0


@functools.lru_cache(maxsize=4)
def _crop(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[EIGEN_CROP] = True
    mask.flags.writeable = False
    return mask


def eigen_crop_mask(shape: tuple[int, int]) -> np.ndarray:
    """Boolean H x W mask of the Eigen crop; only defined for 480 x 640."""
    if tuple(shape) != EIGEN_CROP_SHAPE:
        raise MetricError(
            f"eigen_crop: the Eigen crop [45:471, 41:601] is defined for 480 x 640 maps, got "
            f"{tuple(shape)}; resize the prediction to the ground truth's 480 x 640 first"
        )
    return _crop(EIGEN_CROP_SHAPE).copy()


_CHUNK = 1 << 15  # pixels per step: keeps the float64 temporaries in cache
_LOG10 = math.log(10.0)


def _image_errors(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The nine metrics (DEPTH_KEYS order) of one image's valid predicted and ground-truth
    depths (1-D, positive), as in BTS's ``compute_errors``."""
    # running sums: |d-g|/g, (d-g)^2/g, (d-g)^2, e, e^2, |e|, then delta counts
    sums = np.zeros(9)
    for start in range(0, d.size, _CHUNK):
        dc = d[start : start + _CHUNK].astype(np.float64)
        gc = g[start : start + _CHUNK].astype(np.float64)
        diff = dc - gc
        sq = diff * diff
        inv_g = 1.0 / gc
        ratio = dc / gc
        e = np.log(ratio)
        thresh = np.maximum(ratio, gc / dc)
        # numpy's pairwise sums, not np.dot: BLAS dot products change in the last bit with
        # the arrays' memory alignment, so reruns would not give the same bytes
        sums[0] += (np.abs(diff) * inv_g).sum()
        sums[1] += (sq * inv_g).sum()
        sums[2] += sq.sum()
        sums[3] += e.sum()
        sums[4] += (e * e).sum()
        sums[5] += np.abs(e).sum()
        sums[6] += np.count_nonzero(thresh < 1.25)
        sums[7] += np.count_nonzero(thresh < 1.25**2)
        sums[8] += np.count_nonzero(thresh < 1.25**3)
    mean = sums / d.size
    e_mean, e_sq = mean[3], mean[4]
    return np.array(
        [
            mean[0],
            mean[1],
            math.sqrt(mean[2]),
            math.sqrt(e_sq),
            mean[5] / _LOG10,
            100.0 * math.sqrt(max(e_sq - e_mean * e_mean, 0.0)),
            mean[6],
            mean[7],
            mean[8],
        ]
    )


class DepthAccumulator:
    """Per-image depth errors accumulated over batches: ``update(pred, gt, mask)`` then
    ``compute()``. See the module docstring for the protocol.

    Args:
        min_depth: ground truth must exceed this (metres); predictions are clipped up to it.
        max_depth: optional cap (metres, e.g. ``NYU_MAX_DEPTH`` = 10): ground truth must be
            below it and predictions are clipped down to it.
        eigen_crop: evaluate only inside the Eigen crop (480 x 640 maps only).
        clip_pred: clip predictions to ``[min_depth, max_depth]`` as BTS/AdaBins do.
    """

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: float | None = None,
        eigen_crop: bool = False,
        clip_pred: bool = True,
    ) -> None:
        if not (math.isfinite(min_depth) and min_depth > 0):
            raise MetricError(f"min_depth: expected a positive number, got {min_depth}")
        if max_depth is not None and not (math.isfinite(max_depth) and max_depth > min_depth):
            raise MetricError(
                f"max_depth: expected None or a number above min_depth={min_depth}, got {max_depth}"
            )
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.eigen_crop = bool(eigen_crop)
        self.clip_pred = bool(clip_pred)
        self.reset()

    def reset(self) -> None:
        self._sums = np.zeros(len(DEPTH_KEYS))
        self.num_images = 0
        self.num_skipped = 0

    def update(self, pred: Any, gt: Any, mask: Any = None) -> None:
        preds, gts, masks = split_pred_gt_mask(pred, gt, mask, 2)
        rows = []
        skipped = 0
        for i, (p, g, m) in enumerate(zip(preds, gts, masks, strict=True)):
            check_same_shape(g, p, f"gt[{i}]", f"pred[{i}]")
            for arr, name in ((p, f"pred[{i}]"), (g, f"gt[{i}]")):
                if arr.dtype.kind != "f":  # integers are encoded depths (mm, 1/512 m, ...)
                    raise MetricError(
                        f"{name}: expected float depths in metres, got dtype {arr.dtype} "
                        "(decode integer depth PNGs to metres first)"
                    )
                check_finite(arr, name)
            if (g < 0).any():
                raise MetricError(f"gt[{i}]: negative depths; expected metres >= 0 (0 = invalid)")
            valid = g > self.min_depth
            if self.max_depth is not None:
                valid &= g < self.max_depth
            if m is not None:
                valid &= as_mask(m, f"mask[{i}]", g.shape)
            if self.eigen_crop:
                if g.shape != EIGEN_CROP_SHAPE:
                    eigen_crop_mask(g.shape)  # raises, naming the size
                valid &= _crop(EIGEN_CROP_SHAPE)
            d = p[valid].astype(np.float64)
            gv = g[valid].astype(np.float64)
            if self.clip_pred:
                np.clip(d, self.min_depth, self.max_depth, out=d)
            elif (d <= 0).any():
                raise MetricError(
                    f"pred[{i}]: non-positive depths at valid pixels; the log metrics need "
                    "d > 0 (use clip_pred=True)"
                )
            if d.size == 0:
                skipped += 1
                continue
            rows.append(_image_errors(d, gv))
        for row in rows:
            self._sums += row
        self.num_images += len(rows)
        self.num_skipped += skipped

    def compute(self) -> dict[str, Any]:
        if self.num_images:
            means = self._sums / self.num_images
        else:
            means = np.full(len(DEPTH_KEYS), np.nan)
        out: dict[str, Any] = {k: float(v) for k, v in zip(DEPTH_KEYS, means, strict=True)}
        out["num_images"] = self.num_images
        out["num_skipped"] = self.num_skipped
        return out


def depth_metrics(
    pred: Any,
    gt: Any,
    mask: Any = None,
    *,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    eigen_crop: bool = False,
    clip_pred: bool = True,
) -> dict[str, Any]:
    """Eigen et al. depth errors of `pred` against `gt` (metres), averaged per image.

    `pred`, `gt` and the optional boolean `mask` are one H x W map, an N x H x W batch or a
    list of maps. NYU: ``max_depth=NYU_MAX_DEPTH`` (10 m) and, to match papers that crop,
    ``eigen_crop=True``. Returns the keys of ``DEPTH_KEYS`` (deltas as fractions, silog x 100)
    plus ``num_images`` and ``num_skipped`` (images without valid pixels).
    """
    acc = DepthAccumulator(min_depth, max_depth, eigen_crop, clip_pred)
    acc.update(pred, gt, mask)
    return acc.compute()
