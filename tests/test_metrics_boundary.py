"""Boundary benchmark: thinning, exact matching (vs greedy and a dense solver), per-image
counts, ODS / OIS / AP aggregation by hand, edge cases and input errors."""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from pag.metrics import (
    BoundaryAccumulator,
    MetricError,
    boundary_metrics,
    boundary_thresholds,
    correspond_pixels,
    edge_nms,
    evaluate_boundary_image,
    thin,
)
from pag.metrics._match import Matcher, solve_matching
from pag.metrics._nms import conv_tri
from pag.metrics._thin import DELETE_LUT_1, DELETE_LUT_2

# A 30 x 40 image has a diagonal of exactly 50 px, so max_dist=0.1 allows 5 px.
SHAPE = (30, 40)
MD = 0.1


def pixels(points, shape=SHAPE):
    out = np.zeros(shape, dtype=bool)
    for r, c in points:
        out[r, c] = True
    return out


# ---------------------------------------------------------------- thinning


def reference_thin(bw):
    """Whole-image parallel subiterations with the same tables, until nothing changes."""
    img = np.pad(bw.astype(np.uint8), 1)
    weights = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]])
    while True:
        before = img.copy()
        for lut in (DELETE_LUT_1, DELETE_LUT_2):
            code = ndi.correlate(img.astype(np.int64), weights, mode="constant")
            img[lut[code] & (img == 1)] = 0
        if np.array_equal(img, before):
            return img[1:-1, 1:-1].astype(bool)


def test_thin_matches_scikit_image_published_output():
    # skimage/morphology/tests/test_skeletonize.py (TestThin.test_noiter): the expected
    # output of scikit-image's thin, written to replicate MATLAB bwmorph(..., 'thin', Inf)
    image = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 1, 2, 3, 4, 5, 0],
            [0, 1, 0, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 6, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0],
        ]
    )
    expected = np.zeros((7, 7), dtype=bool)
    expected[[1, 2, 2, 3], [2, 1, 3, 2]] = True
    np.testing.assert_array_equal(thin(image), expected)


def test_thin_lookup_tables():
    # an isolated pixel, an end point and a full 3x3 interior are never deleted
    for code in (0, 0b00000001, 0b11111111):
        assert not DELETE_LUT_1[code] and not DELETE_LUT_2[code]
    # a pixel on the east edge of a block (neighbours N, NW, W, SW, S) goes in subiteration 1
    east_edge = 0b01111100
    assert DELETE_LUT_1[east_edge] and not DELETE_LUT_2[east_edge]


def test_thin_bar_becomes_one_pixel_line_and_keeps_lines():
    bar = np.zeros((9, 20), dtype=bool)
    bar[3:6, 2:18] = True
    out = thin(bar)
    assert out.sum() >= 12 and out[4, 4:16].all()
    assert not out[3].any() and not out[5].any()
    line = pixels([(10, c) for c in range(5, 15)])
    np.testing.assert_array_equal(thin(line), line)
    assert not thin(np.zeros((5, 5))).any()


def test_thin_equals_whole_image_reference_and_is_idempotent():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(1, 40, size=2)
        smooth = ndi.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 3))
        bw = smooth > np.quantile(smooth, rng.uniform(0.2, 0.9))
        out = thin(bw)
        np.testing.assert_array_equal(out, reference_thin(bw))
        np.testing.assert_array_equal(thin(out), out)
        assert not (out & ~bw).any()
        eight = np.ones((3, 3))
        assert ndi.label(out, eight)[1] == ndi.label(bw, eight)[1]  # components preserved


# ---------------------------------------------------------------- matching


def greedy_match_count(pred, gt, max_px):
    """Closest pairs first, each pixel used once: the approximation we must beat."""
    p = np.argwhere(pred)
    g = np.argwhere(gt)
    d = np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    pairs = sorted((d[i, j], i, j) for i in range(len(p)) for j in range(len(g)))
    used_p, used_g = set(), set()
    for dist, i, j in pairs:
        if dist <= max_px and i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
    return len(used_p)


