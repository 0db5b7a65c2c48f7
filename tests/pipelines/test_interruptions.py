"""Interruptions: a real Ctrl-C (SIGINT), ``kill`` (SIGTERM) or ``kill -9`` (SIGKILL) in the
middle of preprocess, segment and train leaves no corrupt file, and the same command run again
finishes the job, with the result an uninterrupted run gives. A damaged cache is detected and
rebuilt, never read as valid.
"""

from __future__ import annotations

import json
import logging
import signal

import cv2
import h5py
import numpy as np
import pytest

from crossnet.checkpoint import load_checkpoint
from flow.cache import CacheReader, is_complete, partial_path_for
from tests.pipelines.reliability_inputs import (
    run,
    start_cli,
    tiny_model,
    training_caches,
    wait_for_progress,
    write_video,
)

FRAMES = 16


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", FRAMES)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "model.pt", seed=3)


def _preprocess_args(clip, out):
    return ["preprocess", clip, "--out", out, "--strides", "1,2,4", "--flow", "dis-ultrafast",
            "--batch-frames", "2", "--no-progress"]


def _assert_same_cache(path, reference):
    with CacheReader(path) as resumed, CacheReader(reference) as expected:
        assert len(resumed) == len(expected) == FRAMES
        np.testing.assert_array_equal(resumed.frame_numbers, expected.frame_numbers)
        for t in range(FRAMES):
            np.testing.assert_array_equal(resumed.frame(t), expected.frame(t))
            np.testing.assert_array_equal(resumed.flow(t), expected.flow(t))


@pytest.fixture(scope="module")
def reference_cache(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert run_quietly(_preprocess_args(clip, out)) == 0
    return out / "clip.h5"


def run_quietly(args):
    from pipelines.cli import main

    return main([str(arg) for arg in args])


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=["SIGKILL", "SIGINT", "SIGTERM"])
def test_preprocess_interrupted_then_rerun_resumes(clip, reference_cache, tmp_path, caplog,
                                                    signal_number):
    out = tmp_path / "cache"
    process = start_cli(*_preprocess_args(clip, out))
    wait_for_progress(process, 5)
    process.send_signal(signal_number)
    code = process.wait(timeout=30)
    stderr = process.stderr.read()
    if signal_number == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:  # a clean exit: one line, the shell's code for the signal, no traceback
        expected = {signal.SIGINT: (130, "crossnet: interrupted"),
                    signal.SIGTERM: (143, "crossnet: terminated")}[signal_number]
        assert code == expected[0]
        assert expected[1] in stderr.splitlines() and "Traceback" not in stderr
    # Nothing under the final name; the committed frames wait in the partial file.
    assert not (out / "clip.h5").exists()
    assert partial_path_for(out / "clip.h5").exists()

    with caplog.at_level(logging.INFO, logger="flow.cache"):
        assert run_quietly(_preprocess_args(clip, out)) == 0
    resumed_from = [r.message for r in caplog.records if "resuming after" in r.message]
    assert resumed_from, "the rerun started over instead of resuming"
    assert int(resumed_from[0].split("resuming after ")[1].split()[0]) >= 5
    assert is_complete(out / "clip.h5") and not partial_path_for(out / "clip.h5").exists()
    _assert_same_cache(out / "clip.h5", reference_cache)


def test_preprocess_killed_then_rerun_on_a_copied_video_resumes(clip, reference_cache,
                                                                 tmp_path, caplog):
    # A kill leaves HDF5's "open for writing" flag in the partial file; the video then gets a
    # new time (copied back, restored) with the same bytes. The rerun must still resume.
    import os
    import shutil

    video, out = tmp_path / "clip.mp4", tmp_path / "cache"
    shutil.copyfile(clip, video)
    process = start_cli(*_preprocess_args(video, out))
    wait_for_progress(process, 5)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    later = video.stat().st_mtime + 3600
    os.utime(video, (later, later))

    with caplog.at_level(logging.INFO):
        assert run_quietly(_preprocess_args(video, out)) == 0
    assert "the bytes the cache was made from" in caplog.text
    assert "starting over" not in caplog.text
    resumed_from = [r.message for r in caplog.records if "resuming after" in r.message]
    assert resumed_from and int(resumed_from[0].split("resuming after ")[1].split()[0]) >= 5
    _assert_same_cache(out / "clip.h5", reference_cache)


