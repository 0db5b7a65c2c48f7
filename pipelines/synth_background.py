"""Random static backgrounds: a base texture, static patches of other textures, a ripple band.

The background texture is larger than the frame by ``margin`` pixels on every side, so that
camera jitter and ripple displacement never sample outside it (sampling outside would mirror
the texture, and mirrored pixels would not move as the ground-truth flow says).
"""

from __future__ import annotations

import cv2
import numpy as np

from pipelines.synth_spec import BackgroundSpec, Ripple
from pipelines.synth_textures import random_texture

MAX_RIPPLE_AMPLITUDE = 3.5
"""Largest ripple displacement in pixels; the texture margin must exceed it."""


def random_background(rng: np.random.Generator, *, width: int, height: int, margin: int,
                      dynamic: bool) -> BackgroundSpec:
    """A random colourful background layer.

    Args:
        rng: the random generator.
        width: frame width.
        height: frame height.
        margin: extra texture on every side, in pixels (> camera jitter + ripple amplitude).
        dynamic: add one horizontal band of rippling texture (see
            :class:`~pipelines.synth_spec.Ripple`).

    Returns:
        The background, texture shape (height + 2 margin, width + 2 margin, 3), origin
        (margin, margin).

    Raises:
        ValueError: a size is not positive or ``margin`` is negative.
    """
    if width < 1 or height < 1 or margin < 0:
        raise ValueError(f"synth_background.random_background: need positive size and margin "
                         f">= 0, got {width}x{height}, margin {margin}")
    texture_height, texture_width = height + 2 * margin, width + 2 * margin
    texture = random_texture(rng, height=texture_height, width=texture_width)
    for _ in range(int(rng.integers(0, 5))):
        _paste_patch(rng, texture)
    ripple = None
    if dynamic:
        band_height = max(rng.uniform(0.15, 0.35) * height, 4.0)
        top = margin + rng.uniform(0, height - band_height)
        ripple = Ripple(top=top, bottom=top + band_height,
                        amplitude=rng.uniform(1.0, MAX_RIPPLE_AMPLITUDE),
                        angular_frequency=rng.uniform(0.15, 0.6),
                        phase_per_row=rng.uniform(0.08, 0.35), phase=rng.uniform(0, 2 * np.pi))
        _paint_band(rng, texture, top=ripple.top, bottom=ripple.bottom)
    return BackgroundSpec(texture=texture, origin=(float(margin), float(margin)), ripple=ripple)


def _paste_patch(rng: np.random.Generator, texture: np.ndarray) -> None:
    """Blends a static polygon of another texture into ``texture`` in place (soft edge)."""
    height, width = texture.shape[:2]
    patch_width = int(rng.uniform(0.1, 0.45) * width) + 2
    patch_height = int(rng.uniform(0.1, 0.45) * height) + 2
    x0 = int(rng.integers(0, max(width - patch_width, 1)))
    y0 = int(rng.integers(0, max(height - patch_height, 1)))
    patch_width, patch_height = min(patch_width, width - x0), min(patch_height, height - y0)
    count = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    if count == 4 and rng.random() < 0.5:
        angles = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
    corners = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    corners = (corners / np.abs(corners).max(axis=0) * 0.5 + 0.5) * (patch_width - 1,
                                                                     patch_height - 1)
    coverage = np.zeros((patch_height, patch_width), np.float32)
    cv2.fillPoly(coverage, [np.rint(corners).astype(np.int32)], 1.0)
    coverage = cv2.GaussianBlur(coverage, (0, 0), 1.0)[..., None]
    patch = random_texture(rng, height=patch_height, width=patch_width)
    region = texture[y0:y0 + patch_height, x0:x0 + patch_width]
    region *= 1.0 - coverage
    region += coverage * patch


def _paint_band(rng: np.random.Generator, texture: np.ndarray, *, top: float,
                bottom: float) -> None:
    """Paints a water-like texture over rows [top, bottom] in place, fading in over 3 rows."""
    height, width = texture.shape[:2]
    band = random_texture(rng, height=height, width=width,
                          kind="noise" if rng.random() < 0.7 else "stripes")
    rows = np.arange(height, dtype=np.float32)
    weight = np.clip((rows - top) / 3.0, 0, 1) * np.clip((bottom - rows) / 3.0, 0, 1)
    weight = weight[:, None, None]
    texture *= 1.0 - weight
    texture += weight * band
