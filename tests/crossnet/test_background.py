"""Running background: EMA known answers, numpy and torch layouts, pairing with frame t."""

import numpy as np
import pytest
import torch

from crossnet.background import RunningBackground, ema_update, running_backgrounds, to_uint8


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
