"""Depth metrics: Eigen et al. definitions by hand, per-image averaging, cap, crop, errors."""

import math

import numpy as np
import pytest

from pag.metrics import (
    DEPTH_KEYS,
    EIGEN_CROP,
    NYU_MAX_DEPTH,
    DepthAccumulator,
    MetricError,
    depth_metrics,
    eigen_crop_mask,
)

# three valid pixels (gt 1, 2, 4; pred 1.9, 2, 3) and one invalid (gt 0)
GT = np.array([[1.0, 2.0], [4.0, 0.0]], dtype=np.float32)
PRED = np.array([[1.9, 2.0], [3.0, 5.0]], dtype=np.float32)


def test_hand_computed_every_key():
    out = depth_metrics(PRED, GT)
    assert set(out) == {*DEPTH_KEYS, "num_images", "num_skipped"}
    d = [float(np.float32(1.9)), 2.0, 3.0]
    g = [1.0, 2.0, 4.0]
    e = [math.log(di / gi) for di, gi in zip(d, g, strict=True)]
    n = 3
    expected = {
        "abs_rel": sum(abs(di - gi) / gi for di, gi in zip(d, g, strict=True)) / n,
        "sq_rel": sum((di - gi) ** 2 / gi for di, gi in zip(d, g, strict=True)) / n,
        "rmse": math.sqrt(sum((di - gi) ** 2 for di, gi in zip(d, g, strict=True)) / n),
        "rmse_log": math.sqrt(sum(x * x for x in e) / n),
        "log10": sum(abs(math.log10(a) - math.log10(b)) for a, b in zip(d, g, strict=True)) / n,
        "silog": 100 * math.sqrt(sum(x * x for x in e) / n - (sum(e) / n) ** 2),
        # max(d/g, g/d) = 1.9, 1, 4/3: below 1.25 -> 1 pixel, below 1.5625 -> 2, below 1.953 -> 3
        "delta1": 1 / 3,
        "delta2": 2 / 3,
        "delta3": 1.0,
    }
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12), key
    # the numbers themselves, rounded by hand: |0.9| + 0 + |1|/4 = 1.15 over 3 pixels
    assert out["abs_rel"] == pytest.approx(1.15 / 3, rel=1e-6)
    assert out["sq_rel"] == pytest.approx((0.81 + 0.25) / 3, rel=1e-6)
    assert out["rmse"] == pytest.approx(math.sqrt(1.81 / 3), rel=1e-6)
    assert out["num_images"] == 1 and out["num_skipped"] == 0


def test_perfect_prediction():
    gt = np.random.default_rng(0).uniform(0.5, 9, size=(2, 5, 6))
    out = depth_metrics(gt.copy(), gt)
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert out[key] == 0.0, key
    assert out["delta1"] == out["delta2"] == out["delta3"] == 1.0


@pytest.mark.parametrize("s", [0.5, 1.1, 3.0])
def test_scaling_prediction_shifts_log_errors_by_log_s(s):
    rng = np.random.default_rng(2)
    gt = rng.uniform(0.5, 9, size=(7, 9))
    pred = gt * np.exp(0.2 * rng.standard_normal(gt.shape))
    base = depth_metrics(pred, gt)
    scaled = depth_metrics(s * pred, gt)
    # silog is scale-invariant; the mean log error e moves by log s, and
    # mean(e) = sqrt(rmse_log^2 - (silog / 100)^2) in absolute value
    assert scaled["silog"] == pytest.approx(base["silog"], rel=1e-9)
    e = np.log(pred / gt)
    assert math.sqrt(scaled["rmse_log"] ** 2 - (scaled["silog"] / 100) ** 2) == pytest.approx(
        abs(e.mean() + math.log(s)), rel=1e-6
    )
    # a prediction that is exactly s times the truth
    exact = depth_metrics(s * gt, gt)
    assert exact["rmse_log"] == pytest.approx(abs(math.log(s)), rel=1e-12)
    assert exact["log10"] == pytest.approx(abs(math.log10(s)), rel=1e-12)
    assert exact["silog"] == pytest.approx(0.0, abs=1e-5)
    assert exact["abs_rel"] == pytest.approx(abs(s - 1), rel=1e-12)


def test_per_image_average_not_pixel_pooling():
    # image A: 1 pixel with abs_rel 1 and rmse 1; image B: 3 perfect pixels
    a_gt, a_pred = np.array([[1.0]]), np.array([[2.0]])
    b_gt = np.array([[1.0, 2.0, 3.0]])
    out = depth_metrics([a_pred, b_gt.copy()], [a_gt, b_gt])
    assert out["abs_rel"] == pytest.approx(0.5)  # pooled would be 0.25
    assert out["rmse"] == pytest.approx(0.5)  # pooled would be sqrt(1/4)
    assert out["num_images"] == 2


def test_cap_excludes_far_ground_truth_and_clips_predictions():
    gt = np.array([[2.0, 10.0, 12.0, 5.0]])
    pred = np.array([[2.0, 1.0, 1.0, 15.0]])
    out = depth_metrics(pred, gt, max_depth=NYU_MAX_DEPTH)
    # valid: gt 2 (exact) and gt 5 (pred 15 clipped to 10); gt 10 and 12 are not < 10
    assert out["abs_rel"] == pytest.approx((0 + 5 / 5) / 2)
    uncapped = depth_metrics(pred, gt)
    assert uncapped["abs_rel"] == pytest.approx((0 + 0.9 + 11 / 12 + 2) / 4)


