"""Boundary detection: the BSDS500 benchmark (Arbelaez et al., TPAMI 2011), ODS / OIS / AP.

Per image, following ``BIDS/BSDS500: bench/benchmarks/evaluation_bdry_image.m`` (defaults
``nthresh = 99``, ``maxDist = 0.0075``, ``thinpb = 1``):

1. thresholds ``t_k = linspace(1/(N+1), 1 - 1/(N+1), N)``, i.e. 0.01 ... 0.99 for N = 99;
2. for each t_k: ``B = thin(prob >= t_k)`` (``bwmorph(B, 'thin', Inf)``, see `thin`);
3. for each annotator g: an exact minimum-cost one-to-one correspondence between the pixels
   of B and of g within ``maxDist * image diagonal`` pixels (see `correspond_pixels`);
   ``sumR += |g|``, ``cntR += matched pixels of g``; the matched pixels of B are OR-ed over
   the annotators into accP;
4. ``sumP = |B|``, ``cntP = |accP|`` (a predicted pixel counts as correct if it matches any
   annotator), so recall is accumulated over every annotator and precision on the union.

Over the set, following ``BIDS/BSDS500: bench/benchmarks/collect_eval_bdry.m``, with
``R = cntR / (sumR + (sumR == 0))``, ``P = cntP / (sumP + (sumP == 0))`` and
``F = 2PR / (P + R + (P + R == 0))``:

* ODS: the four counts are summed over images per threshold; ``maxF`` then interpolates R, P
  (and t) linearly between each pair of adjacent thresholds at ``d = linspace(0, 1, 100)``
  and keeps the first strictly best F (starting from the first threshold);
* OIS: each image contributes its counts at its own best discrete threshold (the first
  maximum of its F, no interpolation); OIS is F of the summed counts;
* AP ("Area_PR"): the unique values of the dataset recall R (ascending; the first threshold
  in order for repeated values, as MATLAB's ``unique`` returns and pyEdgeEval does) and
  their precisions are linearly interpolated at ``R = 0, 0.01, ..., 1`` (101 points), points
  outside the recall range count 0 (``interp1`` NaN -> 0), and AP = 0.01 * sum; AP = 0 if
  fewer than two distinct recalls exist.

The BSDS benchmark reads the soft map from an 8-bit PNG (values k / 255); pass such values to
reproduce its quantisation exactly. An image whose annotators marked no boundary adds 0 to
recall's counts and all its predicted pixels to sumP, exactly as in the benchmark (its OIS
threshold is then the first one). If no image has any boundary, R = P = 0 and every score is
0.

Optional edge NMS (``nms=True``; off by default, as in the BSDS benchmark) applies Dollar's
edge NMS (`edge_nms`) to each soft map before thresholding; the output records the choice.

Piotr Dollar's ``pdollar/edges: edgesEvalImg.m`` / ``edgesEvalDir.m`` implement the same
per-image protocol and ODS / OIS; its AP differs slightly (it sums the non-NaN interpolated
precisions, its comment notes a /100 vs /101 issue), and we follow ``collect_eval_bdry.m``.
Python ports differ too: ``Britefury/py-bsds500`` takes ODS at the best discrete threshold
(no interpolation) and AP on 100 recall points; ``haruishi43/py-edge-eval`` interpolates at
101 points per segment. Both call the original CSA matcher.

Speed: images are independent, so ``workers > 1`` evaluates them in a process pool (the
"spawn" start method, so scripts must call it under ``if __name__ == "__main__":``). See
``benchmarks/metrics_speed.py`` for the BSDS-size timing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np

from pag.metrics._match import Matcher, correspond_pixels, max_dist_pixels
from pag.metrics._nms import edge_nms
from pag.metrics._thin import thin, thin_many
from pag.metrics._validate import MetricError, as_array, check_finite, split_images

__all__ = [
    "BoundaryAccumulator",
    "boundary_metrics",
    "boundary_thresholds",
    "correspond_pixels",
    "edge_nms",
    "evaluate_boundary_image",
    "thin",
]

MAX_DIST = 0.0075
NUM_THRESHOLDS = 99


def boundary_thresholds(num: int = NUM_THRESHOLDS) -> np.ndarray:
    """The benchmark's thresholds, ``linspace(1/(num+1), 1 - 1/(num+1), num)``."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise MetricError(f"thresholds: expected a positive number of thresholds, got {num!r}")
    return np.linspace(1.0 / (num + 1), 1.0 - 1.0 / (num + 1), int(num))


