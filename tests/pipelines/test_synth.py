"""Tests for the synthetic scene generator (pipelines/synth*.py): exact flow, masks, layout."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.imageio import read_image_rgb, read_label_mask
from pipelines.synth import (
    FLOW_CONVENTION,
    SynthConfig,
    generate_scenes,
    render_scene,
    scene_seed,
    write_scene,
)
from pipelines.synth_render import render_spec
from pipelines.synth_scene import random_scene_spec
from pipelines.synth_spec import BackgroundSpec, ObjectSpec, Ripple, SceneSpec
from pipelines.synth_textures import random_texture

SMALL = {"size": (64, 48), "num_frames": 12}
CLEAN = {"noise_sigma": 0.0, "illumination_drift": 0.0}


def _background(rng: np.random.Generator, *, size: tuple[int, int], margin: int = 8,
                ripple: Ripple | None = None) -> BackgroundSpec:
    width, height = size
    texture = random_texture(rng, height=height + 2 * margin, width=width + 2 * margin)
    return BackgroundSpec(texture=texture, origin=(float(margin), float(margin)), ripple=ripple)


def _rectangle(rng: np.random.Generator, *, width: int, height: int, start: tuple[float, float],
               velocity: tuple[float, float], num_frames: int) -> ObjectSpec:
    """A solid rectangle sprite (2-pixel transparent border) translating at constant velocity."""
    alpha = np.zeros((height + 4, width + 4), np.float32)
    alpha[2:-2, 2:-2] = 1.0
    texture = random_texture(rng, height=height + 4, width=width + 4)
    times = np.arange(num_frames, dtype=np.float64)
    affines = np.zeros((num_frames, 2, 3))
    affines[:, 0, 0] = affines[:, 1, 1] = 1.0
    affines[:, 0, 2] = start[0] + velocity[0] * times
    affines[:, 1, 2] = start[1] + velocity[1] * times
    return ObjectSpec(texture=texture, alpha=alpha, affines=affines)


def _spec(objects: tuple[ObjectSpec, ...], *, size: tuple[int, int] = (64, 48),
          num_frames: int = 12, ripple: Ripple | None = None, seed: int = 0) -> SceneSpec:
    rng = np.random.default_rng(seed)
    return SceneSpec(size=size, background=_background(rng, size=size, ripple=ripple),
                     objects=objects, camera_offsets=np.zeros((num_frames, 2)),
                     gains=np.ones(num_frames), offsets=np.zeros(num_frames))


def _warp_errors(frames, strides, *, zero_flow: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel |frame t - frame t-k sampled at x + flow| on reliably comparable pixels.

    Kept: the target lies inside frame t-k, the same layer is on top there (not occluded), and
    the pixel is more than 2 pixels from any object edge in frame t and at its target in t-k
    (anti-aliased edges mix two layers whose motions differ). Returns (object, background)
    errors, each a flat array of grey-level differences averaged over RGB.
    """
    height, width = frames[0].mask.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    kernel = np.ones((5, 5), np.uint8)
    on_objects, on_background = [], []
    for slot, stride in enumerate(strides):
        for t in range(1, len(frames)):
            now, then = frames[t], frames[max(t - stride, 0)]
            flow = np.zeros_like(now.flow[slot]) if zero_flow else now.flow[slot]
            map_x, map_y = xs + flow[0], ys + flow[1]
            warped = cv2.remap(then.clean_rgb, map_x, map_y, cv2.INTER_LINEAR)
            inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
            layer_then = cv2.remap(then.instance_ids.astype(np.float32), map_x, map_y,
                                   cv2.INTER_NEAREST)
            edge_now = cv2.dilate(now.mask, kernel) != cv2.erode(now.mask, kernel)
            edge_then = (cv2.dilate(then.mask, kernel) != cv2.erode(then.mask, kernel))
            edge_then = cv2.remap(edge_then.astype(np.float32), map_x, map_y,
                                  cv2.INTER_NEAREST) > 0
            valid = inside & (layer_then == now.instance_ids) & ~edge_now & ~edge_then
            error = np.abs(warped - now.clean_rgb).mean(axis=-1)
            on_objects.append(error[valid & (now.instance_ids > 0)])
            on_background.append(error[valid & (now.instance_ids == 0)])
    return np.concatenate(on_objects), np.concatenate(on_background)


@pytest.mark.parametrize(("camera_jitter", "camera_pan", "dynamic_background"),
                         [(0.0, 0.0, False), (0.7, 0.0, True), (0.3, 2.5, True)])
