"""Exact minimum-cost correspondence between two boundary maps (BSDS ``correspondPixels``).

The BSDS500 benchmark (``BIDS/BSDS500: bench/benchmarks/evaluation_bdry_image.m``) calls the
``correspondPixels`` mex (``correspondPixels.cc``, ``match.cc`` ``matchEdgeMaps``, ``csa.cc``;
also vendored in ``Britefury/py-bsds500`` and ``haruishi43/py-edge-eval``), which:

* converts ``maxDist`` to pixels, ``D = maxDist * sqrt(H^2 + W^2)``; two boundary pixels may
  match when ``d^2 <= D^2``; pixels with no partner within D are not part of the problem;
* gives a matched pair the integer cost ``rint(100 d)`` and every unmatched pixel the cost
  ``ow = ceil(100 * outlierCost)`` with ``outlierCost = 100 * D``;
* finds the one-to-one matching M minimising ``sum_M rint(100 d) + ow * (n1 + n2 - |M|)``
  (one outlier edge per unmatched pixel plus one per outlier-outlier pair) with Goldberg's
  CSA assignment solver.

CSA's graph connects each pixel to only 6 random outlier nodes (plus a very expensive
"overlay" that keeps the problem feasible), so its answer is a randomised approximation of
that minimum (pyEdgeEval's README reports run-to-run differences of about 1e-3). We minimise
the same objective exactly, as a square linear assignment problem on a graph where every
matching is feasible:

* left nodes: the n1 candidate pixels of map 1, then one outlier node per pixel of map 2;
* right nodes: the n2 candidate pixels of map 2, then one outlier node per pixel of map 1;
* edges, with weights doubled so that all are non-zero integers: each pixel pair (i, j)
  within D, ``2 (rint(100 d) + 1)``; each pixel to its own outlier node, ``ow + 2``; for each
  pixel pair (i, j) also (outlier of j, outlier of i), ``2``, so that the outlier nodes of
  matched pixels can pair up.

A perfect assignment that uses the pixel pairs M costs
``2 sum_M rint(100 d) + 4 |M| + (ow + 2) (n1 + n2 - 2 |M|)
= 2 (sum_M rint(100 d) - ow |M|) + const``: match.cc's objective, so the minimisers
coincide. Because ``ow`` is 100 times the largest pair cost, this is in practice the
maximum-cardinality matching of least total distance.

The assignment is solved by LAPMOD, the sparse Jonker-Volgenant algorithm of the ``lap``
package (``gatagat/lap``), which is exact and about 3 times faster here than scipy's LAPJVsp
(``scipy.sparse.csgraph.min_weight_full_bipartite_matching``); ``solver="scipy"`` selects the
latter, and the tests check that both reach the same optimum. Equal-cost optima are broken
by the solver's deterministic order, as CSA breaks them by its random graph.
"""

from __future__ import annotations

import math

import lap
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

COST_MULTIPLIER = 100  # match.cc: integer costs are rint(distance * 100)
OUTLIER_COST = 100.0  # correspondPixels default: outlier cost = 100 * maxDist (pixels)
SOLVERS = ("lapmod", "scipy")
_GATHER_LIMIT = 1 << 22  # candidate look-ups per block in Matcher.match


def max_dist_pixels(shape: tuple[int, int], max_dist: float) -> float:
    """``max_dist`` as a fraction of the image diagonal, in pixels (correspondPixels.cc)."""
    return max_dist * math.hypot(shape[0], shape[1])


