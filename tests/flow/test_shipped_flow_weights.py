"""The shipped RAFT-small weights (flow/weights/raft_small.pt) on known answers: a known shift
gives that flow, Middlebury EPE as its model card records it, and `crossnet flow` uses them
without --weights. Skipped when the package ships no flow weights."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import flow.weights
from flow.backends import make_hop_backend
from flow.io import read_flo
from flow.metrics import endpoint_error
from pipelines.cli import main as cli

WEIGHTS = flow.weights.bundled_weights_path("raft-small")
MIDDLEBURY = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "Middlebury"

# Middlebury EPE of the shipped file with the backend's default 12 updates, as
# benchmarks/flow_accuracy.py recorded it (flow/weights/MODEL_CARD.md); CPU float32 results vary
# by far less than the 10 % margin the test allows.
MIDDLEBURY_EPE = {"Dimetrodon": 0.954, "Hydrangea": 1.044, "Venus": 1.658}

# Largest error of the interior median flow per component over the shifts used below (and
# (0.5, 0.5), (6, -5)) and texture seeds 0 and 1, measured with the shipped file: 0.180 px; the
# mean absolute error per component at most 0.152 px. The tolerance leaves about a 2x margin.
SHIFT_TOLERANCE = 0.35

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no raft_small.pt shipped")


def _flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Flow from ``first`` to ``second`` (H, W, 3 uint8 RGB) by the shipped weights, (2, H, W)."""
    backend = make_hop_backend("raft-small", device="cpu")
    frames = torch.from_numpy(np.stack([first, second])).permute(0, 3, 1, 2).contiguous()
    encoded = backend.encode(frames)
    return backend.estimate(encoded[:1], encoded[1:])[0].numpy()


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 2.0)
    return ((noise - noise.min()) / (noise.max() - noise.min()) * 255).astype(np.uint8)


@pytest.mark.parametrize("shift", [(3.0, 0.0), (-2.0, 4.0), (1.5, -2.5)])
def test_a_known_shift_gives_that_flow(shift):
    texture = _texture(160, 208)
    # second(x + shift) = first(x): the whole picture moves by `shift`.
    matrix = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]], dtype=np.float32)
    moved = cv2.warpAffine(texture, matrix, (208, 160), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    estimate = _flow(texture, moved)[:, 16:-16, 16:-16]
    median = np.median(estimate.reshape(2, -1), axis=1)
    np.testing.assert_allclose(median, shift, atol=SHIFT_TOLERANCE)
    assert np.abs(estimate - np.asarray(shift)[:, None, None]).mean() < SHIFT_TOLERANCE


@pytest.mark.parametrize("scene", sorted(MIDDLEBURY_EPE))
def test_middlebury_epe_as_the_model_card_records(scene):
    frames = MIDDLEBURY / "other-data" / scene
    gt_path = MIDDLEBURY / "other-gt-flow" / scene / "flow10.flo"
    if not (frames / "frame10.png").is_file() or not gt_path.is_file():
        pytest.skip(f"Middlebury scene {scene} not found under {MIDDLEBURY}")
    first, second = (cv2.cvtColor(cv2.imread(str(frames / name)), cv2.COLOR_BGR2RGB)
                     for name in ("frame10.png", "frame11.png"))
    gt = read_flo(gt_path)
    epe = endpoint_error(_flow(first, second), gt)
    assert epe < endpoint_error(np.zeros_like(gt), gt)
    assert epe == pytest.approx(MIDDLEBURY_EPE[scene], rel=0.1)


def test_crossnet_flow_uses_the_shipped_weights_without_weights_option(tmp_path):
    texture = _texture(96, 128)
    moved = np.roll(texture, 2, axis=1)  # everything 2 px to the right (wrapping at the edge)
    cv2.imwrite(str(tmp_path / "a.png"), texture[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "b.png"), moved[:, :, ::-1])
    out = tmp_path / "ab.flo"
    assert cli(["flow", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--backend",
                "raft-small", "--device", "cpu", "--out", str(out)]) == 0
    estimate = read_flo(out)
    np.testing.assert_allclose(np.median(estimate[0, 16:-16, 16:-16]), 2.0, atol=SHIFT_TOLERANCE)