def test_exact_matching_beats_greedy():
    # one row: gt at x=10 and x=15, predictions at x=14 and x=17, 5 px allowed.
    # Greedy takes the closest pair (14, 15), leaving 17 (only near 15) and 10 (only near
    # 14) unmatched; the optimum pairs 14-10 and 17-15.
    gt = pixels([(10, 10), (10, 15)])
    pred = pixels([(10, 14), (10, 17)])
    assert greedy_match_count(pred, gt, 5.0) == 1
    m_pred, m_gt = correspond_pixels(pred, gt, max_dist=MD)
    np.testing.assert_array_equal(m_pred, pred)
    np.testing.assert_array_equal(m_gt, gt)
    counts = evaluate_boundary_image(pred.astype(float), gt, thresholds=1, max_dist=MD)
    assert counts[:, 0].tolist() == [2, 2, 2, 2]  # recall 1, precision 1 (greedy: 1/2, 1/2)


def test_matching_distance_limit_is_inclusive_and_prefers_closer_pixels():
    gt = pixels([(10, 10)])
    _, m_gt = correspond_pixels(pixels([(10, 15)]), gt, max_dist=MD)  # exactly 5 px
    assert m_gt.sum() == 1
    _, m_gt = correspond_pixels(pixels([(10, 16)]), gt, max_dist=MD)  # 6 px
    assert m_gt.sum() == 0
    m_pred, _ = correspond_pixels(pixels([(10, 12), (10, 6)]), gt, max_dist=MD)
    np.testing.assert_array_equal(m_pred, pixels([(10, 12)]))  # distance 2 beats 4


def dense_reference(pi, gj, cost, n1, n2, outlier):
    """match.cc's objective, sum(cost) - outlier * |M|, by dense Hungarian on the full
    outlier graph (every pixel to its own outlier, every outlier pair allowed)."""
    n = n1 + n2
    big = np.full((n, n), np.inf)
    big[pi, gj] = cost
    big[np.arange(n1), n2 + np.arange(n1)] = outlier
    big[n1 + np.arange(n2), np.arange(n2)] = outlier
    big[n1:, n2:] = outlier
    r, c = linear_sum_assignment(big)
    real = (r < n1) & (c < n2)
    return big[r[real], c[real]].sum() - outlier * real.sum()


@pytest.mark.parametrize("solver", ["lapmod", "scipy"])
def test_solvers_reach_the_dense_optimum(solver):
    rng = np.random.default_rng(5)
    for _ in range(60):
        shape = (12, 14)
        pred = rng.random(shape) < rng.uniform(0.05, 0.3)
        gt = rng.random(shape) < rng.uniform(0.05, 0.3)
        matcher = Matcher(gt, 2.5, solver)
        py, px = np.nonzero(pred)
        # rebuild the candidate edges the way Matcher does, then compare objectives
        p_idx, g_flat = matcher.match(py, px)
        gy, gx = np.nonzero(gt)
        d = np.hypot(py[:, None] - gy[None, :], px[:, None] - gx[None, :])
        ii, jj = np.nonzero(d <= 2.5)
        if ii.size == 0:
            assert p_idx.size == 0
            continue
        cost = np.rint(100 * d[ii, jj]).astype(np.int64)
        best = dense_reference(ii, jj, cost, py.size, gy.size, matcher.outlier)
        g_index = {int(f): k for k, f in enumerate(gy * shape[1] + gx)}
        pairs = zip(p_idx, g_flat, strict=True)
        got = sum(cost[(ii == i) & (jj == g_index[int(f)])][0] for i, f in pairs)
        assert got - matcher.outlier * p_idx.size == best
        assert len(set(p_idx.tolist())) == p_idx.size == len(set(g_flat.tolist()))


