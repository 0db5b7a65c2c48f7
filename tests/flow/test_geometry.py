"""Tests for flow/geometry.py: grids, bilinear sampling, upsampling, padding."""

from __future__ import annotations

import pytest
import torch

from flow.geometry import (
    bilinear_sample,
    convex_upsample,
    coordinate_grid,
    downsample_flow,
    pad_to_multiple,
    padding_to_multiple,
    unpad,
    upsample_flow,
)


def test_coordinate_grid_values() -> None:
    grid = coordinate_grid(2, 3, 4, dtype=torch.float64)
    assert grid.shape == (2, 2, 3, 4)
    assert grid.dtype == torch.float64
    expected_x = torch.tensor([[0.0, 1, 2, 3]] * 3, dtype=torch.float64)
    expected_y = torch.tensor([[0.0] * 4, [1.0] * 4, [2.0] * 4], dtype=torch.float64)
    for b in range(2):
        torch.testing.assert_close(grid[b, 0], expected_x, rtol=0, atol=0)
        torch.testing.assert_close(grid[b, 1], expected_y, rtol=0, atol=0)


def test_coordinate_grid_rejects_empty() -> None:
    with pytest.raises(ValueError, match="height=0"):
        coordinate_grid(1, 0, 4)


def test_bilinear_sample_integer_coordinates_are_exact() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 5, 7, generator=generator)
    coords = coordinate_grid(2, 5, 7).permute(0, 2, 3, 1)
    torch.testing.assert_close(bilinear_sample(images, coords), images, rtol=0, atol=1e-6)


def test_bilinear_sample_known_values() -> None:
    # f(x, y) = 10 * x + y is reproduced exactly by bilinear interpolation inside the image.
    height, width = 4, 6
    grid = coordinate_grid(1, height, width, dtype=torch.float64)
    images = (10 * grid[:, :1] + grid[:, 1:]).contiguous()
    coords = torch.tensor([[[[0.5, 0.25], [4.75, 2.5], [5.0, 3.0]]]], dtype=torch.float64)
    sampled = bilinear_sample(images, coords)
    expected = torch.tensor([[[[5.25, 50.0, 53.0]]]], dtype=torch.float64)
    torch.testing.assert_close(sampled, expected, rtol=0, atol=1e-12)


def test_bilinear_sample_zero_outside() -> None:
    images = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    coords = torch.tensor([[[[-1.0, 1.0], [1.0, 3.0], [-0.5, 1.0], [2.25, 1.0]]]])
    sampled = bilinear_sample(images, coords.double())
    # Fully outside -> 0; half a pixel outside -> half the weight on the zero padding.
    torch.testing.assert_close(
        sampled,
        torch.tensor([[[[0.0, 0.0, 0.5, 0.75]]]], dtype=torch.float64),
        rtol=0,
        atol=1e-12,
    )


def test_bilinear_sample_gradcheck() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(1, 2, 4, 5, generator=generator, dtype=torch.float64)
    # Non-integer coordinates away from pixel boundaries, where bilinear sampling is smooth.
    coords = torch.tensor(
        [[[[0.3, 0.6], [2.7, 1.2]], [[3.4, 2.55], [1.15, 2.9]]]], dtype=torch.float64
    )
    images.requires_grad_(True)
    coords.requires_grad_(True)
    assert torch.autograd.gradcheck(bilinear_sample, (images, coords), eps=1e-6, atol=1e-6)


def test_bilinear_sample_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 1, 1, 5\)"):
        bilinear_sample(torch.zeros(1, 1, 1, 5), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 3\)"):
        bilinear_sample(torch.zeros(1, 1, 4, 5), torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError, match="4-D"):
        bilinear_sample(torch.zeros(1, 4, 5), torch.zeros(1, 2, 2, 2))


def test_upsample_flow_scales_values() -> None:
    flow = torch.stack((torch.full((3, 4), 1.5), torch.full((3, 4), -2.0))).unsqueeze(0)
    upsampled = upsample_flow(flow, factor=8)
    assert upsampled.shape == (1, 2, 24, 32)
    torch.testing.assert_close(upsampled[0, 0], torch.full((24, 32), 12.0))
    torch.testing.assert_close(upsampled[0, 1], torch.full((24, 32), -16.0))


def test_convex_upsample_constant_flow() -> None:
    factor, height, width = 4, 5, 6
    flow = torch.empty(2, 2, height, width)
    flow[:, 0], flow[:, 1] = 0.75, -1.25
    generator = torch.Generator().manual_seed(2)
    mask = torch.randn(2, 9 * factor * factor, height, width, generator=generator)
    upsampled = convex_upsample(flow, mask, factor=factor)
    assert upsampled.shape == (2, 2, height * factor, width * factor)
    # Away from the border every neighbour holds the same flow, so any convex combination of
    # them is that flow (times the factor, the unit change). The outer ring of low-resolution
    # pixels mixes in zero padding, as in RAFT.
    interior = upsampled[:, :, factor:-factor, factor:-factor]
    torch.testing.assert_close(interior[:, 0], torch.full_like(interior[:, 0], 3.0))
    torch.testing.assert_close(interior[:, 1], torch.full_like(interior[:, 1], -5.0))

    # All weight on the centre neighbour: exact everywhere, border included.
    centre_only = torch.full((2, 9, factor, factor, height, width), -1e4)
    centre_only[:, 4] = 0.0
    upsampled = convex_upsample(flow, centre_only.reshape(2, -1, height, width), factor=factor)
    torch.testing.assert_close(upsampled[:, 0], torch.full_like(upsampled[:, 0], 3.0))
    torch.testing.assert_close(upsampled[:, 1], torch.full_like(upsampled[:, 1], -5.0))


