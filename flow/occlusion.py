"""Occlusion from forward-backward consistency (Sundaram et al., ECCV 2010; UnFlow, AAAI 2018).

A point of image 1 that is visible in image 2 moves there by the forward flow f and back by the
backward flow b taken at its new position, so ``f(x) + b(x + f(x))`` is close to zero. Where
it is not, the point is taken as occluded (or the flow as wrong) and left out of photometric
losses. The test, from UnFlow, scales with the motion:

``|f + b_w|^2 < alpha1 * (|f|^2 + |b_w|^2) + alpha2``, with ``b_w(x) = b(x + f(x))``.

Points whose target falls outside image 2 count as occluded too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flow.photometric import warp_backward


def forward_backward_non_occlusion(forward_flow: Tensor, backward_flow: Tensor, *,
                                   alpha1: float = 0.01, alpha2: float = 0.5) -> Tensor:
    """Mask of pixels of image 1 whose forward and backward flows agree.

    Args:
        forward_flow: (B, 2, H, W) flow from image 1 to image 2.
        backward_flow: (B, 2, H, W) flow from image 2 to image 1.
        alpha1: tolerance relative to the squared motion.
        alpha2: absolute tolerance, squared pixels.

    Returns:
        (B, 1, H, W) float mask, 1 for non-occluded pixels, computed without gradient.

    Raises:
        ValueError: the flows are not (B, 2, H, W) of one shape.
    """
    if forward_flow.dim() != 4 or forward_flow.shape[1] != 2 or (
            forward_flow.shape != backward_flow.shape):
        raise ValueError(f"forward_backward_non_occlusion: need two flows (B, 2, H, W) of one "
                         f"shape, got {tuple(forward_flow.shape)} and "
                         f"{tuple(backward_flow.shape)}")
    with torch.no_grad():
        backward_warped, inside = warp_backward(backward_flow, forward_flow)
        mismatch = (forward_flow + backward_warped).pow(2).sum(dim=1, keepdim=True)
        motion = forward_flow.pow(2).sum(dim=1, keepdim=True) + backward_warped.pow(2).sum(
            dim=1, keepdim=True)
        consistent = mismatch < alpha1 * motion + alpha2
        return consistent.to(forward_flow.dtype) * inside
