"""Running background: EMA known answers, numpy and torch layouts, pairing with frame t,
following a moving camera."""

import numpy as np
import pytest
import torch

from crossnet.background import (
    ESTIMATORS,
    MEDIAN_STEP,
    MEDIAN_WINDOW,
    RunningBackground,
    RunningMedian,
    align_estimate,
    ema_update,
    make_background,
    running_backgrounds,
    to_uint8,
)


def test_ema_update_is_the_weighted_mean():
    background = np.full((2, 2, 3), 100.0, np.float32)
    frame = np.full((2, 2, 3), 200, np.uint8)
    np.testing.assert_allclose(ema_update(background, frame, 0.25), 125.0)
    result = ema_update(torch.full((3, 2, 2), 100.0), torch.full((3, 2, 2), 200, dtype=torch.uint8),
                        0.25)
    torch.testing.assert_close(result, torch.full((3, 2, 2), 125.0))


def test_ema_update_rejects_bad_input():
    with pytest.raises(ValueError, match="rate"):
        ema_update(np.zeros(3, np.float32), np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="shape"):
        ema_update(np.zeros(3, np.float32), np.zeros(4), 0.5)
    with pytest.raises(ValueError, match="floating"):
        ema_update(np.zeros(3, np.uint8), np.zeros(3), 0.5)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_constant_frames_give_that_constant(kind):
    running = RunningBackground(rate=0.05)
    for _ in range(20):
        frame = (np.full((4, 5, 3), 77, np.uint8) if kind == "numpy"
                 else torch.full((3, 4, 5), 77, dtype=torch.uint8))
        estimate = running.update(frame)
    assert type(estimate) is type(frame)
    assert tuple(estimate.shape) == tuple(frame.shape)
    np.testing.assert_array_equal(np.asarray(estimate), 77.0)


def test_step_change_decays_geometrically():
    rate = 0.1
    running = RunningBackground(rate=rate)
    running.update(np.full((3, 3, 3), 200, np.uint8))
    for n in range(1, 40):
        estimate = running.update(np.full((3, 3, 3), 50, np.uint8))
        # b_n - c = (1 - rate)^n (a - c), float32 accumulation: 1e-3 grey levels.
        np.testing.assert_allclose(estimate, 50 + (1 - rate) ** n * 150, atol=1e-3)


def test_advance_pairs_each_frame_with_the_frames_before_it():
    frames = [np.full((2, 2, 3), value, np.uint8) for value in (10, 110, 210)]
    running = RunningBackground(rate=0.5)
    paired = [running.advance(frame) for frame in frames]
    np.testing.assert_allclose(paired[0], 10.0)  # frame 0: itself
    np.testing.assert_allclose(paired[1], 10.0)  # frames 0..0
    np.testing.assert_allclose(paired[2], 60.0)  # frames 0..1: 10 + 0.5 * (110 - 10)
    np.testing.assert_allclose(running.estimate, 135.0)
    paired[2][...] = -1  # a copy, not the state
    np.testing.assert_allclose(running.estimate, 135.0)


def test_running_backgrounds_round_to_uint8_and_match_streaming():
    rng = np.random.default_rng(0)
    frames = [torch.from_numpy(rng.integers(0, 256, (3, 4, 4), dtype=np.uint8))
              for _ in range(6)]
    batch = list(running_backgrounds(frames, rate=0.3))
    running = RunningBackground(rate=0.3)
    for frame, background in zip(frames, batch):
        assert background.dtype == torch.uint8
        torch.testing.assert_close(background, to_uint8(running.advance(frame)))
    torch.testing.assert_close(batch[0], frames[0])


def test_reset_and_bad_rate():
    running = RunningBackground(rate=1.0)
    running.update(np.zeros((1, 1, 3), np.uint8))
    running.reset()
    assert running.estimate is None
    np.testing.assert_array_equal(running.update(np.full((1, 1, 3), 9, np.uint8)), 9.0)
    with pytest.raises(ValueError, match="rate"):
        RunningBackground(rate=1.5)


# The sliding median (RunningMedian, estimator="median").


def _grey(value: int, shape=(2, 2, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_median_samples_every_step_th_frame_and_pairs_with_earlier_frames():
    # step 2: frames 0, 2, 4, 6 are the samples; the odd frames (200) never enter.
    frames = [_grey(v) for v in (10, 200, 20, 200, 30, 200, 40)]
    running = RunningMedian(step=2)
    paired = [float(running.advance(frame)[0, 0, 0]) for frame in frames]
    # Frame 0 pairs with itself; then the median of the samples before each frame
    # (an even count takes the mean of the two middle values).
    assert paired == [10.0, 10.0, 10.0, 15.0, 15.0, 20.0, 20.0]
    assert float(running.estimate[0, 0, 0]) == 25.0  # samples 10, 20, 30, 40


def test_median_window_keeps_the_last_nine_samples():
    frames = [_grey(v) for v in range(0, 200, 10)]  # 20 frames, values 0..190
    running = RunningMedian(step=1)
    for frame in frames:
        running.update(frame)
    # Samples are the last nine frames, values 110..190: median 150.
    np.testing.assert_array_equal(running.estimate, 150.0)


def test_median_network_equals_numpy_median():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) for _ in range(70)]
    got = list(running_backgrounds(frames, estimator="median"))
    # 1, 2, 2, 3 and 7 samples (np.sort path), then the full window of 9 (the network).
    for t in (1, 2, 7, 13, 37, 55, 61, 69):
        samples = frames[0:t:MEDIAN_STEP][-MEDIAN_WINDOW:]
        expected = np.clip(np.rint(np.median(np.stack(samples), axis=0)), 0, 255)
        np.testing.assert_array_equal(got[t], expected.astype(np.uint8), err_msg=f"frame {t}")
        assert got[t].dtype == np.uint8


