"""flow/self_supervised_loss.py: both directions, occlusion-masked, with known values."""

import dataclasses

import pytest
import torch

from flow.self_supervised_loss import (
    SelfSupervisedLossConfig,
    distillation_loss,
    self_supervised_loss,
    swap_directions,
)


def _texture(height=24, width=30, seed=0):
    return 255 * torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_a_static_pair_with_zero_flow_has_zero_loss():
    image = _texture()
    images = torch.cat((image, image))
    zero = torch.zeros(2, 2, 24, 30)
    loss, parts = self_supervised_loss(images, images, [zero, zero], SelfSupervisedLossConfig())
    # Zero up to grid_sample's float32 rounding of the (unmoved) sampling positions.
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert parts["census"] == pytest.approx(0.0, abs=1e-6)
    assert parts["ssim"] == pytest.approx(0.0, abs=1e-6) and parts["smoothness"] == 0.0
    assert parts["non_occluded"] == 1.0


def test_the_true_flow_of_a_shift_scores_better_than_zero_flow():
    scene = _texture(24, 34)
    image1, image2 = scene[..., 2:32], scene[..., 0:30]  # content moves 2 px to the right
    first, second = torch.cat((image1, image2)), torch.cat((image2, image1))
    true = torch.zeros(2, 2, 24, 30)
    true[0, 0], true[1, 0] = 2.0, -2.0
    config = SelfSupervisedLossConfig()
    right, _ = self_supervised_loss(first, second, [true], config)
    wrong, _ = self_supervised_loss(first, second, [torch.zeros_like(true)], config)
    assert right.item() < 0.1 * wrong.item()


def test_distillation_pulls_towards_the_teacher_with_known_value():
    teacher = torch.zeros(2, 2, 4, 4)
    predictions = [teacher + 2.0, teacher + 1.0]
    assert distillation_loss(predictions, teacher, gamma=0.5).item() == pytest.approx(
        0.5 * 2.0 + 1.0)
    images = torch.full((2, 3, 4, 4), 50.0)
    config = SelfSupervisedLossConfig(census_weight=0, ssim_weight=0, smoothness_weight=0,
                                      distillation_weight=3.0)
    loss, parts = self_supervised_loss(images, images, [teacher + 1.0], config,
                                       teacher_flow=teacher)
    assert loss.item() == pytest.approx(3.0) and parts["distillation"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="teacher_flow"):
        self_supervised_loss(images, images, [teacher], config)
    with pytest.raises(ValueError, match="2B"):
        self_supervised_loss(images[:1], images[:1], [teacher[:1]],
                             dataclasses.replace(config, distillation_weight=0.0))


def test_swapping_directions_exchanges_the_halves():
    batch = torch.arange(4.0).view(4, 1)
    assert swap_directions(batch).flatten().tolist() == [2.0, 3.0, 0.0, 1.0]
