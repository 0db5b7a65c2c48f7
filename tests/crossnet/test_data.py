"""CacheFrameDataset on small caches whose pixel values encode their position and frame."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from crossnet.background import running_backgrounds
from crossnet.data import CacheFrameDataset, crop_or_pad, random_crop_offset, scene_balanced_weights
from flow.cache import CacheInfo, CacheWriter

STRIDES = (1, 3)
CROP = (32, 32)


def position_frame(t: int, cache_id: int, height: int, width: int):
    """(rgb, flow, labels) whose values say where each pixel came from.

    rgb: red = row, green = column, blue = 10 t + cache_id (so a background over time differs
    from the frame only in blue). flow[s] = (300 s + column, row + 0.5), exact in float16.
    labels = (row + column) % 80: never 85, the padding label.
    """
    rows, columns = np.mgrid[0:height, 0:width]
    rgb = np.stack([rows, columns, np.full_like(rows, 10 * t + cache_id)], axis=-1)
    flow = np.stack([np.stack([300 * s + columns, rows + 0.5]) for s in range(len(STRIDES))])
    labels = (rows + columns) % 80
    return rgb.astype(np.uint8), flow.astype(np.float32), labels.astype(np.uint8)


def write_cache(path: Path, *, cache_id: int, size: tuple[int, int], frames: int,
                masked: set[int], strides=STRIDES) -> Path:
    height, width = size
    info = CacheInfo(strides=strides, backend="test", weights_sha256="", size=(width, height),
                     source_path=str(path), source_size=0, source_mtime=0.0, fps=0.0,
                     package_version="0")
    with CacheWriter.open(path, info=info) as writer:
        for t in range(frames):
            rgb, flow, labels = position_frame(t, cache_id, height, width)
            writer.append(t, rgb, flow[:len(strides)], labels if t in masked else None)
        return writer.finish()


@pytest.fixture
def caches(tmp_path):
    """big: 40x48, masks on 1, 3, 4; small: 24x30 (smaller than the crop), masks on 0, 2."""
    big = write_cache(tmp_path / "big.h5", cache_id=1, size=(40, 48), frames=6,
                      masked={1, 3, 4})
    small = write_cache(tmp_path / "small.h5", cache_id=2, size=(24, 30), frames=3,
                        masked={0, 2})
    return big, small


def test_items_are_the_masked_frames(caches):
    dataset = CacheFrameDataset(caches, crop_size=None)
    assert len(dataset) == 5
    assert dataset.strides == STRIDES
    seen = [(item["scene"], item["index"]) for item in dataset]
    assert seen == [("big", 1), ("big", 3), ("big", 4), ("small", 0), ("small", 2)]
    item = dataset[1]
    rgb, flow, labels = position_frame(3, 1, 40, 48)
    assert item["frame"].dtype == torch.uint8 and item["frame"].shape == (3, 40, 48)
    assert item["hop"].dtype == torch.float32 and item["hop"].shape == (2, 2, 40, 48)
    assert item["labels"].dtype == torch.uint8 and item["labels"].shape == (40, 48)
    assert "background" not in item
    np.testing.assert_array_equal(item["frame"].numpy(), rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(item["hop"].numpy(), flow)
    np.testing.assert_array_equal(item["labels"].numpy(), labels)
    with pytest.raises(IndexError):
        dataset[5]


def test_crop_is_one_window_for_frame_hop_labels_and_background(caches):
    dataset = CacheFrameDataset(caches[:1], crop_size=CROP, use_background=True, seed=3)
    height, width = CROP
    offsets = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            frame, hop = item["frame"].numpy(), item["hop"].numpy()
            top, left = int(frame[0, 0, 0]), int(frame[1, 0, 0])
            offsets.add((top, left))
            assert 0 <= top <= 40 - height and 0 <= left <= 48 - width
            rgb, flow, labels = position_frame(item["index"], 1, 40, 48)
            window = np.s_[top:top + height, left:left + width]
            np.testing.assert_array_equal(frame, rgb[window].transpose(2, 0, 1))
            np.testing.assert_array_equal(hop, flow[(..., *window)])
            np.testing.assert_array_equal(item["labels"].numpy(), labels[window])
            background = item["background"].numpy()
            assert background.shape == (3, height, width)
            # Red and green are constant over time, so the background keeps the position code.
            np.testing.assert_array_equal(background[:2], frame[:2])
    assert len(offsets) > 10  # the offsets do vary with epoch and index


def test_crops_are_reproducible_per_seed_epoch_and_index(caches):
    first = CacheFrameDataset(caches, crop_size=CROP, seed=7)
    second = CacheFrameDataset(caches, crop_size=CROP, seed=7)
    first.set_epoch(2)
    second.set_epoch(2)
    for index in reversed(range(len(first))):  # order of access does not matter
        torch.testing.assert_close(first[index]["frame"], second[index]["frame"])
    changed = []
    for index in range(3):  # the big cache's items, which have room to move
        before = first[index]["frame"]
        first.set_epoch(3)
        changed.append(not torch.equal(before, first[index]["frame"]))
        first.set_epoch(2)
    assert any(changed)


def test_small_frames_are_padded(caches):
    dataset = CacheFrameDataset(caches[1:], crop_size=CROP, use_background=True, seed=1)
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            labels = item["labels"].numpy()
            rows, columns = np.nonzero(labels != 85)
            top, left = rows.min(), columns.min()
            assert rows.max() - top + 1 == 24 and columns.max() - left + 1 == 30
            assert 0 <= top <= CROP[0] - 24 and 0 <= left <= CROP[1] - 30
            inside = np.s_[top:top + 24, left:left + 30]
            rgb, flow, truth = position_frame(item["index"], 2, 24, 30)
            frame, hop = item["frame"].numpy(), item["hop"].numpy()
            np.testing.assert_array_equal(labels[inside], truth)
            np.testing.assert_array_equal(frame[(slice(None), *inside)], rgb.transpose(2, 0, 1))
            np.testing.assert_array_equal(hop[(..., *inside)], flow)
            outside = np.ones(CROP, bool)
            outside[inside] = False
            assert outside.any()
            assert (labels[outside] == 85).all()
            assert (hop[..., outside] == 0).all()
            # Replicated edges: every padded pixel repeats the nearest frame pixel.
            expected = crop_or_pad(rgb.transpose(2, 0, 1), top=-top, left=-left,
                                   height=CROP[0], width=CROP[1], fill=None)
            np.testing.assert_array_equal(frame, expected)
            assert frame[0, 0, 0] == 0 and frame[1, -1, -1] == 29  # corners: edge values
            np.testing.assert_array_equal(item["background"].numpy()[:2], frame[:2])


def test_crop_or_pad_and_offsets():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(crop_or_pad(array, top=1, left=1, height=2, width=2, fill=0),
                                  [[5, 6], [9, 10]])
    np.testing.assert_array_equal(crop_or_pad(array, top=-1, left=3, height=2, width=2, fill=7),
                                  [[7, 7], [3, 7]])
    np.testing.assert_array_equal(crop_or_pad(array, top=-1, left=3, height=2, width=2,
                                              fill=None), [[3, 3], [3, 3]])
    rng = np.random.default_rng(0)
    offsets = {random_crop_offset(rng, (3, 10), (5, 8)) for _ in range(200)}
    assert {top for top, _ in offsets} == {-2, -1, 0}
    assert {left for _, left in offsets} == {0, 1, 2}


def test_background_is_the_ema_of_earlier_frames(caches):
    dataset = CacheFrameDataset(caches[:1], crop_size=None, use_background=True,
                                background_rate=0.5)
    frames = [position_frame(t, 1, 40, 48)[0] for t in range(6)]
    expected = list(running_backgrounds(frames, rate=0.5))
    for index, t in enumerate((1, 3, 4)):
        background = dataset[index]["background"].numpy()
        np.testing.assert_array_equal(background, expected[t].transpose(2, 0, 1))
    # Blue holds 10 t + 1: frame 3's background is the EMA over 1, 11, 21.
    assert dataset[1]["background"][2, 0, 0] == round(0.25 * 1 + 0.25 * 11 + 0.5 * 21)


def test_median_background_when_asked(caches):
    dataset = CacheFrameDataset(caches[:1], crop_size=None, use_background=True,
                                background_estimator="median")
    frames = [position_frame(t, 1, 40, 48)[0] for t in range(6)]
    expected = list(running_backgrounds(frames, estimator="median"))
    for index, t in enumerate((1, 3, 4)):
        np.testing.assert_array_equal(dataset[index]["background"].numpy(),
                                      expected[t].transpose(2, 0, 1))
    # One sample (frame 0, blue 1) until frame 6: the median is frame 0 itself, where the
    # EMA of the same frames would have moved towards frame 3's blue 31.
    assert dataset[2]["background"][2, 0, 0] == 1


def test_caches_with_other_strides_are_refused(caches, tmp_path):
    odd = write_cache(tmp_path / "odd.h5", cache_id=3, size=(40, 48), frames=2, masked={1},
                      strides=(1, 4))
    with pytest.raises(ValueError, match=r"odd\.h5.*strides \(1, 4\)"):
        CacheFrameDataset([*caches, odd])


def test_caches_without_masks_are_skipped_with_a_warning(caches, tmp_path, caplog):
    empty = write_cache(tmp_path / "empty.h5", cache_id=4, size=(40, 48), frames=2, masked=set())
    with caplog.at_level(logging.WARNING, logger="crossnet.data"):
        dataset = CacheFrameDataset([empty, *caches])
    assert "empty.h5" in caplog.text
    assert dataset.scenes == ["big", "small"]
    with pytest.raises(ValueError, match="none of the 1"):
        CacheFrameDataset([empty])


def test_duplicate_scene_names_are_refused(caches, tmp_path):
    (tmp_path / "other").mkdir()
    again = write_cache(tmp_path / "other" / "big.h5", cache_id=1, size=(40, 48), frames=2,
                        masked={1})
    with pytest.raises(ValueError, match="same scene name 'big'"):
        CacheFrameDataset([*caches, again])


def test_scene_balanced_weights(caches):
    dataset = CacheFrameDataset(caches)
    weights = scene_balanced_weights(dataset)
    assert weights.dtype == torch.float64 and weights.shape == (5,)
    torch.testing.assert_close(weights[:3].sum(), torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(weights[3:].sum(), torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(weights[:3], torch.full((3,), 1 / 6, dtype=torch.float64))
    sampler = WeightedRandomSampler(weights, num_samples=4000, replacement=True,
                                    generator=torch.Generator().manual_seed(0))
    drawn_big = sum(index < 3 for index in sampler) / 4000
    assert abs(drawn_big - 0.5) < 0.05


def test_dataloader_with_two_workers(caches):
    dataset = CacheFrameDataset(caches, crop_size=CROP, use_background=True, seed=5)
    dataset.set_epoch(1)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [len(batch["scene"]) for batch in batches] == [2, 2, 1]
    first = batches[0]
    assert first["frame"].shape == (2, 3, *CROP) and first["frame"].dtype == torch.uint8
    assert first["hop"].shape == (2, 2, 2, *CROP)
    assert first["labels"].shape == (2, *CROP)
    assert first["background"].shape == (2, 3, *CROP)
    assert first["scene"] == ["big", "big"]
    torch.testing.assert_close(first["index"], torch.tensor([1, 3]))
    # Workers produce exactly what the main process does for the same epoch.
    for key in ("frame", "hop", "labels", "background"):
        torch.testing.assert_close(batches[2][key][0], dataset[4][key])


def panning_cache(path: Path, *, frames: int = 8, pan: int = 2) -> Path:
    """A camera panning right at ``pan`` px/frame over a textured scene, 40x48, strides (1, 3),
    with the exact flow (frame t to t - k: u = pan k, v = 0); masks on every frame from 2."""
    rows, columns = np.mgrid[0:40, 0:48 + pan * frames].astype(np.float64)
    scene = (128 + 50 * np.sin(0.31 * columns + 0.17 * rows)
             + 40 * np.sin(-0.23 * columns + 0.29 * rows + 1))
    info = CacheInfo(strides=STRIDES, backend="test", weights_sha256="", size=(48, 40),
                     source_path=str(path), source_size=0, source_mtime=0.0, fps=0.0,
                     package_version="0")
    with CacheWriter.open(path, info=info) as writer:
        for t in range(frames):
            grey = np.clip(scene[:, pan * t:pan * t + 48], 0, 255).astype(np.uint8)
            flow = np.zeros((len(STRIDES), 2, 40, 48), np.float32)
            for s, k in enumerate(STRIDES):
                flow[s, 0] = pan * (t - max(t - k, 0))
            labels = np.zeros((40, 48), np.uint8) if t >= 2 else None
            writer.append(t, np.repeat(grey[..., None], 3, axis=2), flow, labels)
        return writer.finish()


def test_camera_motion_is_removed_from_the_whole_frame_before_cropping(tmp_path):
    cache = panning_cache(tmp_path / "pan.h5")
    plain = CacheFrameDataset([cache], crop_size=CROP, seed=3)
    compensated = CacheFrameDataset([cache], crop_size=CROP, seed=3, camera_motion="affine")
    for index in range(len(plain)):
        assert plain[index]["hop"].abs().max() >= 2.0
        hop = compensated[index]["hop"]
        assert hop.shape == plain[index]["hop"].shape
        assert hop.abs().max() < 0.05
    with pytest.raises(ValueError, match="unknown camera motion 'pan'"):
        CacheFrameDataset([cache], crop_size=CROP, camera_motion="pan")


def test_a_background_aligned_with_the_camera_follows_the_pan(tmp_path):
    cache = panning_cache(tmp_path / "pan.h5")
    still = CacheFrameDataset([cache], crop_size=None, use_background=True)
    aligned = CacheFrameDataset([cache], crop_size=None, use_background=True,
                                align_background=True)
    for index in range(2, len(still)):
        frame = aligned[index]["frame"].int()
        # The last 2 columns per frame are new to the camera; the rest has been seen.
        seen = (slice(None), slice(None), slice(0, 40))
        aligned_error = (aligned[index]["background"].int() - frame)[seen].abs().float().mean()
        still_error = (still[index]["background"].int() - frame)[seen].abs().float().mean()
        assert aligned_error < 2 and still_error > 20, (index, aligned_error, still_error)


def test_aligning_the_background_needs_stride_1(caches, tmp_path):
    odd = write_cache(tmp_path / "odd.h5", cache_id=3, size=(40, 48), frames=2, masked={1},
                      strides=(2, 4))
    with pytest.raises(ValueError, match="needs stride 1"):
        CacheFrameDataset([odd], crop_size=None, use_background=True, align_background=True)