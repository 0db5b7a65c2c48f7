"""Textures for synthetic flow pairs: procedural colour noise and stripes, or crops of real images.

Every texture is a float32 RGB tensor of shape (3, H, W) with values in [0, 255], drawn from a
seeded :class:`torch.Generator` on the CPU, so that a seed fixes it exactly. Procedural textures
are sums of value-noise octaves (random values on coarse grids, bicubic-upsampled): band-limited
by construction, so that resampling them at sub-pixel positions (which is how the pair renderer
moves them) changes them only by the interpolation error, and the ground-truth flow describes the
rendered images, not the interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def value_noise(generator: torch.Generator, *, channels: int, height: int, width: int,
                cell_size: float, octaves: int = 3, persistence: float = 0.5) -> Tensor:
    """Multi-octave value noise: random values on coarse grids, bicubic-upsampled and summed.

    Args:
        generator: the random generator (CPU).
        channels: number of independent noise channels C.
        height: output rows H.
        width: output columns W.
        cell_size: grid spacing of the coarsest octave in pixels; each further octave halves it
            (never below 2 pixels, so the noise stays smooth at the pixel scale).
        octaves: number of octaves summed.
        persistence: amplitude factor from one octave to the next.

    Returns:
        Noise of shape (C, H, W), float32, each channel rescaled to span [0, 1].

    Raises:
        ValueError: a size, ``cell_size`` or ``octaves`` is not positive.
    """
    if channels < 1 or height < 1 or width < 1 or cell_size <= 0 or octaves < 1:
        raise ValueError(
            f"value_noise: need positive channels, height, width, cell_size and octaves, got "
            f"{channels}, {height}, {width}, {cell_size}, {octaves}"
        )
    total = torch.zeros(1, channels, height, width)
    amplitude = 1.0
    for octave in range(octaves):
        cell = max(cell_size / 2**octave, 2.0)
        rows = math.ceil(height / cell) + 3
        columns = math.ceil(width / cell) + 3
        grid = torch.rand(1, channels, rows, columns, generator=generator)
        # Upsample the whole grid, then cut the image out of its middle: bicubic interpolation
        # overshoots near the borders of its input.
        upsampled = F.interpolate(grid, scale_factor=cell, mode="bicubic", align_corners=False)
        top = (upsampled.shape[-2] - height) // 2
        left = (upsampled.shape[-1] - width) // 2
        total += amplitude * upsampled[..., top:top + height, left:left + width]
        amplitude *= persistence
    total = total[0]
    low = total.amin(dim=(1, 2), keepdim=True)
    high = total.amax(dim=(1, 2), keepdim=True)
    return (total - low) / (high - low).clamp_min(1e-6)


def procedural_texture(generator: torch.Generator, *, height: int, width: int,
                       cell_size_range: tuple[float, float] = (3.0, 24.0)) -> Tensor:
    """A random colour texture: value noise mapped between two random colours, with detail.

    Three kinds, equally likely: colour noise (every channel its own noise), two-colour noise
    (one noise field blending two random colours, plus fine grey detail), and stripes (a random
    orientation and period, warped by noise). All keep some texture at every pixel, since a flat
    region has no recoverable motion and only teaches the network to guess.

    Args:
        generator: the random generator (CPU).
        height: rows H.
        width: columns W.
        cell_size_range: (min, max) coarsest noise cell size in pixels, drawn log-uniformly.

    Returns:
        Texture of shape (3, H, W), float32 RGB in [0, 255].
    """
    low, high = cell_size_range
    cell = math.exp(_uniform(generator, math.log(low), math.log(high)))
    kind = int(torch.randint(3, (), generator=generator))
    if kind == 0:
        texture = value_noise(generator, channels=3, height=height, width=width, cell_size=cell)
    else:
        colours = torch.rand(2, 3, 1, 1, generator=generator)
        if kind == 1:
            blend = value_noise(generator, channels=1, height=height, width=width,
                                cell_size=cell)
        else:
            angle = _uniform(generator, 0.0, math.pi)
            period = max(2.0 * cell, 6.0)
            rows = torch.arange(height, dtype=torch.float32)[:, None]
            columns = torch.arange(width, dtype=torch.float32)[None, :]
            along = columns * math.cos(angle) + rows * math.sin(angle)
            warp = value_noise(generator, channels=1, height=height, width=width,
                               cell_size=4 * cell)[0]
            blend = (0.5 + 0.5 * torch.sin(2 * math.pi * along / period + 4.0 * warp))[None]
        detail = value_noise(generator, channels=1, height=height, width=width,
                             cell_size=max(low, 2.0), octaves=2)
        texture = colours[0] + (colours[1] - colours[0]) * blend + 0.25 * (detail - 0.5)
    contrast = _uniform(generator, 0.5, 1.0)
    offset = _uniform(generator, 0.0, 1.0 - contrast)
    return 255.0 * (offset + contrast * texture.clamp(0, 1))


def crop_texture(generator: torch.Generator, pool: Sequence[Tensor], *, height: int,
                 width: int, scale_range: tuple[float, float] = (0.5, 1.5)) -> Tensor:
    """A random crop of a random image of ``pool``, randomly rescaled and flipped.

    Args:
        generator: the random generator (CPU).
        pool: images of shape (3, H_i, W_i), uint8 or float in [0, 255].
        height: rows H of the texture.
        width: columns W of the texture.
        scale_range: the crop covers ``(height, width) / scale`` pixels of the image, the scale
            drawn from this range (and raised when the image is too small for the crop).

    Returns:
        Texture of shape (3, H, W), float32 RGB in [0, 255].

    Raises:
        ValueError: the pool is empty or holds an image that is not (3, H, W).
    """
    if not pool:
        raise ValueError("crop_texture: the image pool is empty")
    image = pool[int(torch.randint(len(pool), (), generator=generator))]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"crop_texture: pool images must be (3, H, W), got {tuple(image.shape)}")
    image_height, image_width = image.shape[-2:]
    scale = _uniform(generator, *scale_range)
    scale = max(scale, height / image_height, width / image_width)
    crop_height = min(image_height, max(2, round(height / scale)))
    crop_width = min(image_width, max(2, round(width / scale)))
    top = int(torch.randint(image_height - crop_height + 1, (), generator=generator))
    left = int(torch.randint(image_width - crop_width + 1, (), generator=generator))
    crop = image[:, top:top + crop_height, left:left + crop_width].float()[None]
    texture = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False,
                            antialias=crop_height > height or crop_width > width)[0]
    if torch.rand((), generator=generator) < 0.5:
        texture = texture.flip(-1)
    return texture.clamp(0, 255)
