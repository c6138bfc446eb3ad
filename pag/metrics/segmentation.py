"""Semantic segmentation: mIoU, pixel accuracy and mean class accuracy over a whole set.

One confusion matrix C (rows = ground truth, columns = prediction) is accumulated over every
pixel of the set whose ground truth is not `ignore_index`; the scores are computed from the
sums at the end, never averaged per image. This is what
``open-mmlab/mmsegmentation: mmseg/evaluation/metrics/iou_metric.py`` (``IoUMetric``) and
``mcordts/cityscapesScripts: cityscapesscripts/evaluation/evalPixelLevelSemanticLabeling.py``
do:

* ``iou_per_class[c] = C[c,c] / (row_c + col_c - C[c,c])``; NaN when the class is absent from
  both ground truth and prediction in the whole set (union 0).
* ``miou``: mean of the non-NaN per-class IoUs (mmseg's ``nanmean``, Cityscapes'
  ``getScoreAverage``), so a class that never appears anywhere does not count; a class that
  is predicted but never in the ground truth counts with IoU 0.
* ``pixel_acc = trace(C) / sum(C)`` (mmseg ``aAcc``).
* ``mean_acc``: mean over classes present in the ground truth of ``C[c,c] / row_c`` (mmseg
  ``mAcc``; a class without ground-truth pixels has NaN accuracy and is skipped).

Predictions on ignored ground-truth pixels are dropped, as in both references. If the whole set
has no valid pixel, every score is NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pag.metrics._validate import (
    MetricError,
    check_integer,
    check_same_count,
    check_same_shape,
    split_images,
)


class SegmentationAccumulator:
    """Confusion matrix accumulated over batches: ``update(pred, gt)`` then ``compute()``.

    `pred` and `gt` are integer label maps: one H x W image, an N x H x W batch, or a list of
    either (images may differ in size; each prediction must match its ground truth).
    Predictions must lie in ``0..num_classes-1``; ground truth too, or equal `ignore_index`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
            raise MetricError(f"num_classes: expected a positive integer, got {num_classes!r}")
        if num_classes < 1:
            raise MetricError(f"num_classes: expected a positive integer, got {num_classes}")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
        ):
            raise MetricError(f"ignore_index: expected an integer or None, got {ignore_index!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise MetricError(
                f"ignore_index: {ignore_index} is a valid class id (0..{num_classes - 1}); "
                "expected a value outside that range, or None"
            )
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.confusion[:] = 0

    def update(self, pred: Any, gt: Any) -> None:
        preds = split_images(pred, "pred", 2)
        gts = split_images(gt, "gt", 2)
        check_same_count(preds, gts, "pred", "gt")
        n = self.num_classes
        checked = []
        for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
            check_same_shape(p, g, f"pred[{i}]", f"gt[{i}]")
            check_integer(p, f"pred[{i}]")
            check_integer(g, f"gt[{i}]")
            p = p.ravel()
            g = g.ravel()
            if self.ignore_index is not None:
                keep = g != self.ignore_index
                if not keep.all():
                    g, p = g[keep], p[keep]
            _check_range(p, n, f"pred[{i}]", "")
            _check_range(g, n, f"gt[{i}]", f" and not ignore_index={self.ignore_index}")
            checked.append((p, g))
        # add only once every image has passed, so a bad batch leaves the state untouched
        for p, g in checked:
            codes = g.astype(np.int64) * n + p.astype(np.int64)
            self.confusion += np.bincount(codes, minlength=n * n).reshape(n, n)

    def compute(self) -> dict[str, Any]:
        c = self.confusion.astype(np.float64)
        tp = np.diag(c)
        gt_count = c.sum(axis=1)
        pred_count = c.sum(axis=0)
        union = gt_count + pred_count - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        total = c.sum()
        return {
            "miou": _nanmean(iou),
            "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_acc": _nanmean(acc),
            "iou_per_class": [float(v) for v in iou],
        }


def _check_range(labels: np.ndarray, n: int, name: str, extra: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        bad = np.unique(labels[(labels < 0) | (labels >= n)])[:5].tolist()
        raise MetricError(f"{name}: labels {bad} outside 0..{n - 1}{extra} (num_classes={n})")


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def segmentation_metrics(
    pred: Any, gt: Any, num_classes: int, ignore_index: int | None = 255
) -> dict[str, Any]:
    """mIoU, pixel and mean class accuracy of `pred` against `gt` over the whole set.

    Returns ``{"miou", "pixel_acc", "mean_acc", "iou_per_class"}`` (fractions in [0, 1];
    ``iou_per_class`` is a list of `num_classes` floats, NaN for classes absent from both
    prediction and ground truth). See the module docstring for the exact definitions.
    """
    acc = SegmentationAccumulator(num_classes, ignore_index)
    acc.update(pred, gt)
    return acc.compute()