def test_flow_reproduces_frames_by_backward_warping(camera_jitter, camera_pan,
                                                    dynamic_background):
    # Tolerances: frames are bilinear resamplings of textures band-limited by a 0.8 px blur,
    # and the check resamples frame t-k once more at sub-pixel positions; two interpolations
    # of the same texture differ by about 1 grey level on average (measured: 0.4-0.8 on the
    # background, 0.5-2.2 on small objects whose texture is finer relative to the pixel grid).
    # A wrong flow is far off: zero flow gives 3-35 grey levels on the same pixels.
    config = SynthConfig(**SMALL, **CLEAN, camera_jitter=camera_jitter, camera_pan=camera_pan,
                         dynamic_background=dynamic_background, min_objects=3, max_objects=3,
                         min_object_size=0.3, max_object_size=0.5, max_speed=2.0)
    objects, background = [], []
    for seed in (0, 3):
        frames = list(render_scene(config, seed))
        errors = _warp_errors(frames, config.strides)
        objects.append(errors[0])
        background.append(errors[1])
        wrong = _warp_errors(frames, config.strides, zero_flow=True)
        assert wrong[0].mean() > 3 * max(errors[0].mean(), 0.5)
    objects, background = np.concatenate(objects), np.concatenate(background)
    assert objects.size > 2000 and background.size > 10000
    assert objects.mean() < 2.5, objects.mean()
    assert background.mean() < 1.5, background.mean()


def test_pan_sweeps_at_the_given_peak_speed_and_changes_nothing_else():
    # The pan is the one difference: same background, objects, lighting; the camera offsets
    # differ by a sweep whose fastest frame-to-frame step is the peak speed (a sampled sine
    # peaks a little below its top speed), mostly along x.
    still = random_scene_spec(SynthConfig(size=(64, 48), num_frames=150, camera_jitter=0.5), 4)
    panned = random_scene_spec(SynthConfig(size=(64, 48), num_frames=150, camera_jitter=0.5,
                                           camera_pan=3.0), 4)
    pan = panned.camera_offsets - still.camera_offsets
    steps = np.abs(np.diff(pan, axis=0)).max(axis=0)
    assert 2.9 < steps[0] <= 3.0, steps
    assert 0.4 < steps[1] <= 0.75, steps
    assert np.abs(pan[:, 0]).max() > 20  # a sweep of dozens of pixels, not a shake
    for before, after in zip(still.objects, panned.objects, strict=True):
        np.testing.assert_array_equal(before.texture, after.texture)
        np.testing.assert_array_equal(before.affines, after.affines)
    np.testing.assert_array_equal(still.gains, panned.gains)
    # The background texture only grows by the margin the sweep needs.
    assert panned.background.texture.shape[0] > still.background.texture.shape[0]


def test_integer_velocity_warps_back_exactly():
    # Whole-pixel motion makes frame t-k sampled at x + flow land on the same sprite samples
    # as frame t, with no interpolation slack: any sign or half-pixel error would show.
    rng = np.random.default_rng(1)
    mover = _rectangle(rng, width=20, height=14, start=(10.3, 12.6), velocity=(2.0, 1.0),
                       num_frames=12)
    frames = list(render_spec(_spec((mover,)), strides=(1, 4)))
    height, width = frames[0].mask.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for slot, stride in enumerate((1, 4)):
        for t in range(stride, len(frames)):
            flow = frames[t].flow[slot]
            warped = cv2.remap(frames[t - stride].clean_rgb, xs + flow[0], ys + flow[1],
                               cv2.INTER_LINEAR)
            interior = cv2.erode(frames[t].mask, np.ones((3, 3), np.uint8)) > 0
            np.testing.assert_allclose(warped[interior], frames[t].clean_rgb[interior],
                                       atol=1e-3)


def test_constant_velocity_object_has_flow_minus_k_v_and_background_zero():
    velocity = np.array([1.25, -0.5])
    rng = np.random.default_rng(2)
    mover = _rectangle(rng, width=16, height=10, start=(8.0, 25.0), velocity=tuple(velocity),
                       num_frames=12)
    strides = (1, 4, 8)
    for frame in render_spec(_spec((mover,)), strides=strides):
        t = frame.number - 1
        inside = frame.instance_ids == 1
        assert inside.sum() >= 100
        for slot, stride in enumerate(strides):
            # Before frame k the flow points to the first frame: t steps back, not k.
            expected = -min(stride, t) * velocity
            np.testing.assert_allclose(frame.flow[slot][:, inside],
                                       np.broadcast_to(expected[:, None], (2, inside.sum())),
                                       atol=1e-4)
            np.testing.assert_array_equal(frame.flow[slot][:, ~inside], 0.0)


