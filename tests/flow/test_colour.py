"""Tests for flow.colour: the Middlebury wheel and the colour coding of flow fields."""

from __future__ import annotations

import numpy as np
import pytest

from flow.colour import colour_wheel, flow_to_colour


def _single_vector(u: float, v: float) -> np.ndarray:
    return np.array([u, v], dtype=np.float32).reshape(2, 1, 1)


def test_wheel_has_55_colours_with_segment_boundaries() -> None:
    wheel = colour_wheel()
    assert wheel.shape == (55, 3)
    # Segment starts: red, yellow, green, cyan, blue, magenta at RY 15, YG 6, GC 4, CB 11, BM 13.
    starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255)}
    starts |= {36: (0, 0, 255), 49: (255, 0, 255)}
    for index, colour in starts.items():
        np.testing.assert_array_equal(wheel[index], colour, err_msg=f"entry {index}")
    # Inside red->yellow, green rises in steps of floor(255 * i / 15).
    assert wheel[14].tolist() == [255, 238, 0]
    # The last entry (magenta->red, i = 5 of 6) closes the wheel near red.
    assert wheel[54].tolist() == [255, 0, 43]


def test_zero_flow_is_white() -> None:
    image = flow_to_colour(np.zeros((2, 3, 4), dtype=np.float32))
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, 255)


@pytest.mark.parametrize(
    ("u", "v", "expected_rgb"),
    [
        # +u (right): wheel position 0, pure red.
        (1.0, 0.0, (255, 0, 0)),
        # +v (down): position 55/4 = 13.75, between entries 13 (G 221) and 14 (G 238).
        (0.0, 1.0, (255, 234, 0)),
        # -u (left): position 27.5, between entries 27 (G 209) and 28 (G 186) of cyan->blue.
        (-1.0, 0.0, (0, 198, 255)),
        # -v (up): position 41.25, between entries 41 (R 98) and 42 (R 117) of blue->magenta.
        (0.0, -1.0, (103, 0, 255)),
    ],
)
def test_direction_hue_at_max_magnitude(u: float, v: float, expected_rgb: tuple) -> None:
    image = flow_to_colour(_single_vector(3.0 * u, 3.0 * v), max_magnitude=3.0)
    np.testing.assert_allclose(image[0, 0].astype(int), expected_rgb, rtol=0, atol=1)


def test_pure_u_is_red_whatever_the_sign_of_zero_v() -> None:
    for v in (0.0, -0.0):
        image = flow_to_colour(_single_vector(2.0, v), max_magnitude=2.0)
        assert image[0, 0].tolist() == [255, 0, 0]


def test_half_magnitude_is_half_saturated_and_beyond_saturates() -> None:
    flow = np.zeros((2, 1, 3), dtype=np.float32)
    flow[0] = [1.0, 2.0, 8.0]
    image = flow_to_colour(flow, max_magnitude=2.0)
    # r = 0.5 on red: 1 - 0.5 * (1 - (1, 0, 0)) = (1, 0.5, 0.5) -> (255, 128, 128).
    assert image[0, 0].tolist() == [255, 128, 128]
    assert image[0, 1].tolist() == [255, 0, 0]
    assert image[0, 2].tolist() == [255, 0, 0]


def test_default_max_magnitude_is_the_largest_known_vector() -> None:
    flow = np.zeros((2, 1, 3), dtype=np.float32)
    flow[0] = [2.0, 4.0, 1e9]
    image = flow_to_colour(flow)
    assert image[0, 0].tolist() == [255, 128, 128]
    assert image[0, 1].tolist() == [255, 0, 0]


def test_unknown_flow_is_black() -> None:
    flow = np.zeros((2, 2, 2), dtype=np.float32)
    flow[0, 0, 0] = 1e9
    flow[1, 0, 1] = np.nan
    flow[0, 1, 0] = np.inf
    image = flow_to_colour(flow, max_magnitude=1.0)
    np.testing.assert_array_equal(image[0, 0], 0)
    np.testing.assert_array_equal(image[0, 1], 0)
    np.testing.assert_array_equal(image[1, 0], 0)
    np.testing.assert_array_equal(image[1, 1], 255)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"\(2, H, W\).*\(1, 2, 3, 4\)"):
        flow_to_colour(np.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match="max_magnitude.*-1.0"):
        flow_to_colour(np.zeros((2, 3, 4)), max_magnitude=-1.0)
