"""Error pictures, as in the paper: frame | ground truth | prediction with its errors coloured.

The prediction panel shows true positives white, false positives green, false negatives red and
true negatives black; pixels that are not scored (outside the ROI, or labelled 85/170 in the
ground truth) are dimmed grey in both mask panels, so what the scores count is what one sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossnet.metrics import FOREGROUND_THRESHOLD, OUTSIDE_ROI, UNKNOWN, in_temporal_roi

WHITE = (255, 255, 255)
GREEN = (0, 200, 0)  # false positive
RED = (230, 0, 0)  # false negative
NOT_SCORED = (70, 70, 70)
SEPARATOR = 4


def error_picture(rgb: np.ndarray, groundtruth: np.ndarray, prediction: np.ndarray,
                  roi: np.ndarray | None = None) -> np.ndarray:
    """Three panels side by side: ``rgb`` | ground truth | prediction coloured by error.

    Args:
        rgb: the frame, (H, W, 3) uint8.
        groundtruth: CDnet labels (H, W) uint8 (>= 128 foreground; 85 and 170 not scored).
        prediction: (H, W) uint8, >= 128 foreground.
        roi: (H, W) bool, True = scored; None scores every pixel.

    Returns:
        (H, 3 W + 2 separators, 3) uint8 RGB.
    """
    if not (rgb.shape[:2] == groundtruth.shape == prediction.shape):
        raise ValueError(f"error_picture: shapes differ: frame {rgb.shape[:2]}, ground truth "
                         f"{groundtruth.shape}, prediction {prediction.shape}")
    truth = groundtruth >= FOREGROUND_THRESHOLD
    predicted = prediction >= FOREGROUND_THRESHOLD
    scored = (groundtruth != OUTSIDE_ROI) & (groundtruth != UNKNOWN)
    if roi is not None:
        scored &= roi

    truth_panel = np.zeros_like(rgb)
    truth_panel[truth] = WHITE
    truth_panel[~scored] = NOT_SCORED

    error_panel = np.zeros_like(rgb)
    error_panel[truth & predicted] = WHITE
    error_panel[~truth & predicted] = GREEN
    error_panel[truth & ~predicted] = RED
    error_panel[~scored] = NOT_SCORED

    gap = np.full((rgb.shape[0], SEPARATOR, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, truth_panel, gap, error_panel], axis=1)


def picture_frame_numbers(numbers_with_truth: Sequence[int], temporal_roi: tuple[int, int] | None,
                          count: int = 3) -> list[int]:
    """Up to ``count`` frame numbers spread evenly over the scored frames (with ground truth
    inside the temporal ROI), first and last included."""
    scored = sorted(n for n in numbers_with_truth if in_temporal_roi(n, temporal_roi))
    if count <= 0 or not scored:
        return []
    if len(scored) <= count:
        return scored
    positions = np.linspace(0, len(scored) - 1, count).round().astype(int)
    return [scored[i] for i in dict.fromkeys(positions.tolist())]