def test_static_background_without_jitter_has_zero_flow():
    config = SynthConfig(**SMALL, dynamic_background=False, camera_jitter=0.0)
    for frame in render_scene(config, 4):
        np.testing.assert_array_equal(frame.flow[:, :, frame.instance_ids == 0], 0.0)


def test_ripple_background_flow_matches_displacement_formula_under_camera_jitter():
    ripple = Ripple(top=20.0, bottom=44.0, amplitude=3.0, angular_frequency=0.4,
                    phase_per_row=0.3, phase=0.3)
    spec = _spec((), ripple=ripple)
    camera = np.random.default_rng(6).uniform(-2.0, 2.0, (12, 2))
    spec = SceneSpec(size=spec.size, background=spec.background, objects=(),
                     camera_offsets=camera, gains=spec.gains, offsets=spec.offsets)
    strides = (1, 4)
    frames = list(render_spec(spec, strides=strides))
    moved = 0.0
    for frame in frames:
        t = frame.number - 1
        for slot, stride in enumerate(strides):
            then = max(t - stride, 0)
            # Frame t shows background row v = y + origin_y - c_t,y at image row y.
            rows = np.arange(48, dtype=np.float64) + 8.0 - camera[t, 1]
            expected_u = (ripple.displacement(rows, then) - ripple.displacement(rows, t)
                          + camera[then, 0] - camera[t, 0])
            np.testing.assert_allclose(frame.flow[slot, 0],
                                       np.repeat(expected_u[:, None], 64, 1), atol=1e-4)
            np.testing.assert_allclose(frame.flow[slot, 1], camera[then, 1] - camera[t, 1],
                                       atol=1e-5)
            moved = max(moved, float(np.abs(expected_u).max()))
    assert moved > 2.0
    # Same 1.5 grey-level tolerance as the random-scene check above, here with the band and a
    # 2-pixel jitter filling the frame.
    _, background = _warp_errors(frames, strides)
    assert background.size > 10000
    assert background.mean() < 1.5, background.mean()


def test_front_object_occludes_back_object():
    rng = np.random.default_rng(3)
    back = _rectangle(rng, width=20, height=20, start=(10.0, 10.0), velocity=(1.0, 0.0),
                      num_frames=4)
    front = _rectangle(rng, width=10, height=10, start=(20.0, 15.0), velocity=(0.0, 1.0),
                       num_frames=4)
    frame = list(render_spec(_spec((back, front), num_frames=4), strides=(1,)))[-1]
    overlap = np.zeros((48, 64), bool)
    overlap[15 + 3 + 2:15 + 3 + 12, 22:32] = True
    assert np.all(frame.instance_ids[overlap] == 2)
    np.testing.assert_allclose(frame.flow[0][:, overlap], np.array([[0.0], [-1.0]]).repeat(
        overlap.sum(), 1))
    assert np.any(frame.instance_ids == 1)
    np.testing.assert_allclose(frame.flow[0][:, frame.instance_ids == 1], -np.array(
        [[1.0], [0.0]]).repeat(np.count_nonzero(frame.instance_ids == 1), 1))


def test_mask_is_exactly_the_rectangle_for_whole_pixel_motion():
    rng = np.random.default_rng(5)
    mover = _rectangle(rng, width=12, height=7, start=(-10.0, 5.0), velocity=(6.0, 2.0),
                       num_frames=12)
    for frame in render_spec(_spec((mover,)), strides=(1,)):
        t = frame.number - 1
        expected = np.zeros((48, 64), np.uint8)
        x0, y0 = -10 + 6 * t + 2, 5 + 2 * t + 2
        expected[max(y0, 0):max(y0 + 7, 0), max(x0, 0):max(x0 + 12, 0)] = 255
        np.testing.assert_array_equal(frame.mask, expected)


def _coverage(spec: SceneSpec, frame: int) -> list[np.ndarray]:
    """Each object's warped alpha over the whole frame, recomputed independently."""
    width, height = spec.size
    coverage = []
    for item in spec.objects:
        affine = item.affines[frame].copy()
        affine[:, 2] += spec.camera_offsets[frame]
        coverage.append(cv2.warpAffine(item.alpha, affine, (width, height),
                                       flags=cv2.INTER_LINEAR))
    return coverage


