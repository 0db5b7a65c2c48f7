"""Procedural colour textures for synthetic scenes: value noise, stripes, checkers, gradients.

Every texture is float32 RGB in [0, 255], shape (H, W, 3), drawn from a
:class:`numpy.random.Generator` so that a seed fixes it exactly. Textures are band-limited
(a final Gaussian blur of sigma 0.8 px): the renderer resamples them with bilinear
interpolation at sub-pixel positions, and hard one-pixel edges would make the rendered frames
depend on that interpolation far more than on the motion the ground-truth flow describes.
"""

from __future__ import annotations

import cv2
import numpy as np

TEXTURE_KINDS = ("noise", "stripes", "checker", "gradient")
"""The texture families :func:`random_texture` draws from."""

_BLUR_SIGMA = 0.8


def value_noise(rng: np.random.Generator, *, height: int, width: int, cell_size: float,
                octaves: int = 4, persistence: float = 0.5) -> np.ndarray:
    """Multi-octave value noise: random values on coarse grids, cubic-upsampled and summed.

    Args:
        rng: the random generator.
        height: output rows.
        width: output columns.
        cell_size: grid spacing of the coarsest octave in pixels; each further octave halves it.
        octaves: number of octaves summed.
        persistence: amplitude factor from one octave to the next.

    Returns:
        Noise of shape (height, width), float32, rescaled to span [0, 1].

    Raises:
        ValueError: a size, ``cell_size`` or ``octaves`` is not positive.
    """
    if height < 1 or width < 1 or cell_size <= 0 or octaves < 1:
        raise ValueError(f"synth_textures.value_noise: need positive height, width, cell_size and "
                         f"octaves, got {height}, {width}, {cell_size}, {octaves}")
    total = np.zeros((height, width), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        cell = max(cell_size / 2**octave, 1.0)
        rows = int(np.ceil(height / cell)) + 2
        cols = int(np.ceil(width / cell)) + 2
        grid = rng.random((rows, cols), dtype=np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        amplitude *= persistence
    return _rescale(total)


def random_palette(rng: np.random.Generator, *, num_colours: int) -> np.ndarray:
    """Random saturated colours, converted from HSV so that they are vivid and varied.

    Returns:
        Colours of shape (num_colours, 3), float32 RGB in [0, 255].
    """
    hsv = np.stack([rng.uniform(0, 180, num_colours),
                    rng.uniform(90, 255, num_colours),
                    rng.uniform(70, 255, num_colours)], axis=1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32)


def apply_palette(values: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Maps scalars in [0, 1] to colours by piecewise-linear interpolation along a palette.

    Args:
        values: scalars of shape (H, W) in [0, 1].
        palette: colours of shape (N, 3) with N >= 2, placed evenly on [0, 1].

    Returns:
        Colours of shape (H, W, 3), float32.
    """
    stops = np.linspace(0.0, 1.0, len(palette))
    channels = [np.interp(values, stops, palette[:, channel]) for channel in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def random_texture(rng: np.random.Generator, *, height: int, width: int,
                   kind: str | None = None) -> np.ndarray:
    """A random colourful texture of one of :data:`TEXTURE_KINDS`.

    Args:
        rng: the random generator.
        height: output rows.
        width: output columns.
        kind: one of :data:`TEXTURE_KINDS`, or None to draw one uniformly.

    Returns:
        The texture, shape (height, width, 3), float32 RGB in [0, 255].

    Raises:
        ValueError: ``kind`` is unknown or a size is not positive.
    """
    if kind is None:
        kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"synth_textures.random_texture: unknown kind {kind!r}, "
                         f"expected one of {TEXTURE_KINDS}")
    if height < 1 or width < 1:
        raise ValueError(f"synth_textures.random_texture: size must be positive, "
                         f"got {height}x{width}")
    scale = float(max(height, width))
    if kind == "noise":
        values = value_noise(rng, height=height, width=width,
                             cell_size=scale * rng.uniform(0.08, 0.5),
                             octaves=int(rng.integers(4, 7)), persistence=rng.uniform(0.45, 0.75))
        texture = apply_palette(values, random_palette(rng, num_colours=int(rng.integers(2, 5))))
    elif kind in ("stripes", "checker"):
        texture = apply_palette(_periodic_pattern(rng, height=height, width=width, kind=kind),
                                random_palette(rng, num_colours=2))
    else:
        texture = apply_palette(_gradient(rng, height=height, width=width),
                                random_palette(rng, num_colours=int(rng.integers(2, 4))))
    # Fine multiplicative grain, so that no texture has flat regions where motion is invisible.
    grain = value_noise(rng, height=height, width=width, cell_size=rng.uniform(4.0, 10.0),
                        octaves=2)
    texture *= (1.0 + rng.uniform(0.08, 0.2) * (grain[..., None] - 0.5)).astype(np.float32)
    texture = cv2.GaussianBlur(texture, (0, 0), _BLUR_SIGMA)
    return np.clip(texture, 0.0, 255.0)


def _periodic_pattern(rng: np.random.Generator, *, height: int, width: int,
                      kind: str) -> np.ndarray:
    """Soft stripes or a soft rotated checkerboard with noise-warped phase, values in [0, 1]."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = cols * np.cos(angle) + rows * np.sin(angle)
    across = -cols * np.sin(angle) + rows * np.cos(angle)
    period = rng.uniform(6.0, max(8.0, 0.25 * max(height, width)))
    warp = value_noise(rng, height=height, width=width, cell_size=max(height, width) * 0.4,
                       octaves=2)
    phase = rng.uniform(0.0, 2.0) * np.pi * (warp - 0.5)
    wave = np.sin(2 * np.pi * along / period + phase)
    if kind == "checker":
        wave = wave * np.sin(2 * np.pi * across / period + phase)
    # tanh with a bounded gain keeps the edges a few pixels wide (see the module docstring).
    return 0.5 + 0.5 * np.tanh(rng.uniform(1.5, 4.0) * wave).astype(np.float32)


def _gradient(rng: np.random.Generator, *, height: int, width: int) -> np.ndarray:
    """A linear or radial ramp, mildly perturbed by noise, values in [0, 1]."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = cols * np.cos(angle) + rows * np.sin(angle)
    else:
        centre_x, centre_y = rng.uniform(0, width), rng.uniform(0, height)
        ramp = np.hypot(cols - centre_x, rows - centre_y)
    noise = value_noise(rng, height=height, width=width, cell_size=max(height, width) * 0.3,
                        octaves=3)
    return _rescale(_rescale(ramp) + 0.3 * noise)


def _rescale(values: np.ndarray) -> np.ndarray:
    """Affinely maps ``values`` onto [0, 1] (a constant array maps to 0.5)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.full(values.shape, 0.5, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)
