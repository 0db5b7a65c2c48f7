"""Tests for crossnet.losses: CDnet targets, instances, size-balanced weights and the loss terms."""

import itertools
import math

import cv2
import numpy as np
import pytest
import torch

from crossnet.losses import (
    LossConfig,
    SegmentationLoss,
    focal_loss,
    instance_map,
    size_balanced_weights,
    soft_dice_loss,
    targets_from_labels,
    weighted_bce_with_logits,
)
from crossnet.metrics import MOTION, OUTSIDE_ROI, SHADOW, STATIC, UNKNOWN


def u8(rows):
    return torch.tensor(rows, dtype=torch.uint8)


def all_valid(target):
    return torch.ones(target.shape, dtype=torch.bool)


def assert_same_partition(ours: np.ndarray, reference: np.ndarray) -> None:
    """Equal up to relabelling: same background, and label pairs form a bijection."""
    np.testing.assert_array_equal(ours == 0, reference == 0)
    pairs = set(zip(ours.ravel().tolist(), reference.ravel().tolist()))
    assert len(pairs) == len(np.unique(ours)) == len(np.unique(reference))


def two_objects_image(small_side: int = 2) -> torch.Tensor:
    """(1, 30, 30) target: a small square at (1, 1) and a 20x20 square at (8, 8), apart."""
    target = torch.zeros(1, 30, 30)
    target[0, 1 : 1 + small_side, 1 : 1 + small_side] = 1
    target[0, 8:28, 8:28] = 1
    return target


# targets_from_labels


def test_targets_every_label_value():
    labels = u8([[[STATIC, SHADOW, OUTSIDE_ROI, 127, 128, UNKNOWN, MOTION]]])
    target, valid = targets_from_labels(labels)
    assert target.dtype == torch.float32 and valid.dtype == torch.bool
    torch.testing.assert_close(target, torch.tensor([[[0.0, 0, 0, 0, 1, 0, 1]]]), rtol=0, atol=0)
    assert valid.tolist() == [[[True, True, False, True, True, False, True]]]


def test_targets_roi_removes_pixels_per_image_and_broadcast():
    labels = u8([[[MOTION, MOTION], [STATIC, UNKNOWN]], [[STATIC, MOTION], [MOTION, MOTION]]])
    roi = torch.tensor([[True, False], [True, True]])
    target, valid = targets_from_labels(labels, roi)
    assert valid.tolist() == [[[True, False], [True, False]], [[True, False], [True, True]]]
    assert target.tolist() == [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]
    per_image_roi = torch.tensor([[[False, True], [True, True]], [[True, True], [True, False]]])
    _, valid = targets_from_labels(labels, per_image_roi)
    assert valid.tolist() == [[[False, True], [True, False]], [[True, True], [True, False]]]


