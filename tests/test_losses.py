"""Task losses on hand-computed cases, with their validity masks."""

import math

import pytest
import torch

from pag.errors import PagError
from pag.models.losses import (
    boundary_loss,
    boundary_target,
    depth_loss,
    normal_loss,
    semantic_loss,
    task_losses,
)


def test_semantic_loss_ignores_255():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 5.0]]]])  # 1 x 2 classes x 1 x 2
    target = torch.tensor([[[0, 255]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert float(semantic_loss(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_boundary_target_from_annotators_and_hed_balance():
    boundary = torch.tensor([[[[1, 1, 0, 0]], [[1, 0, 0, 0]]]], dtype=torch.uint8)  # 2 annotators
    label, valid = boundary_target(boundary)
    assert label.flatten().tolist() == [1, 1, 0, 0] and valid.flatten().tolist() == [
        True,
        True,
        True,
        True,
    ]
    three = torch.tensor([[[[1, 1, 0]], [[1, 0, 0]], [[1, 0, 0]]]], dtype=torch.uint8)
    label, valid = boundary_target(three)  # 1/3 agreement: ignored
    assert label.flatten().tolist() == [1, 0, 0] and valid.flatten().tolist() == [True, False, True]
    # one positive, three negatives: beta = 3/4 on the positive, 1/4 on negatives
    logits = torch.zeros(1, 1, 1, 4)
    one = torch.tensor([[[[1, 0, 0, 0]]]], dtype=torch.uint8)
    expected = (0.75 * math.log(2) + 3 * 0.25 * math.log(2)) / 4
    assert float(boundary_loss(logits, one)) == pytest.approx(expected, rel=1e-6)


def test_depth_loss_is_scale_aware_and_masked():
    gt = torch.tensor([[[1.0, 2.0, 0.0]]])
    assert float(depth_loss(gt.unsqueeze(1).clamp(min=1), gt)) == pytest.approx(0.0, abs=1e-3)
    scaled = gt.unsqueeze(1).clamp(min=1) * math.e  # d = 1 at both valid pixels
    # sqrt(mean d^2 - 0.85 mean(d)^2) = sqrt(1 - 0.85)
    assert float(depth_loss(scaled, gt)) == pytest.approx(math.sqrt(0.15), rel=1e-5)
    assert float(depth_loss(scaled, torch.zeros(1, 1, 3))) == 0.0  # no valid pixel


def test_normal_loss_is_one_minus_cosine_over_valid_pixels():
    gt = torch.tensor(
        [[[[0.0, 0.0]], [[0.0, 0.0]], [[-1.0, 0.0]]]]
    )  # 1 x 3 x 1 x 2; pixel 2 invalid
    opposite = -gt
    assert float(normal_loss(opposite * 3, gt)) == pytest.approx(2.0)
    sideways = torch.tensor([[[[1.0, 5.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])
    assert float(normal_loss(sideways, gt)) == pytest.approx(1.0)


def test_task_losses_needs_each_target():
    pred = {"depth": torch.ones(1, 1, 2, 2)}
    losses = task_losses(pred, {"depth": torch.ones(1, 2, 2)}, {"depth": 2.0})
    assert set(losses) == {"depth"}
    with pytest.raises(PagError, match="predicts 'depth' but the batch has no 'depth' target"):
        task_losses(pred, {"semantic": torch.zeros(1, 2, 2)})


def test_normal_loss_of_a_zero_prediction_is_one_with_a_finite_gradient():
    pred = torch.zeros(1, 3, 2, 2, requires_grad=True)
    gt = torch.zeros(1, 3, 2, 2)
    gt[:, 2] = 1.0
    gt[0, :, 0, 0] = 0.0  # one invalid pixel
    loss = normal_loss(pred, gt)
    loss.backward()
    assert float(loss.detach()) == 1.0
    assert bool(torch.isfinite(pred.grad).all())
