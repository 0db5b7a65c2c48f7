"""Affine motions of the layers of synthetic flow pairs.

Matrices are (3, 3) float64 homogeneous affine maps of pixel coordinates (x, y): ``[x', y', 1] =
M @ [x, y, 1]``. A layer is placed in the first image by a map ``place`` (local coordinates ->
image-1 pixels) and moved by a map ``motion`` (image-1 pixels -> image-2 pixels), so that a point
at local coordinates ``l`` lies at ``place @ l`` in image 1 and at ``motion @ place @ l`` in
image 2. The flow of a pixel x of image 1 on that layer is ``motion @ x - x``: exact, whatever
the texture. Everything is computed in float64 and only the flow is rounded to float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def affine_matrix(*, angle: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
                  shear: float = 0.0, translation: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """``T(translation) @ R(angle) @ Shear(shear) @ S(scale)`` as a (3, 3) float64 matrix.

    Args:
        angle: rotation in radians (counter-clockwise in (x, y) with y pointing down, i.e.
            clockwise on screen).
        scale: (s_x, s_y) scale factors.
        shear: x += shear * y, applied after scaling.
        translation: (t_x, t_y) in pixels.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)
    shearing = torch.tensor([[1.0, shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)
    scaling = torch.diag(torch.tensor([scale[0], scale[1], 1.0], dtype=torch.float64))
    matrix = rotation @ shearing @ scaling
    matrix[0, 2], matrix[1, 2] = translation
    return matrix


def about(matrix: Tensor, centre: tuple[float, float]) -> Tensor:
    """``matrix`` applied around ``centre`` instead of the origin: ``T(c) @ M @ T(-c)``."""
    shift = affine_matrix(translation=centre)
    back = affine_matrix(translation=(-centre[0], -centre[1]))
    return shift @ matrix @ back


def apply_affine(matrix: Tensor, coords: Tensor) -> Tensor:
    """Map points through an affine matrix.

    Args:
        matrix: (3, 3) affine map.
        coords: points of shape (..., 2), (x, y).

    Returns:
        The mapped points, shape (..., 2), in the dtype of ``coords``.
    """
    linear = matrix[:2, :2].to(coords.dtype)
    offset = matrix[:2, 2].to(coords.dtype)
    return coords @ linear.T + offset


def random_motion(generator: torch.Generator, *, centre: tuple[float, float],
                  max_translation: float, max_angle_degrees: float,
                  max_scale_change: float) -> Tensor:
    """A random small affine motion about ``centre``: translation, rotation, zoom and squash.

    The translation's length is ``max_translation * u**2`` (u uniform in [0, 1]): most motions
    are small, as in real video, and a few reach the maximum.

    Args:
        generator: the random generator (CPU).
        centre: (x, y) the motion rotates and scales about (a layer's centre).
        max_translation: longest translation in pixels.
        max_angle_degrees: largest rotation, either way.
        max_scale_change: the scale factor lies in [1 - m, 1 + m], with up to a quarter of
            that again as anisotropy and shear.

    Returns:
        A (3, 3) float64 motion matrix (image-1 pixels -> image-2 pixels).
    """
    u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
    length = max_translation * u[0] ** 2
    direction = 2 * math.pi * u[1]
    angle = math.radians(max_angle_degrees) * (2 * u[2] - 1)
    zoom = 1.0 + max_scale_change * (2 * u[3] - 1)
    squash = 1.0 + 0.25 * max_scale_change * (2 * u[4] - 1)
    shear = 0.25 * max_scale_change * (2 * u[5] - 1)
    local = affine_matrix(angle=angle, scale=(zoom * squash, zoom / squash), shear=shear,
                          translation=(length * math.cos(direction),
                                       length * math.sin(direction)))
    return about(local, centre)
