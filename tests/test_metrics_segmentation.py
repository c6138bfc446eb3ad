"""Segmentation metrics: hand-computed cases, set-level accumulation, ignore handling, errors."""

import math

import numpy as np
import pytest

from pag.errors import PagError
from pag.metrics import MetricError, SegmentationAccumulator, segmentation_metrics

KEYS = {"miou", "pixel_acc", "mean_acc", "iou_per_class"}

# 2 x 3 image, 3 classes, 255 = ignore. Valid (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,0);
# the prediction 2 at the ignored pixel is dropped.
GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])


def test_hand_computed_every_key():
    out = segmentation_metrics(PRED, GT, num_classes=3, ignore_index=255)
    assert set(out) == KEYS
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: 0/1
    assert out["iou_per_class"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert out["miou"] == pytest.approx(1 / 3)
    assert out["pixel_acc"] == pytest.approx(3 / 5)
    assert out["mean_acc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert all(isinstance(v, float) for v in out["iou_per_class"])


def test_class_absent_from_both_is_excluded_from_the_mean():
    out = segmentation_metrics(PRED, GT, num_classes=5, ignore_index=255)
    assert math.isnan(out["iou_per_class"][3]) and math.isnan(out["iou_per_class"][4])
    assert out["miou"] == pytest.approx(1 / 3)  # not (1/3 + 2/3) / 5
    assert out["mean_acc"] == pytest.approx(0.5)


def test_class_predicted_but_never_in_ground_truth_counts_as_zero_iou():
    gt = np.zeros((1, 4), dtype=np.int64)
    pred = np.array([[0, 0, 1, 1]])
    out = segmentation_metrics(pred, gt, num_classes=2)
    assert out["iou_per_class"] == pytest.approx([0.5, 0.0])
    assert out["miou"] == pytest.approx(0.25)
    assert out["pixel_acc"] == pytest.approx(0.5)
    assert out["mean_acc"] == pytest.approx(0.5)  # class 1 has no ground truth: skipped


def test_perfect_prediction_scores_one():
    gt = np.random.default_rng(0).integers(0, 4, size=(3, 8, 9))
    out = segmentation_metrics(gt.copy(), gt, num_classes=4)
    assert out["miou"] == out["pixel_acc"] == out["mean_acc"] == 1.0
    assert out["iou_per_class"] == [1.0] * 4


def test_predictions_on_ignored_pixels_do_not_matter():
    other = PRED.copy()
    other[1, 2] = 0
    assert segmentation_metrics(other, GT, 3) == segmentation_metrics(PRED, GT, 3)


def test_set_level_accumulation_not_per_image_mean():
    # image A: 1 pixel, wrong; image B: 3 pixels, right. Pooled accuracy 3/4, not 1/2.
    a_gt, a_pred = np.array([[0]]), np.array([[1]])
    b_gt, b_pred = np.array([[0, 0, 0]]), np.array([[0, 0, 0]])
    out = segmentation_metrics([a_pred, b_pred], [a_gt, b_gt], num_classes=2)
    assert out["pixel_acc"] == pytest.approx(0.75)
    assert out["iou_per_class"] == pytest.approx([0.75, 0.0])


def test_accumulator_over_batches_equals_one_call():
    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 5, size=(6, 7)) for _ in range(4)] + [rng.integers(0, 5, size=(3, 2))]
    preds = [rng.integers(0, 5, size=g.shape) for g in gts]
    gts[0][0, :] = 255
    acc = SegmentationAccumulator(5)
    acc.update(np.stack(preds[:2]), np.stack(gts[:2]))  # a stacked batch
    acc.update(preds[2:], gts[2:])  # a list with another image size
    assert acc.compute() == segmentation_metrics(preds, gts, 5)
    acc.reset()
    assert np.isnan(acc.compute()["miou"])


def test_all_ignored_gives_nan():
    out = segmentation_metrics(np.zeros((2, 2), int), np.full((2, 2), 255), num_classes=3)
    assert math.isnan(out["miou"]) and math.isnan(out["pixel_acc"])
    assert math.isnan(out["mean_acc"])
    assert all(math.isnan(v) for v in out["iou_per_class"])


def test_uint8_labels_and_no_ignore_index():
    gt = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    pred = np.array([[0, 1], [0, 1]], dtype=np.uint8)
    out = segmentation_metrics(pred, gt, num_classes=2, ignore_index=None)
    assert out["pixel_acc"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (np.zeros((2, 3), int), np.zeros((3, 2), int), r"gt\[0\]: shape \(3, 2\) does not match"),
        (np.array([[0, 3]]), np.array([[0, 1]]), r"pred\[0\]: labels \[3\] outside 0\.\.2"),
        (np.array([[0, 1]]), np.array([[7, 1]]), r"gt\[0\]: labels \[7\] outside 0\.\.2 and not"),
        (np.array([[-1, 1]]), np.array([[0, 1]]), r"pred\[0\]: labels \[-1\]"),
        (np.array([[np.nan, 1.0]]), np.array([[0, 1]]), r"pred\[0\]: expected integer class"),
        ([], [], r"pred: got an empty list"),
        ([np.zeros((2, 2), int)], [np.zeros((2, 2), int)] * 2, r"gt: has 2 images but pred has 1"),
        (np.zeros((2, 2, 2, 2), int), np.zeros((2, 2, 2, 2), int), r"pred: expected a 2-D"),
    ],
)
def test_bad_input_raises_clear_errors(pred, gt, match):
    with pytest.raises(MetricError, match=match):
        segmentation_metrics(pred, gt, num_classes=3)


def test_errors_are_pag_and_value_errors():
    assert issubclass(MetricError, PagError) and issubclass(MetricError, ValueError)


def test_bad_constructor_arguments():
    with pytest.raises(MetricError, match="num_classes: expected a positive integer"):
        SegmentationAccumulator(0)
    with pytest.raises(MetricError, match="ignore_index: 2 is a valid class id"):
        SegmentationAccumulator(3, ignore_index=2)


def test_failed_update_leaves_state_untouched():
    acc = SegmentationAccumulator(3)
    acc.update(PRED, GT)
    before = acc.confusion.copy()
    with pytest.raises(MetricError):
        acc.update([PRED, np.array([[9]])], [GT, np.array([[0]])])
    np.testing.assert_array_equal(acc.confusion, before)
