"""Composites: a textured object cut from one small cache, moving over another's frames."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from crossnet.background import running_backgrounds
from crossnet.composite import CompositeDataset, ObjectCutout, find_objects, paste_object
from crossnet.data import CacheFrameDataset
from flow.backends import make_hop_backend
from flow.cache import CacheInfo, CacheWriter

SIZE = 64
STRIDES = (1, 4)
OBJECT_BOX = (20, 22, 20, 20)  # top, left, height, width in the object cache's frames
BOTTOM_UNSCORED = 6  # the target's last rows are outside its ROI (85)


def texture(rng, size, cells):
    """A smooth random colour texture: DIS-trackable detail a few pixels across."""
    small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def write_cache(path: Path, frames, masks) -> Path:
    info = CacheInfo(strides=STRIDES, backend="test", weights_sha256="", size=(SIZE, SIZE),
                     source_path=str(path), source_size=0, source_mtime=0.0, fps=0.0,
                     package_version="0")
    flow = np.zeros((len(STRIDES), 2, SIZE, SIZE), np.float32)  # never read by composites
    with CacheWriter.open(path, info=info) as writer:
        for number, (frame, mask) in enumerate(zip(frames, masks)):
            writer.append(number, frame, flow, mask)
        return writer.finish()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """An object cache (one 20x20 textured object plus a 4x4 speck) and a static target."""
    tmp_path = tmp_path_factory.mktemp("composite")
    rng = np.random.default_rng(0)
    object_frame = texture(rng, SIZE, 10)
    top, left, height, width = OBJECT_BOX
    object_frame[top:top + height, left:left + width] = texture(rng, 20, 6)
    object_mask = np.zeros((SIZE, SIZE), np.uint8)
    object_mask[top:top + height, left:left + width] = 255
    object_mask[5:9, 5:9] = 255  # too small to paste
    objects = write_cache(tmp_path / "objects.h5", [object_frame] * 3, [object_mask] * 3)
    background = texture(rng, SIZE, 12)
    target_mask = np.zeros((SIZE, SIZE), np.uint8)
    target_mask[-BOTTOM_UNSCORED:] = 85
    target_mask[2:6, 40:50] = 50
    target = write_cache(tmp_path / "street.h5", [background] * 10,
                         [None] * 5 + [target_mask] * 5)
    return {"objects": objects, "target": target, "object_frame": object_frame,
            "background": background, "target_mask": target_mask}


def make_dataset(scene, **changes):
    arguments = {"backend": make_hop_backend("dis-fast"), "strides": STRIDES, "crop_size": None,
                 "length": 12, "seed": 0, "speed_range": (0.5, 1.2)}
    arguments.update(changes)
    return CompositeDataset([scene["objects"]], [scene["target"]], **arguments)


def test_find_objects_keeps_whole_objects_of_enough_pixels():
    labels = np.zeros((40, 40), np.uint8)
    labels[5:11, 5:11] = 255  # 36 px, inside: kept
    labels[4:12, 4] = 170  # a boundary band of 170 on one side does not disqualify it
    labels[20:24, 5:9] = 255  # 16 px: too small
    labels[30:40, 20:40] = 85
    labels[24:30, 24:30] = 255  # its whole bottom side touches 85: cut by the ROI
    labels[0:6, 30:36] = 255  # touches the top edge: cut by the frame
    objects = find_objects(labels, min_object_pixels=30, max_cut_fraction=0.1)
    assert len(objects) == 1
    top, left, height, width, alpha = objects[0]
    assert (top, left, height, width) == (5, 5, 6, 6)
    assert alpha.all() and alpha.shape == (6, 6)
    assert len(find_objects(labels, min_object_pixels=10, max_cut_fraction=0.5)) == 4


def test_paste_object_whole_and_sub_pixel():
    image = np.full((10, 12, 3), 100, np.uint8)
    alpha = np.zeros((3, 4), bool)
    alpha[:, 1:3] = True
    pixels = np.full((3, 4, 3), 200, np.uint8)
    pixels[0, 1] = (10, 20, 30)
    cutout = ObjectCutout(pixels=pixels, alpha=alpha, box=(0, 0, 3, 4))
    composite, coverage = paste_object(image, cutout, x=5, y=2)
    np.testing.assert_array_equal(coverage[2:5, 6:8], 1.0)
    assert coverage.sum() == alpha.sum()  # binary: exactly the object's pixels
    np.testing.assert_array_equal(composite[2, 6], (10, 20, 30))
    np.testing.assert_array_equal(composite[3:5, 6:8], 200)
    assert (composite[coverage == 0] == 100).all()
    composite, coverage = paste_object(image, cutout, x=5.5, y=2.0)
    np.testing.assert_allclose(coverage[2:5, 6:9], [[0.5, 1.0, 0.5]] * 3, atol=1e-6)
    np.testing.assert_array_equal(composite[3, 7], 200)  # fully covered, inside the object
    np.testing.assert_array_equal(composite[3, 8], 150)  # half object, half scene


def test_pasted_object_is_255_and_carries_the_source_pixels(scene):
    dataset = make_dataset(scene)
    top, left, height, width = OBJECT_BOX
    source = scene["object_frame"][top:top + height, left:left + width]
    for index in range(4):
        plan = dataset.plan(index)
        assert plan.cutout.box == OBJECT_BOX
        np.testing.assert_array_equal(plan.cutout.pixels, source)
        item = dataset[index]
        x, y = plan.position
        expected = np.pad(scene["target_mask"], 20)
        expected[20 + y:20 + y + height, 20 + x:20 + x + width] = 255
        np.testing.assert_array_equal(item["labels"].numpy(), expected[20:-20, 20:-20])
        frame = np.pad(item["frame"].numpy().transpose(1, 2, 0), ((20, 20), (20, 20), (0, 0)))
        on_frame = np.pad(np.ones((SIZE, SIZE), bool), 20)[20 + y:20 + y + height,
                                                           20 + x:20 + x + width]
        np.testing.assert_array_equal(
            frame[20 + y:20 + y + height, 20 + x:20 + x + width][on_frame], source[on_frame])
        assert item["scene"] == "street" and 5 <= item["index"] <= 9


def test_object_moves_back_by_k_velocity(scene):
    dataset = make_dataset(scene)
    plan = dataset.plan(0)
    t = plan.target_frame
    # Whole-pixel motion, so the earlier composite holds the exact pixels at a known place.
    plan = dataclasses.replace(plan, position=(20, 24), velocity=(1.0, -0.5))
    rendered = dataset.render(plan)
    assert sorted(rendered) == sorted({t, t - 1, t - 4})
    top, left, height, width = OBJECT_BOX
    source = scene["object_frame"][top:top + height, left:left + width]
    for k in STRIDES:
        image, coverage = rendered[t - k]
        x, y = 20 - k * 1.0, 24 + k * 0.5
        if float(y).is_integer():
            x, y = int(x), int(y)
            np.testing.assert_array_equal(image[y:y + height, x:x + width], source)
            assert coverage.sum() == height * width
        rows, columns = np.nonzero(coverage)
        centre = (np.average(columns, weights=coverage[rows, columns]),
                  np.average(rows, weights=coverage[rows, columns]))
        np.testing.assert_allclose(centre, (x + (width - 1) / 2, y + (height - 1) / 2),
                                   atol=1e-3)
        # The scene around the object is the target's own frame.
        assert (image[coverage == 0] == scene["background"][coverage == 0]).all()


def test_recomputed_hop_shows_the_object_motion(scene):
    dataset = make_dataset(scene, length=30)
    checked = 0
    for index in range(30):
        plan = dataset.plan(index)
        t = plan.target_frame
        longest = max(STRIDES)
        corners = [plan.position_at(t), plan.position_at(t - longest)]
        # Objects wholly inside the frame at both ends of the motion, clear of the image edge.
        if not all(2 <= x <= SIZE - 22 and 2 <= y <= SIZE - 22 for x, y in corners):
            continue
        item = dataset[index]
        inside = item["labels"].numpy() == 255
        for s, k in enumerate(STRIDES):
            median = np.median(item["hop"][s].numpy()[:, inside], axis=1)
            expected = -k * np.asarray(plan.velocity)
            np.testing.assert_allclose(median, expected, atol=0.5)
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_items_are_deterministic_per_index(scene):
    first = make_dataset(scene, crop_size=(48, 40), use_background=True)
    second = make_dataset(scene, crop_size=(48, 40), use_background=True)
    for index in (3, 1):
        a, b = first[index], second[index]
        for key in ("frame", "hop", "labels", "background"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not torch.equal(first[1]["frame"], first[2]["frame"])
    first.set_epoch(1)
    assert not torch.equal(first[1]["frame"], second[1]["frame"])


def test_item_format_matches_the_cache_dataset(scene):
    dataset = make_dataset(scene, crop_size=(48, 40), use_background=True)
    item = dataset[5]
    assert list(item) == ["frame", "hop", "labels", "background", "scene", "index"]
    assert item["frame"].dtype == torch.uint8 and item["frame"].shape == (3, 48, 40)
    assert item["hop"].dtype == torch.float32 and item["hop"].shape == (2, 2, 48, 40)
    assert item["labels"].dtype == torch.uint8 and item["labels"].shape == (48, 40)
    assert item["background"].dtype == torch.uint8 and item["background"].shape == (3, 48, 40)
    # The background is the target's own (static scene: the scene itself), without the object.
    plan = dataset.plan(5)
    expected = list(running_backgrounds([scene["background"]] * 10))[plan.target_frame]
    window = expected[plan.crop_top:plan.crop_top + 48, plan.crop_left:plan.crop_left + 40]
    np.testing.assert_array_equal(item["background"].numpy(), window.transpose(2, 0, 1))
    frame = item["frame"].numpy()
    scene_pixels = item["labels"].numpy() != 255
    np.testing.assert_array_equal(frame[:, scene_pixels],
                                  window.transpose(2, 0, 1)[:, scene_pixels])


def test_camera_compensation_leaves_a_still_target_and_its_moving_object_alone(scene):
    # The target's camera stands still: the frames contradict any fitted camera motion, so the
    # 3D-HOP (with the pasted object's own motion) and the background pass unchanged.
    plain = make_dataset(scene, crop_size=(48, 40), use_background=True)
    compensated = make_dataset(scene, crop_size=(48, 40), use_background=True,
                               camera_motion="affine", align_background=True)
    for index in (0, 5):
        a, b = plain[index], compensated[index]
        assert a["hop"].abs().max() > 0.5  # the object moves
        for key in ("frame", "hop", "labels", "background"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_objects_that_never_qualify_are_reported(scene):
    with pytest.raises(ValueError, match="no pasteable object"):
        make_dataset(scene, min_object_pixels=10_000, max_attempts=3)[0]
    with pytest.raises(ValueError, match="length"):
        make_dataset(scene, length=0)


def test_mixes_with_real_frames_in_a_two_worker_loader(scene):
    composites = make_dataset(scene, crop_size=(48, 40), use_background=True, length=3)
    real = CacheFrameDataset([scene["target"]], crop_size=(48, 40), use_background=True)
    mixed = ConcatDataset([real, composites])
    loader = DataLoader(mixed, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [len(batch["scene"]) for batch in batches] == [4, 4]
    assert batches[1]["frame"].shape == (4, 3, 48, 40)
    # The last three items are composites, identical to those made in this process.
    for offset in range(3):
        expected = composites[offset]
        got = batches[1]["hop"][1 + offset]
        torch.testing.assert_close(got, expected["hop"], rtol=0, atol=0)
        torch.testing.assert_close(batches[1]["labels"][1 + offset], expected["labels"])


def test_panned_items_keep_every_other_choice_and_frame_t(scene):
    still = make_dataset(scene)
    panned = make_dataset(scene, pan_fraction=1.0, pan_speed_range=(1.0, 2.0))
    for index in range(6):
        a, b = still.plan(index), panned.plan(index)
        assert a.camera_velocity == (0.0, 0.0) and b.panning
        assert 1.0 <= np.hypot(*b.camera_velocity) <= 2.0
        fields = ("target_cache", "target_frame", "crop_top", "crop_left", "object_cache",
                  "object_frame", "position", "velocity")
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
        assert a.cutout.box == b.cutout.box
    # Frame t is the target's own frame where the object is not, panned or not.
    item = panned[2]
    outside = item["labels"].numpy() != 255
    np.testing.assert_array_equal(item["frame"].numpy()[:, outside],
                                  scene["background"].transpose(2, 0, 1)[:, outside])


def test_panned_hop_shows_the_camera_on_the_scene_and_the_object_its_own_motion(scene):
    dataset = make_dataset(scene, length=40, pan_fraction=1.0, pan_speed_range=(1.0, 2.0))
    checked = 0
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    interior = (rows >= 12) & (rows < SIZE - 12) & (columns >= 12) & (columns < SIZE - 12)
    for index in range(40):
        plan = dataset.plan(index)
        t = plan.target_frame
        corners = [plan.position_at(t), plan.position_at(t - max(STRIDES))]
        if not all(2 <= x <= SIZE - 22 and 2 <= y <= SIZE - 22 for x, y in corners):
            continue
        item = dataset[index]
        inside = item["labels"].numpy() == 255
        scene_pixels = interior & ~inside & (item["labels"].numpy() == 0)
        for s, k in enumerate(STRIDES):
            hop = item["hop"][s].numpy()
            np.testing.assert_allclose(np.median(hop[:, scene_pixels], axis=1),
                                       k * np.asarray(plan.camera_velocity), atol=0.5)
            if k == 1:  # at stride 4, DIS drags the small object with the 4-8 px scene motion
                np.testing.assert_allclose(np.median(hop[:, inside], axis=1),
                                           -k * np.asarray(plan.velocity), atol=0.5)
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_a_panned_background_is_the_panning_cameras_unless_aligned(scene):
    still = make_dataset(scene, use_background=True)
    panned = make_dataset(scene, use_background=True, pan_fraction=1.0,
                          pan_speed_range=(1.0, 2.0))
    aligned = make_dataset(scene, use_background=True, pan_fraction=1.0,
                           pan_speed_range=(1.0, 2.0), align_background=True)
    index = next(i for i in range(12) if panned.plan(i).target_frame > 0)
    # The target is one still frame: its still-camera background is that frame.
    np.testing.assert_array_equal(still[index]["background"].numpy(),
                                  scene["background"].transpose(2, 0, 1))
    np.testing.assert_array_equal(aligned[index]["background"].numpy(),
                                  still[index]["background"].numpy())
    difference = np.abs(panned[index]["background"].numpy().astype(int)
                        - still[index]["background"].numpy())
    assert difference.mean() > 5  # a panning camera smears the texture


def test_panning_asks_for_the_ema_background(scene):
    with pytest.raises(ValueError, match="EMA"):
        make_dataset(scene, use_background=True, background_estimator="median", pan_fraction=0.5)
    with pytest.raises(ValueError, match="pan_fraction"):
        make_dataset(scene, pan_fraction=1.5)
    with pytest.raises(ValueError, match="pan_speed_range"):
        make_dataset(scene, pan_speed_range=(3.0, 1.0))