def test_targets_reject_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        targets_from_labels(torch.zeros(1, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        targets_from_labels(torch.zeros(2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="roi dtype"):
        targets_from_labels(torch.zeros(1, 2, 2, dtype=torch.uint8), torch.ones(2, 2))
    with pytest.raises(ValueError, match="roi shape"):
        targets_from_labels(
            torch.zeros(1, 2, 2, dtype=torch.uint8), torch.ones(3, 2, dtype=torch.bool)
        )


# instance_map


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_instance_map_matches_cv2_on_random_masks(density):
    generator = torch.Generator().manual_seed(int(density * 100))
    masks = torch.rand(4, 37, 53, generator=generator) < density
    instances = instance_map(masks.float(), all_valid(masks))
    assert instances.dtype == torch.int64
    for image in range(masks.shape[0]):
        count, reference = cv2.connectedComponents(
            masks[image].numpy().astype(np.uint8), connectivity=8
        )
        ours = instances[image].numpy()
        assert ours.max() == count - 1
        np.testing.assert_array_equal(np.unique(ours), np.arange(count))
        assert_same_partition(ours, reference)


def test_instance_map_diagonal_touching_is_one_component():
    target = torch.tensor([[
        [1, 0, 0, 0, 1],
        [0, 1, 0, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0],
    ]], dtype=torch.float32)
    instances = instance_map(target, all_valid(target))
    # The X is one component by 8-connectivity; the corner pixel is another. Numbered in raster
    # order of the first pixel.
    expected = target.long().clone()
    expected[0, 4, 0] = 2
    torch.testing.assert_close(instances, expected, rtol=0, atol=0)


def test_instance_map_long_snake_and_unscored_split():
    height, width = 41, 40
    snake = np.zeros((height, width), np.uint8)
    snake[::2, :] = 1
    snake[1::4, -1] = 1
    snake[3::4, 0] = 1
    target = torch.from_numpy(snake).float()[None]
    instances = instance_map(target, all_valid(target))
    assert instances.max() == 1 and (instances[0] > 0).sum() == snake.sum()
    # An unscored pixel on the snake's first turn cuts it in two.
    valid = all_valid(target)
    valid[0, 1, -1] = False
    instances = instance_map(target, valid)
    count, reference = cv2.connectedComponents(snake * valid[0].numpy(), connectivity=8)
    assert count - 1 == 2 and instances[0, 1, -1] == 0
    assert_same_partition(instances[0].numpy(), reference)


def test_instance_map_numbers_per_image_and_handles_empty_images():
    target = torch.zeros(3, 6, 6)
    target[0, 0, 0] = 1
    target[0, 4:, 4:] = 1
    target[2, 3, 3] = 1
    instances = instance_map(target, all_valid(target))
    assert [int(instances[b].max()) for b in range(3)] == [2, 0, 1]
    assert instances[0, 0, 0] == 1 and instances[0, 5, 5] == 2 and instances[2, 3, 3] == 1


# size_balanced_weights


def test_size_balanced_equal_total_per_instance_without_clipping():
    target = two_objects_image(small_side=2)
    weights = size_balanced_weights(target, all_valid(target), max_weight=math.inf)
    # F = 404 pixels in N = 2 instances: each instance weighs 404 / 2 = 202.
    torch.testing.assert_close(weights[0, 1:3, 1:3], torch.full((2, 2), 202 / 4))
    torch.testing.assert_close(weights[0, 8:28, 8:28], torch.full((20, 20), 202 / 400))
    torch.testing.assert_close(weights[0, 1:3, 1:3].sum(), torch.tensor(202.0))
    torch.testing.assert_close(weights[0, 8:28, 8:28].sum(), torch.tensor(202.0))
    background = target[0] == 0
    torch.testing.assert_close(weights[0][background], torch.ones(int(background.sum())))


def test_size_balanced_clips_a_one_pixel_object_without_renormalising():
    target = two_objects_image(small_side=1)
    weights = size_balanced_weights(target, all_valid(target), max_weight=50.0)
    # Unclipped the speck would weigh (1 + 400) / 2 = 200.5; the cap keeps 50.
    assert weights[0, 1, 1].item() == 50.0
    torch.testing.assert_close(weights[0, 8:28, 8:28].sum(), torch.tensor(200.5))
    # The default cap also applies to the 2x2 square (50.5 per pixel -> 50).
    target = two_objects_image(small_side=2)
    weights = size_balanced_weights(target, all_valid(target))
    torch.testing.assert_close(weights[0, 1:3, 1:3], torch.full((2, 2), 50.0))


def test_size_balanced_unscored_zero_and_no_foreground_is_unit():
    labels = torch.full((2, 5, 5), STATIC, dtype=torch.uint8)
    labels[0, 1:3, 1:3] = MOTION
    labels[0, 0, :] = UNKNOWN
    labels[1, :, 4] = OUTSIDE_ROI
    roi = torch.ones(2, 5, 5, dtype=torch.bool)
    roi[1, 0, 0] = False
    target, valid = targets_from_labels(labels, roi)
    weights = size_balanced_weights(target, valid)
    expected = torch.ones(2, 5, 5)
    expected[0, 0, :] = 0
    expected[1, :, 4] = 0
    expected[1, 0, 0] = 0
    # A single instance: weight F / 1 / F = 1 per pixel.
    torch.testing.assert_close(weights, expected, rtol=0, atol=0)


def test_size_balanced_rejects_small_max_weight():
    target = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="max_weight"):
        size_balanced_weights(target, all_valid(target), max_weight=0.5)


# Pixel and Dice terms


def test_bce_hand_computed_two_pixels():
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])
    target = torch.tensor([[[1.0, 0.0]]])
    weights = torch.tensor([[[1.0, 3.0]]])
    # Pixel 1: -log sigmoid(0) = log 2. Pixel 2: p = 0.75, -log(1 - 0.75) = log 4.
    # (1 * log 2 + 3 * log 4) / (1 + 3) = 7 log 2 / 4.
    loss = weighted_bce_with_logits(logits, target, weights)
    torch.testing.assert_close(loss, torch.tensor(7 * math.log(2) / 4), rtol=1e-6, atol=0)


