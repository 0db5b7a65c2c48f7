"""Camera-motion compensation of a 3D-HOP: subtract the flow the camera itself causes.

When the camera pans, shakes or follows a subject, every background pixel moves, and a
motion stream trained on still cameras reads the whole frame as foreground (or, when the
camera tracks the subject, the subject as the one still thing). Most of that flow is one
smooth field: for a distant scene, a pan, tilt, zoom or roll moves the image by close to an
affine map. This module fits that map to each flow field, robustly so that moving objects do
not pull it, and subtracts it; what is left is motion relative to the background.

Method, per flow field (one stride of one frame):

1. Average-pool the field to a grid of at most ``GRID`` cells along its longer side.
2. Start from the median flow (a translation), then run ``ITERATIONS`` steps of iteratively
   reweighted least squares of ``u = a0 + a1 x + a2 y`` and ``v = b0 + b1 x + b2 y`` (x, y in
   [-1, 1]) with Geman-McClure weights ``1 / (1 + (r / scale)^2)^2`` on the residual length
   ``r``: a pixel 4 scales off the fit weighs 1/289 of one on it, so even an object covering
   a quarter of the frame barely pulls the fit (with Cauchy weights, ``1 / (1 + (r/scale)^2)``,
   such an object dragged it by more than 0.05 px per frame of stride: the still-camera case
   of ``tests/crossnet/test_camera_motion.py`` failed). ``scale`` is ``SCALE`` pixels per frame
   of stride, so a longer stride tolerates proportionally larger residuals.
3. Subtract the fitted field, evaluated at every pixel.

For a still camera the fit is close to zero and the flow passes almost unchanged. The
compensation is part of a model's input definition (:attr:`crossnet.hofam.HofamConfig.camera_motion`):
training data and ``segment`` apply it to the whole frame's flow before any crop or padding,
so the fit always sees the frame's full extent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CAMERA_MOTIONS: tuple[str, ...] = ("none", "affine")

# Cells along the longer side of the grid the fit runs on: 32 x 24 cells for a 4:3 frame.
GRID = 32
ITERATIONS = 6
# Scale of the robust fit's weights, in pixels per frame of stride.
SCALE = 0.5


def fit_camera_flow(flow: Tensor, strides: Sequence[int] | None = None) -> Tensor:
    """The affine flow field the camera explains, fitted robustly to each flow field.

    Args:
        flow: (..., 2, H, W) flow in pixels, (u, v) order; any leading dimensions. When
            ``strides`` is given, the dimension before the (u, v) one has one entry per stride.
        strides: frame strides of the fields along dimension -4 (they scale the robust
            weights' tolerance), or None to treat every field as stride 1.

    Returns:
        A tensor of the shape and dtype of ``flow``.

    Raises:
        ValueError: on a shape that is not (..., 2, H, W), or strides that do not match it.
    """
    if flow.dim() < 3 or flow.shape[-3] != 2:
        raise ValueError(f"crossnet/camera_motion.py: flow must be (..., 2, H, W), "
                         f"got {tuple(flow.shape)}")
    if strides is not None and (flow.dim() < 4 or flow.shape[-4] != len(strides)):
        raise ValueError(f"crossnet/camera_motion.py: {len(strides)} strides for flow of "
                         f"shape {tuple(flow.shape)}")
    height, width = flow.shape[-2:]
    fields = flow.reshape(-1, 2, height, width).float()
    count = fields.shape[0]
    cells = (max(1, round(GRID * height / max(height, width))),
             max(1, round(GRID * width / max(height, width))))
    pooled = F.adaptive_avg_pool2d(fields, cells).flatten(2).transpose(1, 2)  # (N, P, 2)
    design = _design((height, width), cells, fields.device)  # (P, 3), at the cells' centres
    if strides is None:
        scale = torch.full((count, 1), SCALE, device=fields.device)
    else:
        per_stride = torch.tensor([SCALE * k for k in strides], device=fields.device)
        scale = per_stride.repeat(count // len(strides)).unsqueeze(1)

    coefficients = torch.zeros(count, 3, 2, device=fields.device)
    coefficients[:, 0] = pooled.median(dim=1).values
    regulariser = 1e-6 * torch.eye(3, device=fields.device)
    for _ in range(ITERATIONS):
        squared = (pooled - design @ coefficients).square().sum(dim=2)  # (N, P): r^2
        weights = 1.0 / (1.0 + squared / scale**2) ** 2
        weighted = design * weights.unsqueeze(2)  # (N, P, 3)
        normal = weighted.transpose(1, 2) @ design + regulariser
        coefficients = torch.linalg.solve(normal, weighted.transpose(1, 2) @ pooled)
    # a0 + a1 x + a2 y at every pixel, as (constant + column term) + row term: two small
    # tensors and one broadcast add instead of a (H*W, 3) matrix product.
    ys = _bin_centres(height, height, fields.device) / height * 2 - 1
    xs = _bin_centres(width, width, fields.device) / width * 2 - 1
    constant, slope_x, slope_y = (coefficients[:, i, :, None, None] for i in range(3))
    camera = (constant + slope_x * xs) + slope_y * ys[:, None]  # (N, 2, H, W)
    return camera.to(flow.dtype).reshape(flow.shape)


def check_camera_motion(mode: str) -> str:
    """``mode`` if it is one of :data:`CAMERA_MOTIONS`.

    Raises:
        ValueError: naming the known modes.
    """
    if mode not in CAMERA_MOTIONS:
        raise ValueError(f"crossnet/camera_motion.py: unknown camera motion {mode!r}, "
                         f"expected one of {CAMERA_MOTIONS}")
    return mode


def remove_camera_motion(hop: Tensor | np.ndarray, strides: Sequence[int],
                         mode: str = "affine") -> Tensor | np.ndarray:
    """A 3D-HOP with the camera's own motion subtracted (``mode="none"``: unchanged).

    Args:
        hop: (S, 2, H, W) or (B, S, 2, H, W) flow in pixels, a tensor or an array; the whole
            frame's flow (not a crop or a padded window: the fit needs the frame's extent).
        strides: the S frame strides.
        mode: one of :data:`CAMERA_MOTIONS`.

    Returns:
        The same type, shape and dtype as ``hop``.

    Raises:
        ValueError: an unknown mode, or a shape :func:`fit_camera_flow` rejects.
    """
    if check_camera_motion(mode) == "none":
        return hop
    if isinstance(hop, np.ndarray):
        flow = torch.from_numpy(np.ascontiguousarray(hop, dtype=np.float32))
        return (flow - fit_camera_flow(flow, strides)).numpy().astype(hop.dtype, copy=False)
    return hop - fit_camera_flow(hop, strides)


def _design(size: tuple[int, int], cells: tuple[int, int], device: torch.device) -> Tensor:
    """Rows ``(1, x, y)``, x and y in [-1, 1] across an H x W frame, at the centres of the
    ``cells`` bins that ``adaptive_avg_pool2d`` averages (bin i of n over L pixels spans
    [floor(i L / n), ceil((i + 1) L / n)), unequal when n does not divide L). Shape
    (rows * columns, 3), row-major."""
    height, width = size
    rows, columns = cells
    ys = _bin_centres(height, rows, device) / height * 2 - 1
    xs = _bin_centres(width, columns, device) / width * 2 - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([torch.ones_like(grid_x), grid_x, grid_y], dim=2).reshape(-1, 3)


def _bin_centres(length: int, bins: int, device: torch.device) -> Tensor:
    """Centres, in pixels, of ``adaptive_avg_pool``'s ``bins`` bins over ``length`` pixels."""
    index = torch.arange(bins, device=device, dtype=torch.float64)
    start = torch.floor(index * length / bins)
    end = torch.ceil((index + 1) * length / bins)
    return ((start + end) / 2).float()
