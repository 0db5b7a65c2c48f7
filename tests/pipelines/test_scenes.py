"""Tests for pipelines/scenes.py: every layout, pairing, ROI, errors, and the real scenes."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.scenes import (
    CDNET,
    HOFAM_DEMO,
    UCSD,
    WALLFLOWER,
    Scene,
    detect_layout,
    find_scenes,
    is_scene,
    open_scene,
)
from pipelines.sources import Source, open_source

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")

WIDTH, HEIGHT = 12, 10


def _imwrite(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise RuntimeError(f"cv2.imwrite failed for {path}")


def _frame_bgr(number: int, *, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A red frame whose top-left pixel's green value is the frame number."""
    bgr = np.zeros((height, width, 3), np.uint8)
    bgr[..., 2] = 255
    bgr[0, 0] = (0, number, 0)
    return bgr


def _gt(number: int, *, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A CDnet label mask whose bottom-right pixel is the frame number."""
    labels = np.zeros((height, width), np.uint8)
    labels[: height // 2] = 170
    labels[height // 2 :, : width // 2] = 255
    labels[-1, -1] = number
    return labels


def _cdnet_scene(root: Path, numbers, gt_numbers, *, name_format="in{:06d}.png") -> Path:
    for number in numbers:
        _imwrite(root / "input" / name_format.format(number), _frame_bgr(number))
    (root / "groundtruth").mkdir(parents=True, exist_ok=True)
    for number in gt_numbers:
        _imwrite(root / "groundtruth" / f"gt{number:06d}.png", _gt(number))
    return root


def test_cdnet_scene_pairs_frames_and_masks_by_number(tmp_path):
    root = _cdnet_scene(tmp_path / "highway", range(1, 6), [1, 2, 4, 5])
    roi = np.full((HEIGHT, WIDTH), 255, np.uint8)
    roi[:, :3] = 0
    _imwrite(root / "ROI.bmp", roi)
    (root / "temporalROI.txt").write_text("2 4\n")

    scene = open_scene(root)
    assert isinstance(scene, Source)
    assert (scene.name, scene.layout, scene.fps) == ("highway", CDNET, None)
    assert scene.num_frames == 5 and scene.frame_size == (WIDTH, HEIGHT)
    assert scene.frame_numbers == (1, 2, 3, 4, 5)
    assert scene.gt_numbers == (1, 2, 4, 5)
    assert scene.temporal_roi == (2, 4)
    assert scene.scored_numbers == (2, 4)
    assert scene.roi.dtype == bool and scene.roi.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(scene.roi, roi > 0)

    frames = list(scene)
    assert [frame.number for frame in frames] == [1, 2, 3, 4, 5]
    for frame in frames:
        assert frame.rgb[0, 0, 1] == frame.number
        np.testing.assert_array_equal(frame.rgb[1:, :, 0], 255)
        if frame.number == 3:
            assert frame.mask is None
        else:
            np.testing.assert_array_equal(frame.mask, _gt(frame.number))
    assert scene.read_frame(4).mask[-1, -1] == 4
    with pytest.raises(KeyError, match="no frame number 9"):
        scene.read_frame(9)


def test_sbi_names_pair_by_trailing_integer_and_keep_raw_labels(tmp_path):
    root = tmp_path / "Candela_m1.10"
    for number in range(3):
        _imwrite(root / "input" / f"Candela_m1.10_{number:06d}.png", _frame_bgr(number))
        labels = np.array([[0, 170, 255, 1]], np.uint8).repeat(HEIGHT, 0).repeat(3, 1)
        labels[0, 0] = number
        _imwrite(root / "groundtruth" / f"gt{number:06d}.png", np.dstack([labels] * 3))
    (root / "temporalROI.txt").write_text("1 227")  # reaches past the frames: kept as is

    scene = open_scene(root)
    assert scene.frame_numbers == (0, 1, 2) and scene.gt_numbers == (0, 1, 2)
    assert scene.temporal_roi == (1, 227)
    assert scene.scored_numbers == (1, 2)
    for frame in scene:
        assert frame.rgb[0, 0, 1] == frame.number
        assert frame.mask[0, 0] == frame.number
        assert set(np.unique(frame.mask[1:])) == {0, 1, 170, 255}


def test_ground_truth_without_frame_is_ignored_with_warning(tmp_path, caplog):
    root = _cdnet_scene(tmp_path / "s", [1, 2], [1, 2, 7])
    with caplog.at_level(logging.WARNING, logger="pipelines.scenes"):
        scene = open_scene(root)
    assert scene.gt_numbers == (1, 2)
    assert "gt000007.png" in caplog.text and "no frame" in caplog.text


def test_ground_truth_size_mismatch_names_the_file_and_sizes(tmp_path):
    root = _cdnet_scene(tmp_path / "s", [1, 2], [1])
    _imwrite(root / "groundtruth" / "gt000002.png", np.zeros((HEIGHT, WIDTH + 4), np.uint8))
    scene = open_scene(root)
    with pytest.raises(InputError, match=r"gt000002.png: ground-truth size 16x10 differs from "
                                         r"the frame size 12x10"):
        list(scene)


def test_roi_size_mismatch_and_bad_temporal_roi(tmp_path):
    root = _cdnet_scene(tmp_path / "s", [1], [1])
    _imwrite(root / "ROI.bmp", np.zeros((3, 3), np.uint8))
    with pytest.raises(InputError, match=r"ROI.bmp: ROI size 3x3 differs from the frame size"):
        open_scene(root)
    (root / "ROI.bmp").unlink()
    (root / "temporalROI.txt").write_text("from 1 to 9")
    with pytest.raises(InputError, match="temporalROI.txt: expected two frame numbers"):
        open_scene(root)


def test_frames_of_differing_sizes(tmp_path):
    root = _cdnet_scene(tmp_path / "s", [1], [])
    _imwrite(root / "input" / "in000002.png", _frame_bgr(2, width=WIDTH * 2))
    with pytest.raises(InputError, match=r"in000002.png: frame size 24x10 differs"):
        list(open_scene(root))
    assert [frame.rgb.shape for frame in open_scene(root, size=(6, 5))] == [(5, 6, 3)] * 2


def test_resize_applies_to_frames_masks_and_roi(tmp_path):
    root = _cdnet_scene(tmp_path / "s", [1, 2], [1, 2])
    roi = np.zeros((HEIGHT, WIDTH), np.uint8)
    roi[:, WIDTH // 2 :] = 255
    _imwrite(root / "ROI.bmp", roi)
    scene = open_scene(root, size=(24, 20))
    assert scene.frame_size == (24, 20) and scene.native_size == (WIDTH, HEIGHT)
    assert scene.roi.shape == (20, 24)
    np.testing.assert_array_equal(scene.roi[:, 12:], True)
    np.testing.assert_array_equal(scene.roi[:, :12], False)
    for frame in scene:
        assert frame.rgb.shape == (20, 24, 3) and frame.mask.shape == (20, 24)
        assert set(np.unique(frame.mask)) <= {0, 170, 255, frame.number}
        np.testing.assert_array_equal(frame.mask[:10], 170)  # nearest keeps the label bands


def test_ucsd_layout_with_grayscale_jpeg(tmp_path):
    root = tmp_path / "birds"
    for number in (75, 76, 77):
        _imwrite(root / "in" / f"frame_{number}.jpg", np.full((HEIGHT, WIDTH), 100, np.uint8))
        _imwrite(root / "groundtruth" / f"gt{number:04d}.png", _gt(number))
    _imwrite(root / "ROI.bmp", np.full((HEIGHT, WIDTH), 255, np.uint8))
    (root / "temporalROI.txt").write_text("75 88")
    scene = open_scene(root)
    assert scene.layout == UCSD and scene.frame_numbers == (75, 76, 77)
    assert scene.gt_numbers == (75, 76, 77) and scene.roi.all()
    for frame in scene:
        assert frame.rgb.shape == (HEIGHT, WIDTH, 3)
        np.testing.assert_allclose(frame.rgb.astype(int), 100, atol=2)
        assert frame.mask[-1, -1] == frame.number


def test_wallflower_layout_binarises_its_single_gt(tmp_path):
    root = tmp_path / "WavingTrees"
    for number in range(4):
        _imwrite(root / f"b{number:05d}.bmp", _frame_bgr(number))
    antialiased = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    antialiased[:, 3] = 85  # would read as "outside ROI" if kept raw
    antialiased[:, 4] = 170  # would read as "unknown"
    antialiased[:, 5:] = 250
    _imwrite(root / "hand_segmented_00002.BMP", antialiased)
    (root / "script.txt").write_text("train 0-1, evaluate 2")

    assert detect_layout(root) == WALLFLOWER
    scene = open_scene(root)
    assert scene.frame_numbers == (0, 1, 2, 3) and scene.gt_numbers == (2,)
    masks = {frame.number: frame.mask for frame in scene}
    assert masks[0] is None and masks[1] is None and masks[3] is None
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[:, 4:] = 255
    np.testing.assert_array_equal(masks[2], expected)


def _hofam_demo(root: Path, numbers, *, panel: int = 16) -> Path:
    for number in numbers:
        panels = np.zeros((panel, 3 * panel, 3), np.uint8)
        panels[:, :panel] = _frame_bgr(number, width=panel, height=panel)
        panels[:, panel : 2 * panel] = 90  # the flow image
        panels[:, 2 * panel + panel // 2 :] = 200  # GT panel, resampled values
        panels[0, 2 * panel] = 120
        _imwrite(root / "demo_data" / f"test_{number:06d}.png", panels)
    _imwrite(root / "demo_result" / "test_000001.png", np.zeros((panel, panel), np.uint8))
    return root


def test_hofam_demo_gives_one_scene_per_contiguous_run(tmp_path):
    root = _hofam_demo(tmp_path / "demo", [10, 11, 12, 20, 21])
    assert detect_layout(root) == HOFAM_DEMO
    scenes = find_scenes([root])
    assert [scene.name for scene in scenes] == ["demo_000010", "demo_000020"]
    assert [scene.frame_numbers for scene in scenes] == [(10, 11, 12), (20, 21)]
    assert all(scene.gt_numbers == scene.frame_numbers for scene in scenes)
    frame = next(iter(scenes[1]))
    assert frame.number == 20 and frame.rgb.shape == (16, 16, 3)
    assert frame.rgb[0, 0, 1] == 20 and frame.rgb[5, 5, 0] == 255
    expected = np.zeros((16, 16), np.uint8)
    expected[:, 8:] = 255
    np.testing.assert_array_equal(frame.mask, expected)
    with pytest.raises(InputError, match="holds 2 scenes"):
        open_scene(root)
    with pytest.raises(InputError, match="holds 2 scenes"):
        open_source(root)

    single = _hofam_demo(tmp_path / "single", [5, 6])
    assert open_scene(single, size=(8, 8)).name == "single_000005"
    assert open_scene(single / "demo_data").name == "single_000005"


def test_find_scenes_recurses_in_name_order_and_unique_ifies_names(tmp_path):
    _cdnet_scene(tmp_path / "root" / "b_set" / "birds", [1], [1])
    _cdnet_scene(tmp_path / "root" / "a_set" / "deeper" / "zebra", [1], [1])
    _cdnet_scene(tmp_path / "root" / "a_set" / "birds", [1], [1])
    _imwrite(tmp_path / "root" / "a_set" / "plain_frames" / "f1.png", _frame_bgr(1))
    (tmp_path / "root" / "notes.txt").write_text("not a scene")
    scenes = find_scenes([tmp_path / "root"], size=(6, 5))
    assert [scene.name for scene in scenes] == ["a_set_birds", "zebra", "b_set_birds"]
    assert all(isinstance(scene, Scene) and scene.frame_size == (6, 5) for scene in scenes)
    # A scene folder given directly, and a folder given twice, are loaded once.
    again = find_scenes([tmp_path / "root" / "b_set" / "birds", tmp_path / "root" / "b_set"])
    assert [scene.name for scene in again] == ["birds"]


def test_find_scenes_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no benchmark scene folder under it"):
        find_scenes([tmp_path / "empty"])
    with pytest.raises(InputError, match="missing: no such file or folder"):
        find_scenes([tmp_path / "missing"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="file.txt: not a folder"):
        find_scenes([tmp_path / "file.txt"])
    with pytest.raises(InputError, match="empty: not a benchmark scene folder"):
        open_scene(tmp_path / "empty")


def test_scene_with_no_frames(tmp_path):
    (tmp_path / "s" / "input").mkdir(parents=True)
    (tmp_path / "s" / "groundtruth").mkdir()
    assert is_scene(tmp_path / "s")
    with pytest.raises(InputError, match="input: no image files"):
        open_scene(tmp_path / "s")


def test_plain_frame_folder_is_not_a_scene(tmp_path):
    _imwrite(tmp_path / "frames" / "frame_1.png", _frame_bgr(1))
    assert not is_scene(tmp_path / "frames")
    assert not is_scene(tmp_path / "missing")


# From the data's MANIFEST.md: frames present, (width, height), first frame number.
REAL_SCENES = {
    "Board": (150, (200, 164), 0),
    "CAVIAR1": (80, (384, 256), 0),
    "CAVIAR2": (460, (384, 256), 0),
    "CaVignal": (258, (200, 136), 0),
    "Candela_m1.10": (60, (352, 288), 0),
    "Foliage": (389, (200, 144), 0),
    "HighwayI": (100, (320, 240), 0),
    "HumanBody2": (80, (320, 240), 0),
    "IBMtest2": (90, (320, 240), 0),
    "Snellen": (321, (144, 144), 0),
    "Toscana": (6, (800, 600), 0),
    "birds": (71, (240, 156), 1),
    "bottle": (31, (304, 224), 1),
    "chopper": (51, (240, 156), 1),
    "cyclists": (30, (304, 168), 1),
    "flock": (71, (240, 156), 1),
    "hockey": (50, (468, 348), 1),
    "jump": (81, (240, 156), 1),
    "landing": (50, (468, 348), 1),
    "ocean": (30, (316, 196), 1),
    "rain": (14, (308, 228), 75),
    "skiing": (111, (240, 156), 1),
    "surf": (87, (240, 156), 1),
    "surfers": (41, (344, 224), 1),
    "traffic": (31, (372, 276), 1),
    "WavingTrees": (248, (160, 120), 0),
    "CrossNet_HOFAM_demo_000155": (10, (256, 256), 155),
    "CrossNet_HOFAM_demo_000260": (9, (256, 256), 260),
    "CrossNet_HOFAM_demo_000285": (10, (256, 256), 285),
}


@pytest.fixture(scope="module")
def real_scenes() -> dict[str, Scene]:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    scenes = find_scenes([DATA])
    return {scene.name: scene for scene in scenes}


@needs_data
def test_every_real_scene_is_found(real_scenes):
    assert sorted(real_scenes) == sorted(REAL_SCENES)
    layouts = Counter(scene.layout for scene in real_scenes.values())
    assert layouts == {CDNET: 11, UCSD: 14, WALLFLOWER: 1, HOFAM_DEMO: 3}


def _count_files(folder: Path, prefix: str = "") -> int:
    return sum(1 for file in folder.iterdir() if file.name.startswith(prefix))


@needs_data
@pytest.mark.parametrize("name", sorted(REAL_SCENES))
def test_real_scene_counts_sizes_and_first_last_frames(real_scenes, name):
    scene = real_scenes[name]
    num_frames, frame_size, first_number = REAL_SCENES[name]
    assert scene.num_frames == num_frames
    assert scene.frame_size == frame_size
    numbers = scene.frame_numbers
    assert numbers == tuple(range(first_number, first_number + num_frames))

    folder = Path(scene.path)
    if scene.layout in (CDNET, UCSD):
        assert len(scene.gt_numbers) == _count_files(folder / "groundtruth")
        frame_folder = folder / ("input" if scene.layout == CDNET else "in")
        assert num_frames == _count_files(frame_folder)
    elif scene.layout == WALLFLOWER:
        assert scene.gt_numbers == (247,)
    else:
        assert scene.gt_numbers == numbers

    for number in (numbers[0], numbers[-1]):
        frame = scene.read_frame(number)
        assert frame.number == number
        assert frame.rgb.shape == (frame_size[1], frame_size[0], 3)
        assert frame.rgb.dtype == np.uint8
        if number in scene.gt_numbers:
            assert frame.mask.shape == (frame_size[1], frame_size[0])
            assert set(np.unique(frame.mask)) <= {0, 1, 50, 85, 170, 255}
        else:
            assert frame.mask is None
    if scene.roi is not None:
        assert scene.roi.shape == (frame_size[1], frame_size[0])


@needs_data
def test_real_scene_details_from_manifest(real_scenes):
    assert real_scenes["Board"].temporal_roi == (1, 227)
    assert real_scenes["Board"].scored_numbers == tuple(range(1, 150))
    assert real_scenes["rain"].temporal_roi == (75, 88)
    assert real_scenes["Toscana"].temporal_roi is None
    # MANIFEST: the Wallflower GT has 5876 foreground pixels at > 127.
    mask = real_scenes["WavingTrees"].read_frame(247).mask
    assert int((mask == 255).sum()) == 5876
    assert set(np.unique(mask)) == {0, 255}
    # MANIFEST: every HOFAM demo GT panel has foreground.
    demo = real_scenes["CrossNet_HOFAM_demo_000155"].read_frame(155).mask
    assert set(np.unique(demo)) == {0, 255}
    # UCSD frames are grayscale jpgs: three equal channels.
    rgb = real_scenes["birds"].read_frame(1).rgb
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@needs_data
def test_real_scene_resized(real_scenes):
    scene = open_scene(DATA / "SBI2015" / "Board", size=(100, 82))
    frame = scene.read_frame(0)
    assert frame.rgb.shape == (82, 100, 3) and frame.mask.shape == (82, 100)
    assert scene.roi.shape == (82, 100)
    assert set(np.unique(frame.mask)) <= set(np.unique(real_scenes["Board"].read_frame(0).mask))
