"""RAFT's supervised sequence loss (Teed and Deng, ECCV 2020, equation 7).

Every one of the N recurrent updates is supervised, later ones more: prediction i (0-based) is
weighted ``gamma ** (N - 1 - i)``, so the last weighs 1. Each term is the mean absolute error
over the valid pixels and both flow components, ``sum_valid (|du| + |dv|) / (2 * n_valid)``,
which equals the paper code's ``(valid * |flow - gt|).mean()`` when every pixel is valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def sequence_loss(predictions: Sequence[Tensor], flow_gt: Tensor, valid: Tensor | None = None,
                  *, gamma: float = 0.8, max_flow: float = 400.0) -> Tensor:
    """Exponentially weighted L1 loss over a sequence of flow predictions.

    Args:
        predictions: N flows of shape (B, 2, H, W), first update first.
        flow_gt: ground-truth flow of shape (B, 2, H, W).
        valid: optional (B, H, W) mask (bool or {0, 1}) of pixels with known ground truth.
        gamma: weight decay towards earlier predictions, in (0, 1].
        max_flow: pixels whose ground truth is this long or longer are left out (as in RAFT:
            such motions are outliers of the training sets, not something to learn).

    Returns:
        The scalar loss; 0 (with a gradient) when no pixel is valid.

    Raises:
        ValueError: no predictions, mismatched shapes, or gamma outside (0, 1].
    """
    if not predictions:
        raise ValueError("sequence_loss: no predictions")
    if not 0 < gamma <= 1:
        raise ValueError(f"sequence_loss: gamma must be in (0, 1], got {gamma}")
    if flow_gt.dim() != 4 or flow_gt.shape[1] != 2:
        raise ValueError(f"sequence_loss: flow_gt must be (B, 2, H, W), got {tuple(flow_gt.shape)}")
    for prediction in predictions:
        if prediction.shape != flow_gt.shape:
            raise ValueError(f"sequence_loss: predictions must have the ground truth's shape "
                             f"{tuple(flow_gt.shape)}, got {tuple(prediction.shape)}")
    mask = torch.linalg.vector_norm(flow_gt, dim=1) < max_flow
    if valid is not None:
        expected = (flow_gt.shape[0], *flow_gt.shape[-2:])
        if tuple(valid.shape) != expected:
            raise ValueError(f"sequence_loss: valid must have shape {expected}, got "
                             f"{tuple(valid.shape)}")
        mask = mask & valid.bool()
    weight = mask.unsqueeze(1).to(flow_gt.dtype)
    count = 2 * weight.sum()
    total = len(predictions)
    loss = flow_gt.new_zeros(())
    for index, prediction in enumerate(predictions):
        error = (weight * (prediction - flow_gt).abs()).sum() / count.clamp_min(1)
        loss = loss + gamma ** (total - 1 - index) * error
    return loss