def test_blockwise_candidate_lookup_gives_the_same_matching(monkeypatch):
    rng = np.random.default_rng(6)
    pred = rng.random(SHAPE) < 0.2
    gt = rng.random(SHAPE) < 0.2
    whole = correspond_pixels(pred, gt, max_dist=MD)
    monkeypatch.setattr("pag.metrics._match._GATHER_LIMIT", 200)  # a few pixels per block
    blocks = correspond_pixels(pred, gt, max_dist=MD)
    np.testing.assert_array_equal(whole[0], blocks[0])
    np.testing.assert_array_equal(whole[1], blocks[1])
    assert whole[1].sum() > 50


def test_solve_matching_single_node_sides():
    i, j = solve_matching(np.array([0, 0]), np.array([0, 1]), np.array([300, 100]), 1, 2, 500)
    assert (i.tolist(), j.tolist()) == ([0], [1])


# ---------------------------------------------------------------- per-image counts


def test_image_counts_by_hand():
    gt = np.stack(
        [
            pixels([(10, c) for c in range(5, 15)]),  # annotator 1: 10 px on row 10
            pixels([(20, c) for c in range(20, 25)]),  # annotator 2: 5 px on row 20
        ]
    )
    prob = np.zeros(SHAPE)
    prob[10, 5:15] = 0.9  # finds annotator 1's line
    prob[21, 20:25] = 0.4  # finds annotator 2's line, one row off
    prob[2, 35] = 0.6  # far from any boundary
    counts = evaluate_boundary_image(prob, gt, thresholds=3, max_dist=MD)  # 0.25, 0.5, 0.75
    expected = [
        [15, 10, 10],  # cntR: matched annotator pixels, summed over annotators
        [15, 15, 15],  # sumR: annotator pixels, summed over annotators
        [15, 10, 10],  # cntP: predicted pixels matching any annotator
        [16, 11, 10],  # sumP: predicted pixels after thresholding and thinning
    ]
    np.testing.assert_array_equal(counts, expected)


def test_thick_predictions_are_thinned_before_matching():
    gt = pixels([(10, c) for c in range(5, 35)])
    prob = np.zeros(SHAPE)
    prob[9:12, 5:35] = 0.8
    thinned = evaluate_boundary_image(prob, gt, thresholds=1, max_dist=MD)
    raw = evaluate_boundary_image(prob, gt, thresholds=1, max_dist=MD, thin_maps=False)
    assert thinned[3, 0] == thin(prob >= 0.5).sum() < 40
    assert raw[3, 0] == 90 and raw[2, 0] == 30  # only 30 of 90 raw pixels can be matched
    assert thinned[2, 0] == thinned[3, 0]  # every thinned pixel is matched


def test_image_without_boundaries_adds_only_false_positives():
    prob = np.zeros(SHAPE)
    prob[5, 5:10] = 0.7
    counts = evaluate_boundary_image(prob, np.zeros(SHAPE), thresholds=3, max_dist=MD)
    np.testing.assert_array_equal(counts, [[0, 0, 0], [0, 0, 0], [0, 0, 0], [5, 5, 0]])
    out = boundary_metrics([prob], [np.zeros((2, *SHAPE))], max_dist=MD)
    assert out["ods"] == out["ois"] == out["ap"] == 0.0


# ---------------------------------------------------------------- aggregation


def matlab_max_f(t, r, p):
    """collect_eval_bdry.m's maxF, loop for loop."""

    def f(r, p):
        return 2 * p * r / (p + r + ((p + r) == 0))

    best = (t[0], r[0], p[0], f(r[0], p[0]))
    for i in range(1, len(t)):
        for d in np.linspace(0, 1, 100):
            ri = r[i] * d + r[i - 1] * (1 - d)
            pi = p[i] * d + p[i - 1] * (1 - d)
            if f(ri, pi) > best[3]:
                best = (t[i] * d + t[i - 1] * (1 - d), ri, pi, f(ri, pi))
    return best


