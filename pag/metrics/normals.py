"""Surface normals: angular error statistics pooled over every valid pixel of the set.

Following Bansal et al. ("Marr Revisited", ``aayushbansal/MarrRevisited:
normals/eval/eval_pred_sn.m``) and DSINE (``baegwangbin/DSINE: utils/utils.py``,
``compute_normal_error`` / ``compute_normal_metrics``):

* both vectors are normalised to unit length, their dot product is clipped to [-1, 1] and
  ``theta = degrees(arccos(dot))``;
* the errors of all valid pixels of all images are pooled (concatenated) before the
  statistics, never averaged per image: ``mean``, ``median``, ``rmse = sqrt(mean(theta^2))``
  (degrees) and ``within_11_25``, ``within_22_5``, ``within_30``, the fractions of pixels with
  ``theta < 11.25 / 22.5 / 30`` degrees.

A pixel is valid where the ground-truth vector is non-zero (the sample contract stores invalid
normals as all-zero) and the optional `mask` is true. A zero predicted vector at a valid pixel
has no direction; it scores 90 degrees (dot product 0), which is what a cosine similarity with
an epsilon in the norm (DSINE's ``torch.cosine_similarity``) gives. If the set has no valid
pixel, every statistic is NaN.

The accumulator keeps every pooled error as float32 (4 bytes per valid pixel, e.g. about
0.8 GB for 654 NYU images at 480 x 640) so that the median is exact (to float32 precision,
about 1e-5 degrees); the other statistics are accumulated in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pag.metrics._validate import (
    MetricError,
    as_mask,
    check_finite,
    check_same_shape,
    split_pred_gt_mask,
)

NORMAL_KEYS = ("mean", "median", "rmse", "within_11_25", "within_22_5", "within_30")
_THRESHOLDS = (11.25, 22.5, 30.0)
_CHUNK = 1 << 15  # pixels per step: keeps the float64 temporaries in cache
# The bit pattern of a non-negative float32 orders like its value, so its top bits index a
# histogram whose bins are ordered intervals of angles: the median is found in one bin.
_KEY_SHIFT = 14
_NUM_KEYS = (int(np.array(180.0, np.float32).view(np.int32)) >> _KEY_SHIFT) + 1


def angular_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angles in degrees between 3 x P predicted and ground-truth vectors of any length:
    both are normalised, the cosine is clipped to [-1, 1], then arccos. A zero vector gives
    90 degrees."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    dot = pred[0] * gt[0] + pred[1] * gt[1] + pred[2] * gt[2]
    norms = np.sqrt(
        (pred[0] * pred[0] + pred[1] * pred[1] + pred[2] * pred[2])
        * (gt[0] * gt[0] + gt[1] * gt[1] + gt[2] * gt[2])
    )
    cos = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _valid_angles(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Angular errors (float64 degrees) at the valid pixels of one 3 x P image; the same
    arithmetic as `angular_errors`, chunked and in place."""
    out = []
    for start in range(0, pred.shape[1], _CHUNK):
        sl = slice(start, start + _CHUNK)
        g = gt[:, sl].astype(np.float64)
        gg = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
        valid = gg > 0
        if mask is not None:
            valid &= mask[sl]
        if not valid.any():
            continue
        p = pred[:, sl].astype(np.float64)
        dot = p[0] * g[0] + p[1] * g[1] + p[2] * g[2]
        den = p[0] * p[0] + p[1] * p[1] + p[2] * p[2]
        den *= gg
        np.sqrt(den, out=den)
        cos = np.divide(dot, den, out=np.zeros_like(dot), where=den > 0)
        theta = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0, out=cos), out=cos), out=cos)
        out.append(theta if valid.all() else theta[valid])
    return np.concatenate(out) if out else np.zeros(0)


class NormalAccumulator:
    """Pooled angular errors accumulated over batches: ``update(pred, gt, mask)`` then
    ``compute()``. Normals are 3 x H x W (channel first, as in the sample contract), an
    N x 3 x H x W batch, or a list of 3 x H x W maps; `mask` is H x W (or N x H x W / list).

    Sums for the mean, RMSE and the fractions are kept in float64; every error is also kept
    as float32 (4 bytes per valid pixel) so that the median is the exact median of those
    values, found through a histogram of their bit patterns instead of a full sort.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._errors: list[np.ndarray] = []
        self._hist = np.zeros(_NUM_KEYS, dtype=np.int64)
        self._count = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self._within = np.zeros(len(_THRESHOLDS), dtype=np.int64)

    def update(self, pred: Any, gt: Any, mask: Any = None) -> None:
        preds, gts, masks = split_pred_gt_mask(pred, gt, mask, 3)
        checked = []
        for i, (p, g, m) in enumerate(zip(preds, gts, masks, strict=True)):
            if g.shape[0] != 3:
                raise MetricError(
                    f"gt[{i}]: expected 3 x H x W normals (channel first), got shape {g.shape}"
                )
            check_same_shape(g, p, f"gt[{i}]", f"pred[{i}]")
            for arr, name in ((p, f"pred[{i}]"), (g, f"gt[{i}]")):
                if arr.dtype.kind != "f":  # integers are RGB-encoded normals
                    raise MetricError(
                        f"{name}: expected float unit vectors, got dtype {arr.dtype} "
                        "(decode RGB-encoded normals first)"
                    )
                check_finite(arr, name)
            flat_mask = None if m is None else as_mask(m, f"mask[{i}]", g.shape[1:]).ravel()
            checked.append((p.reshape(3, -1), g.reshape(3, -1), flat_mask))
        for p, g, m in checked:  # all inputs are valid: now change the state
            theta = _valid_angles(p, g, m)
            self._count += theta.size
            self._sum += float(theta.sum())
            self._sum_sq += float((theta * theta).sum())  # not np.dot: see pag.metrics.depth
            self._within += [np.count_nonzero(theta < t) for t in _THRESHOLDS]
            t32 = theta.astype(np.float32)
            self._hist += np.bincount(t32.view(np.int32) >> _KEY_SHIFT, minlength=_NUM_KEYS)
            self._errors.append(t32)

    def _kth(self, k: int) -> float:
        """The k-th smallest (0-based) stored error."""
        cum = np.cumsum(self._hist)
        key = int(np.searchsorted(cum, k, side="right"))
        before = int(cum[key - 1]) if key else 0
        in_bin = np.concatenate([e[(e.view(np.int32) >> _KEY_SHIFT) == key] for e in self._errors])
        return float(np.partition(in_bin, k - before)[k - before])

    def compute(self) -> dict[str, Any]:
        n = self._count
        if n == 0:
            return dict.fromkeys(NORMAL_KEYS, float("nan"))
        median = self._kth(n // 2) if n % 2 else 0.5 * (self._kth(n // 2 - 1) + self._kth(n // 2))
        out = {
            "mean": self._sum / n,
            "median": median,
            "rmse": float(np.sqrt(self._sum_sq / n)),
        }
        for key, count in zip(NORMAL_KEYS[3:], self._within, strict=True):
            out[key] = float(count / n)
        return out


def normal_metrics(pred: Any, gt: Any, mask: Any = None) -> dict[str, Any]:
    """Angular error statistics of predicted against ground-truth normals, pooled over all
    valid pixels: ``mean``, ``median``, ``rmse`` (degrees) and ``within_11_25``,
    ``within_22_5``, ``within_30`` (fractions). See the module docstring."""
    acc = NormalAccumulator()
    acc.update(pred, gt, mask)
    return acc.compute()
