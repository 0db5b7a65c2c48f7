"""Tests for flow.classical: known shifts, the sign convention, shapes, and Middlebury accuracy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flow.classical import (
    CLASSICAL_BACKEND_NAMES,
    DISFlow,
    FarnebackFlow,
    FlowBackend,
    make_classical_backend,
)
from flow.io import read_flo
from flow.metrics import endpoint_error

DATA_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MIDDLEBURY = DATA_ROOT / "Middlebury"

HEIGHT, WIDTH = 96, 128
MARGIN = 16

# Largest error of the interior median flow, per component, over the shifts used below and
# texture seeds 0 and 1, measured with OpenCV 5.0: dis-ultrafast 0.12, dis-fast 0.14,
# dis-medium 0.04, farneback 0.001 px (0.04 px on other shifts tried). The tolerances leave a
# margin of 2x or more for other OpenCV builds.
SHIFT_TOLERANCE = {"dis-ultrafast": 0.3, "dis-fast": 0.3, "dis-medium": 0.1, "farneback": 0.1}

# Mean EPE measured over the known pixels with OpenCV 5.0 (see the flow.classical docstring);
# the test bound is twice that.
MIDDLEBURY_EPE = {
    "dis-ultrafast": {"Dimetrodon": 0.361, "Hydrangea": 0.539, "Venus": 0.723},
    "dis-fast": {"Dimetrodon": 0.286, "Hydrangea": 0.421, "Venus": 0.564},
    "dis-medium": {"Dimetrodon": 0.156, "Hydrangea": 0.253, "Venus": 0.384},
    "farneback": {"Dimetrodon": 0.744, "Hydrangea": 0.542, "Venus": 1.290},
}


def _texture(seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture, float32 in [0, 255], with a border for shifting into."""
    rng = np.random.default_rng(seed)
    noise = rng.random((HEIGHT + 2 * MARGIN, WIDTH + 2 * MARGIN, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return (blurred - blurred.min()) / (blurred.max() - blurred.min()) * 255.0


def _shifted_pair(shift: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A texture and its copy moved by ``shift`` = (du, dv): second(x + shift) = first(x)."""
    texture = _texture(seed)
    # warpAffine maps source to destination with this matrix: dst(x) = src(x - shift).
    matrix = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]], dtype=np.float32)
    size = (texture.shape[1], texture.shape[0])
    moved = cv2.warpAffine(
        texture, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    crop = (slice(MARGIN, MARGIN + HEIGHT), slice(MARGIN, MARGIN + WIDTH))

    def to_uint8(image: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(image[crop]), 0, 255).astype(np.uint8)

    return to_uint8(texture), to_uint8(moved)


def _interior_median(flow: np.ndarray) -> np.ndarray:
    return np.median(flow[:, MARGIN:-MARGIN, MARGIN:-MARGIN].reshape(2, -1), axis=1)


@pytest.mark.parametrize("name", CLASSICAL_BACKEND_NAMES)
@pytest.mark.parametrize("shift", [(2.5, -1.5), (-3.0, 2.0)])
def test_known_shift_gives_that_flow(name: str, shift: tuple[float, float]) -> None:
    first, second = _shifted_pair(shift)
    flow = make_classical_backend(name).compute_flow(first, second)
    assert flow.shape == (2, HEIGHT, WIDTH) and flow.dtype == np.float32
    np.testing.assert_allclose(
        _interior_median(flow), shift, rtol=0, atol=SHIFT_TOLERANCE[name], err_msg=name
    )


@pytest.mark.parametrize("name", CLASSICAL_BACKEND_NAMES)
def test_sign_convention_first_at_x_is_second_at_x_plus_flow(name: str) -> None:
    first, second = _shifted_pair((2.5, -1.5))
    flow = make_classical_backend(name).compute_flow(first, second)
    grid_x, grid_y = np.meshgrid(np.arange(WIDTH, dtype=np.float32), np.arange(HEIGHT))
    interior = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))

    def residual(sign: float) -> float:
        map_x = (grid_x + sign * flow[0]).astype(np.float32)
        map_y = (grid_y + sign * flow[1]).astype(np.float32)
        sampled = cv2.remap(second.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR)
        return float(np.abs(sampled - first.astype(np.float32))[interior].mean())

    # Sampling the second image at x + flow(x) reproduces the first image (a few grey levels of
    # interpolation error); sampling at x - flow(x) moves it twice as far the wrong way.
    assert residual(+1.0) < 3.0
    assert residual(+1.0) < 0.25 * residual(-1.0)


@pytest.mark.parametrize("name", ["dis-medium", "farneback"])
def test_batched_and_unbatched_tensors(name: str) -> None:
    backend = make_classical_backend(name)
    shifts = [(2.5, -1.5), (-3.0, 2.0)]
    pairs = [_shifted_pair(shift, seed=index) for index, shift in enumerate(shifts)]
    first = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a, _ in pairs])
    second = torch.stack([torch.from_numpy(b).permute(2, 0, 1) for _, b in pairs])
    assert first.shape == (2, 3, HEIGHT, WIDTH)

    flow = backend(first, second)
    assert flow.shape == (2, 2, HEIGHT, WIDTH)
    assert flow.dtype == torch.float32 and flow.device == first.device
    for index, shift in enumerate(shifts):
        np.testing.assert_allclose(
            _interior_median(flow[index].numpy()), shift, rtol=0, atol=SHIFT_TOLERANCE[name]
        )

    single = backend(first[1], second[1])
    assert single.shape == (2, HEIGHT, WIDTH)
    torch.testing.assert_close(single, flow[1], rtol=0, atol=0)
    # Floats in [0, 255] holding the same integers give the same flow as uint8.
    from_float = backend(first.float(), second.float())
    torch.testing.assert_close(from_float, flow, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flow_comes_back_on_the_input_device() -> None:
    first, second = _shifted_pair((2.5, -1.5))
    first_gpu = torch.from_numpy(first).permute(2, 0, 1).cuda()
    second_gpu = torch.from_numpy(second).permute(2, 0, 1).cuda()
    flow = DISFlow("medium")(first_gpu, second_gpu)
    assert flow.device == first_gpu.device and flow.shape == (2, HEIGHT, WIDTH)


def test_names_and_protocol() -> None:
    for name in CLASSICAL_BACKEND_NAMES:
        backend = make_classical_backend(name)
        assert backend.name == name
        assert isinstance(backend, FlowBackend)
    assert DISFlow("fast").name == "dis-fast"
    assert FarnebackFlow(window_size=15).name == "farneback"


def test_errors_list_valid_values() -> None:
    with pytest.raises(ValueError, match="'raft'.*dis-ultrafast, dis-fast, dis-medium, farneback"):
        make_classical_backend("raft")
    with pytest.raises(ValueError, match="'slow'.*valid presets"):
        DISFlow("slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poly_n must be 5 or 7, got 6"):
        FarnebackFlow(poly_n=6)
    backend = DISFlow("ultrafast")
    with pytest.raises(ValueError, match=r"differ: \(3, 8, 8\) vs \(3, 8, 9\)"):
        backend(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 8, 8\)"):
        backend(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"uint8 with shape \(H, W, 3\).*float64"):
        backend.compute_flow(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("scene", ["Dimetrodon", "Hydrangea", "Venus"])
def test_middlebury_accuracy(scene: str) -> None:
    frames = MIDDLEBURY / "other-data" / scene
    gt_path = MIDDLEBURY / "other-gt-flow" / scene / "flow10.flo"
    if not (frames / "frame10.png").is_file() or not gt_path.is_file():
        pytest.skip(f"Middlebury scene {scene} not found under {MIDDLEBURY}")
    first, second = _read_rgb(frames / "frame10.png"), _read_rgb(frames / "frame11.png")
    gt = read_flo(gt_path)
    zero_flow_epe = endpoint_error(np.zeros_like(gt), gt)
    for name, measured in MIDDLEBURY_EPE.items():
        epe = endpoint_error(make_classical_backend(name).compute_flow(first, second), gt)
        assert epe < 2.0 * measured[scene], f"{name} on {scene}: EPE {epe:.3f}"
        assert epe < zero_flow_epe, f"{name} on {scene}: EPE {epe:.3f} vs zero flow"


def test_dis_names_its_minimum_frame_size_instead_of_failing_inside_opencv():
    # 80x24 crashes the process inside OpenCV 5.0's DIS (fast preset); 8x8 and 640x12 fail
    # its assertions.
    for height, width in ((24, 80), (8, 8), (12, 640), (31, 33)):
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        with pytest.raises(ValueError, match=rf"dis-fast: frames of {width}x{height} pixels; "
                                             r"DIS needs them at least 32 high, or else at "
                                             r"most 32 wide with a side of at least 12;"):
            DISFlow("fast").compute_flow(frame, frame)
    rng = np.random.default_rng(0)
    for height, width in ((32, 640), (24, 32), (8, 12), (640, 16), (13, 32), (12, 20)):
        smallest = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for preset in ("ultrafast", "fast", "medium"):
            flow = DISFlow(preset).compute_flow(smallest, smallest)
            assert flow.shape == (2, height, width)