def _bilinear_weights(factor: int) -> torch.Tensor:
    """Mask logits making convex_upsample bilinear interpolation between pixel centres."""
    offsets = (torch.arange(factor, dtype=torch.float64) - (factor - 1) / 2) / factor
    # 1-D weights of the neighbours at -1, 0, +1 for every sub-pixel offset: (factor, 3).
    weights_1d = torch.stack(
        (offsets.clamp(max=0).neg(), 1 - offsets.abs(), offsets.clamp(min=0)), dim=1
    )
    # (9, a, b): neighbour k = 3 * (dy + 1) + (dx + 1), sub-pixel row a, column b.
    weights = torch.einsum("ai,bj->ijab", weights_1d, weights_1d).reshape(9, factor, factor)
    return weights.clamp(min=1e-30).log()


def test_convex_upsample_reproduces_linear_field() -> None:
    factor, height, width = 4, 5, 6
    grid = coordinate_grid(1, height, width, dtype=torch.float64)
    # u = 0.5 x - 0.25 y + 1, v = 2 y
    flow = torch.cat((0.5 * grid[:, :1] - 0.25 * grid[:, 1:] + 1, 2 * grid[:, 1:]), dim=1)
    logits = _bilinear_weights(factor)[None, :, :, :, None, None].expand(
        1, 9, factor, factor, height, width
    )
    upsampled = convex_upsample(flow, logits.reshape(1, -1, height, width), factor=factor)
    # High-resolution pixel X sits at low-resolution coordinate (X - (factor - 1) / 2) / factor.
    fine = coordinate_grid(1, height * factor, width * factor, dtype=torch.float64)
    fine = (fine - (factor - 1) / 2) / factor
    expected = factor * torch.cat(
        (0.5 * fine[:, :1] - 0.25 * fine[:, 1:] + 1, 2 * fine[:, 1:]), dim=1
    )
    inner = (slice(None), slice(None), slice(factor, -factor), slice(factor, -factor))
    torch.testing.assert_close(upsampled[inner], expected[inner], rtol=0, atol=1e-9)


def test_convex_upsample_rejects_wrong_mask() -> None:
    with pytest.raises(ValueError, match=r"\(1, 576, 2, 3\)"):
        convex_upsample(torch.zeros(1, 2, 2, 3), torch.zeros(1, 9, 2, 3), factor=8)


def test_downsample_flow_inverts_upsampling_of_constants() -> None:
    flow = torch.full((1, 2, 16, 24), 8.0)
    torch.testing.assert_close(downsample_flow(flow, factor=8), torch.ones(1, 2, 2, 3))
    with pytest.raises(ValueError, match=r"\(1, 2, 15, 24\)"):
        downsample_flow(torch.zeros(1, 2, 15, 24), factor=8)


@pytest.mark.parametrize(
    ("height", "width", "min_size", "expected"),
    [
        (32, 40, 0, (0, 0, 0, 0)),
        (37, 53, 0, (1, 2, 1, 2)),
        (9, 11, 0, (2, 3, 3, 4)),
        (9, 11, 128, (58, 59, 59, 60)),
        (130, 11, 128, (58, 59, 3, 3)),
    ],
)
def test_padding_to_multiple(
    height: int, width: int, min_size: int, expected: tuple[int, int, int, int]
) -> None:
    padding = padding_to_multiple(height, width, multiple=8, min_size=min_size)
    assert padding == expected
    left, right, top, bottom = padding
    assert (height + top + bottom) % 8 == 0 and (width + left + right) % 8 == 0
    assert height + top + bottom >= min_size and width + left + right >= min_size


def test_pad_unpad_round_trip() -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 37, 53, generator=generator)
    padded, padding = pad_to_multiple(images, multiple=8, min_size=64)
    assert padded.shape == (2, 3, 64, 64)
    torch.testing.assert_close(unpad(padded, padding), images, rtol=0, atol=0)
    # Replicate padding: the top-left corner repeats the first pixel.
    left, _, top, _ = padding
    torch.testing.assert_close(padded[:, :, 0, 0], images[:, :, 0, 0], rtol=0, atol=0)
    torch.testing.assert_close(
        padded[:, :, top, :left], images[:, :, 0, :1].expand(-1, -1, left), rtol=0, atol=0
    )


def test_pad_to_multiple_no_op_returns_input() -> None:
    images = torch.zeros(1, 3, 16, 24)
    padded, padding = pad_to_multiple(images)
    assert padded is images and padding == (0, 0, 0, 0)


def test_unpad_rejects_oversized_padding() -> None:
    with pytest.raises(ValueError, match=r"\(2, 2, 1, 1\)"):
        unpad(torch.zeros(1, 2, 2, 8), (2, 2, 1, 1))
