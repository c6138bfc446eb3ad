"""Normal metrics: hand-computed angles, pooling over the set, clipping, invalid pixels."""

import math

import numpy as np
import pytest

from pag.metrics import NORMAL_KEYS, MetricError, NormalAccumulator, normal_metrics


def tilted(degrees, lengths=None):
    """3 x 1 x P normals at the given angles from +z in the x-z plane, of arbitrary length."""
    t = np.radians(np.asarray(degrees, dtype=np.float64))
    v = np.stack([np.sin(t), np.zeros_like(t), np.cos(t)])
    if lengths is not None:
        v = v * np.asarray(lengths)
    return v[:, None, :]


def up(n):
    return np.tile(np.array([0.0, 0.0, 1.0])[:, None, None], (1, 1, n))


def test_hand_computed_every_key():
    # errors 0, 10, 20, 25, 90 degrees, predictions not unit length, plus an invalid pixel
    pred = np.concatenate([tilted([0, 10, 20, 25, 90], [2.0, 0.5, 3.0, 1.0, 7.0]), up(1)], 2)
    gt = np.concatenate([up(5), np.zeros((3, 1, 1))], 2)
    out = normal_metrics(pred, gt)
    assert set(out) == set(NORMAL_KEYS)
    assert out["mean"] == pytest.approx(29.0)
    assert out["median"] == pytest.approx(20.0, abs=1e-5)  # errors are stored as float32
    assert out["rmse"] == pytest.approx(math.sqrt((0 + 100 + 400 + 625 + 8100) / 5))
    assert out["within_11_25"] == pytest.approx(2 / 5)
    assert out["within_22_5"] == pytest.approx(3 / 5)
    assert out["within_30"] == pytest.approx(4 / 5)


def test_even_count_median_averages_the_middle_two():
    out = normal_metrics(tilted([0, 10, 20, 90]), up(4))
    assert out["median"] == pytest.approx(15.0, abs=1e-5)


def test_median_is_exact_over_many_images():
    rng = np.random.default_rng(0)
    preds = [rng.standard_normal((3, 9, 11)) for _ in range(7)]
    gts = [rng.standard_normal((3, 9, 11)) for _ in range(7)]
    out = normal_metrics(preds, gts)
    theta = []
    for p, g in zip(preds, gts, strict=True):
        p, g = p.reshape(3, -1), g.reshape(3, -1)
        cos = (p * g).sum(0) / np.linalg.norm(p, axis=0) / np.linalg.norm(g, axis=0)
        theta.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    theta = np.concatenate(theta)
    assert out["median"] == pytest.approx(np.median(theta), abs=1e-4)
    assert out["mean"] == pytest.approx(theta.mean(), rel=1e-12)


def test_flipped_normals_are_180_degrees():
    gt = np.random.default_rng(1).standard_normal((3, 4, 5))
    out = normal_metrics(-gt, gt)
    assert out["mean"] == pytest.approx(180.0)
    assert out["median"] == pytest.approx(180.0)
    assert out["rmse"] == pytest.approx(180.0)
    assert out["within_30"] == 0.0


def test_perfect_prediction_with_other_lengths():
    gt = np.random.default_rng(2).standard_normal((2, 3, 4, 5))
    out = normal_metrics(3.0 * gt, gt)
    assert out["mean"] == pytest.approx(0.0, abs=1e-5)
    assert out["within_11_25"] == out["within_22_5"] == out["within_30"] == 1.0


def test_cosine_is_clipped_before_arccos():
    # parallel vectors whose computed cosine rounds to 1.0000000000000002
    g = np.array([-0.535669373161111, 0.36159505490948474, 1.3040000451301372])
    p = np.array([-3.9221796962164084, 2.647604760841311, 9.54790913412261])
    unclipped = (p[0] * g[0] + p[1] * g[1] + p[2] * g[2]) / math.sqrt(
        (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) * (g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
    )
    assert unclipped > 1.0  # arccos would give NaN
    out = normal_metrics(p[:, None, None], g[:, None, None])
    assert out["mean"] == 0.0 and out["median"] == 0.0


def test_pooled_over_pixels_not_averaged_per_image():
    # image A: 1 pixel at 90 degrees; image B: 3 perfect pixels -> 22.5, not 45
    out = normal_metrics([tilted([90]), tilted([0, 0, 0])], [up(1), up(3)])
    assert out["mean"] == pytest.approx(22.5)
    assert out["within_11_25"] == pytest.approx(0.75)


def test_invalid_ground_truth_and_mask_are_ignored():
    pred = tilted([0, 40, 60])
    gt = up(3)
    gt[:, 0, 2] = 0.0  # invalid
    out = normal_metrics(pred, gt)
    assert out["mean"] == pytest.approx(20.0)
    masked = normal_metrics(pred, gt, mask=np.array([[True, False, True]]))
    assert masked["mean"] == pytest.approx(0.0, abs=1e-6)


def test_zero_prediction_scores_90_degrees():
    out = normal_metrics(np.zeros((3, 1, 2)), up(2))
    assert out["mean"] == pytest.approx(90.0)


def test_no_valid_pixel_gives_nan():
    out = normal_metrics(tilted([10, 20]), np.zeros((3, 1, 2)))
    assert all(math.isnan(out[k]) for k in NORMAL_KEYS)


def test_accumulator_over_batches_equals_one_call():
    rng = np.random.default_rng(3)
    preds = [rng.standard_normal((3, 4, 6)) for _ in range(4)]
    gts = [rng.standard_normal((3, 4, 6)) for _ in range(4)]
    acc = NormalAccumulator()
    acc.update(np.stack(preds[:2]), np.stack(gts[:2]))
    acc.update(preds[2:], gts[2:])
    assert acc.compute() == pytest.approx(normal_metrics(preds, gts))


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.ones((4, 5, 3)), np.ones((4, 5, 3)), {}, r"gt\[0\]: expected 3 x H x W normals"),
        (np.ones((3, 4, 5)), np.ones((3, 5, 4)), {}, r"pred\[0\]: shape \(3, 4, 5\) does not"),
        (np.full((3, 1, 1), np.nan), np.ones((3, 1, 1)), {}, r"pred\[0\]: contains 3 NaN or Inf"),
        (np.ones((3, 2, 2)), np.ones((3, 2, 2)), {"mask": np.ones((3, 3))}, r"mask\[0\]: shape"),
        ([], [], {}, r"pred: got an empty list"),
        (np.ones((2, 2)), np.ones((2, 2)), {}, r"pred: expected a 3-D image"),
    ],
)
def test_bad_input_raises_clear_errors(pred, gt, kwargs, match):
    with pytest.raises(MetricError, match=match):
        normal_metrics(pred, gt, **kwargs)
