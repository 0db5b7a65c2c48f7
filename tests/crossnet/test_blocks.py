"""Tests for crossnet/blocks.py: conv-norm-act, depthwise-separable blocks, encoder, folding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crossnet.blocks import ConvNormAct, DepthwiseSeparableBlock, Encoder, fold_batchnorm
from crossnet.hofam import HofamConfig, build_hofam


@pytest.mark.parametrize(("stem_stride", "sizes"), [(2, [(8, 10), (4, 5), (2, 3)]),
                                                    (1, [(16, 20), (8, 10), (4, 5)])])
def test_encoder_pyramid_shapes(stem_stride: int, sizes) -> None:
    encoder = Encoder(5, widths=(4, 6, 8), blocks_per_stage=(1, 0, 2), stem_stride=stem_stride)
    assert encoder.reduction == stem_stride * 4
    features = encoder(torch.randn(2, 5, 16, 20))
    assert [tuple(f.shape) for f in features] == [
        (2, channels, *size) for channels, size in zip((4, 6, 8), sizes, strict=True)
    ]


def test_encoder_rejects_mismatched_arguments() -> None:
    with pytest.raises(ValueError, match=r"widths=\(4, 6\) and blocks_per_stage=\(1,\)"):
        Encoder(3, widths=(4, 6), blocks_per_stage=(1,))
    with pytest.raises(ValueError, match="got 3"):
        Encoder(3, widths=(4, 6), blocks_per_stage=(1, 1), stem_stride=3)
    with pytest.raises(ValueError, match="got 2"):
        ConvNormAct(3, 4, kernel_size=2)


def test_residual_block_starts_near_identity_only_when_shapes_allow() -> None:
    same = DepthwiseSeparableBlock(4, 4)
    assert same.use_residual and isinstance(same.pointwise.activation, nn.Identity)
    with torch.no_grad():
        same.pointwise.norm.weight.zero_()  # zero the correction: the block is the identity
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(same.eval()(x), x)
    assert not DepthwiseSeparableBlock(4, 4, stride=2).use_residual
    assert not DepthwiseSeparableBlock(4, 6).use_residual


def test_fold_batchnorm_keeps_the_function_of_a_trained_model() -> None:
    torch.manual_seed(0)
    model = build_hofam(HofamConfig(widths=(8, 8, 16), blocks_per_stage=(0, 1, 1),
                                    use_background=False))
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model(torch.rand(2, 3, 32, 48), 4 * torch.randn(2, 3, 2, 32, 48))
    model.eval()
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    inputs = (torch.rand(1, 3, 37, 53), 4 * torch.randn(1, 3, 2, 37, 53))
    with torch.no_grad():
        torch.testing.assert_close(folded(*inputs), model(*inputs), rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(ConvNormAct(3, 4).train())
