"""`crossnet segment` with the bundled weights on the real videos and scene folders of
../shared/data: one correctly named mask per frame, at the input's size, and on the synthetic
clip the masks agree with the exact ground truth."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from crossnet.metrics import VideoScorer
from pipelines.cli import main
from pipelines.evaluate import evaluate_scene
from pipelines.scenes import find_scenes, open_scene
from pipelines.sources import VideoSource
from pipelines.synth import SynthConfig, generate_scenes

# Measured 0.68 (MOG2 0.49) with the bundled weights on this clip; the floors leave a margin.
SYNTHETIC_F_FLOOR = 0.6


def _check_masks(out, numbers, size):
    names = sorted(p.name for p in out.glob("bin*.png"))
    assert names == [f"bin{n:06d}.png" for n in sorted(numbers)]
    assert (out / "segment.json").is_file()
    for name in (names[0], names[-1]):
        mask = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (size[1], size[0]) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}


def _real_videos(shared_data):
    videos = sorted((shared_data / "videos").glob("*.[am][vp][i4]"))
    assert videos, "the manifest lists videos under videos/"
    return videos


def test_segment_writes_a_mask_per_frame_of_a_real_video(shared_data, tmp_path):
    video = shared_data / "videos" / "shop.avi"  # 192x144, 157 frames: the quick one
    source = VideoSource(video)
    count = sum(1 for _ in source)
    assert main(["segment", str(video), "--out", str(tmp_path), "--no-progress"]) == 0
    _check_masks(tmp_path, range(1, count + 1), source.frame_size)


@pytest.mark.slow
def test_segment_runs_on_every_real_video_and_scene_folder(shared_data, tmp_path):
    for video in _real_videos(shared_data):
        source = VideoSource(video)
        count = sum(1 for _ in source)
        out = tmp_path / video.stem
        assert main(["segment", str(video), "--out", str(out), "--size", "320x240",
                     "--no-progress"]) == 0, video
        _check_masks(out, range(1, count + 1), source.frame_size)
    by_folder: dict = {}
    for scene in find_scenes([shared_data]):
        by_folder.setdefault(scene.path, []).append(scene)
    for folder, scenes in by_folder.items():
        out = tmp_path / "scenes" / Path(folder).name
        assert main(["segment", str(folder), "--out", str(out), "--no-progress"]) == 0, folder
        for scene in scenes:  # a folder holding several scenes gets a mask folder per scene
            _check_masks(out if len(scenes) == 1 else out / scene.name, scene.frame_numbers,
                         scene.native_size)


def test_segment_gives_each_scene_of_a_several_scene_folder_its_own_masks(shared_data,
                                                                          tmp_path):
    folder = shared_data / "CrossNet_HOFAM_demo"  # three runs of frames from three cameras
    scenes = find_scenes([folder])
    assert len(scenes) == 3
    assert main(["segment", str(folder), "--out", str(tmp_path), "--overlay",
                 str(tmp_path / "overlay.mp4"), "--no-progress"]) == 0
    for scene in scenes:
        _check_masks(tmp_path / scene.name, scene.frame_numbers, scene.native_size)
        assert (tmp_path / f"overlay_{scene.name}.mp4").is_file()


def test_segment_on_a_synthetic_clip_matches_its_ground_truth(tmp_path):
    config = SynthConfig(size=(320, 240), num_frames=30)
    scene_dir = generate_scenes(tmp_path / "synth", num_scenes=1, config=config, seed=5,
                                progress=False)[0]
    out = tmp_path / "masks"
    assert main(["segment", str(scene_dir / f"{scene_dir.name}.mp4"), "--out", str(out),
                 "--no-progress"]) == 0
    scene = open_scene(scene_dir)
    _check_masks(out, scene.frame_numbers, (320, 240))
    scorer = VideoScorer()
    for frame in scene:
        prediction = cv2.imread(str(out / f"bin{frame.number:06d}.png"), cv2.IMREAD_UNCHANGED)
        scorer.add(frame.number, prediction, frame.mask, roi=scene.roi,
                   temporal_roi=scene.temporal_roi)
    scores = scorer.result()
    assert scores["frames"] == 30
    mog2 = evaluate_scene(open_scene(scene_dir), "mog2").scores
    assert scores["F"] > SYNTHETIC_F_FLOOR, scores
    assert scores["F"] > mog2["F"] + 0.1, (scores, mog2)
