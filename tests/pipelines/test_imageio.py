"""Tests for pipelines/imageio.py: colour order, bit depth, channels, labels, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.imageio import is_image_file, read_image_rgb, read_label_mask, write_png_atomic

CDNET_LABELS = np.array([0, 50, 85, 170, 255], dtype=np.uint8)


def _write(path: Path, image: np.ndarray) -> Path:
    if not cv2.imwrite(str(path), image):
        raise RuntimeError(f"cv2.imwrite failed for {path}")
    return path


def _pure_red_bgr(height: int = 8, width: int = 10) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 2] = 255  # OpenCV order: B, G, R
    return image


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_read_image_rgb_lossless_red_is_channel_0(tmp_path, suffix):
    rgb = read_image_rgb(_write(tmp_path / f"red{suffix}", _pure_red_bgr()))
    assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], 255)
    np.testing.assert_array_equal(rgb[..., 1:], 0)


def test_read_image_rgb_jpeg_red_is_channel_0(tmp_path):
    rgb = read_image_rgb(_write(tmp_path / "red.jpg", _pure_red_bgr(16, 16)))
    # JPEG chroma subsampling blurs the colour a little; a tolerance of 20 levels is ample.
    assert rgb[..., 0].min() >= 235
    assert rgb[..., 1:].max() <= 20


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg"])
def test_read_image_rgb_grayscale_is_replicated(tmp_path, suffix):
    gray = np.full((6, 7), 128, np.uint8)
    gray[:, :3] = 40
    rgb = read_image_rgb(_write(tmp_path / f"gray{suffix}", gray))
    assert rgb.shape == (6, 7, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    tolerance = 3 if suffix == ".jpg" else 0
    np.testing.assert_allclose(rgb[..., 0].astype(int), gray.astype(int), atol=tolerance)


def test_read_image_rgb_scales_16_bit_to_8_bit(tmp_path):
    gray16 = np.array([[0, 257 * 100, 65535, 257 * 3]], dtype=np.uint16)
    rgb = read_image_rgb(_write(tmp_path / "deep.png", gray16))
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 100, 255, 3])

    bgr16 = np.zeros((2, 2, 3), np.uint16)
    bgr16[..., 2] = 65535
    rgb = read_image_rgb(_write(tmp_path / "deep_red.png", bgr16))
    np.testing.assert_array_equal(rgb[..., 0], 255)
    np.testing.assert_array_equal(rgb[..., 1:], 0)


def test_read_image_rgb_drops_alpha(tmp_path):
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0] = 200  # blue
    bgra[..., 3] = 0  # fully transparent: the colour must survive anyway
    rgb = read_image_rgb(_write(tmp_path / "alpha.png", bgra))
    assert rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgb[..., 2], 200)
    np.testing.assert_array_equal(rgb[..., :2], 0)


def test_read_image_rgb_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nothere.png: no such file"):
        read_image_rgb(tmp_path / "nothere.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_text("not an image")
    with pytest.raises(InputError, match="corrupt.png: not a readable image"):
        read_image_rgb(corrupt)
    with pytest.raises(InputError, match="corrupt.png"):
        read_label_mask(corrupt)


def test_read_label_mask_keeps_cdnet_labels_in_gray_png_and_bmp(tmp_path):
    labels = np.tile(CDNET_LABELS, (3, 2))
    for suffix in (".png", ".bmp"):
        mask = read_label_mask(_write(tmp_path / f"gt{suffix}", labels))
        assert mask.dtype == np.uint8 and mask.shape == labels.shape
        np.testing.assert_array_equal(mask, labels)


def test_read_label_mask_takes_one_channel_when_channels_are_equal(tmp_path):
    # SBI stores GT as 3-channel PNG with 0/170/255 and stray 1s; the values must survive
    # exactly (a gray conversion would keep them too, but only by luck of equal channels).
    labels = np.array([[0, 170, 255, 1]], np.uint8)
    mask = read_label_mask(_write(tmp_path / "gt.png", np.dstack([labels] * 3)))
    np.testing.assert_array_equal(mask, labels)


def test_read_label_mask_converts_differing_channels_to_gray(tmp_path):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 2] = 255  # pure red
    mask = read_label_mask(_write(tmp_path / "red.png", bgr))
    np.testing.assert_array_equal(mask, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert mask.shape == (2, 3)
    assert int(mask[0, 0]) == 76  # 0.299 * 255, the luma weight of red


def test_read_label_mask_16_bit(tmp_path):
    labels16 = np.array([[0, 85, 255]], np.uint16)
    mask = read_label_mask(_write(tmp_path / "a.png", labels16))
    np.testing.assert_array_equal(mask, [[0, 85, 255]])
    full16 = np.array([[0, 65535]], np.uint16)
    np.testing.assert_array_equal(read_label_mask(_write(tmp_path / "b.png", full16)), [[0, 255]])


def test_write_png_atomic_round_trips_and_leaves_no_temporary(tmp_path):
    mask = np.tile(CDNET_LABELS, (4, 1))
    target = tmp_path / "mask.png"
    write_png_atomic(target, mask)
    np.testing.assert_array_equal(read_label_mask(target), mask)

    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[1, 1] = (10, 20, 30)
    write_png_atomic(target, rgb)  # overwrites
    np.testing.assert_array_equal(read_image_rgb(target), rgb)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mask.png"]


def test_write_png_atomic_uses_umask_permissions(tmp_path):
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    target = tmp_path / "mask.png"
    write_png_atomic(target, np.zeros((2, 2), np.uint8))
    assert target.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_write_png_atomic_failure_keeps_old_file_and_removes_temporary(tmp_path, monkeypatch):
    target = tmp_path / "mask.png"
    write_png_atomic(target, np.full((2, 2), 255, np.uint8))

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomic(target, np.zeros((2, 2), np.uint8))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_label_mask(target), 255)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mask.png"]


def test_write_png_atomic_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="float32"):
        write_png_atomic(tmp_path / "x.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        write_png_atomic(tmp_path / "x.png", np.zeros((2, 2, 2), np.uint8))


def test_is_image_file_is_case_insensitive():
    assert is_image_file("hand_segmented_00247.BMP")
    assert is_image_file(Path("a/in000001.jpg"))
    assert not is_image_file("temporalROI.txt")
    assert not is_image_file("clip.mp4")
