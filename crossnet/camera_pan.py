"""A still camera's video seen as if the camera were panning: training items for moving cameras.

Most real training scenes are filmed by still cameras (by the camera fit of
:mod:`crossnet.camera_motion`, 11 of the 14 of ``cross_scene_v1``; UCSD landing, bottle and surf
move), but several unseen scenes follow their subject (the UCSD clips cyclists, hockey and
surfers pan 6-12 pixels per frame). There the running background is a smear of the scene that
went past, every pixel differs from it, and the model trained on still cameras flags the whole
frame. :class:`crossnet.composite.
CompositeDataset` can therefore film a share of its composites with a camera moving at a
constant velocity ``c`` (pixels per frame, in the scene):

    view_e(x) = frame_e(x + (e - t) * c)

for the item's frame t and every earlier frame e it uses. Frame t itself is unchanged (so its
ground truth is exact); a point of the scene at x in frame t sits at ``x + k * c`` in frame
t - k, so the 3D-HOP recomputed on the views has ``k * c`` on the background at stride k, while
the pasted object, which moves in the image, keeps its own motion. Where the view reaches past
the frame's edge it is mirrored (``cv2.BORDER_REFLECT_101``): a band of scene-like texture, not
a black or smeared edge the model could learn to key on.

:func:`panned_background` is the running background (EMA, :mod:`crossnet.background`) such a
camera would have given at frame t: the average of the views of the frames before t, started
far enough back (:func:`ema_horizon`) that the start's weight is under 5 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from crossnet.background import running_backgrounds

PAN_SPEED_RANGE = (1.0, 12.0)
"""Camera speeds drawn for panned composites, pixels per frame: the moving-camera test scenes of
the cross-scene split pan at 6-12 (``benchmarks/RESULTS.md``, "Camera-motion compensation")."""

FORGOTTEN = 0.05
"""Weight left to the first frame of :func:`panned_background`'s average."""


def pan_view(image: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """The frame seen by a camera moved by ``offset`` = (dx, dy) pixels: pixel x shows the
    frame at x + offset (bilinear), mirrored past the frame's edges.

    Args:
        image: (H, W, 3) uint8.
        offset: (dx, dy), pixels; (0, 0) returns the image itself.

    Returns:
        (H, W, 3) uint8.
    """
    dx, dy = float(offset[0]), float(offset[1])
    if dx == 0.0 and dy == 0.0:
        return image
    height, width = image.shape[:2]
    # WARP_INVERSE_MAP: dst(x) = src(M x), with M the translation by the offset.
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float64)
    return cv2.warpAffine(image, matrix, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def ema_horizon(rate: float) -> int:
    """How many frames back an EMA of ``rate`` must start for its start to weigh under
    :data:`FORGOTTEN` (59 frames at the default rate 0.05)."""
    if rate >= 1.0:
        return 1
    return math.ceil(math.log(FORGOTTEN) / math.log(1.0 - rate))


def panned_background(frame_at: Callable[[int], np.ndarray], t: int,
                      velocity: tuple[float, float], *, rate: float) -> np.ndarray:
    """The EMA background of frame t under a camera panning at ``velocity``.

    Args:
        frame_at: frame e -> (H, W, 3) uint8 of the still camera's video.
        t: the frame whose background is wanted.
        velocity: (cx, cy), the camera's motion in pixels per frame.
        rate: EMA rate.

    Returns:
        (H, W, 3) uint8: the EMA over the views of frames max(0, t - horizon)..t - 1, started
        from the first of them; for t = 0, frame 0 itself (as :mod:`crossnet.background` pairs
        frame 0).
    """
    start = max(0, t - ema_horizon(rate))
    views = (pan_view(frame_at(e), ((e - t) * velocity[0], (e - t) * velocity[1]))
             for e in range(start, t + 1))
    background = None
    for background in running_backgrounds(views, rate=rate):
        pass
    return background
