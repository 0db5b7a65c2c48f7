"""The self-supervised flow loss for unlabeled video: photometric, smoothness, distillation.

For a pair (I1, I2) the network estimates both the forward flow (I1 -> I2) and the backward flow
(I2 -> I1), as one batch of 2B pairs ``(cat(I1, I2), cat(I2, I1))``. For each direction and each
recurrent update i (weighted ``gamma ** (N - 1 - i)`` as in RAFT's sequence loss):

- photometric: census (and optionally SSIM) between the first image and the second image warped
  back by the flow (:mod:`flow.photometric`), over pixels the forward-backward check finds
  non-occluded (:mod:`flow.occlusion`; the mask carries no gradient);
- smoothness: edge-aware, first or second order (:mod:`flow.smoothness`);
- distillation (optional, ``distillation_weight > 0``): an L1 pull towards a teacher's flow,
  e.g. a frozen copy of the supervised model, so that a short self-supervised run adapts the
  network to real footage without unlearning what the exact synthetic flow taught it (the role
  self-supervision from full-image predictions plays in SMURF, Stone et al., CVPR 2021).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flow.occlusion import forward_backward_non_occlusion
from flow.photometric import census_loss, masked_mean, ssim_loss, warp_backward
from flow.smoothness import edge_aware_smoothness


@dataclass(frozen=True)
class SelfSupervisedLossConfig:
    """Weights and settings of :func:`self_supervised_loss` (saved with checkpoints).

    Attributes:
        census_weight: weight of the census term.
        ssim_weight: weight of the SSIM term.
        smoothness_weight: weight of the edge-aware smoothness term.
        smoothness_order: 1 or 2.
        edge_weight: image-gradient sensitivity of the smoothness weights.
        occlusion_alpha1: relative tolerance of the forward-backward check.
        occlusion_alpha2: absolute tolerance of the forward-backward check, squared pixels.
        gamma: weight decay towards earlier updates, as in the sequence loss.
        distillation_weight: weight of the pull towards a teacher's flow (0: off).
    """

    census_weight: float = 1.0
    ssim_weight: float = 0.5
    smoothness_weight: float = 0.5
    smoothness_order: int = 1
    edge_weight: float = 150.0
    occlusion_alpha1: float = 0.01
    occlusion_alpha2: float = 0.5
    gamma: float = 0.8
    distillation_weight: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def swap_directions(batch: Tensor) -> Tensor:
    """(2B, ...) ``cat(forward, backward)`` -> ``cat(backward, forward)``."""
    forward, backward = batch.chunk(2)
    return torch.cat((backward, forward))


def distillation_loss(predictions: Sequence[Tensor], teacher_flow: Tensor,
                      mask: Tensor | None = None, *, gamma: float = 0.8) -> Tensor:
    """Gamma-weighted mean absolute difference between each prediction and a teacher's flow.

    Args:
        predictions: N flows of shape (B, 2, H, W).
        teacher_flow: (B, 2, H, W), used as a constant (no gradient flows into it).
        mask: optional (B, 1, H, W) pixel weights.
        gamma: weight decay towards earlier predictions.

    Returns:
        The scalar loss.
    """
    target = teacher_flow.detach()
    total = len(predictions)
    loss = target.new_zeros(())
    for index, prediction in enumerate(predictions):
        loss = loss + gamma ** (total - 1 - index) * masked_mean((prediction - target).abs(), mask)
    return loss


def self_supervised_loss(images1: Tensor, images2: Tensor, predictions: Sequence[Tensor],
                         config: SelfSupervisedLossConfig, *,
                         teacher_flow: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The loss of both flow directions of a batch of pairs.

    Args:
        images1: (2B, 3, H, W) first images in [0, 255], ``cat(I1, I2)``.
        images2: (2B, 3, H, W) second images, ``cat(I2, I1)``.
        predictions: N flows (2B, 2, H, W) from ``images1`` to ``images2``, first update first.
        config: weights and settings.
        teacher_flow: (2B, 2, H, W) flows of a teacher for the distillation term, or None.

    Returns:
        ``(loss, parts)``: the scalar loss and its terms (for logging): ``census``, ``ssim``,
        ``smoothness``, ``distillation`` (unweighted, last update) and ``non_occluded`` (the
        share of pixels the last update's forward-backward check keeps).

    Raises:
        ValueError: the batch is not even (forward and backward halves), or shapes differ.
    """
    if images1.shape[0] % 2 or images1.shape != images2.shape:
        raise ValueError(f"self_supervised_loss: need images1 and images2 of one shape "
                         f"(2B, 3, H, W), got {tuple(images1.shape)} and "
                         f"{tuple(images2.shape)}")
    if config.distillation_weight > 0 and teacher_flow is None:
        raise ValueError("self_supervised_loss: distillation_weight > 0 needs a teacher_flow")
    total = len(predictions)
    loss = images1.new_zeros(())
    parts: dict[str, float] = {}
    for index, flow in enumerate(predictions):
        weight = config.gamma ** (total - 1 - index)
        mask = forward_backward_non_occlusion(flow, swap_directions(flow),
                                              alpha1=config.occlusion_alpha1,
                                              alpha2=config.occlusion_alpha2)
        warped, _ = warp_backward(images2, flow)
        census = census_loss(images1, warped, mask)
        ssim = ssim_loss(images1, warped, mask) if config.ssim_weight > 0 else census.new_zeros(())
        smoothness = edge_aware_smoothness(flow, images1, order=config.smoothness_order,
                                           edge_weight=config.edge_weight)
        term = (config.census_weight * census + config.ssim_weight * ssim
                + config.smoothness_weight * smoothness)
        loss = loss + weight * term
        if index == total - 1:
            parts = {"census": census.item(), "ssim": ssim.item(),
                     "smoothness": smoothness.item(), "non_occluded": mask.mean().item()}
    if config.distillation_weight > 0:
        distillation = distillation_loss(predictions, teacher_flow, gamma=config.gamma)
        loss = loss + config.distillation_weight * distillation
        parts["distillation"] = (predictions[-1] - teacher_flow).abs().mean().item()
    return loss, parts