def test_ods_ois_ap_by_hand():
    acc = BoundaryAccumulator(thresholds=3)  # t = 0.25, 0.5, 0.75
    # image A: R = .8 .6 .2, P = .5 .857 1 -> best F at t2
    acc.add_counts([[80, 60, 20], [100, 100, 100], [60, 60, 20], [120, 70, 20]])
    # image B: R = .41 .21 .01, P = .5 .667 1 -> best F at t1
    acc.add_counts([[41, 21, 1], [100, 100, 100], [40, 20, 1], [80, 30, 1]])
    out = acc.compute()
    assert set(out) == {"ods", "ois", "ap", "pr_curve", "nms"}
    curve = out["pr_curve"]
    assert curve["recall"] == pytest.approx([0.605, 0.405, 0.105])
    assert curve["precision"] == pytest.approx([0.5, 0.8, 1.0])
    assert curve["f"] == pytest.approx([0.6050 / 1.105, 0.648 / 1.205, 0.21 / 1.105])
    # ODS interpolates between thresholds and beats every discrete F (best 0.5475)
    t, r, p, f = matlab_max_f([0.25, 0.5, 0.75], [0.605, 0.405, 0.105], [0.5, 0.8, 1.0])
    assert out["ods"] == pytest.approx(f, rel=1e-12)
    assert 0.5687 < out["ods"] < 0.5688
    assert curve["ods_threshold"] == pytest.approx(t)
    assert curve["ods_recall"] == pytest.approx(r) and curve["ods_precision"] == pytest.approx(p)
    # OIS: A at t2 (60/100, 60/70) and B at t1 (41/100, 40/80): R = 101/200, P = 100/150
    assert curve["ois_recall"] == pytest.approx(0.505)
    assert curve["ois_precision"] == pytest.approx(2 / 3)
    assert out["ois"] == pytest.approx(2 * 0.505 * (2 / 3) / (0.505 + 2 / 3))
    # AP: P linear from (0.105, 1.0) to (0.405, 0.8) to (0.605, 0.5), zero elsewhere; on
    # R = 0.11..0.40 (30 points) the mean is 0.9, on 0.41..0.60 (20 points) it is 0.65
    assert out["ap"] == pytest.approx((30 * 0.9 + 20 * 0.65) * 0.01)
    assert out["nms"] is False
    assert curve["num_images"] == 2


def test_ap_uses_101_recall_points_and_the_first_of_repeated_recalls():
    acc = BoundaryAccumulator(thresholds=2)
    acc.add_counts([[10, 5], [10, 10], [5, 5], [10, 5]])  # R = 1, .5; P = .5, 1
    # P falls linearly from 1 at R = .5 to .5 at R = 1: 51 grid points (R = 1 included)
    assert acc.compute()["ap"] == pytest.approx(51 * 0.75 * 0.01)
    acc = BoundaryAccumulator(thresholds=3)
    acc.add_counts([[5, 5, 2], [10, 10, 10], [4, 6, 2], [10, 10, 2]])  # R = .5, .5, .2
    # the repeated recall .5 keeps the precision of its first threshold (.4, not .6)
    assert acc.compute()["ap"] == pytest.approx(31 * (1.0 + 0.4) / 2 * 0.01)


def test_ois_takes_the_first_best_threshold():
    acc = BoundaryAccumulator(thresholds=2)
    acc.add_counts([[5, 5], [10, 10], [5, 5], [10, 10]])  # equal F at both thresholds
    acc.add_counts([[0, 0], [10, 10], [0, 0], [4, 0]])  # F = 0: first threshold, 4 FPs
    out = acc.compute()
    assert out["pr_curve"]["ois_precision"] == pytest.approx(5 / 14)


def test_default_thresholds():
    thr = boundary_thresholds()
    assert thr.size == 99 and thr[0] == pytest.approx(0.01) and thr[-1] == pytest.approx(0.99)
    np.testing.assert_allclose(np.diff(thr), 0.01)


