"""Tests for crossnet/cmdff.py: the cross-modal dynamic feature filter and its ablation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossnet.cmdff import (
    ConcatFusion,
    CrossModalDynamicFeatureFilter,
    DynamicKernelPredictor,
    cross_modal_gate,
    dynamic_depthwise_conv,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (the identity initialisation would hide the filters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))


def test_cross_modal_gate_known_answer() -> None:
    target = torch.tensor([[[[2.0, -4.0]]]])
    logits = torch.tensor([[[[0.0, 100.0]]]])
    # sigmoid(0) = 0.5, sigmoid(100) = 1: the residual keeps the target, the gate adds to it.
    torch.testing.assert_close(cross_modal_gate(target, logits), torch.tensor([[[[3.0, -8.0]]]]))
    filtered = torch.tensor([[[[10.0, 10.0]]]])
    torch.testing.assert_close(
        cross_modal_gate(target, logits, filtered), torch.tensor([[[[7.0, 6.0]]]])
    )


def test_dynamic_depthwise_conv_uses_each_samples_own_kernels() -> None:
    features = _randn(2, 3, 5, 6)
    kernels = _randn(2, 3, 3, 3, seed=1)
    out = dynamic_depthwise_conv(features, kernels)
    for index in range(2):
        expected = F.conv2d(
            features[index : index + 1], kernels[index].unsqueeze(1), padding=1, groups=3
        )
        torch.testing.assert_close(out[index : index + 1], expected)


def test_dynamic_depthwise_conv_identity_and_shift() -> None:
    features = _randn(1, 2, 4, 4)
    identity = torch.zeros(1, 2, 3, 3)
    identity[:, :, 1, 1] = 1.0
    torch.testing.assert_close(dynamic_depthwise_conv(features, identity), features)
    shift_right = torch.zeros(1, 2, 3, 3)
    shift_right[:, :, 1, 0] = 1.0  # out[x] = in[x - 1]
    shifted = dynamic_depthwise_conv(features, shift_right)
    torch.testing.assert_close(shifted[..., 1:], features[..., :-1])
    torch.testing.assert_close(shifted[..., 0], torch.zeros(1, 2, 4))


@pytest.mark.parametrize("kernel_shape", [(1, 3, 3, 3), (2, 2, 3, 3), (2, 3, 2, 2), (2, 3, 9)])
def test_dynamic_depthwise_conv_rejects_bad_kernels(kernel_shape) -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\)"):
        dynamic_depthwise_conv(torch.zeros(2, 3, 5, 5), torch.zeros(kernel_shape))


def test_kernel_predictor_starts_as_identity() -> None:
    predictor = DynamicKernelPredictor(6, 4)
    kernels = predictor(_randn(2, 6, 5, 5))
    expected = torch.zeros(2, 4, 3, 3)
    expected[:, :, 1, 1] = 1.0
    torch.testing.assert_close(kernels, expected)


@pytest.mark.parametrize("dynamic_filter", [True, False])
def test_gates_have_the_targets_shape(dynamic_filter: bool) -> None:
    fusion = CrossModalDynamicFeatureFilter(8, 6, 5, dynamic_filter=dynamic_filter).eval()
    appearance, motion = _randn(2, 8, 7, 9), _randn(2, 6, 7, 9, seed=1)
    assert fusion.motion_to_appearance_gate(motion).shape == appearance.shape
    assert fusion.appearance_to_motion_gate(appearance).shape == motion.shape
    appearance_hat, motion_hat = fusion.filter_pair(appearance, motion)
    assert appearance_hat.shape == appearance.shape and motion_hat.shape == motion.shape
    assert fusion(appearance, motion).shape == (2, 5, 7, 9)


@pytest.mark.parametrize("dynamic_filter", [True, False])
def test_zero_motion_scales_appearance_by_the_gate_bias(dynamic_filter: bool) -> None:
    # Without motion, the gate on appearance is its prior sigmoid(bias) per channel, and the
    # dynamic filter (identity at initialisation) changes nothing.
    fusion = CrossModalDynamicFeatureFilter(4, 4, 4, dynamic_filter=dynamic_filter)
    with torch.no_grad():
        fusion.motion_to_appearance_gate.bias.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0]))
    appearance = _randn(1, 4, 5, 5)
    appearance_hat, motion_hat = fusion.filter_pair(appearance, torch.zeros(1, 4, 5, 5))
    scale = 1 + torch.sigmoid(torch.tensor([-2.0, 0.0, 1.0, 3.0])).view(1, 4, 1, 1)
    torch.testing.assert_close(appearance_hat, appearance * scale)
    torch.testing.assert_close(motion_hat, torch.zeros(1, 4, 5, 5))


def test_gating_is_local_and_dynamic_filter_is_global() -> None:
    # The per-pixel gate sees the other modality at the same pixel only; the dynamic filter's
    # kernel comes from pooled statistics, so a motion change anywhere reaches every pixel.
    appearance, motion = _randn(1, 4, 8, 8), _randn(1, 4, 8, 8, seed=1)
    moved = motion.clone()
    moved[:, :, 7, 7] += 5.0
    for dynamic_filter in (False, True):
        fusion = CrossModalDynamicFeatureFilter(4, 4, 4, dynamic_filter=dynamic_filter)
        _randomise(fusion, seed=2)
        before, _ = fusion.filter_pair(appearance, motion)
        after, _ = fusion.filter_pair(appearance, moved)
        changed = (after - before).abs().amax(dim=1)[0] > 1e-6
        assert changed[7, 7]
        assert changed.sum().item() == (64 if dynamic_filter else 1)


def test_swapping_modalities_changes_the_output() -> None:
    fusion = CrossModalDynamicFeatureFilter(4, 4, 4).eval()
    _randomise(fusion, seed=3)
    appearance, motion = _randn(1, 4, 6, 6), _randn(1, 4, 6, 6, seed=1)
    swapped = fusion(motion, appearance)
    assert (fusion(appearance, motion) - swapped).abs().max() > 1e-3


def test_concat_fusion_is_a_conv_on_the_concatenation() -> None:
    fusion = ConcatFusion(3, 5, 4).eval()
    _randomise(fusion, seed=4)
    appearance, motion = _randn(2, 3, 5, 7), _randn(2, 5, 5, 7, seed=1)
    expected = fusion.fuse(torch.cat([appearance, motion], dim=1))
    torch.testing.assert_close(fusion(appearance, motion), expected)
    # And it is literally conv -> BN -> ReLU with the fused weights.
    conv = F.conv2d(torch.cat([appearance, motion], dim=1), fusion.fuse.conv.weight)
    norm = fusion.fuse.norm
    manual = torch.relu(
        (conv - norm.running_mean.view(1, -1, 1, 1))
        / torch.sqrt(norm.running_var.view(1, -1, 1, 1) + norm.eps)
        * norm.weight.view(1, -1, 1, 1)
        + norm.bias.view(1, -1, 1, 1)
    )
    torch.testing.assert_close(fusion(appearance, motion), manual, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamic_filter", [True, False])
def test_backward_reaches_every_parameter(dynamic_filter: bool) -> None:
    fusion = CrossModalDynamicFeatureFilter(4, 6, 5, dynamic_filter=dynamic_filter)
    appearance = _randn(2, 4, 5, 5).requires_grad_(True)
    motion = _randn(2, 6, 5, 5, seed=1).requires_grad_(True)
    fusion(appearance, motion).square().mean().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert appearance.grad.abs().sum() > 0 and motion.grad.abs().sum() > 0
