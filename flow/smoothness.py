"""Edge-aware smoothness of a flow field (UFlow, Jonschkowski et al., ECCV 2020, section 3.3).

Flow is mostly smooth inside objects and changes at their edges, which are usually image edges.
The penalty on the flow's k-th order differences is therefore weighted per direction by
``exp(-edge_weight * mean_c |dI/dx_c|)`` of the image (in [0, 1] units): near zero across
strong image edges, 1 in flat regions. First order favours piecewise-constant flow, second
order piecewise-affine flow (what rotating or zooming surfaces give). The penalty is the
absolute difference, i.e. an L1 (robust) penalty.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _dx(tensor: Tensor) -> Tensor:
    return tensor[..., :, 1:] - tensor[..., :, :-1]


def _dy(tensor: Tensor) -> Tensor:
    return tensor[..., 1:, :] - tensor[..., :-1, :]


def edge_aware_smoothness(flow: Tensor, images: Tensor, *, order: int = 1,
                          edge_weight: float = 150.0) -> Tensor:
    """Mean edge-weighted absolute k-th order difference of the flow, over x and y.

    Args:
        flow: (B, 2, H, W) flow, pixels.
        images: (B, C, H, W) the images the flow belongs to (its first frames), in [0, 255].
        order: 1 or 2.
        edge_weight: how fast the weight falls with the image gradient (per unit of [0, 1]
            intensity); 0 weighs every pixel the same.

    Returns:
        The scalar penalty: 0 for a constant flow (order 1) or an affine flow (order 2).

    Raises:
        ValueError: mismatched shapes, images too small for the order, or another order.
    """
    if order not in (1, 2):
        raise ValueError(f"edge_aware_smoothness: order must be 1 or 2, got {order}")
    if flow.dim() != 4 or flow.shape[1] != 2 or images.dim() != 4 or (
            images.shape[0] != flow.shape[0] or images.shape[-2:] != flow.shape[-2:]):
        raise ValueError(f"edge_aware_smoothness: need flow (B, 2, H, W) and images (B, C, H, W) "
                         f"of the same B, H, W, got {tuple(flow.shape)} and "
                         f"{tuple(images.shape)}")
    if min(flow.shape[-2:]) <= order:
        raise ValueError(f"edge_aware_smoothness: order {order} needs images larger than "
                         f"{order} pixels per side, got {tuple(flow.shape[-2:])}")
    scaled = images / 255.0
    weight_x = torch.exp(-edge_weight * _dx(scaled).abs().mean(dim=1, keepdim=True))
    weight_y = torch.exp(-edge_weight * _dy(scaled).abs().mean(dim=1, keepdim=True))
    flow_x, flow_y = _dx(flow), _dy(flow)
    if order == 2:
        flow_x, flow_y = _dx(flow_x), _dy(flow_y)
        # A second difference spans three pixels; weigh it by the edge weight of the step
        # from its centre onwards.
        weight_x, weight_y = weight_x[..., :, 1:], weight_y[..., 1:, :]
    return (weight_x * flow_x.abs()).mean() + (weight_y * flow_y.abs()).mean()
