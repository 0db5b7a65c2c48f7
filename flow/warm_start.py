"""Warm starts for the longer strides of a 3D-HOP: shorter-stride flows, composed.

The flow from frame t to frame t - 8 is the flow from t to t - 4 followed by the flow from
t - 4 to t - 8, both of which the 3D-HOP builder has already estimated (the second as frame
t - 4's own stride-4 field). Composed, they give a start close to the answer, so a recurrent
network (RAFT) needs fewer updates for the long stride than from zero, where large motions are
hardest. :func:`stride_chain` says which shorter strides make up a stride; :func:`compose`
chains two fields.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from flow.geometry import bilinear_sample, coordinate_grid


def stride_chain(stride: int, shorter: Sequence[int]) -> tuple[int, ...]:
    """The fewest steps, each one of the ``shorter`` strides, that add up to ``stride``, longest
    first: 8 from (1, 4) is (4, 4), 4 from (1,) is (1, 1, 1, 1), 6 from (3, 4) is (3, 3).

    Raises:
        ValueError: ``stride`` is not a sum of the shorter strides.
    """
    steps = sorted({int(k) for k in shorter if 0 < k < stride}, reverse=True)
    # fewest[n]: the shortest chain adding up to n, or None where there is none.
    fewest: list[tuple[int, ...] | None] = [()] + [None] * stride
    for total in range(1, stride + 1):
        options = [(*fewest[total - k], k) for k in steps
                   if k <= total and fewest[total - k] is not None]
        fewest[total] = min(options, key=len, default=None)
    chain = fewest[stride]
    if not chain:
        raise ValueError(f"stride {stride} is not a sum of the shorter strides {tuple(shorter)}")
    return tuple(sorted(chain, reverse=True))


def compose(first: Tensor, second: Tensor) -> Tensor:
    """The flow from A to C given ``first`` from A to B and ``second`` from B to C, each
    (N, 2, H, W) in pixels: ``first(x) + second(x + first(x))``, with ``second`` read
    bilinearly and, where ``x + first(x)`` leaves the frame, at the nearest edge pixel.

    Raises:
        ValueError: the fields are not (N, 2, H, W) of one shape.
    """
    if first.dim() != 4 or first.shape[1] != 2 or first.shape != second.shape:
        raise ValueError(f"compose: need two flows (N, 2, H, W) of one shape, got "
                         f"{tuple(first.shape)} and {tuple(second.shape)}")
    batch, _, height, width = first.shape
    coords = coordinate_grid(batch, height, width, device=first.device, dtype=first.dtype) + first
    x = coords[:, 0].clamp(0, width - 1)
    y = coords[:, 1].clamp(0, height - 1)
    # Bilinear sampling needs two pixels per axis: a 1-pixel axis is repeated once, and its
    # coordinate, clamped to 0, reads the original pixel.
    second = F.pad(second, (0, int(width < 2), 0, int(height < 2)), mode="replicate")
    return first + bilinear_sample(second, torch.stack((x, y), dim=-1))
