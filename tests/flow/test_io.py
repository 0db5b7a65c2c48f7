"""Tests for flow.io: .flo and KITTI PNG round trips, real files, corrupt files."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flow.io import invalid_flow_mask, read_flo, read_kitti_flow, write_flo, write_kitti_flow

DATA_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MIDDLEBURY_GT = DATA_ROOT / "Middlebury" / "other-gt-flow"
MMFLOW_TESTDATA = DATA_ROOT / "mmflow_testdata"

# (width, height) of the real files, from the data MANIFEST.
MIDDLEBURY_SIZES = {"Dimetrodon": (584, 388), "Hydrangea": (584, 388), "Venus": (420, 380)}
MIDDLEBURY_KNOWN_FRACTION = {"Dimetrodon": 0.952, "Hydrangea": 0.934, "Venus": 1.0}


def _random_flow(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, height, width)) * 20.0).astype(np.float32)


def test_flo_round_trip_is_bit_exact(tmp_path: Path) -> None:
    flow = _random_flow(7, 11)
    flow[0, 2, 3] = 1e9
    flow[1, 4, 5] = -0.0
    path = tmp_path / "flow.flo"
    write_flo(path, flow)
    loaded = read_flo(path)
    assert loaded.dtype == np.float32
    assert loaded.shape == (2, 7, 11)
    np.testing.assert_array_equal(loaded.view(np.uint32), flow.view(np.uint32))


def test_flo_layout_is_middlebury(tmp_path: Path) -> None:
    flow = np.zeros((2, 2, 3), dtype=np.float32)
    flow[0] = np.arange(6).reshape(2, 3)
    flow[1] = -np.arange(6).reshape(2, 3)
    path = tmp_path / "layout.flo"
    write_flo(path, flow)
    data = path.read_bytes()
    assert data[:4] == b"PIEH"
    assert np.frombuffer(data, "<i4", count=2, offset=4).tolist() == [3, 2]
    body = np.frombuffer(data, "<f4", offset=12)
    np.testing.assert_array_equal(body, [0, 0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5])


def test_write_flo_replaces_atomically_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "flow.flo"
    write_flo(path, _random_flow(3, 4, seed=1))
    second = _random_flow(5, 6, seed=2)
    write_flo(path, second)
    np.testing.assert_array_equal(read_flo(path), second)
    assert [entry.name for entry in tmp_path.iterdir()] == ["flow.flo"]


def test_write_flo_rejects_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"bad\.flo.*\(2, H, W\).*\(3, 4, 5\)"):
        write_flo(tmp_path / "bad.flo", np.zeros((3, 4, 5), dtype=np.float32))
    assert not (tmp_path / "bad.flo").exists()


def test_read_flo_rejects_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "magic.flo"
    write_flo(path, _random_flow(4, 4))
    data = bytearray(path.read_bytes())
    data[:4] = b"PIEX"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"magic\.flo.*magic number"):
        read_flo(path)


@pytest.mark.parametrize("keep_bytes", [0, 7, 12 + 4 * 2 * 16 - 1])
def test_read_flo_rejects_truncated_file(tmp_path: Path, keep_bytes: int) -> None:
    path = tmp_path / "short.flo"
    write_flo(path, _random_flow(4, 4))
    path.write_bytes(path.read_bytes()[:keep_bytes])
    with pytest.raises(ValueError, match=r"short\.flo.*truncated"):
        read_flo(path)


def test_read_flo_rejects_trailing_bytes_and_bad_size(tmp_path: Path) -> None:
    path = tmp_path / "long.flo"
    write_flo(path, _random_flow(4, 4))
    path.write_bytes(path.read_bytes() + b"\0\0\0\0")
    with pytest.raises(ValueError, match=r"long\.flo.*4 bytes after"):
        read_flo(path)
    header = np.array([202021.25], "<f4").tobytes() + np.array([-3, 2], "<i4").tobytes()
    path.write_bytes(header)
    with pytest.raises(ValueError, match=r"long\.flo.*width -3"):
        read_flo(path)


@pytest.mark.parametrize("scene", sorted(MIDDLEBURY_SIZES))
def test_read_real_middlebury_flo(scene: str) -> None:
    path = MIDDLEBURY_GT / scene / "flow10.flo"
    if not path.is_file():
        pytest.skip(f"Middlebury data not found at {path}")
    flow = read_flo(path)
    width, height = MIDDLEBURY_SIZES[scene]
    assert flow.shape == (2, height, width)
    assert flow.dtype == np.float32
    known = ~invalid_flow_mask(flow)
    # Fractions of known pixels stated in the data MANIFEST (to 0.1 %).
    assert known.mean() == pytest.approx(MIDDLEBURY_KNOWN_FRACTION[scene], abs=1e-3)
    # Small-motion scenes: every known vector is shorter than 12 px.
    assert np.abs(flow[:, known]).max() < 12.0


def test_read_real_mmflow_flo() -> None:
    paths = sorted(MMFLOW_TESTDATA.glob("*.flo"))
    if not paths:
        pytest.skip(f"mmflow test data not found at {MMFLOW_TESTDATA}")
    assert len(paths) == 3
    for path in paths:
        flow = read_flo(path)
        assert flow.shape == (2, 50, 50), path
        assert np.isfinite(flow).all(), path


def test_invalid_flow_mask_numpy_and_torch() -> None:
    flow = np.zeros((2, 2, 3), dtype=np.float32)
    flow[0, 0, 0] = 1e9
    flow[1, 0, 1] = -2e9
    flow[0, 1, 2] = np.nan
    flow[1, 1, 0] = 9.99e8
    expected = np.array([[True, True, False], [False, False, True]])
    np.testing.assert_array_equal(invalid_flow_mask(flow), expected)
    batched = torch.from_numpy(flow)[None].repeat(2, 1, 1, 1)
    mask = invalid_flow_mask(batched)
    assert mask.shape == (2, 2, 3)
    assert torch.equal(mask, torch.from_numpy(expected)[None].expand(2, -1, -1))
    with pytest.raises(ValueError, match=r"\(3, 2, 3\)"):
        invalid_flow_mask(np.zeros((3, 2, 3)))


def test_kitti_round_trip_within_one_64th_and_keeps_valid(tmp_path: Path) -> None:
    flow = _random_flow(9, 13, seed=3)
    valid = np.random.default_rng(4).random((9, 13)) > 0.3
    path = tmp_path / "flow.png"
    write_kitti_flow(path, flow, valid)
    loaded, loaded_valid = read_kitti_flow(path)
    assert loaded.shape == (2, 9, 13) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded_valid, valid)
    # Rounding to the nearest 1/64 px errs by at most half a step.
    np.testing.assert_allclose(loaded[:, valid], flow[:, valid], rtol=0, atol=0.5 / 64 + 1e-6)
    np.testing.assert_array_equal(loaded[:, ~valid], 0.0)
    assert [entry.name for entry in tmp_path.iterdir()] == ["flow.png"]


def test_kitti_channel_order_on_disk(tmp_path: Path) -> None:
    flow = np.zeros((2, 1, 2), dtype=np.float32)
    flow[0] = 1.0
    flow[1] = -0.5
    valid = np.array([[True, False]])
    path = tmp_path / "order.png"
    write_kitti_flow(path, flow, valid)
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr.dtype == np.uint16 and bgr.shape == (1, 2, 3)
    # OpenCV order: blue = valid, green = v, red = u; invalid pixels are all zero.
    assert bgr[0, 0].tolist() == [1, 32768 - 32, 32768 + 64]
    assert bgr[0, 1].tolist() == [0, 0, 0]


def test_kitti_default_valid_excludes_unknown_flow(tmp_path: Path) -> None:
    flow = _random_flow(3, 4, seed=5)
    flow[:, 1, 2] = 1e9
    path = tmp_path / "unknown.png"
    write_kitti_flow(path, flow)
    _, valid = read_kitti_flow(path)
    expected = np.ones((3, 4), dtype=bool)
    expected[1, 2] = False
    np.testing.assert_array_equal(valid, expected)


def test_kitti_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"range\.png.*\[-512, 512\)"):
        write_kitti_flow(tmp_path / "range.png", np.full((2, 2, 2), 600.0, dtype=np.float32))
    with pytest.raises(ValueError, match=r"mask\.png.*valid mask has shape \(3, 3\)"):
        write_kitti_flow(tmp_path / "mask.png", np.zeros((2, 2, 2)), np.ones((3, 3), bool))
    eight_bit = tmp_path / "eight_bit.png"
    cv2.imwrite(str(eight_bit), np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"eight_bit\.png.*uint16"):
        read_kitti_flow(eight_bit)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"garbage\.png.*could not decode"):
        read_kitti_flow(garbage)


def test_write_flo_gives_the_file_the_umasks_permissions(tmp_path: Path) -> None:
    old_mask = os.umask(0o022)
    try:
        write_flo(tmp_path / "a.flo", _random_flow(2, 3))
    finally:
        os.umask(old_mask)
    assert (tmp_path / "a.flo").stat().st_mode & 0o777 == 0o644  # mkstemp made it 0600