def test_perfect_soft_prediction():
    rng = np.random.default_rng(7)
    gt = np.zeros(SHAPE, dtype=bool)
    gt[8, 3:37] = gt[3:27, 20] = gt[22, 3:37] = True
    prob = np.where(gt, rng.uniform(0.02, 1.0, SHAPE), 0.0)
    out = boundary_metrics([prob], [gt[None]], max_dist=MD)
    curve = out["pr_curve"]
    assert out["ods"] == pytest.approx(1.0) and out["ois"] == pytest.approx(1.0)
    assert curve["precision"] == [1.0] * 99  # every thinned pixel lies on the truth
    assert curve["recall"][0] == 1.0
    # AP: precision 1 on the grid points inside [min recall, 1], 0 below
    below = np.arange(101)[np.linspace(0, 1, 101) < min(curve["recall"])].size
    assert out["ap"] == pytest.approx((101 - below) * 0.01)


def test_binary_perfect_prediction_has_no_curve_so_ap_is_zero():
    gt = pixels([(10, c) for c in range(5, 25)])
    out = boundary_metrics([gt.astype(float)], [gt], max_dist=MD)
    assert out["ods"] == out["ois"] == 1.0
    assert out["ap"] == 0.0  # a single distinct recall: collect_eval_bdry.m's Area_PR = 0


def test_recall_over_annotators_and_precision_on_the_union():
    a1 = pixels([(10, c) for c in range(5, 15)])
    a2 = pixels([(20, c) for c in range(5, 15)])
    prob = a1.astype(float)  # finds annotator 1 only
    out = boundary_metrics([prob], [np.stack([a1, a2])], thresholds=1, max_dist=MD)
    assert out["pr_curve"]["recall"] == [0.5]  # 10 of 20 annotated pixels
    assert out["pr_curve"]["precision"] == [1.0]  # each predicted pixel matches someone


# ---------------------------------------------------------------- NMS


