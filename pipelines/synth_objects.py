"""Random foreground objects: textured sprites with anti-aliased shapes, and smooth tracks.

A sprite is a texture plus an alpha map in its own pixel grid (the object's local coordinates).
A track is one affine local -> image map per frame (translation along a gently swaying line
that crosses the frame, plus a slow scale change and rotation about the sprite centre); the
renderer warps the sprite with it, and the same maps give the exact flow.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipelines.synth_spec import COVERAGE_THRESHOLD
from pipelines.synth_textures import random_texture

SHAPES = ("ellipse", "rectangle", "polygon", "blob")
"""The outlines :func:`random_sprite` draws from."""

_SUPERSAMPLING = 4
_FIXED_POINT_BITS = 4
_PADDING = 2
_SCALE_LIMITS = (0.5, 2.0)


def random_sprite(rng: np.random.Generator, *, extent: float,
                  shape: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A textured object with an anti-aliased outline.

    Edge pixels carry fractional alpha (see :func:`_rasterise`). The sprite has a 2-pixel
    transparent border so that warped edges fade to zero inside the warp window.

    Args:
        rng: the random generator.
        extent: length of the object's longest side in pixels (>= 1).
        shape: one of :data:`SHAPES`, or None to draw one uniformly.

    Returns:
        (texture, alpha): shapes (h, w, 3) float32 RGB in [0, 255] and (h, w) float32 in [0, 1].

    Raises:
        ValueError: ``extent`` < 1 or ``shape`` is unknown.
    """
    if shape is None:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
    if shape not in SHAPES:
        raise ValueError(f"synth_objects.random_sprite: unknown shape {shape!r}, "
                         f"expected one of {SHAPES}")
    if extent < 1:
        raise ValueError(f"synth_objects.random_sprite: extent must be >= 1 pixel, got {extent}")
    half_long = extent / 2
    # A short side under 3 px could leave no pixel with alpha > 0.5: an object that shows in
    # the frame but not in the mask.
    half_short = max(extent * rng.uniform(0.35, 1.0), min(extent, 3.0)) / 2
    width = int(np.ceil(2 * half_long)) + 2 * _PADDING
    height = int(np.ceil(2 * half_short)) + 2 * _PADDING
    alpha = _rasterise(_outline(rng, shape=shape), width=width, height=height,
                       half_sizes=(half_long, half_short))
    if np.count_nonzero(alpha > COVERAGE_THRESHOLD) < 2:
        # A 3-pixel triangle or blob can be all fractional edge: it would show in the frame but
        # not in the mask. A rectangle of that size always has a solid core.
        alpha = _rasterise(_outline(rng, shape="rectangle"), width=width, height=height,
                           half_sizes=(half_long, half_short))
    texture = random_texture(rng, height=height, width=width)
    return texture, alpha


def _rasterise(outline: np.ndarray, *, width: int, height: int,
               half_sizes: tuple[float, float]) -> np.ndarray:
    """Fills an outline centred in a (height, width) sprite, anti-aliased, values in [0, 1].

    The outline is filled at 4x resolution and area-averaged down. Sprite pixel i covers
    supersampled pixels 4i .. 4i+3, so its centre sits at 4i + 1.5.
    """
    centre = np.array([(width - 1) / 2, (height - 1) / 2]) * _SUPERSAMPLING + 1.5
    points = centre + outline * np.asarray(half_sizes) * _SUPERSAMPLING
    canvas = np.zeros((height * _SUPERSAMPLING, width * _SUPERSAMPLING), np.uint8)
    fixed = np.rint(points * 2**_FIXED_POINT_BITS).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 255, lineType=cv2.LINE_8, shift=_FIXED_POINT_BITS)
    alpha = cv2.resize(canvas.astype(np.float32) / 255.0, (width, height),
                       interpolation=cv2.INTER_AREA)
    return np.clip(alpha, 0.0, 1.0)


def _outline(rng: np.random.Generator, *, shape: str) -> np.ndarray:
    """Closed outline in unit coordinates (within [-1, 1]^2), shape (N, 2)."""
    if shape == "rectangle":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if shape == "ellipse":
        angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        radii = np.ones_like(angles)
    elif shape == "polygon":
        count = int(rng.integers(3, 9))
        # Evenly spread vertex angles (jittered by up to a third of the spacing) keep the
        # polygon from degenerating into a sliver.
        spacing = 2 * np.pi / count
        angles = (rng.uniform(0, 2 * np.pi) + spacing * np.arange(count)
                  + rng.uniform(-spacing / 3, spacing / 3, count))
        radii = rng.uniform(0.55, 1.0, count)
    else:
        angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        radii = np.ones_like(angles)
        for harmonic in range(2, 6):
            radii += rng.uniform(0, 0.25 / harmonic * 2) * np.cos(
                harmonic * angles + rng.uniform(0, 2 * np.pi))
    points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    return points / np.abs(points).max(axis=0)


