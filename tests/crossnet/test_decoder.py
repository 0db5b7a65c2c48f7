"""Tests for crossnet/decoder.py: attention gates and the attention-gated decoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossnet.decoder import AttentionDecoder, AttentionGate, DecoderStage


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_attention_coefficients_shape_and_range() -> None:
    gate = AttentionGate(6, 4, inter_channels=8)
    skip, gating = 10 * _randn(2, 6, 7, 9), 10 * _randn(2, 4, 7, 9, seed=1)
    alpha = gate.coefficients(skip, gating)
    assert alpha.shape == (2, 1, 7, 9)
    assert (alpha > 0).all() and (alpha < 1).all()
    assert alpha.std() > 0  # it selects: not one constant over the image
    torch.testing.assert_close(gate(skip, gating), skip * alpha)


def test_attention_coefficients_known_answer() -> None:
    # With psi's weights at zero, alpha is sigmoid(psi.bias) everywhere.
    gate = AttentionGate(3, 3, inter_channels=4)
    with torch.no_grad():
        gate.psi.weight.zero_()
        gate.psi.bias.fill_(2.0)
    alpha = gate.coefficients(_randn(1, 3, 4, 4), _randn(1, 3, 4, 4, seed=1))
    torch.testing.assert_close(alpha, torch.full((1, 1, 4, 4), torch.sigmoid(torch.tensor(2.0))))


def test_attention_gate_rejects_mismatched_inputs() -> None:
    gate = AttentionGate(3, 3, inter_channels=4)
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\).*\(1, 3, 4, 5\)"):
        gate(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_stage_without_attention_concatenates_the_skip_as_is() -> None:
    stage = DecoderStage(8, 4, attention=False).eval()
    assert stage.attention_gate is None
    coarse, skip = _randn(1, 8, 3, 4), _randn(1, 4, 6, 8, seed=1)
    gating = F.interpolate(stage.project(coarse), size=(6, 8), mode="bilinear")
    expected = stage.block(torch.cat([gating, skip], dim=1))
    torch.testing.assert_close(stage(coarse, skip), expected)


def test_closed_gate_cuts_the_skip_connection() -> None:
    # alpha ~ 0 everywhere: the output no longer depends on the skip; without attention it does.
    gated = DecoderStage(8, 4, attention=True).eval()
    with torch.no_grad():
        gated.attention_gate.psi.weight.zero_()
        gated.attention_gate.psi.bias.fill_(-1e4)
    plain = DecoderStage(8, 4, attention=False).eval()
    coarse, skip, other_skip = _randn(1, 8, 3, 4), _randn(1, 4, 6, 8, seed=1), _randn(1, 4, 6, 8)
    other_skip = other_skip + 3.0
    torch.testing.assert_close(gated(coarse, skip), gated(coarse, other_skip))
    assert (plain(coarse, skip) - plain(coarse, other_skip)).abs().max() > 1e-3


@pytest.mark.parametrize("attention", [True, False])
def test_decoder_shapes(attention: bool) -> None:
    decoder = AttentionDecoder((4, 6, 8), attention=attention)
    pyramid = [_randn(2, 4, 16, 20), _randn(2, 6, 8, 10), _randn(2, 8, 4, 5)]
    out = decoder(pyramid)
    assert out.shape == (2, 4, 16, 20)
    assert decoder.out_channels == 4
    out.mean().backward()
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_decoder_rejects_wrong_pyramid_depth() -> None:
    decoder = AttentionDecoder((4, 6, 8))
    with pytest.raises(ValueError, match="expected 3 pyramid levels, got 2"):
        decoder([torch.zeros(1, 4, 8, 8), torch.zeros(1, 6, 4, 4)])
    with pytest.raises(ValueError, match=r"\(4,\)"):
        AttentionDecoder((4,))