def _segment_args(source, out, weights, *extra):
    return ["segment", source, "--out", out, "--weights", weights, "--batch-size", "2",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference_masks(clip, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("masks")
    assert run_quietly(_segment_args(clip, out, weights)) == 0
    return out


def _read_masks(folder):
    return {path.name: cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            for path in sorted(folder.glob("bin*.png"))}


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT],
                         ids=["SIGKILL", "SIGINT"])
def test_segment_interrupted_then_rerun_resumes(clip, weights, reference_masks, tmp_path,
                                                capsys, signal_number):
    out = tmp_path / "masks"
    video = tmp_path / "masks.mp4"
    process = start_cli(*_segment_args(clip, out, weights, "--video", video))
    wait_for_progress(process, 6)
    process.send_signal(signal_number)
    code = process.wait(timeout=30)
    stderr = process.stderr.read()
    if signal_number == signal.SIGINT:
        assert code == 130 and "crossnet: interrupted" in stderr.splitlines()
        assert "Traceback" not in stderr
    else:
        assert code == -signal.SIGKILL
    # Every mask on disk is whole; the video exists only once complete.
    partial = _read_masks(out)
    assert 6 <= len(partial) < FRAMES
    for name, mask in partial.items():
        np.testing.assert_array_equal(mask, _read_masks(reference_masks)[name])
    assert not video.exists()
    assert json.loads((out / "segment.json").read_text())["complete"] is False

    code, stdout, errors = run(capsys, *_segment_args(clip, out, weights, "--video", video))
    assert code == 0 and errors == []
    assert f"{FRAMES} masks in {out}" in stdout and "kept from the interrupted run" in stdout
    resumed = _read_masks(out)
    assert resumed.keys() == _read_masks(reference_masks).keys()
    for name, mask in _read_masks(reference_masks).items():
        np.testing.assert_array_equal(resumed[name], mask, err_msg=name)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    capture.release()
    manifest = json.loads((out / "segment.json").read_text())
    assert manifest["complete"] is True and manifest["frames"] == FRAMES

    code, stdout, _ = run(capsys, *_segment_args(clip, out, weights, "--video", video))
    assert code == 0 and "(already complete)" in stdout  # a third run has nothing to do


def test_segment_removes_temporaries_a_killed_writer_left(clip, weights, tmp_path, capsys):
    out = tmp_path / "masks"
    out.mkdir()
    stale = out / ".bin000003.png.12345.0123456789ab.tmp"
    stale.write_bytes(b"half a png")
    unrelated = out / ".notes.tmp"
    unrelated.write_text("not ours")
    code, _, _ = run(capsys, *_segment_args(clip, out, weights))
    assert code == 0
    assert not stale.exists() and unrelated.exists()