def test_mask_is_where_objects_cover_the_pixel():
    config = SynthConfig(size=(64, 48), num_frames=20, camera_jitter=0.5)
    spec = random_scene_spec(config, 7)
    labels = set()
    for frame in render_spec(spec, strides=config.strides):
        coverage = np.max(_coverage(spec, frame.number - 1), axis=0)
        expected = coverage > 0.5
        # Windowed and whole-frame warps may round alpha differently by a hair at exactly 0.5.
        decided = np.abs(coverage - 0.5) > 0.02
        np.testing.assert_array_equal((frame.mask == 255)[decided], expected[decided])
        np.testing.assert_array_equal(frame.mask > 0, frame.instance_ids > 0)
        labels |= set(np.unique(frame.mask).tolist())
    assert labels == {0, 255}


def test_object_sizes_span_a_few_pixels_to_a_third_of_the_frame():
    config = SynthConfig()
    extents = []
    for seed in range(10):
        for item in random_scene_spec(config, seed).objects:
            ys, xs = np.nonzero(item.alpha > 0.5)
            extents.append(max(np.ptp(xs), np.ptp(ys)) + 1)
    assert min(extents) <= 8, sorted(extents)
    assert max(extents) >= 0.28 * 240, sorted(extents)


def test_objects_enter_and_leave_the_frame():
    config = SynthConfig(size=(64, 48), num_frames=40, dynamic_background=False)
    entered = left = 0
    for seed in range(4):
        spec = random_scene_spec(config, seed)
        visible = np.array([[np.any(alpha > 0.5) for alpha in _coverage(spec, t)]
                            for t in range(config.num_frames)])
        entered += np.count_nonzero(~visible[0] & visible.any(axis=0))
        left += np.count_nonzero(visible.any(axis=0) & ~visible[-1])
    assert entered >= 2 and left >= 2, (entered, left)


def test_noise_and_illumination_are_applied_after_rendering():
    clean_config = SynthConfig(size=(64, 48), num_frames=3, **CLEAN)
    for frame in render_scene(clean_config, 8):
        np.testing.assert_array_equal(frame.rgb, np.clip(np.rint(frame.clean_rgb), 0, 255))
    noisy = SynthConfig(size=(64, 48), num_frames=3, noise_sigma=4.0, illumination_drift=0.0)
    frame = next(iter(render_scene(noisy, 8)))
    unclipped = (frame.clean_rgb > 20) & (frame.clean_rgb < 235)
    residual = frame.rgb.astype(np.float32)[unclipped] - frame.clean_rgb[unclipped]
    assert abs(residual.std() - 4.0) < 0.4 and abs(residual.mean()) < 0.3
    drifting = SynthConfig(size=(64, 48), num_frames=200, illumination_drift=0.2,
                           noise_sigma=0.0, max_objects=0, min_objects=0)
    ratios = [frame.rgb.mean() / frame.clean_rgb.mean() for frame in render_scene(drifting, 8)]
    assert np.ptp(ratios) > 0.05
    assert np.abs(np.diff(ratios)).max() < 0.02


def test_same_seed_same_scene_different_seed_different_scene():
    config = SynthConfig(**SMALL, camera_jitter=0.5)
    first, second, other = (list(render_scene(config, seed)) for seed in (5, 5, 6))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.flow, b.flow)
    assert not np.array_equal(first[0].rgb, other[0].rgb)
    assert scene_seed(0, 0) != scene_seed(0, 1) and scene_seed(0, 1) == scene_seed(0, 1)


def test_write_scene_layout_and_contents(tmp_path):
    config = SynthConfig(**SMALL)
    scene = write_scene(tmp_path / "scene_000", config, 11)
    assert scene == tmp_path / "scene_000" and not (tmp_path / "scene_000.tmp").exists()
    numbers = range(1, 13)
    assert sorted(p.name for p in (scene / "input").iterdir()) == [
        f"in{n:06d}.png" for n in numbers]
    assert sorted(p.name for p in (scene / "groundtruth").iterdir()) == [
        f"gt{n:06d}.png" for n in numbers]
    assert (scene / "temporalROI.txt").read_text().split() == ["1", "12"]
    roi = read_label_mask(scene / "ROI.bmp")
    assert roi.shape == (48, 64) and np.all(roi == 255)
    frames = list(render_scene(config, 11))
    for frame in frames:
        np.testing.assert_array_equal(read_image_rgb(scene / "input" / f"in{frame.number:06d}.png"),
                                      frame.rgb)
        gt = read_label_mask(scene / "groundtruth" / f"gt{frame.number:06d}.png")
        np.testing.assert_array_equal(gt, frame.mask)
    with h5py.File(scene / "flow.h5", "r") as file:
        flow = file["flow"]
        assert flow.shape == (12, 3, 2, 48, 64) and flow.dtype == np.float32
        assert flow.chunks == (1, 3, 2, 48, 64)
        assert flow.compression == "gzip" and flow.shuffle
        assert list(flow.attrs["strides"]) == [1, 4, 8]
        assert list(flow.attrs["size"]) == [64, 48]
        assert flow.attrs["convention"] == FLOW_CONVENTION
        np.testing.assert_array_equal(flow[5], frames[5].flow)
    capture = cv2.VideoCapture(str(scene / "scene_000.mp4"))
    count = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert image.shape == (48, 64, 3)
        count += 1
    capture.release()
    assert count == 12
    record = json.loads((scene / "scene.json").read_text())
    assert record["seed"] == 11
    assert SynthConfig.from_dict(record["config"]) == config


