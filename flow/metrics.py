"""Optical-flow accuracy: end-point error (EPE) and the KITTI outlier rate Fl-all.

For an estimate ``flow`` and ground truth ``gt`` (both (u, v) in pixels), the end-point error of
a pixel is the Euclidean distance ``||flow(x) - gt(x)||``. Scores are taken over valid pixels only:

- ``endpoint_error``: the mean EPE over valid pixels (Baker et al., "A Database and Evaluation
  Methodology for Optical Flow", IJCV 2011).
- ``fl_all``: the percentage of valid pixels whose EPE is larger than 3 px AND larger than 5 % of
  the ground-truth magnitude ``||gt(x)||`` (Menze and Geiger, CVPR 2015; the KITTI 2015 devkit
  uses the same strict inequalities).

Fields are numpy arrays of shape (2, H, W) or torch tensors of shape (B, 2, H, W); either array
type also accepts the other rank. ``flow`` and ``gt`` must be the same array type and shape.
When ``valid`` is not given, the valid pixels are those whose ground truth is known (finite and
below the Middlebury unknown marker ``1e9``, see :func:`flow.io.invalid_flow_mask`). A score
over zero valid pixels is NaN. Scores are computed in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flow.io import invalid_flow_mask

OUTLIER_PIXELS = 3.0
OUTLIER_FRACTION = 0.05

Field = np.ndarray | torch.Tensor


def _check_pair(function: str, flow: Field, gt: Field, valid: Field | None) -> None:
    """Raise ValueError unless ``flow``, ``gt`` and ``valid`` have matching types and shapes."""
    if isinstance(flow, torch.Tensor) != isinstance(gt, torch.Tensor):
        raise ValueError(
            f"{function}: flow and gt must both be numpy arrays or both torch tensors, got "
            f"{type(flow).__name__} and {type(gt).__name__}"
        )
    if flow.ndim not in (3, 4) or flow.shape[-3] != 2:
        raise ValueError(
            f"{function}: flow must have shape (2, H, W) or (B, 2, H, W), got {tuple(flow.shape)}"
        )
    if tuple(flow.shape) != tuple(gt.shape):
        raise ValueError(
            f"{function}: flow and gt shapes differ: {tuple(flow.shape)} vs {tuple(gt.shape)}"
        )
    if valid is not None:
        expected = tuple(flow.shape[:-3]) + tuple(flow.shape[-2:])
        if tuple(valid.shape) != expected:
            raise ValueError(
                f"{function}: valid must have shape {expected} for flow of shape "
                f"{tuple(flow.shape)}, got {tuple(valid.shape)}"
            )


def _as_float64_numpy(array: Field) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def _as_bool_numpy(mask: Field) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        return mask.detach().to(device="cpu").numpy().astype(bool)
    return np.asarray(mask).astype(bool)


def _valid_pixels(gt: Field, valid: Field | None) -> np.ndarray:
    """The bool mask of scored pixels, shape (..., H, W), as numpy."""
    if valid is None:
        return ~_as_bool_numpy(invalid_flow_mask(gt))
    return _as_bool_numpy(valid)


def epe_map(flow: Field, gt: Field) -> Field:
    """Per-pixel end-point error ``||flow - gt||``.

    Args:
        flow: estimated flow, shape (2, H, W) numpy or (B, 2, H, W) torch.
        gt: ground-truth flow, same type and shape as ``flow``.

    Returns:
        EPE with shape (H, W) or (B, H, W), the array type of ``flow``: float64 for numpy, the
        floating dtype of ``flow`` for torch. Unknown ground truth gives huge or NaN values; mask
        them with :func:`flow.io.invalid_flow_mask`.

    Raises:
        ValueError: if the types or shapes do not match.
    """
    _check_pair("epe_map", flow, gt, None)
    if isinstance(flow, torch.Tensor):
        dtype = flow.dtype if flow.is_floating_point() else torch.float32
        difference = flow.to(dtype) - gt.to(device=flow.device, dtype=dtype)
        return torch.linalg.vector_norm(difference, dim=-3)
    difference = np.asarray(flow, dtype=np.float64) - np.asarray(gt, dtype=np.float64)
    return np.sqrt(np.sum(difference**2, axis=-3))


def endpoint_error(flow: Field, gt: Field, valid: Field | None = None) -> float:
    """Mean end-point error over the valid pixels (over the whole batch for torch input).

    Args:
        flow: estimated flow, shape (2, H, W) numpy or (B, 2, H, W) torch.
        gt: ground-truth flow, same type and shape as ``flow``.
        valid: bool mask, shape (H, W) or (B, H, W); None scores every pixel whose ground truth
            is known.

    Returns:
        the mean EPE in pixels; NaN when no pixel is valid.

    Raises:
        ValueError: if the types or shapes do not match.
    """
    _check_pair("endpoint_error", flow, gt, valid)
    scored = _valid_pixels(gt, valid)
    if not scored.any():
        return math.nan
    errors = _epe_float64(flow, gt)
    return float(errors[scored].mean())


def fl_all(flow: Field, gt: Field, valid: Field | None = None) -> float:
    """KITTI Fl-all: percentage of valid pixels with EPE > 3 px and EPE > 5 % of ``||gt||``.

    Args:
        flow: estimated flow, shape (2, H, W) numpy or (B, 2, H, W) torch.
        gt: ground-truth flow, same type and shape as ``flow``.
        valid: bool mask, shape (H, W) or (B, H, W); None scores every pixel whose ground truth
            is known.

    Returns:
        the outlier percentage in [0, 100]; NaN when no pixel is valid.

    Raises:
        ValueError: if the types or shapes do not match.
    """
    _check_pair("fl_all", flow, gt, valid)
    scored = _valid_pixels(gt, valid)
    if not scored.any():
        return math.nan
    errors = _epe_float64(flow, gt)
    gt_magnitude = np.sqrt(np.sum(_as_float64_numpy(gt) ** 2, axis=-3))
    outliers = (errors > OUTLIER_PIXELS) & (errors > OUTLIER_FRACTION * gt_magnitude)
    return float(100.0 * np.count_nonzero(outliers & scored) / np.count_nonzero(scored))


def _epe_float64(flow: Field, gt: Field) -> np.ndarray:
    difference = _as_float64_numpy(flow) - _as_float64_numpy(gt)
    return np.sqrt(np.sum(difference**2, axis=-3))