def test_segment_resume_after_a_deleted_mask_recomputes_it_identically(clip, weights,
                                                                       reference_masks,
                                                                       tmp_path, capsys):
    out = tmp_path / "masks"
    assert run(capsys, *_segment_args(clip, out, weights))[0] == 0
    (out / "bin000009.png").unlink()
    stamp = (out / "bin000012.png").stat().st_mtime_ns
    code, stdout, _ = run(capsys, *_segment_args(clip, out, weights))
    assert code == 0 and "1 new" in stdout
    np.testing.assert_array_equal(cv2.imread(str(out / "bin000009.png"), cv2.IMREAD_UNCHANGED),
                                  _read_masks(reference_masks)["bin000009.png"])
    assert (out / "bin000012.png").stat().st_mtime_ns == stamp  # masks present are kept


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two tiny scenes, preprocessed: one trains, one validates."""
    return training_caches(tmp_path_factory.mktemp("train"), count=6)


def _train_args(caches, out, *extra):
    data, split = caches
    return ["train", "--data", data, "--split", split, "--out", out, "--epochs", "2",
            "--batch-size", "2", "--samples-per-epoch", "2", "--crop", "32x32",
            "--composite-fraction", "0", "--workers", "0", "--device", "cpu", "--no-progress",
            *extra]


def test_train_killed_while_writing_a_checkpoint_keeps_the_last_one_and_resumes(caches,
                                                                                 tmp_path,
                                                                                 capsys):
    out = tmp_path / "run"
    # The child pauses after each checkpoint it saves; the second save is epoch 1's best.pt,
    # so the kill lands before epoch 2 has written anything.
    process = start_cli(*_train_args(caches, out), pause=0.3)
    wait_for_progress(process, 2)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    load_checkpoint(out / "best.pt")
    (out / ".last.pt.4242.0123456789ab.tmp").write_bytes(b"torn")  # as a kill mid-write leaves

    code, _, errors = run(capsys, *_train_args(caches, out))
    assert code == 1 and "pass --resume" in errors[0]
    code, _, errors = run(capsys, *_train_args(caches, out, "--resume"))
    assert code == 0, errors
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in log] == [1, 2]


def test_train_interrupted_by_ctrl_c_exits_130_and_resumes(caches, tmp_path, capsys):
    out = tmp_path / "run"
    process = start_cli(*_train_args(caches, out), pause=0.3)
    wait_for_progress(process, 2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    stderr = process.stderr.read()
    assert "crossnet: interrupted" in stderr.splitlines() and "Traceback" not in stderr
    assert load_checkpoint(out / "last.pt")["epoch"] >= 1
    code, _, errors = run(capsys, *_train_args(caches, out, "--resume"))
    assert code == 0, errors
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


def _truncate(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_cache_is_detected_and_rebuilt(clip, reference_cache, tmp_path, capsys,
                                                   caplog):
    out = tmp_path / "cache"
    assert run_quietly(_preprocess_args(clip, out)) == 0
    _truncate(out / "clip.h5", 0.5)  # as a copy cut short, or a full disk, leaves it
    assert not is_complete(out / "clip.h5")
    with pytest.raises(ValueError, match=r"clip\.h5: unreadable cache, truncated or corrupt"):
        CacheReader(out / "clip.h5")
    with caplog.at_level(logging.WARNING):
        code, stdout, errors = run(capsys, *_preprocess_args(clip, out))
    assert code == 0 and errors == [] and f"wrote {out / 'clip.h5'}" in stdout
    assert any("not a complete, readable cache (truncated or corrupt); rebuilding" in r.message
               for r in caplog.records)
    _assert_same_cache(out / "clip.h5", reference_cache)


def test_training_skips_a_truncated_cache_with_a_warning(caches, tmp_path, caplog, capsys):
    import shutil

    data = tmp_path / "cache"
    shutil.copytree(caches[0], data)
    _truncate(data / "scene_000.h5", 0.6)
    with caplog.at_level(logging.WARNING):
        code, _, errors = run(capsys, *_train_args((data, caches[1]), tmp_path / "run"))
    assert code == 1
    assert errors == [("crossnet: error: no training scene of split 's' among the 1 caches "
                      f"under {data}")]
    assert any("scene_000.h5: not a complete crossnet cache" in r.message for r in caplog.records)


def test_a_cache_with_a_damaged_chunk_fails_in_one_line(clip, tmp_path, capsys):
    out = tmp_path / "cache"
    assert run_quietly(_preprocess_args(clip, out)) == 0
    with h5py.File(out / "clip.h5", "r") as file:
        offset = file["flow"].id.get_chunk_info(3).byte_offset
    with open(out / "clip.h5", "r+b") as handle:  # scribble over one compressed chunk
        handle.seek(offset)
        handle.write(b"\xff" * 64)
    with CacheReader(out / "clip.h5") as reader:
        reader.flow(2)
        with pytest.raises(ValueError, match=r"clip\.h5: flow of frame 3 cannot be read"):
            reader.flow(3)


# train-flow: 4 steps of raft-small on 64x64 synthetic pairs, a checkpoint after each step
# (last.pt, then weights.pt: two saves, so progress 2N is checkpoint N complete).
FLOW_STEPS = 4


def _train_flow_args(out, *extra):
    return ["train-flow", "--stage", "synthetic", "--out", out, "--steps", str(FLOW_STEPS),
            "--batch-size", "1", "--crop", "64x64", "--iters", "2", "--checkpoint-every", "1",
            "--threads", "1", "--device", "cpu", "--no-progress", *extra]


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()  # --threads sets it for the whole process
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_flow_run(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("flow_reference") / "run"
    try:
        assert run_quietly(_train_flow_args(out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _flow_checkpoint(path):
    from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT

    return load_checkpoint(path, checkpoint_format=FLOW_CHECKPOINT_FORMAT)


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT],
                         ids=["SIGKILL", "SIGINT"])
def test_train_flow_interrupted_then_resumed_completes(reference_flow_run, tmp_path, capsys,
                                                       one_thread, signal_number):
    import torch

    from flow.checkpoints import load_flow_checkpoint
    from flow.raft import raft_small

    out = tmp_path / "run"
    process = start_cli(*_train_flow_args(out), pause=0.5)
    wait_for_progress(process, 2)  # step 1's last.pt and weights.pt are written
    process.send_signal(signal_number)
    code = process.wait(timeout=60)
    stderr = process.stderr.read()
    if signal_number == signal.SIGINT:
        assert code == 130
        assert "crossnet: interrupted" in stderr.splitlines() and "Traceback" not in stderr
    else:
        assert code == -signal.SIGKILL
        (out / ".last.pt.4242.0123456789ab.tmp").write_bytes(b"torn")  # a kill mid-write
    stopped = _flow_checkpoint(out / "last.pt")["step"]
    assert 1 <= stopped < FLOW_STEPS
    assert _flow_checkpoint(out / "weights.pt")["step"] in (stopped - 1, stopped)

    code, _, errors = run(capsys, *_train_flow_args(out))
    assert code == 1 and "holds a run already (last.pt, weights.pt); pass --resume" in errors[0]
    code, stdout, errors = run(capsys, *_train_flow_args(out, "--resume"))
    assert code == 0, errors
    assert stdout.strip().endswith(f"weights: {out / 'weights.pt'}")
    last, weights = _flow_checkpoint(out / "last.pt"), _flow_checkpoint(out / "weights.pt")
    assert last["step"] == weights["step"] == FLOW_STEPS
    load_flow_checkpoint(raft_small(), out / "weights.pt")  # a valid network for --weights
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in log] == list(range(1, FLOW_STEPS + 1))
    # The resumed run is the uninterrupted one.
    expected = _flow_checkpoint(reference_flow_run / "weights.pt")["model"]
    for key, value in expected.items():
        torch.testing.assert_close(weights["model"][key], value, msg=key)


def test_train_flow_killed_between_its_final_checkpoint_and_weights_finishes_on_resume(
        reference_flow_run, tmp_path, capsys, one_thread):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference_flow_run, out)
    (out / "weights.pt").unlink()  # last.pt of the final step was written, weights.pt not
    code, _, errors = run(capsys, *_train_flow_args(out, "--resume"))
    assert code == 0, errors
    assert _flow_checkpoint(out / "weights.pt")["step"] == FLOW_STEPS
