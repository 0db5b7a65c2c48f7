"""flow/sequence_loss.py: RAFT's gamma-weighted L1 over the updates, on known errors."""

import pytest
import torch

from flow.sequence_loss import sequence_loss


def test_a_constant_error_gives_the_geometric_sum():
    gt = torch.zeros(2, 2, 5, 6)
    error = torch.tensor([3.0, -1.0]).view(1, 2, 1, 1)
    predictions = [gt + error] * 3
    # Mean |error| over both components is 2; weights 0.8^2, 0.8, 1.
    expected = 2.0 * (0.64 + 0.8 + 1.0)
    assert sequence_loss(predictions, gt, gamma=0.8).item() == pytest.approx(expected)


def test_later_updates_weigh_more_and_invalid_pixels_do_not_count():
    gt = torch.zeros(1, 2, 4, 4)
    first_wrong = [gt + 1.0, gt]
    last_wrong = [gt, gt + 1.0]
    assert sequence_loss(first_wrong, gt).item() == pytest.approx(0.8)
    assert sequence_loss(last_wrong, gt).item() == pytest.approx(1.0)
    prediction = gt.clone()
    prediction[..., 0, :] = 100.0  # wrong only on row 0, which is invalid
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[:, 0, :] = False
    assert sequence_loss([prediction], gt, valid).item() == 0.0
    huge = gt.clone()
    huge[:, 0] = 500.0  # beyond max_flow: left out
    assert sequence_loss([gt], huge).item() == 0.0


def test_gradients_flow_and_bad_shapes_are_refused():
    gt = torch.zeros(1, 2, 3, 3)
    prediction = torch.ones(1, 2, 3, 3, requires_grad=True)
    sequence_loss([prediction], gt).backward()
    torch.testing.assert_close(prediction.grad, torch.full_like(gt, 1 / 18))
    with pytest.raises(ValueError, match="shape"):
        sequence_loss([torch.zeros(1, 2, 3, 4)], gt)
    with pytest.raises(ValueError, match="gamma"):
        sequence_loss([gt], gt, gamma=0.0)
    with pytest.raises(ValueError, match="no predictions"):
        sequence_loss([], gt)
