"""Tests for pipelines/sources.py: numbering, colour order, resizing, errors, real videos."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.imageio import read_image_rgb
from pipelines.scenes import Scene
from pipelines.sources import (
    Frame,
    FrameFolderSource,
    Source,
    StreamSource,
    VideoSource,
    check_size,
    open_source,
    resize_labels,
    resize_rgb,
    trailing_integer,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")

# A port that refuses connections at once: nothing listens on the discard port here.
REFUSED_URL = "http://127.0.0.1:9/clip.mp4"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Candela_m1.10_000042.png", 42),
        ("frame_7.jpg", 7),
        ("gt0001.png", 1),
        ("b00247.bmp", 247),
        ("in000000.jpg", 0),
        ("hand_segmented_00247.BMP", 247),
        ("test_000155.png", 155),
        ("video2_frame10.png", 10),
        ("dir/sub1/frame_3.png", 3),
        ("background.png", None),
        ("frame_.png", None),
    ],
)
def test_trailing_integer(name, expected):
    assert trailing_integer(name) == expected
    assert trailing_integer(Path(name)) == expected


@pytest.mark.parametrize("bad", [(0, 10), (10,), (10, -2), (1.5, 2), (True, 3), (1, 2, 3)])
def test_check_size_rejects_bad_sizes(bad):
    with pytest.raises(InputError, match="size="):
        check_size(bad)


def test_check_size_accepts_lists_and_numpy_ints():
    assert check_size([64, np.int64(48)]) == (64, 48)
    assert check_size(None) is None


def test_resize_rgb_uses_area_to_shrink_and_linear_to_enlarge():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    small = resize_rgb(rgb, (8, 6))
    assert small.shape == (6, 8, 3)
    np.testing.assert_array_equal(small, cv2.resize(rgb, (8, 6), interpolation=cv2.INTER_AREA))
    # Area averaging of 2x2 blocks: the top-left output is the mean of the top-left block.
    assert abs(int(small[0, 0, 0]) - rgb[:2, :2, 0].mean()) <= 0.5
    large = resize_rgb(rgb, (32, 24))
    np.testing.assert_array_equal(
        large, cv2.resize(rgb, (32, 24), interpolation=cv2.INTER_LINEAR)
    )
    assert resize_rgb(rgb, (16, 12)) is rgb
    assert resize_rgb(rgb, None) is rgb


def test_resize_labels_creates_no_new_labels():
    labels = np.zeros((10, 10), np.uint8)
    labels[:5] = 170
    labels[5:, :5] = 255
    labels[5:, 5:] = 85
    for size in [(7, 3), (23, 31)]:
        resized = resize_labels(labels, size)
        assert resized.shape == (size[1], size[0]) and resized.dtype == np.uint8
        assert set(np.unique(resized)) <= {85, 170, 255}
    roi = np.zeros((4, 4), bool)
    roi[:, :2] = True
    resized = resize_labels(roi, (8, 2))
    assert resized.dtype == bool
    np.testing.assert_array_equal(resized, np.repeat([[True] * 4 + [False] * 4], 2, axis=0))


def _write_numbered_frames(folder: Path, names: list[str], *, size=(10, 8)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        number = trailing_integer(name)
        bgr = np.zeros((size[1], size[0], 3), np.uint8)
        bgr[..., 2] = 255  # red
        bgr[0, 0] = (0, number, 0)  # green channel of the top-left pixel holds the number
        if not cv2.imwrite(str(folder / name), bgr):
            raise RuntimeError(name)


def test_frame_folder_orders_by_trailing_integer_not_by_name(tmp_path):
    names = ["frame_10.png", "frame_2.png", "frame_1.png", "frame_11.png", "frame_9.png"]
    _write_numbered_frames(tmp_path / "clip", names)
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    (tmp_path / "clip" / ".DS_Store").write_bytes(b"\0")
    source = FrameFolderSource(tmp_path / "clip")
    assert isinstance(source, Source)
    assert (source.name, source.fps, source.num_frames) == ("clip", None, 5)
    assert source.frame_size == (10, 8)
    for _ in range(2):  # a second pass reopens and gives the same frames
        frames = list(source)
        assert [frame.number for frame in frames] == [1, 2, 9, 10, 11]
        for frame in frames:
            assert isinstance(frame, Frame) and frame.mask is None
            assert frame.rgb.shape == (8, 10, 3) and frame.rgb.dtype == np.uint8
            assert frame.rgb[0, 0, 1] == frame.number
            np.testing.assert_array_equal(frame.rgb[1:, :, 0], 255)
            np.testing.assert_array_equal(frame.rgb[1:, :, 1:], 0)


def test_frame_folder_resizes(tmp_path):
    _write_numbered_frames(tmp_path / "clip", ["a1.png", "a2.png"], size=(40, 30))
    source = FrameFolderSource(tmp_path / "clip", size=(20, 10))
    assert source.frame_size == (20, 10)
    frames = list(source)
    assert [frame.rgb.shape for frame in frames] == [(10, 20, 3)] * 2
    np.testing.assert_array_equal(frames[0].rgb[5:, :, 0], 255)


def test_frame_folder_without_number_names_the_file(tmp_path):
    _write_numbered_frames(tmp_path / "clip", ["frame_1.png"])
    cv2.imwrite(str(tmp_path / "clip" / "background.png"), np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(InputError, match="background.png: image file without a frame number"):
        FrameFolderSource(tmp_path / "clip")


def test_frame_folder_duplicate_numbers(tmp_path):
    _write_numbered_frames(tmp_path / "clip", ["frame_1.png", "frame_01.jpg"])
    with pytest.raises(InputError, match="both have frame number 1"):
        FrameFolderSource(tmp_path / "clip")


def test_frame_folder_differing_sizes(tmp_path):
    _write_numbered_frames(tmp_path / "clip", ["f1.png", "f2.png"], size=(10, 8))
    _write_numbered_frames(tmp_path / "clip", ["f3.png"], size=(12, 8))
    with pytest.raises(InputError, match=r"f3.png: frame size 12x8 differs from 10x8"):
        list(FrameFolderSource(tmp_path / "clip"))
    frames = list(FrameFolderSource(tmp_path / "clip", size=(6, 4)))
    assert [frame.rgb.shape for frame in frames] == [(4, 6, 3)] * 3


def _write_video(path: Path, fourcc: str, *, num_frames: int, size=(64, 48), fps=12.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with {fourcc}")
    for index in range(num_frames):
        bgr = np.zeros((size[1], size[0], 3), np.uint8)
        bgr[..., 2] = 255  # pure red
        bgr[:, : 4 * index] = 0  # a black band that grows by 4 columns per frame
        writer.write(bgr)
    writer.release()


@pytest.mark.parametrize(("fourcc", "suffix"), [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_source_numbers_colours_and_metadata(tmp_path, fourcc, suffix):
    path = tmp_path / f"clip{suffix}"
    _write_video(path, fourcc, num_frames=6)
    source = VideoSource(path)
    assert isinstance(source, Source)
    assert (source.name, source.path) == ("clip", str(path))
    assert source.fps == pytest.approx(12.0)
    assert source.num_frames == 6
    assert source.frame_size == (64, 48)
    for _ in range(2):
        frames = list(source)
        assert [frame.number for frame in frames] == [1, 2, 3, 4, 5, 6]
        for index, frame in enumerate(frames):
            assert frame.rgb.shape == (48, 64, 3) and frame.mask is None
            # Lossy codecs: compare away from the band's edge with a tolerance of 40 levels.
            red_part = frame.rgb[8:-8, 4 * index + 8 :]
            assert red_part[..., 0].min() >= 215, index
            assert red_part[..., 1:].max() <= 40, index
            if index > 2:
                assert frame.rgb[8:-8, : 4 * index - 8].max() <= 40, index


@pytest.mark.parametrize(("fourcc", "suffix"), [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_source_resizes(tmp_path, fourcc, suffix):
    path = tmp_path / f"clip{suffix}"
    _write_video(path, fourcc, num_frames=3)
    source = VideoSource(path, size=(32, 20))
    assert source.frame_size == (32, 20)
    assert [frame.rgb.shape for frame in source] == [(20, 32, 3)] * 3


def test_video_source_rejects_non_videos(tmp_path):
    text = tmp_path / "x.mp4"
    text.write_text("this is not a video")
    with pytest.raises(InputError, match="x.mp4: not a readable video"):
        VideoSource(text)
    with pytest.raises(InputError, match="missing.mp4: no such file"):
        VideoSource(tmp_path / "missing.mp4")


def test_video_source_without_frames(tmp_path):
    empty = tmp_path / "empty.avi"
    _write_video(empty, "MJPG", num_frames=0)
    with pytest.raises(InputError, match=r"empty.avi: not a readable video \(OpenCV decoded no"):
        VideoSource(empty)


@pytest.mark.parametrize(("announced", "called_truncated"), [(21, False), (22, False),
                                                             (23, True), (40, True)])
def test_only_a_large_shortfall_is_called_truncated(tmp_path, caplog, announced,
                                                    called_truncated):
    # 20 frames decode; below 90 % of what the container announces the log says so.
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (32, 24))
    for value in range(20):
        writer.write(np.full((24, 32, 3), value * 10, np.uint8))
    writer.release()
    source = VideoSource(video)
    source.num_frames = announced  # what a container that over-counts would say
    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        assert sum(1 for _ in source) == 20
    assert f"decoding stopped after 20 of the {announced} frames" in caplog.text
    assert ("looks truncated or damaged" in caplog.text) == called_truncated


def test_video_source_truncated_file_ends_early_with_warning(tmp_path, caplog):
    whole = tmp_path / "whole.avi"
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (64, 48))
    for _ in range(20):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(0.6 * len(data))])  # the header still announces 20 frames

    source = VideoSource(cut)
    assert source.num_frames == 20
    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        numbers = [frame.number for frame in source]
    assert 0 < len(numbers) < 20
    assert numbers == list(range(1, len(numbers) + 1))
    assert f"decoding stopped after {len(numbers)} of the 20 frames" in caplog.text


def test_stream_source_that_cannot_open(tmp_path):
    with pytest.raises(InputError, match="could not open the stream"):
        StreamSource(REFUSED_URL)


def test_open_source_dispatch(tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, "MJPG", num_frames=2)
    assert isinstance(open_source(video), VideoSource)
    assert isinstance(open_source(str(video), size=(32, 24)), VideoSource)

    _write_numbered_frames(tmp_path / "frames", ["f1.png", "f2.png"])
    source = open_source(tmp_path / "frames", size=(4, 2))
    assert isinstance(source, FrameFolderSource) and source.frame_size == (4, 2)

    scene = tmp_path / "scene"
    _write_numbered_frames(scene / "input", ["in000001.png"])
    (scene / "groundtruth").mkdir()
    cv2.imwrite(str(scene / "groundtruth" / "gt000001.png"), np.zeros((8, 10), np.uint8))
    assert isinstance(open_source(scene), Scene)

    with pytest.raises(InputError, match="could not open the stream"):
        open_source(REFUSED_URL)
    with pytest.raises(InputError, match="rtsp://127.0.0.1:9/live: could not open the stream"):
        open_source("rtsp://127.0.0.1:9/live")


def test_open_source_digits_mean_a_camera():
    # No camera index 97 exists on a test machine, so this only checks the dispatch.
    with pytest.raises(InputError, match="97: could not open the camera"):
        open_source("97")


def test_open_source_errors(tmp_path):
    with pytest.raises(InputError, match="nothing: no such file or folder"):
        open_source(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: the folder is empty"):
        open_source(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="docs: no image files"):
        open_source(tmp_path / "docs")
    text = tmp_path / "x.mp4"
    text.write_text("hello")
    with pytest.raises(InputError, match="x.mp4: not a readable video"):
        open_source(text)


# Values from the data's MANIFEST.md: (width, height), fps, frames announced by the container.
REAL_VIDEOS = {
    "road_640x360.avi": ((640, 360), 30.0, 374),
    "highway2_320x240.avi": ((320, 240), 25.0, 750),
    "escalator.avi": ((160, 130), 15.0, 198),
    "shop.avi": ((192, 144), 15.0, 157),
    "vtest.avi": ((480, 360), 10.0, 795),
    "Candela_m1_10.mp4": ((352, 288), 30.0, 350),
}


@needs_data
@pytest.mark.parametrize("name", sorted(REAL_VIDEOS))
def test_real_videos_open(name):
    frame_size, fps, num_frames = REAL_VIDEOS[name]
    source = open_source(DATA / "videos" / name)
    assert isinstance(source, VideoSource)
    assert source.frame_size == frame_size
    assert source.fps == pytest.approx(fps)
    # Container counts may differ from decoded counts by a few frames (escalator, shop).
    assert abs(source.num_frames - num_frames) <= 3
    frames = list(itertools.islice(source, 3))
    assert [frame.number for frame in frames] == [1, 2, 3]
    assert all(frame.rgb.shape == (frame_size[1], frame_size[0], 3) for frame in frames)


@needs_data
def test_real_video_with_short_tail_warns(caplog):
    # MANIFEST: highway2 announces 750 frames, 748 decode.
    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        count = sum(1 for _ in VideoSource(DATA / "videos" / "highway2_320x240.avi"))
    assert count == 748
    assert "decoding stopped after 748 of the 750 frames" in caplog.text
    assert "truncated" not in caplog.text  # two frames short: common, not called damaged


@needs_data
def test_real_video_matches_its_frame_folder_in_rgb_order():
    # MANIFEST: decoded frame k (0-based) of Candela_m1_10.mp4 matches Candela_m1.10_%06d.png
    # (mean abs diff 3.4 at k=1). Swapped channels would give a far larger difference.
    frames = list(itertools.islice(VideoSource(DATA / "videos" / "Candela_m1_10.mp4"), 2))
    folder = DATA / "SBI2015" / "Candela_m1.10" / "input"
    png = read_image_rgb(folder / "Candela_m1.10_000001.png").astype(float)
    difference = np.abs(frames[1].rgb.astype(float) - png).mean()
    assert difference < 4.0
    swapped = np.abs(frames[1].rgb[..., ::-1].astype(float) - png).mean()
    assert swapped > difference + 5.0


def test_a_mixed_size_folder_knows_its_largest_frame_from_the_file_headers(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    small, large = np.zeros((24, 32, 3), np.uint8), np.zeros((480, 640, 3), np.uint8)
    cv2.imwrite(str(folder / "f1.png"), small)
    cv2.imwrite(str(folder / "f2.jpg"), small)
    cv2.imwrite(str(folder / "f3.tif"), np.zeros((960, 1280, 3), np.uint8))  # header not read
    for name, frame in (("f4.bmp", np.zeros((240, 320, 3), np.uint8)), ("f5.jpg", large),
                        ("f6.png", small)):
        cv2.imwrite(str(folder / name), frame)
    mixed = FrameFolderSource(folder, mixed_sizes=True)
    assert mixed.frame_size == (32, 24) and mixed.max_frame_size == (640, 480)
    cv2.imwrite(str(folder / "f7.png"), np.zeros((500, 700), np.uint8))  # grey, the largest
    assert FrameFolderSource(folder, mixed_sizes=True).max_frame_size == (700, 500)
    # Frames resized to a size, or refused when they differ: the frame size is the largest.
    assert FrameFolderSource(folder, size=(64, 48)).max_frame_size == (64, 48)
    assert FrameFolderSource(folder).max_frame_size == (32, 24)


def test_a_scene_folder_without_its_ground_truth_is_named_as_such(tmp_path):
    scene = tmp_path / "rain"
    (scene / "in").mkdir(parents=True)
    for number in (1, 2):
        cv2.imwrite(str(scene / "in" / f"in{number:06d}.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(scene / "ROI.bmp"), np.full((8, 8), 255, np.uint8))
    with pytest.raises(InputError, match=r"rain: has in/ and ROI.bmp as a scene folder does, "
                       r"but no groundtruth/ folder; add it, or give .*rain/in to use"):
        FrameFolderSource(scene)
    assert FrameFolderSource(scene / "in").num_frames == 2
    (scene / "in").rename(scene / "frames")  # no frame folder beside it: the usual message
    with pytest.raises(InputError, match="ROI.bmp: image file without a frame number"):
        FrameFolderSource(scene)


def test_a_jpeg_header_padded_with_fill_bytes_still_gives_its_size(tmp_path):
    from pipelines.sources import _declared_size

    encoded = cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8))[1].tobytes()
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(encoded[:2] + b"\xff\xff\xff" + encoded[2:])  # fill before a marker
    assert cv2.imread(str(padded)).shape == (30, 50, 3)
    assert _declared_size(padded) == (50, 30)
    (tmp_path / "cut.jpg").write_bytes(encoded[:40])  # a header that ends early: unknown
    assert _declared_size(tmp_path / "cut.jpg") is None
