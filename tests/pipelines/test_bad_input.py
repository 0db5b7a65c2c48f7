"""Bad input: every command answers with one line naming the file and what is wrong, a
non-zero exit and no traceback; grayscale, 16-bit and alpha images just work; in a batch the
other inputs still finish and a summary lists what failed. docs/failure_cases.md lists each
case with the line it produces.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from crossnet.checkpoint import load_checkpoint
from flow.cache import CacheReader, is_complete, partial_path_for
from tests.pipelines.reliability_inputs import (
    REPO,
    SIZE,
    moving_frames,
    run,
    tiny_model,
    training_caches,
    write_frames,
    write_scene,
    write_video,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One of each kind of bad (and good) input, built once."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "empty").mkdir()
    (root / "notes.mp4").write_text("these are notes, not a video")
    (root / "notes.png").write_text("these are notes, not an image")
    (root / "zero.mp4").write_bytes(b"")
    write_video(root / "one.mp4", 1)
    write_video(root / "good.mp4", 6)
    write_video(root / "long.avi", 30, fourcc="MJPG")
    data = (root / "long.avi").read_bytes()
    (root / "truncated.avi").write_bytes(data[: len(data) // 2])
    write_video(root / "long.mp4", 30)
    data = (root / "long.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is lost
    write_frames(root / "frames", 4)
    write_frames(root / "single", 1)
    mixed = write_frames(root / "mixed", 3)
    cv2.imwrite(str(mixed / "in000002.png"), np.zeros((40, 64, 3), np.uint8))
    write_scene(root / "scene", count=4)
    gt_missing = write_scene(root / "gt_missing", count=4)
    (gt_missing / "groundtruth" / "gt000003.png").unlink()
    gt_size = write_scene(root / "gt_size", count=4)
    cv2.imwrite(str(gt_size / "groundtruth" / "gt000002.png"), np.zeros((24, 32), np.uint8))
    roi_size = write_scene(root / "roi_size", count=4)
    cv2.imwrite(str(roi_size / "ROI.bmp"), np.zeros((10, 10), np.uint8))
    write_scene(root / "short_scene", count=1)
    (root / "a_file").write_text("a file where a folder is expected")
    (root / "no_videos").mkdir()
    (root / "no_videos" / "readme.txt").write_text("notes")
    (root / "no_videos" / "labels.csv").write_text("1,2,3")
    tiny_model(root / "model.pt")
    return root


def _one_error(errors: list[str], *fragments: str) -> None:
    assert len(errors) == 1, errors
    assert errors[0].startswith("crossnet: error: "), errors
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


# (command line with {root} for the inputs folder and {out} for a fresh output path, what the
# one error line must contain). Each runs in this process through pipelines.cli.main.
SINGLE_INPUT_FAILURES = {
    "preprocess/nonexistent": ("preprocess {root}/absent --out {out}",
                               ["absent: no such file or folder"]),
    "segment/nonexistent": ("segment {root}/absent.mp4 --out {out}",
                            ["absent.mp4: no such file or folder"]),
    "evaluate/nonexistent": ("evaluate {root}/absent", ["absent: no such file or folder"]),
    "flow/nonexistent": ("flow {root}/absent.png {root}/frames/in000001.png --out {out}.flo",
                         ["absent.png: no such file"]),
    "train/nonexistent data": ("train --data {root}/absent --split {root}/split.json --out {out}",
                               ["absent: no such folder of caches"]),
    "train/nonexistent split": (("train --data {root}/empty --split {root}/absent.json "
                                "--out {out}"), ["absent.json: no such split file"]),
    "segment/nonexistent weights": (("segment {root}/good.mp4 --weights {root}/absent.pt "
                                    "--out {out}"), ["absent.pt: no such checkpoint file"]),
    "preprocess/empty folder": ("preprocess {root}/empty --out {out}",
                                ["empty: no video, frame folder or scene under it"]),
    "preprocess/stream": ("preprocess rtsp://127.0.0.1:9/x --out {out}",
                          [("crossnet: error: rtsp://127.0.0.1:9/x: a camera or live stream: "
                           "preprocess caches video files")]),
    "preprocess/camera": ("preprocess 0 --out {out}", [("crossnet: error: 0: a camera or live "
                                                        "stream")]),
    "segment/empty folder": ("segment {root}/empty --out {out}", ["empty: the folder is empty"]),
    "evaluate/empty folder": ("evaluate {root}/empty",
                              ["empty: no benchmark scene folder under it"]),
    "train/empty folder": ("train --data {root}/empty --split {root}/split.json --out {out}",
                           ["empty: no complete cache"]),
    "flow/folder for an image": ("flow {root}/empty {root}/frames/in000001.png --out {out}.flo",
                                 ["empty: is a folder, not an image file"]),
    "preprocess/not a video": ("preprocess {root}/notes.mp4 --out {out}",
                               ["notes.mp4: not a readable video"]),
    "segment/not a video": ("segment {root}/notes.mp4 --out {out}",
                            ["notes.mp4: not a readable video"]),
    "flow/not an image": ("flow {root}/notes.png {root}/frames/in000001.png --out {out}.flo",
                          ["notes.png: not a readable image"]),
    "evaluate/a file, not a folder": ("evaluate {root}/notes.mp4",
                                      ["notes.mp4: not a folder"]),
    "preprocess/empty file": ("preprocess {root}/zero.mp4 --out {out}",
                              ["zero.mp4: not a readable video"]),
    "segment/truncated mp4": ("segment {root}/truncated.mp4 --out {out}",
                              ["truncated.mp4: not a readable video"]),
    "preprocess/one frame": ("preprocess {root}/one.mp4 --out {out}",
                             ["one.mp4: 1 frame(s); the 3D-HOP needs at least 2"]),
    "segment/one frame": ("segment {root}/one.mp4 --out {out}",
                          ["one.mp4: 1 frame(s); segmentation needs at least 2"]),
    "segment/one image": ("segment {root}/single --out {out}",
                          ["single: 1 frame(s); segmentation needs at least 2"]),
    "evaluate/one frame": ("evaluate {root}/short_scene",
                           ["short_scene: 1 frame(s); a background model needs at least 2"]),
    "preprocess/differing sizes": ("preprocess {root}/mixed --out {out}",
                                   ["mixed/in000002.png: frame size 64x40 differs from 64x48"]),
    "segment/differing sizes": ("segment {root}/mixed --out {out}",
                                ["mixed/in000002.png: frame size 64x40 differs from 64x48"]),
    "flow/differing sizes": (("flow {root}/frames/in000001.png {root}/mixed/in000002.png "
                             "--out {out}.flo"), ["in000002.png: size 64x40 differs from"]),
    "evaluate/ground truth of another size": (
        "evaluate {root}/gt_size",
        [("gt_size/groundtruth/gt000002.png: ground-truth size 32x24 differs from the frame "
         "size 64x48")]),
    "preprocess/ground truth of another size": (
        "preprocess {root}/gt_size --out {out}",
        ["gt000002.png: ground-truth size 32x24 differs"]),
    "evaluate/ROI of another size": ("evaluate {root}/roi_size",
                                     ["roi_size/ROI.bmp: ROI size 10x10 differs"]),
    "train-flow/nonexistent data": ("train-flow --stage video --data {root}/absent --out {out}",
                                    ["absent: no such file or folder"]),
    "train-flow/empty folder": ("train-flow --stage video --data {root}/empty --out {out}",
                                ["empty: no video, frame folder or scene under it"]),
    "train-flow/only non-video files": (
        "train-flow --stage video --data {root}/no_videos --out {out}",
        ["no_videos: no video, frame folder or scene under it"]),
    "train-flow/not a video": ("train-flow --stage video --data {root}/notes.mp4 --out {out}",
                               ["notes.mp4: not a readable video (OpenCV could not open it)"]),
    "train-flow/one frame": ("train-flow --stage video --data {root}/one.mp4 --out {out}",
                             ["one.mp4: 1 frame(s); training pairs need at least 2"]),
    "train-flow/nonexistent init": (("train-flow --stage synthetic --init {root}/absent.pt "
                                    "--out {out}"), ["absent.pt: no such checkpoint file"]),
    "train-flow/resume without a run": ("train-flow --stage synthetic --resume --out {out}",
                                        ["out/last.pt: nothing to resume"]),
}


@pytest.fixture(scope="module")
def split(inputs):
    path = inputs / "split.json"
    path.write_text(json.dumps({"name": "s", "train": ["scene"], "validation": [], "test": []}))
    return path


@pytest.mark.parametrize("case", list(SINGLE_INPUT_FAILURES), ids=list(SINGLE_INPUT_FAILURES))
def test_bad_input_is_one_line_naming_the_file(inputs, split, tmp_path, capsys, case):
    line, fragments = SINGLE_INPUT_FAILURES[case]
    args = line.format(root=inputs, out=tmp_path / "out").split()
    if args[0] == "segment" and "--weights" not in args:
        args += ["--weights", str(inputs / "model.pt")]
    code, _, errors = run(capsys, *args, "--no-progress" if args[0] != "flow" else "--overwrite")
    assert code == 1
    _one_error(errors, *fragments)


def test_the_console_script_prints_no_traceback_and_debug_does(inputs, tmp_path):
    command = [sys.executable, "-m", "pipelines.cli", "segment", str(inputs / "notes.mp4"),
               "--out", str(tmp_path / "m"), "--weights", str(inputs / "model.pt")]
    plain = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert plain.returncode == 1
    # Exactly one line: FFmpeg's own "moov atom not found" is silenced (it shows with -v).
    assert plain.stderr.splitlines() == [(f"crossnet: error: {inputs / 'notes.mp4'}: not a "
                                          "readable video (OpenCV could not open it)")]
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], cwd=REPO,
                           capture_output=True, text=True, check=False,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "InputError" in debug.stderr


def test_a_truncated_video_keeps_the_frames_that_decode_with_a_warning(inputs, tmp_path,
                                                                       capsys, caplog):
    with caplog.at_level(logging.WARNING):
        code, _, errors = run(capsys, "preprocess", inputs / "truncated.avi", "--out",
                                   tmp_path, "--strides", "1,2", "--flow", "dis-ultrafast",
                                   "--no-progress")
    assert code == 0 and errors == []
    warnings = [r.message for r in caplog.records if "decoding stopped" in r.message]
    assert len(warnings) == 1 and "truncated.avi" in warnings[0] and "of the 30" in warnings[0]
    assert warnings[0].endswith("the file looks truncated or damaged, only those frames are used")
    with CacheReader(tmp_path / "truncated.h5") as reader:
        assert 2 <= len(reader) < 30
        np.testing.assert_array_equal(reader.frame_numbers, np.arange(1, len(reader) + 1))


def test_a_video_that_decodes_one_frame_leaves_no_mask_folder(inputs, tmp_path, capsys):
    from pipelines.errors import InputError
    from pipelines.sources import VideoSource

    # The longest cut of the 30-frame MJPG avi that still decodes exactly one frame: the
    # container announces 30, so segment finds out only after writing that frame's mask.
    data = (inputs / "long.avi").read_bytes()
    video = tmp_path / "one.avi"
    for cut in range(len(data) // 3, 0, -len(data) // 120):
        video.write_bytes(data[:cut])
        try:
            if sum(1 for _ in VideoSource(video)) == 1:
                break
        except InputError:  # nothing decodes
            continue
    else:
        pytest.fail("no cut of long.avi decodes exactly one frame")
    assert VideoSource(video).num_frames == 30
    out = tmp_path / "masks"
    code, _, errors = run(capsys, "segment", video, "--out", out, "--weights",
                          inputs / "model.pt", "--no-progress")
    assert code == 1
    _one_error(errors, "1 frame(s) decoded; segmentation needs at least 2")
    assert not out.exists()  # it used to keep bin000001.png and an unfinished segment.json


def test_frames_of_differing_sizes_work_with_a_processing_size(inputs, tmp_path, capsys):
    code, _, errors = run(capsys, "preprocess", inputs / "mixed", "--out", tmp_path, "--size",
                          "32x24", "--strides", "1", "--flow", "dis-ultrafast", "--no-progress")
    assert code == 0 and errors == []
    with CacheReader(tmp_path / "mixed.h5") as reader:
        assert reader.frame(1).shape == (24, 32, 3)


def test_segment_with_a_processing_size_writes_each_mask_at_its_frames_size(inputs, tmp_path,
                                                                             capsys):
    masks, overlay = tmp_path / "masks", tmp_path / "overlay.mp4"
    code, _, errors = run(capsys, "segment", inputs / "mixed", "--out", masks, "--size",
                          "32x24", "--weights", inputs / "model.pt", "--flow", "dis-ultrafast",
                          "--overlay", overlay, "--no-progress")
    assert code == 0 and errors == [], errors
    sizes = {path.name: cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape
             for path in sorted(masks.glob("bin*.png"))}
    assert sizes == {"bin000001.png": (48, 64), "bin000002.png": (40, 64),
                     "bin000003.png": (48, 64)}
    capture = cv2.VideoCapture(str(overlay))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_ground_truth_missing_for_some_frames_is_scored_without_them(inputs, capsys, caplog,
                                                                     tmp_path):
    with caplog.at_level(logging.WARNING, logger="pipelines.scenes"):
        code, _, errors = run(capsys, "evaluate", inputs / "gt_missing", "--json",
                                   tmp_path / "s.json", "--no-progress")
    assert code == 0 and errors == []
    assert any("1 frame(s) inside the temporal ROI have no ground-truth file (first: "
               "in000003.png)" in r.message for r in caplog.records)
    scores = json.loads((tmp_path / "s.json").read_text())["scenes"]["gt_missing"]
    assert scores["frames"] == 3


# Grayscale, 16-bit and alpha frames are read as RGB uint8: gray replicated, 16 bit scaled by
# 1/257 (rounded), alpha dropped.
IMAGE_KINDS = {
    "grayscale": (lambda rgb: rgb[:, :, 0], lambda rgb: np.repeat(rgb[:, :, :1], 3, axis=2)),
    "16-bit": (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257,
               lambda rgb: rgb),
    "16-bit grayscale": (lambda rgb: rgb[:, :, 0].astype(np.uint16) * 257,
                         lambda rgb: np.repeat(rgb[:, :, :1], 3, axis=2)),
    "alpha": (lambda rgb: np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                     np.full(rgb.shape[:2], 128, np.uint8)]), lambda rgb: rgb),
}


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_grayscale_16_bit_and_alpha_frames_work_everywhere(inputs, tmp_path, capsys, kind):
    convert, expected = IMAGE_KINDS[kind]
    frames = write_frames(tmp_path / "frames", 4, convert=convert)
    code, _, errors = run(capsys, "preprocess", frames, "--out", tmp_path / "cache", "--strides",
                          "1,2", "--flow", "dis-ultrafast", "--no-progress")
    assert code == 0 and errors == []
    with CacheReader(tmp_path / "cache" / "frames.h5") as reader:
        for t, rgb in enumerate(moving_frames(4)):
            np.testing.assert_array_equal(reader.frame(t), expected(rgb))
    code, stdout, errors = run(capsys, "segment", frames, "--out", tmp_path / "masks",
                               "--weights", inputs / "model.pt", "--no-progress")
    assert code == 0 and errors == [] and "4 masks in" in stdout
    code, _, errors = run(capsys, "flow", frames / "in000001.png", frames / "in000002.png",
                          "--out", tmp_path / "f.flo")
    assert code == 0 and errors == []
    # A scene whose frames and ground truth are of that kind scores like the plain one.
    scene = write_scene(tmp_path / "scene")
    for path in sorted((scene / "input").iterdir()):
        cv2.imwrite(str(path), convert(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)))
    for path in sorted((scene / "groundtruth").iterdir()):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), convert(np.dstack([mask] * 3)))
    code, _, errors = run(capsys, "evaluate", scene, "--json", tmp_path / "s.json",
                          "--no-progress")
    assert code == 0 and errors == []
    assert json.loads((tmp_path / "s.json").read_text())["scenes"]["scene"]["frames"] == 4


def _not_writable(monkeypatch, folder):
    """Make creating files in ``folder`` fail with EACCES, as a read-only folder does for a
    user who is not root (these tests may run as root, whom permissions do not stop)."""
    real_open = os.open

    def guarded_open(path, flags, *args, **kwargs):
        if os.path.dirname(os.path.abspath(path)) == str(folder) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)


OUTPUT_COMMANDS = {
    "preprocess": "preprocess {root}/frames --out {out} --flow dis-ultrafast",
    "segment": "segment {root}/good.mp4 --out {out} --weights {root}/model.pt",
    "synth": "synth {out} --frames 2 --size 16x16",
    "flow": "flow {root}/frames/in000001.png {root}/frames/in000002.png --out {out}/f.flo",
    "evaluate --json": "evaluate {root}/scene --json {out}/s.json",
    "evaluate --report": "evaluate {root}/scene --report {out}",
    "train": "train --data {root}/empty --split {root}/split.json --out {out}",
    "train-flow": "train-flow --stage synthetic --out {out} --steps 1 --crop 32x32 --iters 1",
}


@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_an_output_folder_that_cannot_be_made_or_written_fails_first(inputs, split, tmp_path,
                                                                     capsys, monkeypatch,
                                                                     command):
    template = OUTPUT_COMMANDS[command]
    if command == "train":  # train checks its data first; give it some
        assert run(capsys, "preprocess", inputs / "scene", "--out", tmp_path / "cache",
                   "--strides", "1,2", "--flow", "dis-ultrafast", "--no-progress")[0] == 0
        template = template.replace("{root}/empty", str(tmp_path / "cache"))
    # Below a file: the folder cannot be created.
    args = template.format(root=inputs, out=inputs / "a_file" / "sub").split()
    code, _, errors = run(capsys, *args)
    assert code == 1
    _one_error(errors, "a_file", "Not a directory")
    # A folder without write permission.
    locked = tmp_path / "locked"
    locked.mkdir()
    _not_writable(monkeypatch, locked)
    code, _, errors = run(capsys, *template.format(root=inputs, out=locked).split())
    monkeypatch.undo()
    assert code == 1
    _one_error(errors, str(locked), "not writable (Permission denied)")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_folder_for_real(inputs, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, errors = run(capsys, "preprocess", inputs / "frames", "--out", locked,
                              "--no-progress")
    finally:
        locked.chmod(0o755)
    assert code == 1
    _one_error(errors, "not writable (Permission denied)")


class _FullDisk:
    """``open`` for a module's globals whose files fail to write with ENOSPC, like a file
    system that has run out of space: the file is created, the data never lands."""

    def __init__(self, after: int = 0):
        self.writes = 0
        self.after = after

    def __call__(self, path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - returned to the caller
        if "w" not in mode and "x" not in mode:
            return handle
        self.writes += 1
        if self.writes <= self.after:
            return handle
        real_write = handle.write

        def write(data):
            real_write(bytes(data)[:1])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = write
        return handle


def test_full_disk_while_segmenting_keeps_whole_masks_and_resumes(inputs, tmp_path, capsys,
                                                                  monkeypatch):
    import pipelines.outputs

    out = tmp_path / "masks"
    monkeypatch.setattr(pipelines.outputs, "open", _FullDisk(after=4), raising=False)
    code, _, errors = run(capsys, "segment", inputs / "good.mp4", "--out", out, "--weights",
                          inputs / "model.pt", "--no-progress")
    monkeypatch.undo()
    assert code == 1
    _one_error(errors, f"{out / 'bin000004.png'}: No space left on device")
    # The manifest and masks 1-3 were written whole; nothing half-written is left.
    assert sorted(p.name for p in out.iterdir()) == [f"bin{n:06d}.png" for n in (1, 2, 3)] + [
        "segment.json"]
    code, stdout, errors = run(capsys, "segment", inputs / "good.mp4", "--out", out,
                               "--weights", inputs / "model.pt", "--no-progress")
    assert code == 0 and "6 masks in" in stdout and "3 new, 3 kept" in stdout


def test_full_disk_while_preprocessing_fails_that_input_and_the_rerun_resumes(inputs,
                                                                              tmp_path, capsys,
                                                                              monkeypatch):
    import flow.cache

    # The disk looks full to the cache writer's own free-space check (the one that keeps HDF5
    # from hitting a real full disk, which crashed the process) while it writes good.mp4's 4th
    # frame.
    real_append, real_usage = flow.cache.CacheWriter.append, flow.cache.shutil.disk_usage
    full = {"now": False}

    def append(self, *args, **kwargs):
        full["now"] = self.path.stem == "good" and self.frames_written == 3
        try:
            real_append(self, *args, **kwargs)
        finally:
            full["now"] = False

    def disk_usage(folder):
        usage = real_usage(folder)
        return usage._replace(free=0) if full["now"] else usage

    monkeypatch.setattr(flow.cache.CacheWriter, "append", append)
    monkeypatch.setattr(flow.cache.shutil, "disk_usage", disk_usage)
    out = tmp_path / "cache"
    args = ("preprocess", inputs / "good.mp4", inputs / "frames", "--out", out, "--strides",
            "1,2", "--flow", "dis-ultrafast", "--no-progress")
    code, stdout, errors = run(capsys, *args)
    monkeypatch.undo()
    assert code == 1
    _one_error(errors, "good.h5.partial: No space left on device")
    assert "1 written, 0 skipped, 1 failed" in stdout and is_complete(out / "frames.h5")
    assert partial_path_for(out / "good.h5").exists()
    code, stdout, errors = run(capsys, *args)
    assert code == 0 and errors == []
    assert f"wrote {out / 'good.h5'}" in stdout and f"skipped {out / 'frames.h5'}" in stdout
    with CacheReader(out / "good.h5") as reader:
        assert len(reader) == 6


def test_full_disk_while_saving_a_checkpoint_keeps_the_last_one(inputs, tmp_path, capsys,
                                                               monkeypatch):
    import crossnet.checkpoint

    cache, split = training_caches(tmp_path, count=3)
    out = tmp_path / "run"
    args = ["train", "--data", cache, "--split", split, "--out", out, "--epochs",
            "2", "--batch-size", "2", "--samples-per-epoch", "2", "--crop", "32x32",
            "--composite-fraction", "0", "--workers", "0", "--no-progress"]
    # Epoch 1 writes last.pt and best.pt; the disk is full when epoch 2 writes last.pt.
    monkeypatch.setattr(crossnet.checkpoint, "open", _FullDisk(after=2), raising=False)
    code, _, errors = run(capsys, *args)
    monkeypatch.undo()
    assert code == 1
    _one_error(errors, f"{out / 'last.pt'}: No space left on device")
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    code, _, errors = run(capsys, *args, "--resume")
    assert code == 0, errors
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


def _flow_checkpoint_step(path):
    from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT

    return load_checkpoint(path, checkpoint_format=FLOW_CHECKPOINT_FORMAT)["step"]


TINY_FLOW_RUN = ("--steps", "2", "--batch-size", "1", "--crop", "32x32", "--iters", "1",
                 "--checkpoint-every", "1", "--device", "cpu", "--no-progress")


def test_full_disk_while_saving_a_train_flow_checkpoint_keeps_the_last_one(tmp_path, capsys,
                                                                          monkeypatch):
    import crossnet.checkpoint

    out = tmp_path / "run"
    args = ["train-flow", "--stage", "synthetic", "--out", out, *TINY_FLOW_RUN]
    # Step 1 writes last.pt and weights.pt; the disk is full when step 2 writes last.pt.
    monkeypatch.setattr(crossnet.checkpoint, "open", _FullDisk(after=2), raising=False)
    code, _, errors = run(capsys, *args)
    monkeypatch.undo()
    assert code == 1
    _one_error(errors, f"{out / 'last.pt'}: No space left on device")
    assert _flow_checkpoint_step(out / "last.pt") == 1
    assert _flow_checkpoint_step(out / "weights.pt") == 1
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    code, _, errors = run(capsys, *args, "--resume")
    assert code == 0, errors
    assert _flow_checkpoint_step(out / "last.pt") == _flow_checkpoint_step(out / "weights.pt") == 2


def test_train_flow_skips_a_corrupt_video_in_a_data_folder_with_a_warning(inputs, tmp_path,
                                                                          capsys, caplog):
    data = tmp_path / "videos"
    data.mkdir()
    for name in ("good.mp4", "notes.mp4", "truncated.mp4"):
        (data / name).write_bytes((inputs / name).read_bytes())
    args = ["train-flow", "--stage", "video", "--data", data, *TINY_FLOW_RUN]
    with caplog.at_level(logging.WARNING, logger="pipelines.flow_data"):
        code, _, errors = run(capsys, *args, "--out", tmp_path / "run")
    assert code == 0 and errors == []
    warnings = sorted(r.message for r in caplog.records if r.name == "pipelines.flow_data")
    assert warnings == [
        f"{data / 'notes.mp4'}: not a readable video (OpenCV could not open it); skipped",
        f"{data / 'truncated.mp4'}: not a readable video (OpenCV could not open it); skipped"]
    assert _flow_checkpoint_step(tmp_path / "run" / "last.pt") == 2
    # Nothing usable left: one line saying so.
    (data / "good.mp4").unlink()
    code, _, errors = run(capsys, *args, "--out", tmp_path / "run2")
    assert code == 1
    _one_error(errors, f"{data}: no video or frame folder with at least 2 frames under it",
               "2 unusable, see the warnings")
    assert not (tmp_path / "run2" / "last.pt").exists()


def test_full_disk_while_writing_outputs_of_flow_evaluate_and_synth(inputs, tmp_path, capsys,
                                                                    monkeypatch):
    import flow.io
    import pipelines.outputs
    import pipelines.synth

    monkeypatch.setattr(flow.io, "open", _FullDisk(), raising=False)
    code, _, errors = run(capsys, "flow", inputs / "frames" / "in000001.png",
                          inputs / "frames" / "in000002.png", "--out", tmp_path / "f.flo")
    monkeypatch.undo()
    assert code == 1
    _one_error(errors, f"{tmp_path / 'f.flo'}: No space left on device")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(pipelines.outputs, "open", _FullDisk(), raising=False)
    code, stdout, errors = run(capsys, "evaluate", inputs / "scene", "--json",
                               tmp_path / "s.json", "--no-progress")
    monkeypatch.undo()
    assert code == 1 and "scene" in stdout  # the table is printed before the write fails
    _one_error(errors, f"{tmp_path / 's.json'}: No space left on device")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(pipelines.synth.cv2, "imwrite", lambda *args: False)
    code, _, errors = run(capsys, "synth", tmp_path / "synth", "--frames", "2", "--size",
                          "16x16", "--no-progress")
    monkeypatch.undo()
    assert code == 1
    _one_error(errors, "OpenCV could not write the image (disk full or not writable?)")
    assert [p.name for p in (tmp_path / "synth").iterdir()] == ["scene_000.tmp"]
    code, stdout, _ = run(capsys, "synth", tmp_path / "synth", "--frames", "2", "--size",
                          "16x16", "--no-progress")
    assert code == 0 and [p.name for p in (tmp_path / "synth").iterdir()] == ["scene_000"]


UNKNOWN_VALUES = {
    "unknown option": ("evaluate x --frobnicate", "No such option '--frobnicate'"),
    "size": ("preprocess x --out o --size 320by240", "'320by240' is not WIDTHxHEIGHT"),
    "zero size": ("segment x --out o --size 0x240", "'0x240' is not WIDTHxHEIGHT"),
    "strides": ("preprocess x --out o --strides 4,1", "strides must be positive and strictly"),
    "flow backend": ("preprocess x --out o --flow nope", "'nope' is not one of"),
    "device": ("segment x --out o --device tpu", "'tpu' is not auto, cpu, cuda or cuda:N"),
    "threshold range": ("segment x --out o --threshold 2", "2.0 is not in the range 0<x<1"),
    "threshold nan": ("segment x --out o --threshold nan", "'nan' is not a finite number"),
    "learning rate inf": ("train --data d --split s --out o --lr inf",
                          "'inf' is not a finite number"),
    "method": ("evaluate x --method foo", "'foo' is not one of 'crossnet', 'mog2', 'knn'"),
    "crop": ("train --data d --split s --out o --crop 10", "'10' is not WIDTHxHEIGHT"),
    "max frames": ("preprocess x --out o --max-frames 1", "1 is not in the range x>=2"),
    "frames": ("synth o --frames 0", "0 is not in the range x>=2"),
    "fps": ("synth o --fps -1", "-1.0 is not in the range x>0"),
    "resume with overwrite": ("train --data d --split s --out o --resume --overwrite",
                              "--resume continues the run in --out, --overwrite discards it"),
    "png same as out": ("flow a b --out x.flo --png x.flo", "names the same file as --out"),
    "train-flow device": ("train-flow --stage synthetic --out o --device tpu",
                          "'tpu' is not auto, cpu, cuda or cuda:N"),
    "train-flow zero crop": ("train-flow --stage synthetic --out o --crop 0x0",
                             "'0x0' is not WIDTHxHEIGHT"),
    "train-flow tiny crop": ("train-flow --stage synthetic --out o --crop 8x8",
                             "'8x8': the flow network needs crops of at least 16x16"),
    "train-flow learning rate nan": ("train-flow --stage synthetic --out o --lr nan",
                                     "'nan' is not a finite number"),
    "train-flow distillation inf": ("train-flow --stage video --out o --distill inf",
                                    "'inf' is not a finite number"),
    "train-flow stage": ("train-flow --stage both --out o", "'both' is not one of"),
    "train-flow resume with overwrite": (("train-flow --stage synthetic --out o --resume "
                                         "--overwrite"), "--resume continues the run in --out"),
    "train-flow video stage without data": ("train-flow --stage video --out o",
                                            "--stage video needs --data"),
    "ensemble of one": ("ensemble a.pt --out e.pt",
                        "Invalid value for MEMBERS: an ensemble needs at least two checkpoints"),
}


@pytest.mark.parametrize("case", list(UNKNOWN_VALUES), ids=list(UNKNOWN_VALUES))
def test_unknown_option_values_are_usage_errors(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    line, fragment = UNKNOWN_VALUES[case]
    code, _, errors = run(capsys, *line.split())
    assert code == 2
    assert any(fragment in error for error in errors), errors
    assert not any("Traceback" in error for error in errors)


def test_a_tiny_synth_size_is_refused_in_one_line(tmp_path, capsys):
    code, _, errors = run(capsys, "synth", tmp_path, "--size", "2x2", "--no-progress")
    assert code == 2  # a usage error, naming the option (it named SynthConfig before)
    assert any("'2x2': synthetic scenes need at least 8x8 pixels" in e for e in errors), errors
    code, _, errors = run(capsys, "synth", tmp_path, "--frames", "1", "--no-progress")
    assert code == 2 and any("--frames" in e for e in errors), errors
    assert not any(tmp_path.iterdir())


def test_a_batch_of_inputs_finishes_the_good_ones_and_lists_the_bad(inputs, tmp_path, capsys):
    code, stdout, errors = run(capsys, "preprocess", inputs / "frames", inputs / "notes.mp4",
                               inputs / "one.mp4", inputs / "absent", inputs / "gt_size",
                               inputs / "scene", "--out", tmp_path, "--strides", "1,2",
                               "--flow", "dis-ultrafast", "--no-progress")
    assert code == 1
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["frames.h5", "scene.h5"]
    assert "2 written, 0 skipped, 4 failed" in stdout
    assert len(errors) == 4 and all(e.startswith("crossnet: error: ") for e in errors)
    for name in ("notes.mp4", "one.mp4", "absent", "gt000002.png"):
        assert sum(name in error for error in errors) == 1, (name, errors)


def test_a_batch_of_scenes_scores_the_good_ones_and_lists_the_bad(inputs, tmp_path, capsys):
    code, stdout, errors = run(capsys, "evaluate", inputs / "scene", inputs / "gt_size",
                               inputs / "absent", inputs / "short_scene", inputs / "gt_missing",
                               "--method", "mog2", "--method", "knn", "--json",
                               tmp_path / "s.json", "--no-progress")
    assert code == 1
    assert "mean of 2 scenes" in stdout and "2 scene(s) scored, 3 failed" in stdout
    assert len(errors) == 3
    document = json.loads((tmp_path / "s.json").read_text())
    assert set(document["methods"]["mog2"]["scenes"]) == {"scene", "gt_missing"}
    assert set(document["methods"]["knn"]["scenes"]) == {"scene", "gt_missing"}
    assert len(document["failed"]) == 3
    assert any("gt000002.png" in reason for reason in document["failed"].values())


def test_an_output_folder_inside_the_input_folder_is_not_read_as_input(inputs, tmp_path,
                                                                       capsys):
    videos = tmp_path / "videos"
    write_video(videos / "clip.mp4", 4)
    args = ["preprocess", videos, "--out", videos / "cache", "--strides", "1,2", "--flow",
            "dis-ultrafast", "--preview", "--no-progress"]
    assert run(capsys, *args)[0] == 0
    code, stdout, errors = run(capsys, *args)  # the previews there are not a frame folder
    assert code == 0 and errors == [] and "1 skipped" in stdout


def test_a_batch_whose_every_input_fails_writes_nothing(inputs, tmp_path, capsys,
                                                       monkeypatch):
    code, stdout, _ = run(capsys, "evaluate", inputs / "gt_size", "--json",
                               tmp_path / "s.json", "--no-progress")
    assert code == 1 and "0 scene(s) scored, 1 failed" in stdout
    assert not (tmp_path / "s.json").exists()
    # Nor does it leave the empty output folders it made to check the paths before any work
    # (and their missing parents); a folder that was there before stays.
    made = tmp_path / "made"
    (tmp_path / "mine").mkdir()
    for args in (("evaluate", inputs / "gt_size", "--report", made / "a" / "report", "--json",
                  made / "b" / "s.json"),
                 ("preprocess", inputs / "notes.mp4", "--out", made / "cache"),
                 ("pseudo-label", inputs / "notes.mp4", "--out", made / "labels"),
                 ("preprocess", inputs / "notes.mp4", "--out", tmp_path / "mine")):
        code, _, errors = run(capsys, *args, "--no-progress")
        assert code == 1 and len(errors) == 1, (args, errors)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"], args
        assert not any((tmp_path / "mine").iterdir())
    # Under torchrun another process may be about to write there: nothing is removed.
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, _ = run(capsys, "preprocess", inputs / "notes.mp4", "--out", made / "cache",
                     "--no-progress")
    assert code == 1 and (made / "cache").is_dir()


def test_frames_of_a_video_that_change_size_are_refused_naming_the_file(tmp_path):
    from pipelines import sources

    frames = [np.zeros((48, 64, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)]

    class Capture:
        def __init__(self):
            self.frames = list(frames)

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def release(self):
            pass

    decoded = sources._decoded_frames(Capture(), None, name="stream.mkv")
    next(decoded)
    with pytest.raises(sources.InputError, match="stream.mkv: frame 2 is 64x40, earlier frames "
                                                 "64x48"):
        next(decoded)
    resized = list(sources._decoded_frames(Capture(), SIZE, name="stream.mkv"))
    assert [frame.rgb.shape for _, frame in resized] == [(48, 64, 3)] * 2
    # For segment --size (which resizes every frame itself): each frame at its own size.
    mixed = list(sources._decoded_frames(Capture(), None, name="stream.mkv", mixed_sizes=True))
    assert [frame.rgb.shape for _, frame in mixed] == [(48, 64, 3), (40, 64, 3)]
