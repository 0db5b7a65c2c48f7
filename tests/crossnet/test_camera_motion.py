"""Camera-motion compensation: known camera fields are removed, object motion is kept, and a
fit the frames contradict is dropped."""

import numpy as np
import pytest
import torch

from crossnet.camera_motion import (
    camera_flows,
    explains_frames,
    fit_camera_flow,
    remove_camera_motion,
    warp,
)
from crossnet.hofam import HofamConfig

HEIGHT, WIDTH = 60, 80
STRIDES = (1, 4, 8)
# The camera's flow per frame of stride: u = a + M x, (x, y) in pixels.
PAN = np.array([2.0, -1.5])
LINEAR = np.array([[0.01, -0.004], [0.003, 0.008]])


def camera_field(stride: float) -> torch.Tensor:
    """A pan, a slight zoom and a roll: (2, H, W) pixels, for ``stride`` frames."""
    rows, columns = torch.meshgrid(torch.arange(HEIGHT).float(), torch.arange(WIDTH).float(),
                                   indexing="ij")
    u = PAN[0] + LINEAR[0, 0] * columns + LINEAR[0, 1] * rows
    v = PAN[1] + LINEAR[1, 0] * columns + LINEAR[1, 1] * rows
    return stride * torch.stack([u, v])


def texture(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A textured scene defined everywhere (no border to run out of), grey levels."""
    return (128 + 50 * np.sin(0.31 * xs + 0.17 * ys) + 40 * np.sin(-0.23 * xs + 0.29 * ys + 1)
            + 30 * np.sin(0.53 * xs + 0.07 * ys + 2))


def as_rgb(grey: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(grey[None], 3, axis=0).astype(np.float32))


def filmed_frames(strides=STRIDES) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame t of the textured scene and, per stride k, frame t - k of a camera whose flow from
    t to t - k is ``camera_field(k)``: pixel y of frame t - k shows the scene point x with
    x + k (a + M x) = y. Returns (3, H, W) and (S, 3, H, W)."""
    rows, columns = np.meshgrid(np.arange(HEIGHT, dtype=np.float64),
                                np.arange(WIDTH, dtype=np.float64), indexing="ij")
    points = np.stack([columns.ravel(), rows.ravel()])
    earlier = []
    for k in strides:
        source = np.linalg.solve(np.eye(2) + k * LINEAR, points - k * PAN[:, None])
        earlier.append(as_rgb(texture(*source).reshape(HEIGHT, WIDTH)))
    return as_rgb(texture(columns, rows)), torch.stack(earlier)


def still_frames(strides=STRIDES, noise=2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame t and its earlier frames from a still camera: the same scene plus sensor noise."""
    rng = np.random.default_rng(0)
    rows, columns = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing="ij")
    scene = texture(columns, rows)
    frames = [as_rgb(scene + rng.normal(0, noise, scene.shape)) for _ in range(len(strides) + 1)]
    return frames[0], torch.stack(frames[1:])


def hop_with_object(object_speed=(1.5, -0.5)) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 2, H, W) camera flow with a 15x20 object moving on its own, and the object mask."""
    hop = torch.stack([camera_field(k) for k in STRIDES])
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[20:35, 30:50] = True
    for s, k in enumerate(STRIDES):
        for c in range(2):
            hop[s, c][mask] = k * object_speed[c]
    return hop, mask


def test_a_camera_field_alone_is_removed_entirely():
    hop = torch.stack([camera_field(k) for k in STRIDES])
    frame, earlier = filmed_frames()
    residual = remove_camera_motion(hop, STRIDES, frame=frame, earlier=earlier)
    assert residual.shape == hop.shape and residual.dtype == hop.dtype
    assert residual.abs().max() < 0.01


def test_the_background_goes_to_zero_and_the_object_keeps_its_relative_motion():
    hop, mask = hop_with_object()
    frame, earlier = filmed_frames()
    residual = remove_camera_motion(hop, STRIDES, frame=frame, earlier=earlier)
    camera = torch.stack([camera_field(k) for k in STRIDES])
    # The fit runs on 32x24 pooled cells; cells straddling the object's edge blur its border,
    # so the background is checked two pixels away from the object.
    near = torch.nn.functional.max_pool2d(mask[None, None].float(), 5, 1, 2)[0, 0] > 0
    for s, k in enumerate(STRIDES):
        background = residual[s][:, ~near]
        assert background.abs().max() < 0.02 * k, (k, background.abs().max())
        relative = residual[s][:, mask]
        expected = hop[s][:, mask] - camera[s][:, mask]
        assert (relative - expected).abs().max() < 0.02 * k
        assert relative.norm(dim=0).min() > 0.5 * k  # the object still moves


def test_a_still_camera_passes_the_flow_through():
    frame, earlier = still_frames()
    hop = torch.zeros(len(STRIDES), 2, HEIGHT, WIDTH)
    residual = remove_camera_motion(hop, STRIDES, frame=frame, earlier=earlier)
    np.testing.assert_array_equal(residual.numpy(), hop.numpy())
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[10:40, 10:45] = True  # a big object: a quarter of the frame
    for s, k in enumerate(STRIDES):
        hop[s, 0][mask] = 2.0 * k
    residual = remove_camera_motion(hop, STRIDES, frame=frame, earlier=earlier)
    assert (residual - hop).abs().max() < 0.05 * max(STRIDES)


def test_a_camera_motion_the_frames_contradict_is_dropped():
    # The HighwayI failure: the flow says the whole frame pans (DIS spreading the cars' motion
    # over a flat road), the frames say the camera stands still.
    hop = torch.stack([camera_field(k) for k in STRIDES])
    frame, earlier = still_frames()
    assert fit_camera_flow(hop, STRIDES).abs().max() > 1.0
    camera = camera_flows(hop, STRIDES, frame, earlier)
    assert camera.abs().max() == 0
    torch.testing.assert_close(remove_camera_motion(hop, STRIDES, frame=frame, earlier=earlier),
                               hop)
    # The same flow with frames that do pan: kept.
    frame, earlier = filmed_frames()
    torch.testing.assert_close(camera_flows(hop, STRIDES, frame, earlier), hop, atol=0.01,
                               rtol=0)


def test_a_motion_that_explains_only_part_of_the_frame_is_not_the_camera():
    # The `jump` failure: a cloud drifting over the left 5/8 of a still scene. Warped by the
    # cloud's motion, frame t - 1 matches frame t better on the whole (the cloud is most of the
    # difference), but the static right part gets worse: half of the informative blocks of the
    # 4x4 grid improve, not three quarters.
    rows, columns = np.meshgrid(np.arange(HEIGHT, dtype=np.float64),
                                np.arange(WIDTH, dtype=np.float64), indexing="ij")
    drift = np.array([3.0, 0.0])
    cloud = columns < WIDTH * 5 / 8
    now = texture(columns, rows)
    before = np.where(cloud, texture(columns - drift[0], rows - drift[1]), now)
    camera = torch.tensor(drift, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, HEIGHT,
                                                                              WIDTH)
    frame, earlier = as_rgb(now)[None], as_rgb(before)[None]
    still_error = (frame - earlier).abs().clamp_max(30).mean()
    moved_error = (frame - warp(earlier, camera)).abs().clamp_max(30).mean()
    assert moved_error < 0.9 * still_error  # the whole-frame test alone would keep it
    assert not explains_frames(camera, frame, earlier).item()
    # The same drift over the whole frame is a camera.
    everywhere = as_rgb(texture(columns - drift[0], rows - drift[1]))[None]
    assert explains_frames(camera, frame, everywhere).item()


def test_identical_frames_have_nothing_to_explain():
    frame, _ = still_frames()
    camera = camera_field(1.0)[None]
    assert not explains_frames(camera, frame[None], frame[None]).item()
    assert not explains_frames(torch.zeros_like(camera), frame[None], frame[None]).item()


def test_warp_moves_an_image_by_a_known_shift():
    image = torch.arange(HEIGHT * WIDTH, dtype=torch.float32).reshape(1, 1, HEIGHT, WIDTH)
    flow = torch.zeros(1, 2, HEIGHT, WIDTH)
    flow[:, 0], flow[:, 1] = 3.0, -2.0  # x + (3, -2)
    moved = warp(image, flow)[0, 0]
    torch.testing.assert_close(moved[2:, :-3], image[0, 0, :-2, 3:])
    torch.testing.assert_close(moved[0, :-3], image[0, 0, 0, 3:])  # above the top: the border
    half = warp(image, flow * 0.5)[0, 0]  # (1.5, -1): halfway between two columns
    torch.testing.assert_close(half[1:, :-2], (image[0, 0, :-1, 1:-1] + image[0, 0, :-1, 2:]) / 2)


def test_batches_are_fitted_per_frame():
    first, _ = hop_with_object((1.0, 0.0))
    second = torch.stack([camera_field(-0.5 * k) for k in STRIDES])
    frame, earlier = filmed_frames()
    batched = remove_camera_motion(torch.stack([first, second]), STRIDES,
                                   frame=torch.stack([frame, frame]),
                                   earlier=torch.stack([earlier, earlier]))
    torch.testing.assert_close(batched[0], remove_camera_motion(first, STRIDES, frame=frame,
                                                                earlier=earlier))
    torch.testing.assert_close(batched[1], remove_camera_motion(second, STRIDES, frame=frame,
                                                                earlier=earlier))


def test_arrays_come_back_as_arrays_and_none_changes_nothing():
    hop = torch.stack([camera_field(k) for k in STRIDES]).numpy().astype(np.float16)
    frame, earlier = filmed_frames()
    residual = remove_camera_motion(hop, STRIDES, frame=frame.numpy().astype(np.uint8),
                                    earlier=earlier.numpy().astype(np.uint8))
    assert isinstance(residual, np.ndarray) and residual.dtype == np.float16
    assert np.abs(residual.astype(np.float32)).max() < 0.05
    assert remove_camera_motion(hop, STRIDES, "none") is hop


def test_fit_without_strides_treats_fields_alike():
    field = camera_field(1.0)
    torch.testing.assert_close(fit_camera_flow(field), field, atol=0.01, rtol=0)


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(8, 8)])
def test_bad_shapes_are_refused(bad):
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, H, W\)"):
        fit_camera_flow(bad)