class Matcher:
    """Correspond many predicted maps with one ground-truth map of the same size.

    The ground truth's padded pixel-id map and the table of in-range offsets are built once,
    so matching the thresholded maps of an image against one annotator only does the
    per-map work.
    """

    def __init__(self, gt: np.ndarray, max_dist_px: float, solver: str = "lapmod") -> None:
        if solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        gt = np.asarray(gt) != 0
        self.shape = gt.shape
        h, w = gt.shape
        self.radius = r = math.ceil(max_dist_px)
        self.width = w + 2 * r
        ids = np.full((h + 2 * r, w + 2 * r), -1, dtype=np.int32)
        gy, gx = np.nonzero(gt)
        ids[gy + r, gx + r] = np.arange(gy.size, dtype=np.int32)
        self.gt_ids = ids.ravel()
        self.gt_pixels = (gy.astype(np.int64) * w + gx).astype(np.int64)
        self.gt_count = gy.size
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        keep = dy * dy + dx * dx <= max_dist_px * max_dist_px  # match.cc: d^2 <= maxDist^2
        self.offsets = (dy[keep] * self.width + dx[keep]).astype(np.int64)
        dist = np.sqrt((dy[keep] ** 2 + dx[keep] ** 2).astype(np.float64))
        self.costs = np.rint(dist * COST_MULTIPLIER).astype(np.int64)
        self.outlier = math.ceil(OUTLIER_COST * max_dist_px * COST_MULTIPLIER)

    def match(self, py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Match the predicted pixels at rows `py`, columns `px`. Returns, pairwise, the
        indices (into `py`/`px`) of the matched predicted pixels and the flat indices
        (into the H x W image) of the ground-truth pixels they match."""
        empty = np.zeros(0, dtype=np.int64)
        if self.gt_count == 0 or py.size == 0:
            return empty, empty
        r = self.radius
        base = (py.astype(np.int64) + r) * self.width + (px + r)
        # candidate pairs: look up the ground-truth id at every in-range offset, in blocks of
        # predicted pixels so that a large max_dist cannot exhaust memory
        block = max(1, _GATHER_LIMIT // self.offsets.size)
        parts = []
        for start in range(0, base.size, block):
            cand = self.gt_ids[base[start : start + block, None] + self.offsets[None, :]]
            bi, oi = np.nonzero(cand >= 0)
            parts.append((bi + start, oi, cand[bi, oi]))
        pi = np.concatenate([p[0] for p in parts])
        if pi.size == 0:
            return empty, empty
        oi = np.concatenate([p[1] for p in parts])
        gj = np.concatenate([p[2] for p in parts]).astype(np.int64)
        cost = self.costs[oi]
        # only pixels with a partner in range become nodes (match.cc's "matchable")
        pred_node, pi = _compact(pi, py.size)
        gt_node, gj = _compact(gj, self.gt_count)
        i_idx, j_idx = solve_matching(
            pi, gj, cost, pred_node.size, gt_node.size, self.outlier, self.solver
        )
        return pred_node[i_idx], self.gt_pixels[gt_node[j_idx]]


def _compact(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the ids in use to 0..k-1; returns (used ids, new id of each entry)."""
    used = np.zeros(n, dtype=bool)
    used[ids] = True
    new_id = np.cumsum(used) - 1
    return np.flatnonzero(used), new_id[ids]


def solve_matching(
    pi: np.ndarray,
    gj: np.ndarray,
    cost: np.ndarray,
    n1: int,
    n2: int,
    outlier: int,
    solver: str = "lapmod",
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``sum_M cost - outlier * |M|`` over one-to-one matchings M of the edges
    (pi[k], gj[k]) with integer `cost` between n1 left and n2 right nodes (see the module
    docstring). Returns the matched (left, right) node pairs."""
    if n1 == 1 or n2 == 1:
        # a single node on one side: its cheapest edge (outlier > every edge cost)
        k = int(np.argmin(cost))
        return pi[k : k + 1], gj[k : k + 1]
    m = pi.size
    n = n1 + n2
    a1 = np.arange(n1, dtype=np.int64)
    a2 = np.arange(n2, dtype=np.int64)
    rows = np.concatenate([pi, a1, n1 + a2, n1 + gj])
    cols = np.concatenate([gj, n2 + a1, a2, n2 + pi])
    # doubled so that every weight is a non-zero integer: 2 (c + 1), outlier + 2, 2
    data = np.concatenate([2.0 * (cost + 1), np.full(n, float(outlier + 2)), np.full(m, 2.0)])
    graph = csr_matrix((data, (rows, cols)), shape=(n, n))
    if solver == "lapmod":
        graph.sort_indices()
        x, _ = lap.lapmod(n, graph.data, graph.indptr, graph.indices, return_cost=False)
        row_ind = np.arange(n)
        col_ind = np.asarray(x, dtype=np.int64)
    else:
        row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = (row_ind < n1) & (col_ind < n2)
    return row_ind[real], col_ind[real]


def correspond_pixels(
    pred: np.ndarray, gt: np.ndarray, max_dist: float = 0.0075, solver: str = "lapmod"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact min-cost one-to-one correspondence between two binary H x W boundary maps.

    Pixels match within ``max_dist`` times the image diagonal. Returns boolean maps
    ``(matched_pred, matched_gt)``, true at the pixels that found a partner, like the
    ``match1 > 0`` and ``match2 > 0`` of BSDS's ``correspondPixels``.
    """
    pred = np.asarray(pred) != 0
    gt = np.asarray(gt) != 0
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(
            f"correspond_pixels: maps must be 2-D and equal, got {pred.shape}, {gt.shape}"
        )
    matcher = Matcher(gt, max_dist_pixels(gt.shape, max_dist), solver)
    py, px = np.nonzero(pred)
    p_idx, g_flat = matcher.match(py, px)
    m1 = np.zeros(pred.shape, dtype=bool)
    m2 = np.zeros(gt.size, dtype=bool)
    m1[py[p_idx], px[p_idx]] = True
    m2[g_flat] = True
    return m1, m2.reshape(gt.shape)
