"""Property-based fuzzing of the readers: whatever bytes or folder layout a user has, a reader
either loads it or raises InputError (the one-line CLI error); never another exception.

Inputs are random bytes, and valid files damaged the way real files get damaged (cut short,
bytes overwritten), written under the suffixes the readers dispatch on. Examples stay few and
tiny so the file runs in seconds; hypothesis keeps failing examples in .hypothesis/ for reruns.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.errors import InputError
from pipelines.imageio import read_image_rgb, read_label_mask
from pipelines.scenes import find_scenes, open_scene
from pipelines.sources import FrameFolderSource, VideoSource, open_source

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _encoded_image(suffix: str, rng: np.random.Generator) -> bytes:
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def _encoded_video(suffix: str, frames: int = 4) -> bytes:
    folder = Path(tempfile.mkdtemp())
    try:
        path = folder / f"clip{suffix}"
        fourcc = "mp4v" if suffix == ".mp4" else "MJPG"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (16, 12))
        rng = np.random.default_rng(0)
        for _ in range(frames):
            writer.write(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        writer.release()
        return path.read_bytes()
    finally:
        shutil.rmtree(folder)


VALID_IMAGES = {suffix: _encoded_image(suffix, np.random.default_rng(1))
                for suffix in (".png", ".jpg", ".bmp")}
VALID_VIDEOS = {suffix: _encoded_video(suffix) for suffix in (".mp4", ".avi")}


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """``valid`` cut short and/or with a few bytes overwritten, or pure random bytes."""
    kind = draw(st.sampled_from(["random", "truncated", "overwritten", "both"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    data = bytearray(valid)
    if kind in ("truncated", "both"):
        data = data[:draw(st.integers(0, len(data)))]
    if kind in ("overwritten", "both") and data:
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    return bytes(data)


def _fresh(tmp_path: Path) -> Path:
    """A new empty folder per example (the fixture's tmp_path is shared by all examples)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
@FUZZ
@given(data=st.data())
def test_image_readers_load_or_raise_input_error(tmp_path, suffix, data):
    path = _fresh(tmp_path) / f"in000001{suffix}"
    path.write_bytes(data.draw(damaged(VALID_IMAGES[suffix])))
    for read in (read_image_rgb, read_label_mask):
        try:
            image = read(path)
        except InputError as error:
            assert str(path) in str(error)
            continue
        assert image.dtype == np.uint8
        assert image.ndim == (3 if read is read_image_rgb else 2)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
@FUZZ
@given(data=st.data())
def test_video_reader_loads_or_raises_input_error(tmp_path, suffix, data):
    path = _fresh(tmp_path) / f"clip{suffix}"
    path.write_bytes(data.draw(damaged(VALID_VIDEOS[suffix])))
    size = data.draw(st.sampled_from([None, (8, 6)]))
    try:
        source = VideoSource(path, size=size)
        frames = list(source)
    except InputError as error:
        assert str(path) in str(error)
        return
    assert frames, "a video that opens yields at least one frame"
    shapes = {frame.rgb.shape for frame in frames}
    assert shapes == {(source.frame_size[1], source.frame_size[0], 3)}
    assert all(frame.rgb.dtype == np.uint8 for frame in frames)


# A scene folder's parts, each present or not, valid or damaged: frames under input/ or in/,
# ground truth, ROI.bmp, temporalROI.txt, Wallflower and HOFAM demo files, stray files.
_FRAME_NAMES = st.sampled_from(["in000001.png", "in000002.png", "in000003.jpg", "frame_7.jpg",
                                "b00001.bmp", "background.png", ".hidden.png", "notes.txt"])
_GT_NAMES = st.sampled_from(["gt000001.png", "gt000002.png", "gt0007.png", "gt.png",
                             "hand_segmented_00001.BMP"])


@st.composite
def image_bytes(draw) -> bytes:
    choice = draw(st.sampled_from(["valid", "other size", "gray", "16 bit", "alpha", "damaged"]))
    rng = np.random.default_rng(draw(st.integers(0, 3)))
    if choice == "damaged":
        return draw(damaged(VALID_IMAGES[".png"]))
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    if choice == "other size":
        image = image[:8]
    elif choice == "gray":
        image = image[:, :, 0]
    elif choice == "16 bit":
        image = image.astype(np.uint16) * 257
    elif choice == "alpha":
        image = np.dstack([image, np.full((12, 16), 255, np.uint8)])
    return cv2.imencode(".png", image)[1].tobytes()


@st.composite
def scene_layout(draw) -> dict[str, bytes | None]:
    """Relative path -> content (None: a folder)."""
    layout: dict[str, bytes | None] = {}
    frame_folder = draw(st.sampled_from(["input", "in", "", "demo_data"]))
    for name in draw(st.lists(_FRAME_NAMES, max_size=4, unique=True)):
        if frame_folder == "demo_data":
            name = f"test_{draw(st.integers(0, 3)):06d}.png"
        layout[f"{frame_folder}/{name}" if frame_folder else name] = draw(image_bytes())
    if frame_folder:
        layout.setdefault(frame_folder, None)
    if draw(st.booleans()):
        layout["groundtruth"] = None
        for name in draw(st.lists(_GT_NAMES, max_size=3, unique=True)):
            layout[f"groundtruth/{name}"] = draw(image_bytes())
    if draw(st.booleans()):
        layout["ROI.bmp"] = draw(image_bytes())
    if draw(st.booleans()):
        layout["temporalROI.txt"] = draw(st.one_of(
            st.sampled_from([b"1 2", b"2 1", b"1", b"a b", b"-3 7", b"", b"1 2 3"]),
            st.binary(max_size=20)))
    return layout


def _build(root: Path, layout: dict[str, bytes | None]) -> Path:
    scene = root / "scene"
    scene.mkdir()
    for relative, content in sorted(layout.items(), key=lambda item: item[0].count("/")):
        path = scene / relative
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return scene


def _consume(source) -> None:
    for frame in source:
        assert frame.rgb.dtype == np.uint8 and frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3
        if frame.mask is not None:
            assert frame.mask.dtype == np.uint8 and frame.mask.shape == frame.rgb.shape[:2]


@FUZZ
@given(layout=scene_layout(), size=st.sampled_from([None, (8, 6)]))
def test_scene_and_folder_readers_load_or_raise_input_error(tmp_path, layout, size):
    scene = _build(_fresh(tmp_path), layout)
    readers = [lambda: [open_scene(scene, size=size)],
               lambda: find_scenes([scene], size=size),
               lambda: [open_source(scene, size=size)]]
    if (scene / "input").is_dir():
        readers.append(lambda: [FrameFolderSource(scene / "input", size=size)])
    for read in readers:
        try:
            for source in read():
                _consume(source)
        except InputError:
            pass


@FUZZ
@given(layout=scene_layout())
def test_a_batch_of_scenes_collects_failures_and_loads_the_rest(tmp_path, layout):
    root = _fresh(tmp_path)
    _build(root, layout)
    good = root / "good"
    (good / "input").mkdir(parents=True)
    (good / "groundtruth").mkdir()
    for number in (1, 2):
        (good / "input" / f"in{number:06d}.png").write_bytes(VALID_IMAGES[".png"])
    failed: list[tuple[str, str]] = []
    scenes = find_scenes([root], failed=failed)
    assert "good" in {scene.name for scene in scenes}
    assert all(isinstance(path, str) and reason for path, reason in failed)
