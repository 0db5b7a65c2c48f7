"""Classical background subtractors (OpenCV MOG2 and KNN), the baselines every model is scored against.

Both run online with OpenCV's default parameters, one frame at a time, exactly as a user of
OpenCV would run them. OpenCV marks shadows with 127; CDnet counts shadows as background, so
shadow pixels become background here.
"""

from __future__ import annotations

import cv2
import numpy as np

BASELINE_NAMES = ("mog2", "knn")

# OpenCV's value for a detected shadow pixel (detectShadows=True is the default for both).
_OPENCV_SHADOW = 127


class OpenCVSubtractor:
    """An OpenCV background subtractor as a callable: RGB frame in, binary mask out.

    Args:
        name: ``"mog2"`` (``cv2.createBackgroundSubtractorMOG2()``) or ``"knn"``
            (``cv2.createBackgroundSubtractorKNN()``), both with OpenCV's defaults.

    Raises:
        ValueError: for any other name.
    """

    def __init__(self, name: str) -> None:
        if name == "mog2":
            self._subtractor = cv2.createBackgroundSubtractorMOG2()
        elif name == "knn":
            self._subtractor = cv2.createBackgroundSubtractorKNN()
        else:
            raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINE_NAMES)}")
        self.name = name

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Update the background model with one frame and return its foreground mask.

        Args:
            rgb: the frame, shape (H, W, 3), uint8 RGB.

        Returns:
            (H, W) uint8 mask, 255 foreground and 0 background (shadows are background).
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        raw = self._subtractor.apply(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return np.where(raw > _OPENCV_SHADOW, 255, 0).astype(np.uint8)
