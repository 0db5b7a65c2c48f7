"""Tests for crossnet/flow_encoding.py: 3D-HOP stacks to pixels-per-frame channels."""

from __future__ import annotations

import math

import pytest
import torch

from crossnet.flow_encoding import DEFAULT_CLAMP_SCALE, encode_hop, hop_channels


def _constant_hop(u: float, v: float, num_strides: int, height: int = 4, width: int = 5):
    hop = torch.empty(1, num_strides, 2, height, width)
    hop[:, :, 0] = u
    hop[:, :, 1] = v
    return hop


@pytest.mark.parametrize(("mode", "expected"), [("uvm", 9), ("magnitude", 3)])
def test_hop_channels(mode: str, expected: int) -> None:
    assert hop_channels(3, mode) == expected


def test_hop_channels_rejects_unknown_mode_and_zero_strides() -> None:
    with pytest.raises(ValueError, match="'rgb'"):
        hop_channels(3, "rgb")
    with pytest.raises(ValueError, match="got 0"):
        hop_channels(0, "uvm")


def test_uvm_known_answer_at_stride_two() -> None:
    # A 3-4-5 triangle: flow (3, 4) over 2 frames is (1.5, 2) px/frame with speed 2.5.
    encoded = encode_hop(_constant_hop(3.0, 4.0, 1), strides=(2,), mode="uvm", clamp_scale=None)
    assert encoded.shape == (1, 3, 4, 5)
    torch.testing.assert_close(encoded[0, :, 0, 0], torch.tensor([1.5, 2.0, 2.5]))
    torch.testing.assert_close(encoded, encoded[:, :, :1, :1].expand_as(encoded))


def test_constant_velocity_gives_the_same_channels_at_every_stride() -> None:
    # An object at 1.5 px/frame moved k * 1.5 px after k frames; normalised, every stride agrees.
    strides = (1, 4, 8)
    hop = torch.stack([torch.full((2, 3, 3), 1.5 * k) for k in strides]).unsqueeze(0)
    hop[:, :, 1] *= -1
    for mode in ("uvm", "magnitude"):
        encoded = encode_hop(hop, strides=strides, mode=mode, clamp_scale=None)
        per_stride = encoded.reshape(1, len(strides), -1, 3, 3)
        for index in range(1, len(strides)):
            torch.testing.assert_close(per_stride[:, index], per_stride[:, 0])
    encoded = encode_hop(hop, strides=strides, mode="uvm", clamp_scale=None)
    torch.testing.assert_close(
        encoded[0, :3, 0, 0], torch.tensor([1.5, -1.5, 1.5 * math.sqrt(2.0)])
    )


def test_magnitude_mode_channels_are_stride_major_speeds() -> None:
    hop = torch.zeros(2, 3, 2, 6, 7)
    hop[:, 0, 0] = 3.0  # stride 1: 3 px/frame
    hop[:, 1, 1] = -8.0  # stride 4: 2 px/frame
    hop[:, 2] = 0.0  # stride 8: still
    encoded = encode_hop(hop, strides=(1, 4, 8), mode="magnitude", clamp_scale=None)
    assert encoded.shape == (2, hop_channels(3, "magnitude"), 6, 7)
    torch.testing.assert_close(encoded[:, :, 3, 3], torch.tensor([[3.0, 2.0, 0.0]] * 2))


def test_soft_clamp_keeps_direction_and_bounds_speed() -> None:
    scale = DEFAULT_CLAMP_SCALE
    hop = _constant_hop(300.0, -400.0, 1)  # a wild 500 px/frame vector
    encoded = encode_hop(hop, strides=(1,), mode="uvm", clamp_scale=scale)
    u, v, speed = encoded[0, :, 0, 0]
    expected_speed = scale * math.tanh(500.0 / scale)
    torch.testing.assert_close(speed, torch.tensor(expected_speed))
    assert speed <= scale
    torch.testing.assert_close(torch.stack([u, v]) / speed, torch.tensor([0.6, -0.8]))
    # Slow motion is nearly untouched: 1 px/frame keeps 99.5 % of its speed.
    slow = encode_hop(_constant_hop(1.0, 0.0, 1), strides=(1,), clamp_scale=scale)
    torch.testing.assert_close(slow[0, 2, 0, 0], torch.tensor(scale * math.tanh(1.0 / scale)))
    assert slow[0, 2, 0, 0] > 0.99


def test_zero_flow_encodes_to_zero_with_finite_gradient() -> None:
    hop = torch.zeros(1, 2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    encoded = encode_hop(hop, strides=(1, 2), mode="uvm")
    torch.testing.assert_close(encoded, torch.zeros(1, 6, 3, 3, dtype=torch.float64))
    encoded.sum().backward()
    assert torch.isfinite(hop.grad).all()


def test_gradcheck_float64() -> None:
    generator = torch.Generator().manual_seed(0)
    hop = (10 * torch.randn(1, 2, 2, 3, 3, generator=generator, dtype=torch.float64))
    hop.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: encode_hop(x, strides=(1, 3), mode="uvm", clamp_scale=4.0), (hop,)
    )


def test_keeps_dtype() -> None:
    hop = _constant_hop(3.0, 4.0, 1).to(torch.float16)
    assert encode_hop(hop, strides=(2,)).dtype == torch.float16


@pytest.mark.parametrize(
    ("shape", "strides", "match"),
    [
        ((1, 3, 3, 4, 4), (1, 2, 3), r"\(1, 3, 3, 4, 4\)"),
        ((1, 2, 2, 4, 4), (1, 2, 3), r"hop has 2 strides .*\(1, 2, 3\)"),
        ((1, 2, 4, 4), (1, 2), r"\(1, 2, 4, 4\)"),
    ],
)
def test_rejects_bad_shapes_quoting_them(shape, strides, match) -> None:
    with pytest.raises(ValueError, match=match):
        encode_hop(torch.zeros(shape), strides=strides)


def test_rejects_bad_arguments() -> None:
    hop = torch.zeros(1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="strides must be >= 1"):
        encode_hop(hop, strides=(0,))
    with pytest.raises(ValueError, match="clamp_scale"):
        encode_hop(hop, strides=(1,), clamp_scale=0.0)
    with pytest.raises(ValueError, match="float"):
        encode_hop(hop.long(), strides=(1,))
    with pytest.raises(ValueError, match="'polar'"):
        encode_hop(hop, strides=(1,), mode="polar")