def test_conv_tri_radius_one_is_121():
    x = np.zeros((5, 5), dtype=np.float32)
    x[2, 2] = 16
    np.testing.assert_allclose(conv_tri(x, 1)[1:4, 1:4], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def vertical_ridge(col=20.0):
    return np.exp(-((np.arange(40)[None, :] - col) ** 2) / 8.0) * np.ones((30, 1))


def test_edge_nms_keeps_the_ridge_and_fades_the_border():
    out = edge_nms(vertical_ridge())
    assert (out[5:25, 20] > 0.5).all()
    assert (out[5:25, 19] == 0).all() and (out[5:25, 21] == 0).all()
    assert (out[:, :18] == 0).all() and (out[:, 23:] == 0).all()
    # the 5 rows nearest the top and bottom are scaled by distance / 5
    assert out[0, 20] == 0 and out[2, 20] == pytest.approx(out[15, 20] * 2 / 5, rel=1e-5)


def test_nms_is_off_by_default_and_recorded():
    gt = pixels([(r, 20) for r in range(30)])
    prob = vertical_ridge()
    plain = boundary_metrics([prob], [gt], thresholds=5, max_dist=MD)
    nms = boundary_metrics([prob], [gt], thresholds=5, max_dist=MD, nms=True)
    assert plain["nms"] is False and nms["nms"] is True
    assert nms["pr_curve"]["recall"] != plain["pr_curve"]["recall"]  # NMS was applied
    # only the border rows, faded by NMS, are missed at the best threshold
    assert nms["pr_curve"]["ods_precision"] == pytest.approx(1.0)
    assert nms["pr_curve"]["ods_recall"] >= 26 / 30


# ---------------------------------------------------------------- API and errors


def test_inputs_in_every_layout_and_workers_agree():
    rng = np.random.default_rng(9)
    gts = [rng.random((2, *SHAPE)) < 0.05 for _ in range(3)]
    probs = [ndi.gaussian_filter(g.mean(0), 1) * 3 for g in gts]
    probs = [np.clip(p, 0, 1) for p in probs]
    one = boundary_metrics(probs, gts, thresholds=9, max_dist=MD)
    stacked = boundary_metrics(np.stack(probs), np.stack(gts), thresholds=9, max_dist=MD)
    assert one == stacked
    acc = BoundaryAccumulator(thresholds=9, max_dist=MD)
    for p, g in zip(probs, gts, strict=True):
        acc.update(p, g)
    assert acc.compute() == one
    assert boundary_metrics(probs, gts, thresholds=9, max_dist=MD, workers=2) == one


@pytest.mark.parametrize(
    ("probs", "gts", "kwargs", "match"),
    [
        ([np.full(SHAPE, 2.0)], [np.zeros(SHAPE)], {}, r"probs\[0\]: values in \[2\.0, 2\.0\]"),
        ([np.full(SHAPE, np.nan)], [np.zeros(SHAPE)], {}, r"probs\[0\]: contains 1200 NaN"),
        ([np.zeros(SHAPE)], [np.full(SHAPE, 2)], {}, r"gts\[0\]: expected binary boundary"),
        ([np.zeros(SHAPE)], [np.zeros((2, 30, 41))], {}, r"gts\[0\]: annotator maps are \("),
        ([np.zeros(SHAPE)], [np.zeros((0, *SHAPE))], {}, r"gts\[0\]: expected K x H x W"),
        ([], [], {}, r"probs: got an empty list"),
        ([np.zeros(SHAPE)] * 2, [np.zeros(SHAPE)], {}, r"gts: has 1 images but probs has 2"),
        ([np.zeros(SHAPE)], [np.zeros(SHAPE)], {"thresholds": 0}, r"thresholds: expected a"),
        ([np.zeros(SHAPE)], [np.zeros(SHAPE)], {"max_dist": 0.0}, r"max_dist: expected a"),
    ],
)
def test_bad_input_raises_clear_errors(probs, gts, kwargs, match):
    with pytest.raises(MetricError, match=match):
        boundary_metrics(probs, gts, **kwargs)


def test_compute_without_images_and_bad_counts():
    acc = BoundaryAccumulator()
    with pytest.raises(MetricError, match="no image was evaluated"):
        acc.compute()
    with pytest.raises(MetricError, match=r"counts: expected shape \(4, 99\)"):
        acc.add_counts(np.zeros((4, 3)))


def test_max_dist_in_pixels_follows_the_diagonal():
    # 321 x 481 (BSDS): 0.0075 * 578.3 = 4.34 px, so 4 px matches and 5 px does not
    assert 0.0075 * math.hypot(321, 481) == pytest.approx(4.337, abs=1e-3)
    gt = np.zeros((321, 481), dtype=bool)
    gt[100, 100] = True
    for dx, matched in ((4, 1), (5, 0)):
        pred = np.zeros_like(gt)
        pred[100, 100 + dx] = True
        assert correspond_pixels(pred, gt)[1].sum() == matched


def test_thinning_maps_together_equals_thinning_each():
    """The boundary metric thins all thresholded maps of an image in one pass; each map must
    come out as thinned alone, whatever the others need (different densities converge after
    different numbers of subiterations)."""
    from pag.metrics._thin import thin, thin_many

    rng = np.random.default_rng(5)
    densities = [0.02, 0.2, 0.5, 0.8, 0.97]
    stack = np.stack([rng.random((30, 41)) < d for d in densities])
    stack[2, 10:20, 5:35] = True  # a thick bar: many subiterations
    together = thin_many(stack)
    for alone, bw in zip(together, stack, strict=True):
        np.testing.assert_array_equal(alone, thin(bw))
    assert together.dtype == bool and together.shape == stack.shape
    assert not np.array_equal(together, stack)  # something was thinned