def _check_prob(prob: Any, name: str) -> np.ndarray:
    prob = as_array(prob, name)
    if prob.ndim != 2:
        raise MetricError(f"{name}: expected an H x W boundary probability map, got {prob.shape}")
    if prob.dtype.kind not in "biuf":
        raise MetricError(f"{name}: expected probabilities, got dtype {prob.dtype}")
    check_finite(prob, name)
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise MetricError(
            f"{name}: values in [{prob.min()}, {prob.max()}]; expected probabilities in "
            "[0, 1] (divide 8-bit maps by 255)"
        )
    return prob


def _check_gt(gt: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    gt = as_array(gt, name)
    if gt.ndim == 2:
        gt = gt[None]
    if gt.ndim != 3 or gt.shape[0] == 0:
        raise MetricError(
            f"{name}: expected K x H x W annotator maps (K >= 1) or one H x W map, "
            f"got shape {gt.shape}"
        )
    if gt.shape[1:] != shape:
        raise MetricError(f"{name}: annotator maps are {gt.shape[1:]}, the prediction is {shape}")
    if gt.dtype != bool:
        if gt.dtype.kind not in "iuf":
            raise MetricError(f"{name}: expected binary boundary maps, got dtype {gt.dtype}")
        check_finite(gt, name)
        if not np.isin(gt, (0, 1)).all():
            raise MetricError(f"{name}: expected binary boundary maps with values 0 and 1")
    return gt != 0


def evaluate_boundary_image(
    prob: Any,
    gt: Any,
    *,
    thresholds: int = NUM_THRESHOLDS,
    max_dist: float = MAX_DIST,
    thin_maps: bool = True,
    nms: bool = False,
    solver: str = "lapmod",
) -> np.ndarray:
    """Counts of one image, a 4 x N array of ``cntR, sumR, cntP, sumP`` per threshold.

    `prob` is the H x W soft boundary map in [0, 1]; `gt` the K x H x W (or H x W) binary
    maps of the annotators. This is ``evaluation_bdry_image.m``; see the module docstring.
    """
    prob = _check_prob(prob, "prob")
    gt = _check_gt(gt, "gt", prob.shape)
    return _image_counts(
        prob, gt, boundary_thresholds(thresholds), max_dist, thin_maps, nms, solver
    )


def _image_counts(
    prob: np.ndarray,
    gt: np.ndarray,
    thr: np.ndarray,
    max_dist: float,
    thin_maps: bool,
    nms: bool,
    solver: str = "lapmod",
) -> np.ndarray:
    # with NMS, quantise to 1/255 as the HED/RCF scripts do by saving an 8-bit PNG first
    pb = np.round(edge_nms(prob) * 255) / 255 if nms else prob.astype(np.float64, copy=False)
    max_px = max_dist_pixels(prob.shape, max_dist)
    matchers = [Matcher(g, max_px, solver) for g in gt]
    sum_r = float(gt.sum())
    counts = np.zeros((4, thr.size))
    # the thresholded maps are nested, so one with as many pixels as the last is the same map
    # (same counts); the distinct ones are thinned together (one pass, see `thin_many`)
    sizes = [int(np.count_nonzero(pb >= t)) for t in thr]
    distinct = [k for k in range(thr.size) if k == 0 or sizes[k] != sizes[k - 1]]
    raws = np.stack([pb >= thr[k] for k in distinct])
    bmaps = dict(zip(distinct, thin_many(raws) if thin_maps else raws, strict=True))
    for k in range(thr.size):
        if k not in bmaps:
            counts[:, k] = counts[:, k - 1]  # same map, same counts
            continue
        py, px = np.nonzero(bmaps[k])
        acc = np.zeros(py.size, dtype=bool)  # matched to any annotator
        cnt_r = 0
        for matcher in matchers:
            pred_idx, gt_idx = matcher.match(py, px)
            acc[pred_idx] = True
            cnt_r += gt_idx.size
        counts[:, k] = (cnt_r, sum_r, np.count_nonzero(acc), py.size)
    return counts


def _ratio(cnt: np.ndarray, total: np.ndarray) -> np.ndarray:
    return cnt / (total + (total == 0))


def _fmeasure(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 2 * p * r / (p + r + ((p + r) == 0))


def _max_f(thr: np.ndarray, r: np.ndarray, p: np.ndarray) -> tuple[float, float, float, float]:
    """``maxF`` of collect_eval_bdry.m: (t, R, P, F) at the first strict maximum of F along
    the curve interpolated at 100 points between adjacent thresholds."""
    best = (float(thr[0]), float(r[0]), float(p[0]), float(_fmeasure(r[0], p[0])))
    if thr.size < 2:
        return best
    d = np.linspace(0.0, 1.0, 100)[None, :]
    ti = (thr[1:, None] * d + thr[:-1, None] * (1 - d)).ravel()
    ri = (r[1:, None] * d + r[:-1, None] * (1 - d)).ravel()
    pi = (p[1:, None] * d + p[:-1, None] * (1 - d)).ravel()
    fi = _fmeasure(ri, pi)
    k = int(np.argmax(fi))
    if fi[k] > best[3]:
        best = (float(ti[k]), float(ri[k]), float(pi[k]), float(fi[k]))
    return best


def _area_pr(r: np.ndarray, p: np.ndarray) -> float:
    """``Area_PR`` of collect_eval_bdry.m (101-point recall grid, NaN -> 0)."""
    ru, first = np.unique(r, return_index=True)
    if ru.size < 2:
        return 0.0
    grid = np.linspace(0.0, 1.0, 101)
    pu = p[first]
    interp = np.interp(grid, ru, pu)
    interp[(grid < ru[0]) | (grid > ru[-1])] = 0.0
    return float(interp.sum() * 0.01)


class BoundaryAccumulator:
    """Per-image benchmark counts accumulated over batches: ``update(probs, gts)`` (or
    ``add_counts`` with the output of `evaluate_boundary_image`), then ``compute()``."""

    def __init__(
        self,
        thresholds: int = NUM_THRESHOLDS,
        max_dist: float = MAX_DIST,
        thin_maps: bool = True,
        nms: bool = False,
    ) -> None:
        self.thresholds = boundary_thresholds(thresholds)
        if not (math.isfinite(max_dist) and 0 < max_dist < 1):
            raise MetricError(
                f"max_dist: expected a fraction of the image diagonal in (0, 1), got {max_dist}"
            )
        self.max_dist = float(max_dist)
        self.thin_maps = bool(thin_maps)
        self.nms = bool(nms)
        self.counts: list[np.ndarray] = []

    def reset(self) -> None:
        self.counts = []

    def update(self, probs: Any, gts: Any, workers: int = 1) -> None:
        """Evaluate images (layouts as in `boundary_metrics`); `workers` > 1 evaluates them
        in that many spawned processes."""
        pairs = _pairs(probs, gts)
        args = [(p, g, self.thresholds, self.max_dist, self.thin_maps, self.nms) for p, g in pairs]
        if workers > 1 and len(args) > 1:
            ctx = get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                results = list(pool.map(_image_counts_args, args, chunksize=1))
        else:
            results = [_image_counts_args(a) for a in args]
        self.counts.extend(results)

    def add_counts(self, counts: np.ndarray) -> None:
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (4, self.thresholds.size):
            raise MetricError(
                f"counts: expected shape (4, {self.thresholds.size}), got {counts.shape}"
            )
        self.counts.append(counts)

    def compute(self) -> dict[str, Any]:
        thr = self.thresholds
        if not self.counts:
            raise MetricError("boundary: no image was evaluated; expected at least one")
        per_image = np.stack(self.counts)  # n x 4 x T
        cnt_r, sum_r, cnt_p, sum_p = per_image.sum(axis=0)
        r = _ratio(cnt_r, sum_r)
        p = _ratio(cnt_p, sum_p)
        f = _fmeasure(r, p)
        ods_t, ods_r, ods_p, ods_f = _max_f(thr, r, p)
        # OIS: each image at its own best discrete threshold (first maximum)
        img_f = _fmeasure(
            _ratio(per_image[:, 0], per_image[:, 1]), _ratio(per_image[:, 2], per_image[:, 3])
        )
        best = np.argmax(img_f, axis=1)
        at_best = per_image[np.arange(len(per_image)), :, best].sum(axis=0)
        ois_r = float(_ratio(at_best[0], at_best[1]))
        ois_p = float(_ratio(at_best[2], at_best[3]))
        return {
            "ods": ods_f,
            "ois": float(_fmeasure(np.float64(ois_r), np.float64(ois_p))),
            "ap": _area_pr(r, p),
            "pr_curve": {
                "thresholds": thr.tolist(),
                "recall": r.tolist(),
                "precision": p.tolist(),
                "f": f.tolist(),
                "ods_threshold": ods_t,
                "ods_recall": ods_r,
                "ods_precision": ods_p,
                "ois_recall": ois_r,
                "ois_precision": ois_p,
                "num_images": len(per_image),
            },
            "nms": self.nms,
        }


def _image_counts_args(args: tuple) -> np.ndarray:
    return _image_counts(*args)


def _pairs(probs: Any, gts: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    prob_list = split_images(probs, "probs", 2)
    if isinstance(gts, (list, tuple)):
        if len(gts) == 0:
            raise MetricError("gts: got an empty list; expected one entry per image")
        gt_list: Sequence[Any] = gts
    else:
        arr = as_array(gts, "gts")
        if arr.ndim in (2, 3) and len(prob_list) == 1:
            gt_list = [arr]
        elif arr.ndim == 4:
            gt_list = list(arr)
        else:
            raise MetricError(
                f"gts: expected a list of K x H x W annotator maps (or N x K x H x W), got "
                f"shape {arr.shape} for {len(prob_list)} images"
            )
    if len(gt_list) != len(prob_list):
        raise MetricError(f"gts: has {len(gt_list)} images but probs has {len(prob_list)}")
    out = []
    for i, (p, g) in enumerate(zip(prob_list, gt_list, strict=True)):
        p = _check_prob(p, f"probs[{i}]")
        out.append((p, _check_gt(g, f"gts[{i}]", p.shape)))
    return out


def boundary_metrics(
    probs: Any,
    gts: Any,
    *,
    thresholds: int = NUM_THRESHOLDS,
    max_dist: float = MAX_DIST,
    thin_maps: bool = True,
    nms: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """BSDS500 boundary benchmark of soft maps `probs` against annotator maps `gts`.

    `probs`: a list of H x W maps in [0, 1] (or one map, or an N x H x W array); `gts`: a
    list with each image's K x H x W binary annotator maps (K >= 1; an H x W map means
    K = 1). `workers` > 1 evaluates images in that many spawned processes (call it under
    ``if __name__ == "__main__":`` in scripts). `thin_maps=False` skips the thinning (the
    benchmark's ``thinpb = 0``). Returns ``ods``, ``ois``,
    ``ap``, ``pr_curve`` (thresholds, dataset recall / precision / F per threshold, the ODS
    and OIS operating points, the image count) and ``nms``. See the module docstring.
    """
    acc = BoundaryAccumulator(thresholds, max_dist, thin_maps, nms)
    acc.update(probs, gts, workers=workers)
    return acc.compute()