def test_focal_gamma_zero_equals_bce():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 8, 9, generator=generator) * 4
    target = (torch.rand(2, 8, 9, generator=generator) > 0.5).float()
    weights = torch.rand(2, 8, 9, generator=generator)
    torch.testing.assert_close(
        focal_loss(logits, target, weights, gamma=0.0),
        weighted_bce_with_logits(logits, target, weights),
        rtol=0,
        atol=0,
    )


def test_focal_down_weights_easy_pixels():
    target = torch.ones(1, 1, 1)
    weights = torch.ones(1, 1, 1)
    easy, hard = torch.tensor([[[[4.0]]]]), torch.tensor([[[[-1.0]]]])
    ratios = {}
    for name, logit in (("easy", easy), ("hard", hard)):
        bce = weighted_bce_with_logits(logit, target, weights)
        focal = focal_loss(logit, target, weights, gamma=2.0)
        expected = (1 - torch.sigmoid(logit)).reshape(()) ** 2
        torch.testing.assert_close(focal / bce, expected, rtol=1e-5, atol=0)
        ratios[name] = (focal / bce).item()
    # (1 - sigmoid(4))^2 ~ 3.2e-4 against (1 - sigmoid(-1))^2 ~ 0.53.
    assert ratios["easy"] < 1e-3 and ratios["hard"] > 0.5
    alpha_loss = focal_loss(hard, target, weights, gamma=2.0, alpha=0.25)
    torch.testing.assert_close(alpha_loss, 0.25 * focal_loss(hard, target, weights, gamma=2.0))


def test_unscored_pixels_do_not_change_any_term():
    labels = torch.full((2, 6, 6), STATIC, dtype=torch.uint8)
    labels[:, 2:4, 2:4] = MOTION
    labels[0, 0, :] = UNKNOWN
    labels[1, :, 0] = OUTSIDE_ROI
    roi = torch.ones(6, 6, dtype=torch.bool)
    roi[5, 5] = False
    target, valid = targets_from_labels(labels, roi)
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(2, 1, 6, 6, generator=generator)
    changed = base.clone()
    changed[:, 0][~valid] = torch.where(torch.rand(int((~valid).sum())) > 0.5, 1e4, -1e4)
    loss_fn = SegmentationLoss(LossConfig(dice_weight=1.0))
    for loss_of in (
        lambda x: weighted_bce_with_logits(x, target, size_balanced_weights(target, valid)),
        lambda x: focal_loss(x, target, valid.float(), gamma=2.0),
        lambda x: soft_dice_loss(x, target, valid),
        lambda x: loss_fn(x, labels, roi)[0],
    ):
        logits = base.clone().requires_grad_(True)
        loss = loss_of(logits)
        loss.backward()
        assert torch.equal(logits.grad[:, 0][~valid], torch.zeros(int((~valid).sum())))
        assert (logits.grad[:, 0][valid] != 0).all()
        assert torch.equal(loss_of(changed), loss.detach())


def test_dice_perfect_and_fully_wrong():
    target = torch.zeros(2, 8, 8)
    target[0, 2:5, 3:7] = 1
    target[1, 0, :] = 1
    valid = all_valid(target)
    perfect = (target * 2 - 1)[:, None] * 30
    torch.testing.assert_close(
        soft_dice_loss(perfect, target, valid), torch.tensor(0.0), rtol=0, atol=1e-6
    )
    # Fully wrong: probability 1 on the background, 0 on the foreground, so the intersection is
    # 0 and dice_b = 1 / (sum(p) + sum(y) + 1) = 1 / 65 in both 8x8 images.
    wrong = -perfect
    torch.testing.assert_close(
        soft_dice_loss(wrong, target, valid), torch.tensor(1 - 1 / 65), rtol=1e-6, atol=0
    )


