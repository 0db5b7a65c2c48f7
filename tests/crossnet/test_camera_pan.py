"""The panning-camera view of a still camera's frames and its running background."""

import numpy as np

from crossnet.background import running_backgrounds
from crossnet.camera_pan import FORGOTTEN, ema_horizon, pan_view, panned_background


def ramp_frame(height=40, width=50, along="y"):
    """A frame whose grey level rises along one axis only (3 px per row or column)."""
    rows, columns = np.mgrid[0:height, 0:width]
    values = 3 * (rows if along == "y" else columns) + 20
    return np.repeat(values[..., None], 3, axis=2).astype(np.uint8)


def test_a_whole_pixel_offset_shows_the_frame_shifted():
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    view = pan_view(image, (3, -2))
    # Pixel (y, x) shows the frame at (y - 2, x + 3), where that lies inside the frame.
    np.testing.assert_array_equal(view[2:, :-3], image[:-2, 3:])
    assert pan_view(image, (0, 0)) is image


def test_past_the_edge_the_view_is_mirrored():
    image = ramp_frame(along="x")
    view = pan_view(image, (4, 0))
    # Columns 46..49 would read columns 50..53: mirrored about the last column (49) they read
    # 48, 47, 46, 45.
    np.testing.assert_array_equal(view[:, 46:, 0], image[:, [48, 47, 46, 45], 0])


def test_ema_horizon_leaves_the_start_under_five_percent():
    for rate in (0.05, 0.1, 0.5):
        horizon = ema_horizon(rate)
        assert (1 - rate) ** horizon < FORGOTTEN <= (1 - rate) ** (horizon - 1)
    assert ema_horizon(0.05) == 59
    assert ema_horizon(1.0) == 1


def test_a_still_camera_gives_the_plain_running_background():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(8)]
    expected = list(running_backgrounds(frames, rate=0.5))
    for t in (0, 3, 7):
        # Rate 0.5: the horizon (5 frames) reaches back to frame 0 only for t <= 5.
        start = max(0, t - ema_horizon(0.5))
        plain = list(running_backgrounds(frames[start:t + 1], rate=0.5))[-1]
        got = panned_background(frames.__getitem__, t, (0.0, 0.0), rate=0.5)
        np.testing.assert_array_equal(got, plain)
    np.testing.assert_array_equal(panned_background(frames.__getitem__, 0, (5.0, 1.0), rate=0.5),
                                  expected[0])


def test_panning_along_the_stripes_changes_nothing_and_across_them_smears():
    frame = ramp_frame(along="y")  # constant along x
    along = panned_background(lambda e: frame, 30, (4.0, 0.0), rate=0.05)
    np.testing.assert_array_equal(along, frame)
    across = panned_background(lambda e: frame, 30, (0.0, 1.0), rate=0.05)
    # Frames e < t were seen from (e - t) px higher up: darker rows, so the average is darker
    # than the frame in the middle rows (the edges are mirrored).
    middle = slice(15, 25)
    assert (across[middle].astype(int) - frame[middle]).max() < -3
