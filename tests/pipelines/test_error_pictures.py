"""Error pictures: every pixel class gets its colour; frames for pictures spread over the scored."""

import numpy as np
import pytest

from pipelines.error_pictures import (
    GREEN,
    NOT_SCORED,
    RED,
    SEPARATOR,
    WHITE,
    error_picture,
    picture_frame_numbers,
)


def test_each_outcome_has_its_colour_and_unscored_pixels_are_grey():
    rgb = np.full((2, 3, 3), 7, np.uint8)
    truth = np.array([[255, 255, 0], [0, 85, 170]], np.uint8)
    prediction = np.array([[255, 0, 255], [0, 255, 255]], np.uint8)
    picture = error_picture(rgb, truth, prediction)
    width = 3
    assert picture.shape == (2, 3 * width + 2 * SEPARATOR, 3)
    assert (picture[:, :width] == 7).all()  # the frame, untouched
    truth_panel = picture[:, width + SEPARATOR:2 * width + SEPARATOR]
    errors = picture[:, 2 * (width + SEPARATOR):]
    assert tuple(truth_panel[0, 0]) == WHITE and tuple(truth_panel[0, 2]) == (0, 0, 0)
    assert tuple(truth_panel[1, 1]) == NOT_SCORED == tuple(truth_panel[1, 2])
    assert tuple(errors[0, 0]) == WHITE  # true positive
    assert tuple(errors[0, 1]) == RED  # false negative
    assert tuple(errors[0, 2]) == GREEN  # false positive
    assert tuple(errors[1, 0]) == (0, 0, 0)  # true negative
    assert tuple(errors[1, 1]) == NOT_SCORED == tuple(errors[1, 2])  # 85 and 170


def test_pixels_outside_the_roi_are_grey():
    roi = np.array([[True, False]])
    picture = error_picture(np.zeros((1, 2, 3), np.uint8), np.array([[0, 255]], np.uint8),
                            np.array([[255, 0]], np.uint8), roi)
    errors = picture[:, 2 * (2 + SEPARATOR):]
    assert tuple(errors[0, 0]) == GREEN and tuple(errors[0, 1]) == NOT_SCORED


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="shapes differ"):
        error_picture(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3), np.uint8),
                      np.zeros((2, 2), np.uint8))


def test_picture_frames_spread_over_the_scored_frames():
    assert picture_frame_numbers(range(1, 101), None, 3) == [1, 51, 100]
    assert picture_frame_numbers(range(1, 101), (41, 60), 2) == [41, 60]
    assert picture_frame_numbers([5, 9], None, 3) == [5, 9]
    assert picture_frame_numbers([5, 9], (10, 20), 3) == []