def track_affines(*, positions: np.ndarray, scales: np.ndarray, rotations: np.ndarray,
                  anchor: tuple[float, float]) -> np.ndarray:
    """Affine local -> image maps that put a sprite's ``anchor`` at given positions.

    Args:
        positions: image position (x, y) of the anchor per frame, shape (T, 2).
        scales: scale factor per frame, shape (T,).
        rotations: rotation angle per frame in radians (clockwise on screen, y down), (T,).
        anchor: the sprite point (x, y) that follows ``positions``, e.g. its centre.

    Returns:
        Maps ``p -> s R (p - anchor) + position``, shape (T, 2, 3), float64.
    """
    cos, sin = np.cos(rotations) * scales, np.sin(rotations) * scales
    linear = np.stack([np.stack([cos, -sin], axis=-1), np.stack([sin, cos], axis=-1)], axis=1)
    offsets = positions - linear @ np.asarray(anchor, np.float64)
    return np.concatenate([linear, offsets[..., None]], axis=2)


def random_track(rng: np.random.Generator, *, frame_size: tuple[int, int],
                 sprite_size: tuple[int, int], num_frames: int, min_speed: float,
                 max_speed: float, max_scale_rate: float,
                 max_rotation_rate: float) -> np.ndarray:
    """A smooth path across the frame: in from one side, out through another.

    The object's centre moves at constant speed along the line between two points just
    outside the frame (far enough out that the whole object is hidden there), plus a slow
    sideways sinusoidal sway. When it passes is random, so an object may be inside at the
    first frame, enter, leave, or both. Its scale changes exponentially (clipped to [0.5, 2])
    and it turns at a constant rate.

    Args:
        rng: the random generator.
        frame_size: (width, height) of the frame.
        sprite_size: (width, height) of the sprite.
        num_frames: T.
        min_speed: slowest speed in pixels per frame.
        max_speed: fastest speed in pixels per frame.
        max_scale_rate: largest |d log(scale) / dt| per frame.
        max_rotation_rate: largest |d angle / dt| in radians per frame.

    Returns:
        Local -> image maps, shape (T, 2, 3), float64.
    """
    width, height = frame_size
    times = np.arange(num_frames, dtype=np.float64)
    sway = rng.uniform(0.0, 0.05) * min(width, height)
    reach = 0.5 * np.hypot(*sprite_size) * _SCALE_LIMITS[1] + sway
    entry_side = int(rng.integers(4))
    # Sides 0/1 (left/right) and 2/3 (top/bottom) face each other: leave mostly opposite.
    if rng.random() < 0.6:
        exit_side = entry_side ^ 1
    else:
        exit_side = (2 if entry_side < 2 else 0) + int(rng.integers(2))
    entry = _point_beyond_side(rng, side=entry_side, width=width, height=height, reach=reach)
    leave = _point_beyond_side(rng, side=exit_side, width=width, height=height, reach=reach)
    length = float(np.hypot(*(leave - entry)))
    speed = rng.uniform(min_speed, max_speed)
    if speed * num_frames < 1e-6 or length < 1e-6:
        positions = np.tile(rng.uniform((0, 0), (width - 1, height - 1)), (num_frames, 1))
    else:
        duration = length / speed
        start = rng.uniform(-0.8 * duration, num_frames - 1 - 0.2 * duration)
        progress = (times - start) / duration
        direction = (leave - entry) / length
        normal = np.array([-direction[1], direction[0]])
        period = rng.uniform(40.0, 160.0)
        offset = sway * np.sin(2 * np.pi * (times - start) / period + rng.uniform(0, 2 * np.pi))
        positions = entry + progress[:, None] * (leave - entry) + offset[:, None] * normal
    scale_rate = rng.uniform(-max_scale_rate, max_scale_rate)
    scales = np.clip(np.exp(scale_rate * (times - rng.uniform(0, num_frames - 1))),
                     *_SCALE_LIMITS)
    rotations = rng.uniform(0, 2 * np.pi) + rng.uniform(-max_rotation_rate,
                                                        max_rotation_rate) * times
    anchor = ((sprite_size[0] - 1) / 2, (sprite_size[1] - 1) / 2)
    return track_affines(positions=positions, scales=scales, rotations=rotations, anchor=anchor)


def _point_beyond_side(rng: np.random.Generator, *, side: int, width: int, height: int,
                       reach: float) -> np.ndarray:
    """A point ``reach`` pixels outside side 0 (left), 1 (right), 2 (top) or 3 (bottom)."""
    if side in (0, 1):
        x = -reach if side == 0 else width - 1 + reach
        return np.array([x, rng.uniform(0, height - 1)])
    y = -reach if side == 2 else height - 1 + reach
    return np.array([rng.uniform(0, width - 1), y])
