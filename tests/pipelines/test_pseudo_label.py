"""Pseudo-labelled scenes: confident labels from a model, both directions, atomic, resumable."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend
from pipelines import pseudo_label as pseudo_label_module
from pipelines.cli import main
from pipelines.errors import InputError
from pipelines.pseudo_label import MANIFEST, UNKNOWN, labels_from_probability, pseudo_label
from pipelines.scenes import open_scene
from pipelines.segment import load_segmentation_model, segment_frames
from pipelines.sources import open_source
from pipelines.synth import SynthConfig, generate_scenes


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic scene with ground truth; its mp4 is the 'unlabeled video'."""
    root = tmp_path_factory.mktemp("pseudo")
    config = SynthConfig(size=(160, 120), num_frames=24)
    return generate_scenes(root, num_scenes=1, config=config, seed=3, progress=False)[0]


@pytest.fixture(scope="module")
def model():
    segmentation = load_segmentation_model(bundled_weights())
    return segmentation, make_hop_backend(segmentation.flow_backend)


def _label(scene, out, model, **options):
    segmentation, backend = model
    return pseudo_label(open_source(scene / f"{scene.name}.mp4"), out, segmentation,
                        backend=backend, **options)


def frames_source(video, frames):
    """``frames`` of ``video`` as a source held in memory, in the given order."""
    return pseudo_label_module._Frames(video.name, video.path, video.fps, video.frame_size,
                                       video.native_size, tuple(frames))


def test_labels_are_confident_pixels_only():
    probability = np.array([0.0, 0.3, 0.31, 0.5, 0.69, 0.7, 1.0], np.float32)
    assert labels_from_probability(probability, 0.7).tolist() == [0, 0, UNKNOWN, UNKNOWN,
                                                                   UNKNOWN, 255, 255]
    assert labels_from_probability(probability, 0.99).tolist() == [0, UNKNOWN, UNKNOWN, UNKNOWN,
                                                                    UNKNOWN, UNKNOWN, 255]


def test_probabilities_threshold_to_the_masks(scene, model):
    segmentation, backend = model
    source = open_scene(scene)
    masks = [mask for _, mask in segment_frames(source, segmentation, backend=backend)]
    probabilities = [p for _, p in segment_frames(source, segmentation, backend=backend,
                                                  probabilities=True)]
    assert len(probabilities) == len(masks) == 24
    for mask, probability in zip(masks, probabilities):
        assert probability.dtype == np.float32 and probability.shape == mask.shape
        assert 0.0 <= probability.min() and probability.max() <= 1.0
        # Equal but for pixels within float rounding of the threshold.
        near = np.abs(probability - segmentation.threshold) < 1e-5
        assert ((probability > segmentation.threshold) == (mask == 255))[~near].all()


def test_a_scene_of_both_directions_averaged(scene, tmp_path, model):
    folder, written = _label(scene, tmp_path, model, max_frames=20)
    assert written and folder == tmp_path / f"pseudo_{scene.name}"
    labelled = open_scene(folder)  # a CDnet-layout scene, as preprocess and train read it
    assert labelled.layout == "cdnet" and labelled.frame_numbers == tuple(range(1, 21))
    segmentation, backend = model
    video = open_source(scene / f"{scene.name}.mp4")
    frames = list(video)[:20]
    forward = [p for _, p in segment_frames(frames_source(video, frames), segmentation,
                                            backend=backend, probabilities=True)]
    backward = [p for _, p in segment_frames(frames_source(video, frames[::-1]), segmentation,
                                             backend=backend, probabilities=True)][::-1]
    for frame, ahead, behind in zip(labelled, forward, backward):
        assert np.array_equal(frame.rgb, frames[frame.number - 1].rgb)  # lossless frames
        average = (ahead.astype(np.float16).astype(np.float32)
                   + behind.astype(np.float16).astype(np.float32)) / 2
        assert np.array_equal(frame.mask, labels_from_probability(average, 0.7))
    # The confident labels agree with the synthetic scene's exact masks.
    truth = {frame.number: frame.mask for frame in open_scene(scene)}
    agree = total = 0
    for frame in labelled:
        confident = frame.mask != UNKNOWN
        agree += ((frame.mask == 255) == (truth[frame.number] == 255))[confident].sum()
        total += confident.sum()
    assert total > 0.9 * 20 * 160 * 120 and agree / total > 0.97
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["frames"] == 20 and manifest["model"]["weights_sha256"]


def test_a_finished_scene_is_skipped_and_other_settings_are_refused(scene, tmp_path, model):
    folder, written = _label(scene, tmp_path, model, max_frames=6)
    assert written
    before = (folder / "groundtruth" / "gt000001.png").stat().st_mtime_ns
    assert _label(scene, tmp_path, model, max_frames=6) == (folder, False)
    assert (folder / "groundtruth" / "gt000001.png").stat().st_mtime_ns == before
    with pytest.raises(InputError, match=f"{folder}: exists, .* other settings \\(confidence\\)"):
        _label(scene, tmp_path, model, max_frames=6, confidence=0.9)


