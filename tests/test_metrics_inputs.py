"""Metric inputs that look plausible but are wrong give clear errors; torch inputs work."""

import numpy as np
import pytest
import torch

from pag.metrics import MetricError, depth_metrics, normal_metrics, segmentation_metrics


def test_integer_depths_and_normals_are_refused_as_undecoded():
    gt = np.full((4, 4), 2000, dtype=np.uint16)  # millimetres, as in NYU PNGs
    with pytest.raises(MetricError, match=r"gt\[0\]: expected float depths in metres.*decode"):
        depth_metrics(gt.astype(np.float32), gt)
    encoded = np.full((3, 4, 4), 128, dtype=np.uint8)
    with pytest.raises(MetricError, match=r"pred\[0\]: expected float unit vectors.*decode"):
        normal_metrics(encoded, np.zeros((3, 4, 4), np.float32))


def test_segmentation_handles_uint64_and_checks_ignore_index():
    gt = np.array([[0, 1], [1, 255]], dtype=np.uint64)
    pred = np.array([[0, 1], [0, 1]], dtype=np.uint64)
    result = segmentation_metrics(pred, gt, num_classes=2)
    assert result["pixel_acc"] == pytest.approx(2 / 3)
    with pytest.raises(MetricError, match=r"ignore_index: expected an integer or None, got 1\.5"):
        segmentation_metrics(pred, gt, num_classes=2, ignore_index=1.5)


def test_torch_half_precision_inputs_are_accepted():
    gt = torch.ones(2, 3, 3) * 2.0
    pred = (gt * 1.1).to(torch.bfloat16)
    result = depth_metrics(pred, gt)
    assert result["abs_rel"] == pytest.approx(0.1, abs=2e-3)  # bf16 rounding of 2.2