def test_dice_empty_foreground_and_images_without_scored_pixels():
    target = torch.zeros(2, 4, 4)
    valid = all_valid(target)
    valid[1] = False
    quiet = torch.full((2, 1, 4, 4), -30.0)
    torch.testing.assert_close(
        soft_dice_loss(quiet, target, valid), torch.tensor(0.0), rtol=0, atol=1e-6
    )
    # Image 0 predicts foreground everywhere: 1 - 1 / (16 + 1); image 1 has nothing scored and
    # is left out of the mean.
    loud = torch.full((2, 1, 4, 4), 30.0)
    torch.testing.assert_close(
        soft_dice_loss(loud, target, valid), torch.tensor(16 / 17), rtol=1e-6, atol=0
    )


def test_term_argument_checks():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="shapes must match"):
        weighted_bce_with_logits(logits, target, torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, target, torch.ones(1, 2, 2), gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(logits, target, torch.ones(1, 2, 2), alpha=1.5)
    with pytest.raises(ValueError, match="smooth"):
        soft_dice_loss(logits, target, all_valid(target), smooth=0.0)


# LossConfig and SegmentationLoss


def test_loss_config_round_trip_and_validation():
    config = LossConfig(size_balanced=False, focal_gamma=0.0, dice_weight=1.0, max_weight=10.0)
    assert config.to_dict() == {
        "size_balanced": False,
        "focal_gamma": 0.0,
        "dice_weight": 1.0,
        "max_weight": 10.0,
    }
    assert LossConfig.from_dict(config.to_dict()) == config
    assert LossConfig.from_dict({}) == LossConfig()
    with pytest.raises(ValueError, match="unknown keys"):
        LossConfig.from_dict({"focal_alpha": 0.25})
    with pytest.raises(ValueError, match="max_weight"):
        LossConfig(max_weight=0.0)
    with pytest.raises(ValueError, match="focal_gamma"):
        LossConfig(focal_gamma=math.nan)
    with pytest.raises(TypeError, match="size_balanced"):
        LossConfig(size_balanced=1)


def test_segmentation_loss_combines_its_terms():
    labels = torch.full((2, 10, 10), STATIC, dtype=torch.uint8)
    labels[0, 1, 1] = MOTION
    labels[0, 4:9, 4:9] = MOTION
    labels[1, 2:6, 2:6] = MOTION
    labels[1, 0, :] = UNKNOWN
    logits = torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(3))
    target, valid = targets_from_labels(labels)
    config = LossConfig(size_balanced=True, focal_gamma=2.0, dice_weight=0.5, max_weight=5.0)
    total, parts = SegmentationLoss(config)(logits, labels)
    weights = size_balanced_weights(target, valid, max_weight=5.0)
    pixel = focal_loss(logits, target, weights, gamma=2.0)
    dice = soft_dice_loss(logits, target, valid)
    torch.testing.assert_close(total, pixel + 0.5 * dice)
    assert set(parts) == {"total", "pixel", "dice", "valid_fraction"}
    assert all(isinstance(value, float) for value in parts.values())
    assert parts["pixel"] == pytest.approx(pixel.item()) and parts["dice"] == pytest.approx(
        dice.item()
    )
    assert parts["valid_fraction"] == pytest.approx(190 / 200)

    plain = LossConfig(size_balanced=False, focal_gamma=0.0, dice_weight=0.0)
    total, parts = SegmentationLoss(plain)(logits, labels)
    torch.testing.assert_close(total, weighted_bce_with_logits(logits, target, valid.float()))
    assert parts["dice"] == 0.0