def test_unknown_modes_mismatched_strides_and_missing_frames_are_refused():
    hop = torch.zeros(3, 2, 8, 8)
    frame, earlier = torch.zeros(3, 8, 8), torch.zeros(3, 3, 8, 8)
    with pytest.raises(ValueError, match="unknown camera motion 'homography'"):
        remove_camera_motion(hop, STRIDES, "homography", frame=frame, earlier=earlier)
    with pytest.raises(ValueError, match="for 2 strides"):
        remove_camera_motion(hop, (1, 4), frame=frame, earlier=earlier)
    with pytest.raises(ValueError, match="needs the frame"):
        remove_camera_motion(hop, STRIDES)
    with pytest.raises(ValueError, match=r"earlier frames \(B, S, 3, H, W\)"):
        camera_flows(hop, STRIDES, frame, earlier[:2])


def test_the_model_config_records_the_mode_and_old_configs_default_to_none():
    assert HofamConfig.from_dict({"strides": [1, 4, 8]}).camera_motion == "none"
    config = HofamConfig(camera_motion="affine")
    assert HofamConfig.from_dict(config.to_dict()).camera_motion == "affine"
    with pytest.raises(ValueError, match="camera_motion must be one of"):
        HofamConfig(camera_motion="pan")
    assert HofamConfig.from_dict({"strides": [1, 4, 8]}).align_background is False
    assert HofamConfig.from_dict(HofamConfig(align_background=True).to_dict()).align_background
    for bad in ({"background_estimator": "median"}, {"use_background": False},
                {"strides": (2, 4)}):
        with pytest.raises(ValueError, match="align_background needs"):
            HofamConfig(align_background=True, **bad)