def test_median_removes_a_ghost_that_the_ema_keeps():
    # An object sits in frame 0 and is gone from frame 1 on: a ghost for the EMA, which blends
    # frame 0 in; the median forgets it once the samples without it are the majority.
    scene, thing = 100, 250
    frames = [_grey(thing)] + [_grey(scene)] * 40
    ema = list(running_backgrounds(frames, estimator="ema"))
    median = list(running_backgrounds(frames, estimator="median"))
    # Samples before frame 13: frames 0, 6, 12; two of three show the scene.
    np.testing.assert_array_equal(median[13], scene)
    assert abs(int(ema[13][0, 0, 0]) - scene) > 50  # 150 * 0.95^12 = 81 grey levels left
    np.testing.assert_array_equal(median[40], scene)


def test_median_torch_layout_matches_numpy():
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(30)]
    from_numpy = list(running_backgrounds(frames, estimator="median"))
    from_torch = list(running_backgrounds(
        [torch.from_numpy(frame).permute(2, 0, 1) for frame in frames], estimator="median"))
    for a, b in zip(from_numpy, from_torch):
        assert b.dtype == torch.uint8
        np.testing.assert_array_equal(a, b.permute(1, 2, 0).numpy())


def test_median_advance_returns_a_copy_and_reset_forgets():
    running = RunningMedian(step=1)
    first = running.advance(_grey(7))
    first[...] = -1
    np.testing.assert_array_equal(running.estimate, 7.0)
    running.reset()
    assert running.estimate is None
    np.testing.assert_array_equal(running.advance(_grey(3)), 3.0)


def test_median_rejects_bad_step_and_shape_changes():
    with pytest.raises(ValueError, match="step"):
        RunningMedian(step=0)
    running = RunningMedian(step=1)
    running.update(_grey(1))
    with pytest.raises(ValueError, match=r"\(3, 3, 3\)"):
        running.update(_grey(1, shape=(3, 3, 3)))


def test_make_background_names_the_estimators():
    assert isinstance(make_background("ema", rate=0.2), RunningBackground)
    assert make_background("ema", rate=0.2).rate == 0.2
    assert isinstance(make_background("median"), RunningMedian)
    assert set(ESTIMATORS) == {"ema", "median"}
    with pytest.raises(ValueError, match="'mode'"):
        make_background("mode")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_a_camera_motion_moves_the_estimate_and_new_pixels_start_from_the_frame(kind):
    estimate = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6, 8, 3)
    frame = np.full((6, 8, 3), 7, np.uint8)
    motion = np.zeros((2, 6, 8), np.float32)
    motion[0] = 2.0  # pixel x of the new frame was at x + 2 in the one before
    if kind == "torch":
        moved = align_estimate(torch.from_numpy(estimate).permute(2, 0, 1), motion,
                               torch.from_numpy(frame).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    else:
        moved = align_estimate(estimate, motion, frame)
    np.testing.assert_allclose(moved[:, :6], estimate[:, 2:], atol=1e-4)
    np.testing.assert_array_equal(moved[:, 6:], 7.0)  # came into view: the frame's own pixels
    assert moved.dtype == np.float32


def test_advance_with_a_motion_pairs_the_frame_with_the_moved_estimate():
    first = np.tile(np.arange(8, dtype=np.uint8)[None, :, None] * 10, (4, 1, 3))
    second = np.roll(first, -1, axis=1)  # the camera moved right by one pixel
    motion = np.zeros((2, 4, 8), np.float32)
    motion[0] = 1.0
    running = RunningBackground(rate=0.5)
    running.advance(first)
    background = running.advance(second, motion)
    np.testing.assert_allclose(background[:, :7], second[:, :7].astype(np.float32), atol=1e-4)
    np.testing.assert_allclose(running.estimate[:, :7], second[:, :7].astype(np.float32),
                               atol=1e-4)
    still = RunningBackground(rate=0.5)
    still.advance(first)
    assert np.abs(still.advance(second) - second).max() >= 10  # unmoved, it lags a pixel
    moved = list(running_backgrounds([first, second], rate=0.5, motions=[None, motion]))
    np.testing.assert_array_equal(moved[1], to_uint8(background))
    with pytest.raises(ValueError, match="camera motion of shape"):
        running.advance(first, motion[:, :2])


def test_the_median_cannot_follow_the_camera():
    median = RunningMedian()
    median.advance(_grey(1))
    with pytest.raises(ValueError, match="median background cannot follow a moving camera"):
        median.advance(_grey(2), np.zeros((2, 2, 2), np.float32))
