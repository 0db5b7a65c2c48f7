"""flow/smoothness.py: edge-aware smoothness on constant, affine and edged flows."""

import pytest
import torch

from flow.smoothness import edge_aware_smoothness


def _affine_flow(height=12, width=14):
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    columns = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    return torch.stack((0.1 * columns - 0.2 * rows + 3, 0.05 * rows + 1))[None]


def test_constant_flow_costs_nothing_and_affine_flow_nothing_in_second_order():
    images = 255 * torch.rand(1, 3, 12, 14, generator=torch.Generator().manual_seed(0))
    constant = torch.full((1, 2, 12, 14), 2.5)
    assert edge_aware_smoothness(constant, images).item() == 0.0
    affine = _affine_flow()
    assert edge_aware_smoothness(affine, images, order=2).item() == pytest.approx(0.0, abs=1e-6)
    assert edge_aware_smoothness(affine, images, order=1).item() > 0.0


def test_a_flow_edge_on_an_image_edge_costs_less_than_in_a_flat_region():
    flow = torch.zeros(1, 2, 8, 8)
    flow[..., 4:] = 3.0
    flat = torch.full((1, 3, 8, 8), 100.0)
    edged = flat.clone()
    edged[..., 4:] = 200.0
    without = edge_aware_smoothness(flow, flat).item()
    # One jump of 3 px in u and v per row between columns 3 and 4: 2 * 3 * 8 / (2 * 8 * 7).
    assert without == pytest.approx(2 * 3 * 8 / (2 * 8 * 7))
    assert edge_aware_smoothness(flow, edged).item() < 1e-6 * without
    with pytest.raises(ValueError, match="order"):
        edge_aware_smoothness(flow, flat, order=3)
