"""Tests for flow.metrics: EPE and Fl-all known answers on hand-made fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flow.metrics import endpoint_error, epe_map, fl_all


def _constant(u: float, v: float, height: int = 4, width: int = 5) -> np.ndarray:
    flow = np.empty((2, height, width), dtype=np.float32)
    flow[0], flow[1] = u, v
    return flow


def test_constant_error_of_3_4_gives_epe_5_exactly() -> None:
    gt = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    flow = gt + _constant(3.0, 4.0)
    np.testing.assert_allclose(epe_map(flow, gt), np.full((4, 5), 5.0), rtol=0, atol=1e-6)
    assert endpoint_error(_constant(3.0, 4.0), _constant(0.0, 0.0)) == 5.0


def test_torch_batch_matches_numpy_and_returns_float() -> None:
    gt = torch.zeros(2, 2, 3, 4)
    flow = torch.zeros(2, 2, 3, 4)
    flow[0, 0] = 3.0
    flow[0, 1] = 4.0
    flow[1, 0] = 6.0
    flow[1, 1] = 8.0
    errors = epe_map(flow, gt)
    assert isinstance(errors, torch.Tensor) and errors.shape == (2, 3, 4)
    torch.testing.assert_close(errors[0], torch.full((3, 4), 5.0))
    epe = endpoint_error(flow, gt)
    assert isinstance(epe, float) and epe == pytest.approx(7.5, abs=1e-12)


def test_epe_map_keeps_float64_torch() -> None:
    flow = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    assert epe_map(flow, flow).dtype == torch.float64


def test_valid_mask_restricts_scored_pixels() -> None:
    gt = _constant(0.0, 0.0, height=2, width=2)
    flow = gt.copy()
    flow[0, 0, 0] = 10.0
    flow[0, 1, 1] = 2.0
    valid = np.array([[False, True], [True, True]])
    assert endpoint_error(flow, gt, valid) == pytest.approx(2.0 / 3.0)
    assert endpoint_error(flow, gt) == pytest.approx(12.0 / 4.0)
    assert math.isnan(endpoint_error(flow, gt, np.zeros((2, 2), dtype=bool)))
    assert math.isnan(fl_all(flow, gt, np.zeros((2, 2), dtype=bool)))


def test_default_valid_skips_unknown_ground_truth() -> None:
    gt = _constant(1.0, 1.0, height=1, width=3)
    gt[:, 0, 2] = 1e9
    flow = gt.copy()
    flow[:, 0, :2] += np.array([[0.0, 3.0], [0.0, 4.0]], dtype=np.float32)
    flow[:, 0, 2] = 0.0
    assert endpoint_error(flow, gt) == pytest.approx(2.5)


def test_fl_all_counts_with_3px_and_5_percent_rules() -> None:
    # Ground truth of magnitude 100: 5 % of it is 5 px, so EPE must exceed 5 px there.
    # Ground truth of magnitude 0: only the 3 px rule binds.
    gt = np.zeros((2, 1, 6), dtype=np.float64)
    gt[0, 0, :3] = 100.0
    flow = gt.copy()
    flow[1, 0, 0] = 5.0  # EPE 5 = 5 % of 100: not an outlier (strict inequality)
    flow[1, 0, 1] = 5.01  # just above 5 %: outlier
    flow[1, 0, 2] = 4.0  # above 3 px but below 5 %: not an outlier
    flow[1, 0, 3] = 3.0  # exactly 3 px: not an outlier
    flow[1, 0, 4] = 3.01  # above 3 px, above 5 % of 0: outlier
    flow[1, 0, 5] = 1.0  # small error: not an outlier
    assert fl_all(flow, gt) == pytest.approx(100.0 * 2 / 6)
    valid = np.array([[True, True, False, False, False, False]])
    assert fl_all(flow, gt, valid) == pytest.approx(50.0)


def test_fl_all_torch_batch() -> None:
    gt = torch.zeros(2, 2, 2, 2)
    flow = gt.clone()
    flow[0, 0] = 4.0
    assert fl_all(flow, gt) == pytest.approx(50.0)
    valid = torch.zeros(2, 2, 2, dtype=torch.bool)
    valid[0, 0, 0] = True
    valid[1] = True
    assert fl_all(flow, gt, valid) == pytest.approx(20.0)


def test_shape_and_type_errors_quote_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) vs \(2, 3, 5\)"):
        endpoint_error(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"\(3, 3, 4\)"):
        fl_all(np.zeros((3, 3, 4)), np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match=r"valid must have shape \(2, 3, 4\).*got \(3, 4\)"):
        endpoint_error(
            torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 3, 4), torch.ones(3, 4, dtype=bool)
        )
    with pytest.raises(
        ValueError, match="numpy arrays or both torch tensors, got ndarray and Tensor"
    ):
        epe_map(np.zeros((2, 3, 4)), torch.zeros(2, 3, 4))