def test_total_loss_decreases_when_logits_move_toward_target():
    labels = torch.full((2, 12, 12), STATIC, dtype=torch.uint8)
    labels[0, 2:4, 2:4] = MOTION
    labels[0, 6:12, 5:11] = MOTION
    labels[1, 3:9, 3:9] = SHADOW
    labels[1, 5, 5] = MOTION
    labels[1, 11, :] = UNKNOWN
    logits = torch.zeros(2, 1, 12, 12, requires_grad=True)
    # Every term is a mean over pixels, so one logit's gradient is about 1 / (number of pixels):
    # the step size scales with the 288 pixels.
    optimizer = torch.optim.SGD([logits], lr=100.0)
    loss_fn = SegmentationLoss()
    history = []
    for _ in range(10):
        optimizer.zero_grad()
        total, parts = loss_fn(logits, labels)
        total.backward()
        optimizer.step()
        history.append((total.item(), parts["pixel"], parts["dice"]))
    totals = [total for total, _, _ in history]
    assert all(later < earlier for earlier, later in itertools.pairwise(totals)), history
    # Measured: total 0.575 -> 0.37, pixel 0.173 -> 0.036, dice 0.80 -> 0.67 (Dice is slow once
    # the sigmoids saturate, so its bound is loose).
    assert totals[-1] < 0.75 * totals[0]
    assert history[-1][1] < 0.3 * history[0][1] and history[-1][2] < history[0][2]
    target, valid = targets_from_labels(labels)
    predicted = (logits.detach()[:, 0] > 0).float()
    assert torch.equal(predicted[valid], target[valid])


def test_bf16_autocast_gradients_are_finite():
    torch.manual_seed(4)
    head = torch.nn.Conv2d(3, 1, kernel_size=3, padding=1)
    images = torch.randn(2, 3, 16, 16)
    labels = torch.full((2, 16, 16), STATIC, dtype=torch.uint8)
    labels[:, 4:7, 4:7] = MOTION
    labels[1, 12, 12] = MOTION
    labels[:, 0, :] = UNKNOWN
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = head(images) * 50
        assert logits.dtype == torch.bfloat16
        total, parts = SegmentationLoss()(logits, labels)
    assert total.dtype == torch.float32 and math.isfinite(parts["total"])
    total.backward()
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size_balanced", [True, False])
def test_batch_without_scored_pixels_gives_zero_with_grad_fn(size_balanced):
    head = torch.nn.Conv2d(1, 1, kernel_size=1)
    logits = head(torch.randn(2, 1, 5, 5))
    labels = torch.full((2, 5, 5), UNKNOWN, dtype=torch.uint8)
    labels[1] = OUTSIDE_ROI
    labels[1, 0, 0] = MOTION
    roi = torch.ones(5, 5, dtype=torch.bool)
    roi[0, 0] = False
    total, parts = SegmentationLoss(LossConfig(size_balanced=size_balanced))(logits, labels, roi)
    assert total.item() == 0.0 and total.grad_fn is not None
    assert parts == {"total": 0.0, "pixel": 0.0, "dice": 0.0, "valid_fraction": 0.0}
    total.backward()
    assert torch.equal(head.weight.grad, torch.zeros_like(head.weight))
    # The terms on their own agree: zero, connected.
    target, valid = targets_from_labels(labels, roi)
    for term in (
        focal_loss(logits, target, valid.float()),
        weighted_bce_with_logits(logits, target, size_balanced_weights(target, valid)),
        soft_dice_loss(logits, target, valid),
    ):
        assert term.item() == 0.0 and term.grad_fn is not None


def test_segmentation_loss_shape_checks():
    loss_fn = SegmentationLoss()
    labels = torch.zeros(2, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        loss_fn(torch.zeros(2, 4, 4), labels)
    with pytest.raises(ValueError, match="labels shape"):
        loss_fn(torch.zeros(2, 1, 4, 5), labels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(5)
    labels = torch.where(torch.rand(3, 33, 47, generator=generator) < 0.4, MOTION, STATIC)
    labels = labels.to(torch.uint8)
    labels[:, 0, :] = UNKNOWN
    logits = torch.randn(3, 1, 33, 47, generator=generator)
    target, valid = targets_from_labels(labels)
    cuda_target, cuda_valid = target.cuda(), valid.cuda()
    torch.testing.assert_close(
        instance_map(cuda_target, cuda_valid).cpu(), instance_map(target, valid), rtol=0, atol=0
    )
    torch.testing.assert_close(
        size_balanced_weights(cuda_target, cuda_valid).cpu(), size_balanced_weights(target, valid)
    )
    total, _ = SegmentationLoss()(logits, labels)
    cuda_total, _ = SegmentationLoss()(logits.cuda(), labels.cuda())
    torch.testing.assert_close(cuda_total.cpu(), total, rtol=1e-5, atol=1e-6)