def test_min_depth_drops_invalid_and_clips_non_positive_predictions():
    gt = np.array([[0.0, 1.0]])
    pred = np.array([[7.0, 0.0]])  # the gt-0 pixel is invalid; pred 0 is clipped to 1e-3
    out = depth_metrics(pred, gt)
    assert out["abs_rel"] == pytest.approx(1 - 1e-3)
    with pytest.raises(MetricError, match=r"pred\[0\]: non-positive depths"):
        depth_metrics(pred, gt, clip_pred=False)


def test_mask_excludes_pixels():
    out = depth_metrics(PRED, GT, mask=np.array([[True, True], [False, True]]))
    assert out["abs_rel"] == pytest.approx(0.9 / 2, rel=1e-6)
    assert out["delta1"] == pytest.approx(0.5)


def test_eigen_crop_exact_bounds():
    mask = eigen_crop_mask((480, 640))
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600]
    assert not mask[44, 41] and not mask[45, 40] and not mask[471, 600] and not mask[470, 601]
    assert (slice(45, 471), slice(41, 601)) == EIGEN_CROP
    gt = np.full((480, 640), 2.0, dtype=np.float32)
    pred = gt.copy()
    pred[44, :] = 4.0  # just outside the crop
    pred[:, 601] = 4.0
    assert depth_metrics(pred, gt, eigen_crop=True)["abs_rel"] == 0.0
    assert depth_metrics(pred, gt)["abs_rel"] > 0
    pred[45, 41] = 4.0  # just inside
    assert depth_metrics(pred, gt, eigen_crop=True)["abs_rel"] == pytest.approx(1 / mask.sum())


def test_eigen_crop_refuses_other_sizes():
    with pytest.raises(MetricError, match=r"eigen_crop: .* defined for 480 x 640 maps"):
        depth_metrics(np.ones((48, 64)), np.ones((48, 64)), eigen_crop=True)


def test_images_without_valid_pixels_are_skipped_and_counted():
    empty = np.zeros((2, 2))
    out = depth_metrics([PRED, np.ones((2, 2)), PRED], [GT, empty, GT])
    assert out["num_images"] == 2 and out["num_skipped"] == 1
    assert out["abs_rel"] == pytest.approx(depth_metrics(PRED, GT)["abs_rel"])
    none = depth_metrics(np.ones((2, 2)), empty)
    assert none["num_images"] == 0 and none["num_skipped"] == 1
    assert all(math.isnan(none[k]) for k in DEPTH_KEYS)


def test_accumulator_over_batches_equals_one_call():
    rng = np.random.default_rng(3)
    gts = [rng.uniform(0.1, 12, size=(5, 6)) for _ in range(5)]
    preds = [g * rng.uniform(0.8, 1.2, size=g.shape) for g in gts]
    acc = DepthAccumulator(max_depth=10.0)
    acc.update(np.stack(preds[:3]), np.stack(gts[:3]))
    acc.update(preds[3:], gts[3:])
    assert acc.compute() == depth_metrics(preds, gts, max_depth=10.0)


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.ones((2, 3)), np.ones((3, 2)), {}, r"pred\[0\]: shape \(2, 3\) does not match gt"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), {}, r"pred\[0\]: contains 1 NaN or Inf"),
        (np.ones((1, 2)), np.array([[np.inf, 1.0]]), {}, r"gt\[0\]: contains 1 NaN or Inf"),
        (np.ones((1, 2)), np.array([[-1.0, 1.0]]), {}, r"gt\[0\]: negative depths"),
        (np.ones((1, 2)), np.ones((1, 2)), {"mask": np.ones((2, 1))}, r"mask\[0\]: shape"),
        ([], [], {}, r"pred: got an empty list"),
        ([np.ones((2, 2))] * 2, [np.ones((2, 2))], {}, r"gt: has 1 images but pred has 2"),
        (np.ones((1, 2)), np.ones((1, 2)), {"max_depth": 1e-4}, r"max_depth: expected None"),
        (np.ones((1, 2)), np.ones((1, 2)), {"min_depth": 0.0}, r"min_depth: expected a positive"),
    ],
)
def test_bad_input_raises_clear_errors(pred, gt, kwargs, match):
    with pytest.raises(MetricError, match=match):
        depth_metrics(pred, gt, **kwargs)


_SCRIPT = """
import numpy as np
from pag.metrics import depth_metrics, normal_metrics
rng = np.random.default_rng(3)
gt = rng.uniform(0.5, 10.0, (480, 640))
pred = gt * rng.uniform(0.7, 1.3, gt.shape)
n = rng.normal(size=(3, 480, 640)); n /= np.linalg.norm(n, axis=0)
m = rng.normal(size=(3, 480, 640)); m /= np.linalg.norm(m, axis=0)
print(repr(depth_metrics(pred, gt)), repr(normal_metrics(m, n)))
"""


def test_metrics_do_not_depend_on_the_blas_thread_count():
    """BLAS dot products change in the last bit with their thread count (OpenBLAS splits the
    sum); metrics must not, or a rerun under another scheduler writes other bytes."""
    import os
    import subprocess
    import sys

    outputs = set()
    for threads in ("1", "2", "4"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
