"""Tests for flow/corr.py: correlation volume, pyramid and windowed lookup."""

from __future__ import annotations

import math

import pytest
import torch

from flow.corr import (
    CorrBlock,
    correlation_pyramid,
    correlation_volume,
    lookup_pyramid,
    window_offsets,
)
from flow.geometry import coordinate_grid

HEIGHT, WIDTH = 4, 5
SHIFT_X, SHIFT_Y = 1, -1


def _one_hot_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose pixel (x, y) in frame 1 reappears at (x + 1, y - 1) in frame 2.

    Channel ``y * W + x`` is on at pixel (x, y) of frame 1 only, so the correlation of
    first-frame pixel p with second-frame pixel q is 1 / sqrt(C) exactly when q = p + shift.
    """
    channels = HEIGHT * WIDTH
    features1 = torch.eye(channels, dtype=torch.float64).reshape(1, channels, HEIGHT, WIDTH)
    features2 = torch.zeros_like(features1)
    for y in range(HEIGHT):
        for x in range(WIDTH):
            if 0 <= y + SHIFT_Y < HEIGHT and 0 <= x + SHIFT_X < WIDTH:
                features2[0, y * WIDTH + x, y + SHIFT_Y, x + SHIFT_X] = 1.0
    return features1, features2


def test_correlation_volume_one_hot_peak() -> None:
    features1, features2 = _one_hot_pair()
    volume = correlation_volume(features1, features2)
    assert volume.shape == (1, HEIGHT, WIDTH, HEIGHT, WIDTH)
    expected = torch.zeros_like(volume)
    for y in range(HEIGHT):
        for x in range(WIDTH):
            if 0 <= y + SHIFT_Y < HEIGHT and 0 <= x + SHIFT_X < WIDTH:
                expected[0, y, x, y + SHIFT_Y, x + SHIFT_X] = 1 / math.sqrt(HEIGHT * WIDTH)
    torch.testing.assert_close(volume, expected, rtol=0, atol=1e-12)


def test_correlation_volume_matches_einsum() -> None:
    generator = torch.Generator().manual_seed(0)
    features1 = torch.randn(2, 6, 3, 4, generator=generator, dtype=torch.float64)
    features2 = torch.randn(2, 6, 3, 4, generator=generator, dtype=torch.float64)
    expected = torch.einsum("bcij,bckl->bijkl", features1, features2) / math.sqrt(6)
    torch.testing.assert_close(correlation_volume(features1, features2), expected)


def test_correlation_volume_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(1, 4, 3, 3\) and \(1, 4, 3, 4\)"):
        correlation_volume(torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 3, 4))


def test_window_offsets_x_is_the_slow_index() -> None:
    offsets = window_offsets(1)
    assert offsets.shape == (3, 3, 2)
    torch.testing.assert_close(offsets[0, 2], torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(offsets[2, 0], torch.tensor([1.0, -1.0]))


def test_lookup_finds_the_known_peak() -> None:
    features1, features2 = _one_hot_pair()
    radius = 1
    pyramid = correlation_pyramid(correlation_volume(features1, features2), num_levels=1)
    coords = coordinate_grid(1, HEIGHT, WIDTH, dtype=torch.float64)
    looked_up = lookup_pyramid(pyramid, coords, radius=radius)
    assert looked_up.shape == (1, 9, HEIGHT, WIDTH)
    # The x offset is the slow index of the window.
    peak_channel = (SHIFT_X + radius) * (2 * radius + 1) + (SHIFT_Y + radius)
    expected = torch.zeros_like(looked_up)
    for y in range(HEIGHT):
        for x in range(WIDTH):
            if 0 <= y + SHIFT_Y < HEIGHT and 0 <= x + SHIFT_X < WIDTH:
                expected[0, peak_channel, y, x] = 1 / math.sqrt(HEIGHT * WIDTH)
    torch.testing.assert_close(looked_up, expected, rtol=0, atol=1e-12)


def test_lookup_at_integer_coordinates_reads_the_volume() -> None:
    generator = torch.Generator().manual_seed(1)
    batch, channels, radius = 2, 3, 2
    features1 = torch.randn(batch, channels, HEIGHT, WIDTH, generator=generator)
    features2 = torch.randn(batch, channels, HEIGHT, WIDTH, generator=generator)
    volume = correlation_volume(features1, features2)
    # Integer centres, some far enough out that parts of the window leave the image.
    coords = torch.randint(-2, 7, (batch, 2, HEIGHT, WIDTH), generator=generator).float()
    looked_up = lookup_pyramid(correlation_pyramid(volume, num_levels=1), coords, radius=radius)
    side = 2 * radius + 1
    expected = torch.zeros(batch, side * side, HEIGHT, WIDTH)
    for b in range(batch):
        for y in range(HEIGHT):
            for x in range(WIDTH):
                cx, cy = int(coords[b, 0, y, x]), int(coords[b, 1, y, x])
                for p in range(side):
                    for q in range(side):
                        sx, sy = cx + p - radius, cy + q - radius
                        if 0 <= sx < WIDTH and 0 <= sy < HEIGHT:
                            expected[b, p * side + q, y, x] = volume[b, y, x, sy, sx]
    torch.testing.assert_close(looked_up, expected, rtol=0, atol=1e-6)


def test_pyramid_levels_are_average_pools() -> None:
    generator = torch.Generator().manual_seed(2)
    volume = torch.randn(1, 2, 3, 9, 7, generator=generator, dtype=torch.float64)
    pyramid = correlation_pyramid(volume, num_levels=3)
    assert [tuple(level.shape) for level in pyramid] == [(6, 1, 9, 7), (6, 1, 4, 3), (6, 1, 2, 1)]
    level0 = volume.reshape(6, 1, 9, 7)
    expected = level0[..., :8, :6].reshape(6, 1, 4, 2, 3, 2).mean(dim=(3, 5))
    torch.testing.assert_close(pyramid[1], expected)


def test_lookup_level_coordinates_are_halved() -> None:
    generator = torch.Generator().manual_seed(3)
    features1 = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    features2 = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    pyramid = correlation_pyramid(correlation_volume(features1, features2), num_levels=2)
    # Even level-0 coordinates land on level-1 pixels (x / 2, y / 2).
    coords = 2 * torch.randint(0, 4, (1, 2, 8, 8), generator=generator).double()
    looked_up = lookup_pyramid(pyramid, coords, radius=0)
    assert looked_up.shape == (1, 2, 8, 8)
    level1 = pyramid[1].reshape(8, 8, 4, 4)
    half = (coords / 2).long()
    expected = torch.empty(8, 8, dtype=torch.float64)
    for y in range(8):
        for x in range(8):
            expected[y, x] = level1[y, x, half[0, 1, y, x], half[0, 0, y, x]]
    torch.testing.assert_close(looked_up[0, 1], expected, rtol=0, atol=1e-12)


def test_corr_block_shapes_and_gradcheck() -> None:
    block = CorrBlock(num_levels=2, radius=1)
    assert block.out_channels == 18
    assert block.min_feature_size == 4
    generator = torch.Generator().manual_seed(4)
    features1 = torch.randn(1, 3, 4, 4, generator=generator, dtype=torch.float64)
    features2 = torch.randn(1, 3, 4, 4, generator=generator, dtype=torch.float64)
    coords = coordinate_grid(1, 4, 4, dtype=torch.float64) + 0.3

    def lookup(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return block.index_pyramid(block.build_pyramid(first, second), coords)

    assert lookup(features1, features2).shape == (1, 18, 4, 4)
    inputs = (features1.requires_grad_(True), features2.requires_grad_(True))
    assert torch.autograd.gradcheck(lookup, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_corr_block_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="num_levels=0"):
        CorrBlock(num_levels=0, radius=3)
    block = CorrBlock(num_levels=4, radius=1)
    with pytest.raises(ValueError, match="8x8"):
        block.build_pyramid(torch.zeros(1, 2, 4, 9), torch.zeros(1, 2, 4, 9))
    pyramid = CorrBlock(num_levels=1, radius=1).build_pyramid(
        torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)
    )
    with pytest.raises(ValueError, match="expected 4 levels"):
        block.index_pyramid(pyramid, torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4\)"):
        lookup_pyramid(pyramid, torch.zeros(1, 2, 3, 4), radius=1)