def test_write_scene_is_byte_identical_for_a_seed(tmp_path):
    config = SynthConfig(size=(48, 32), num_frames=4, camera_jitter=0.3)
    first = write_scene(tmp_path / "a" / "scene_000", config, 3)
    second = write_scene(tmp_path / "b" / "scene_000", config, 3)
    for name in ("input/in000004.png", "groundtruth/gt000004.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    with h5py.File(first / "flow.h5", "r") as a, h5py.File(second / "flow.h5", "r") as b:
        np.testing.assert_array_equal(a["flow"][()], b["flow"][()])


def test_complete_scene_is_skipped_unless_overwrite(tmp_path):
    config = SynthConfig(size=(32, 24), num_frames=3)
    scene = write_scene(tmp_path / "scene_000", config, 1)
    marker = scene / "marker.txt"
    marker.write_text("kept")
    write_scene(scene, config, 1)  # the same scene: kept as it is
    assert marker.exists()
    # Another seed would silently leave a scene that is not the one asked for: refused.
    with pytest.raises(InputError, match="other settings.*seed 1 there, 2 now.*--overwrite"):
        write_scene(scene, config, 2)
    assert marker.exists()
    assert json.loads((scene / "scene.json").read_text())["seed"] == 1
    write_scene(scene, config, 2, overwrite=True)
    assert not marker.exists()
    assert json.loads((scene / "scene.json").read_text())["seed"] == 2


def test_folder_that_is_not_a_scene_is_refused(tmp_path):
    (tmp_path / "scene_000").mkdir()
    with pytest.raises(InputError, match="scene_000.*not a complete"):
        write_scene(tmp_path / "scene_000", SynthConfig(size=(32, 24), num_frames=2), 0)


def test_generate_scenes_replaces_interrupted_tmp_and_skips_complete(tmp_path):
    config = SynthConfig(size=(32, 24), num_frames=3)
    interrupted = tmp_path / "scene_000.tmp"
    (interrupted / "input").mkdir(parents=True)
    (interrupted / "input" / "in000001.png").write_bytes(b"partial")
    paths = generate_scenes(tmp_path, num_scenes=2, config=config, seed=9, progress=False)
    assert paths == [tmp_path / "scene_000", tmp_path / "scene_001"]
    assert not interrupted.exists()
    for index, path in enumerate(paths):
        assert len(list((path / "input").iterdir())) == 3
        record = json.loads((path / "scene.json").read_text())
        assert record["seed"] == scene_seed(9, index)
        assert record["provenance"] == {"run_seed": 9, "scene_index": index}
    stamp = (paths[0] / "input" / "in000001.png").stat().st_mtime_ns
    generate_scenes(tmp_path, num_scenes=2, config=config, seed=9, progress=False)
    assert (paths[0] / "input" / "in000001.png").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(("arguments", "message"), [
    ({"num_frames": 0}, "num_frames.*0"),
    ({"size": (0, 10)}, r"size.*\(0, 10\)"),
    ({"size": (64,)}, "size"),
    ({"strides": (0, 2)}, r"strides.*\(0, 2\)"),
    ({"strides": (4, 1)}, r"strides.*\(4, 1\)"),
    ({"strides": (1.5,)}, "strides.*1.5"),
    ({"min_object_size": 0.5, "max_object_size": 0.1}, "0.5, 0.1"),
    ({"fps": 0.0}, "fps.*0.0"),
])
def test_config_rejects_bad_values(arguments, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(**arguments)


def test_generate_scenes_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="num_scenes.*0"):
        generate_scenes(tmp_path, num_scenes=0, config=SynthConfig(), seed=0)
    with pytest.raises(ValueError, match="seed.*-1"):
        generate_scenes(tmp_path, num_scenes=1, config=SynthConfig(), seed=-1)