def test_an_interrupted_scene_leaves_nothing_behind(scene, tmp_path, model, monkeypatch):
    calls = []
    write = pseudo_label_module.write_png_atomic

    def failing(path, image):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        write(path, image)

    monkeypatch.setattr(pseudo_label_module, "write_png_atomic", failing)
    with pytest.raises(KeyboardInterrupt):
        _label(scene, tmp_path, model, max_frames=6)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(pseudo_label_module, "write_png_atomic", write)
    # What a killed run (no cleanup) leaves is removed by the next; a live run's is kept.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = tmp_path / f".pseudo_{scene.name}.999999999.0123456789ab.tmp"
        live = tmp_path / f".pseudo_{scene.name}.{sleeper.pid}.0123456789ab.tmp"
        for leftover in (killed, live):
            (leftover / "input").mkdir(parents=True)
        folder, written = _label(scene, tmp_path, model, max_frames=6)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert written and len(list((folder / "groundtruth").iterdir())) == 6
    assert not killed.exists() and live.exists()


def test_a_changed_source_is_refused(scene, tmp_path, model):
    video = tmp_path / "clip.mp4"
    video.write_bytes((scene / f"{scene.name}.mp4").read_bytes())
    segmentation, backend = model

    def run():
        return pseudo_label(open_source(video), tmp_path / "out", segmentation, backend=backend,
                            max_frames=4)

    assert run()[1]
    with video.open("ab") as file:
        file.write(b"\0" * 16)  # a video replaced at the same path
    os.utime(video, (1e9, 1e9))  # whatever the file system's mtime resolution
    with pytest.raises(InputError, match=r"pseudo_clip: exists, .*\(source_bytes, source_mtime\)"):
        run()


def test_the_command_reports_a_bad_input_and_labels_the_others(scene, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    out = tmp_path / "labelled"
    code = main(["pseudo-label", str(bad), str(scene / f"{scene.name}.mp4"), "--out", str(out),
                 "--max-frames", "6", "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert "1 written, 0 skipped, 1 failed" in captured.out
    labels = cv2.imread(str(out / f"pseudo_{scene.name}" / "groundtruth" / "gt000006.png"),
                        cv2.IMREAD_UNCHANGED)
    assert labels.shape == (120, 160) and set(np.unique(labels)) <= {0, UNKNOWN, 255}


def test_inputs_of_one_name_are_refused_before_any_work(scene, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "clip.mp4").write_bytes((scene / f"{scene.name}.mp4").read_bytes())
    out = tmp_path / "labelled"
    code = main(["pseudo-label", str(first / "clip.mp4"), str(second / "clip.mp4"), "--out",
                 str(out), "--max-frames", "4", "--no-progress"])
    assert code == 1
    error = capsys.readouterr().err
    assert (f"{second / 'clip.mp4'}: its scene would be pseudo_clip, as "
            f"{first / 'clip.mp4'}'s") in error
    assert (out / "pseudo_clip" / "groundtruth" / "gt000004.png").is_file()


def test_an_output_under_a_file_fails_before_the_model_runs(scene, tmp_path, capsys,
                                                           monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "labelled"
    monkeypatch.setattr("pipelines.segment.load_segmentation_model",
                        lambda *args, **kwargs: pytest.fail("the model was loaded"))
    assert main(["pseudo-label", str(scene / f"{scene.name}.mp4"), "--out", str(out),
                 "--no-progress"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and str(tmp_path / "file") in errors[0]


def test_a_failure_of_any_kind_fails_its_input_alone(scene, tmp_path, capsys, monkeypatch):
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for video in (first, second):
        video.write_bytes((scene / f"{scene.name}.mp4").read_bytes())
    segment = pseudo_label_module.segment_frames

    def failing(clip, *args, **kwargs):
        if clip.name == "a":
            raise RuntimeError("model broke\nsecond line")
        return segment(clip, *args, **kwargs)

    monkeypatch.setattr(pseudo_label_module, "segment_frames", failing)
    out = tmp_path / "labelled"
    code = main(["pseudo-label", str(first), "rtsp://camera.invalid/live", str(second), "--out",
                 str(out), "--max-frames", "4", "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    # Inputs that cannot be opened are reported first (found before the model loads).
    assert errors == [("crossnet: error: rtsp://camera.invalid/live: a live stream cannot be "
                       "pseudo-labelled (a rerun could not tell whether its frames are the "
                       "same); record it to a file first"),
                      f"crossnet: error: {first}: internal error: RuntimeError: model broke"]
    assert "1 written, 0 skipped, 2 failed" in captured.out
    assert (out / "pseudo_b" / "groundtruth" / "gt000004.png").is_file()
    assert not (out / "pseudo_a").exists()


def test_more_frames_than_memory_are_refused_before_decoding(scene, tmp_path, model,
                                                             monkeypatch):
    monkeypatch.setattr("pipelines.memory.available_bytes", lambda device="cpu": 10**6)
    with pytest.raises(InputError, match=r"pseudo-labelling 24 frames of .*needs about"):
        _label(scene, tmp_path, model)
    assert list(tmp_path.iterdir()) == []
