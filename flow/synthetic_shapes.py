"""Shapes of the moving layers of synthetic flow pairs, defined analytically.

A shape is a region of a layer's own (local) coordinate plane, centred on the origin. It is
tested point by point (:meth:`Shape.contains`) at the exact local coordinates each image pixel
maps to, never rasterised and resampled: a pixel belongs to exactly one layer in each image, so
the ground-truth flow of every pixel is the motion of one layer, exactly, also at edges.

Two families, both star-convex around the origin:

- superellipses ``|x / a|^p + |y / b|^p <= 1``: ellipses (p = 2) to near-rectangles (p = 8);
- blobs ``r <= radius * (1 + sum_k c_k cos(k theta + phi_k))``, k = 2..5: irregular outlines
  with concavities, like the silhouettes of real objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Shape:
    """A star-convex region of the local plane.

    Attributes:
        semi_axes: (a, b), half extents in local pixels along x and y.
        exponent: superellipse exponent p (> 0); ignored by blobs.
        harmonics: ((k, c_k, phi_k), ...) for a blob; empty for a superellipse.
    """

    semi_axes: tuple[float, float]
    exponent: float = 2.0
    harmonics: tuple[tuple[int, float, float], ...] = ()

    @property
    def radius(self) -> float:
        """A radius that encloses the whole shape (local pixels)."""
        bulge = 1.0 + sum(abs(c) for _, c, _ in self.harmonics)
        return math.hypot(*self.semi_axes) * bulge

    def contains(self, coords: Tensor) -> Tensor:
        """Whether each point lies inside the shape.

        Args:
            coords: local coordinates of shape (..., 2), (x, y) in pixels.

        Returns:
            Boolean tensor of shape (...).
        """
        a, b = self.semi_axes
        x, y = coords[..., 0] / a, coords[..., 1] / b
        if not self.harmonics:
            p = self.exponent
            return x.abs() ** p + y.abs() ** p <= 1.0
        theta = torch.atan2(y, x)
        outline = torch.ones_like(theta)
        for k, c, phi in self.harmonics:
            outline = outline + c * torch.cos(k * theta + phi)
        return torch.hypot(x, y) <= outline


def random_shape(generator: torch.Generator, *, size: float) -> Shape:
    """A random superellipse or blob whose larger semi-axis is ``size / 2``.

    Args:
        generator: the random generator (CPU).
        size: the shape's extent in local pixels (the larger of its two axes).

    Returns:
        A :class:`Shape`.
    """
    values = torch.rand(8, generator=generator).tolist()
    aspect = 0.35 + 0.65 * values[0]
    semi_axes = (size / 2, size / 2 * aspect)
    if values[1] < 0.5:
        exponent = 2.0 * 4.0 ** values[2]
        return Shape(semi_axes=semi_axes, exponent=exponent)
    # Coefficients sum to at most 0.5, so the outline radius stays positive (>= half of it).
    weights = torch.rand(4, generator=generator)
    weights = 0.5 * values[3] * weights / weights.sum()
    phases = (2 * math.pi * torch.rand(4, generator=generator)).tolist()
    harmonics = tuple((k, float(c), phi)
                      for k, c, phi in zip(range(2, 6), weights.tolist(), phases, strict=True))
    return Shape(semi_axes=semi_axes, harmonics=harmonics)
