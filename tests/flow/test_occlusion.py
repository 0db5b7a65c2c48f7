"""flow/occlusion.py: the forward-backward check on flows with known (in)consistency."""

import pytest
import torch

from flow.occlusion import forward_backward_non_occlusion


def test_inverse_translations_are_consistent_except_where_they_leave_the_image():
    forward = torch.zeros(1, 2, 10, 12)
    forward[:, 0] = 2.0
    mask = forward_backward_non_occlusion(forward, -forward)
    assert mask.shape == (1, 1, 10, 12)
    assert mask[..., :-2].eq(1).all()  # x + 2 inside the image
    assert mask[..., -2:].eq(0).all()  # x + 2 outside: occluded


def test_disagreeing_flows_are_occluded():
    forward = torch.zeros(1, 2, 10, 12)
    forward[:, 0] = 2.0
    backward = torch.zeros(1, 2, 10, 12)  # says nothing moved back: a 2 px mismatch
    assert forward_backward_non_occlusion(forward, backward)[..., :-2].eq(0).all()
    # A small mismatch is tolerated (alpha2 = 0.5 px^2).
    backward[:, 0] = -1.5
    assert forward_backward_non_occlusion(forward, backward)[..., :-2].eq(1).all()
    with pytest.raises(ValueError, match="one shape"):
        forward_backward_non_occlusion(forward, backward[..., :5])
