"""Memory: a 4K video is processed at the processing size, one native frame at a time (never
the whole video in memory), and a request that cannot fit says so in one line before it starts.
"""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch

from crossnet.hofam import HofamConfig
from flow.cache import CacheReader
from flow.raft import raft_small
from pipelines import memory
from pipelines.sources import VideoSource
from tests.pipelines.reliability_inputs import run, tiny_model, training_caches, write_scene

UHD = (3840, 2160)
FRAME_BYTES = UHD[0] * UHD[1] * 3  # one decoded 4K RGB frame, 24.9 MB
FRAMES = 16  # the whole video decoded would be 398 MB


@pytest.fixture(scope="module")
def uhd_video(tmp_path_factory):
    """16 frames of 3840x2160 (MJPG: quick to write and decode, 8 MB on disk)."""
    path = tmp_path_factory.mktemp("uhd") / "uhd.avi"
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 256, (54, 96, 3), dtype=np.uint8), UHD)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, UHD)
    for index in range(FRAMES):
        writer.write(np.roll(texture, 40 * index, axis=1))
    writer.release()
    return path


def _peak_traced(function):
    """Run ``function``; return (its result, peak bytes of Python/numpy allocations)."""
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_4k_video_is_read_one_frame_at_a_time_at_the_processing_size(uhd_video):
    def read_all():
        return [frame.rgb.shape for frame in VideoSource(uhd_video, size=(64, 36))]

    shapes, peak = _peak_traced(read_all)
    assert shapes == [(36, 64, 3)] * FRAMES
    # The decoded BGR frame and its RGB conversion exist together for a moment; the video
    # as a whole (16 frames) never does.
    assert peak < 2.5 * FRAME_BYTES, f"peak {peak / 1e6:.0f} MB"


def test_preprocess_of_a_4k_video_at_a_small_size_stays_small(uhd_video, tmp_path, capsys):
    def preprocess():
        return run(capsys, "preprocess", uhd_video, "--out", tmp_path, "--size", "64x36",
                   "--strides", "1,2", "--flow", "dis-ultrafast", "--batch-frames", "4",
                   "--no-progress")

    (code, _, errors), peak = _peak_traced(preprocess)
    assert code == 0 and errors == []
    assert peak < 3 * FRAME_BYTES, f"peak {peak / 1e6:.0f} MB"
    with CacheReader(tmp_path / "uhd.h5") as reader:
        assert len(reader) == FRAMES and reader.frame(0).shape == (36, 64, 3)


def test_segment_of_a_4k_video_at_a_small_size_writes_4k_masks(uhd_video, tmp_path, capsys):
    weights = tiny_model(tmp_path / "model.pt")

    def segment():
        return run(capsys, "segment", uhd_video, "--out", tmp_path / "masks", "--weights",
                   weights, "--size", "64x36", "--batch-size", "2", "--no-progress")

    (code, stdout, errors), peak = _peak_traced(segment)
    assert code == 0 and errors == [] and f"{FRAMES} masks in" in stdout
    # Frames wait at their own size for their masks (the model's batch, the flow's chunk, the
    # frame the background flow thread reads ahead, decoding buffers): measured 7.7 frames'
    # worth with 8, 16 and 24 frames in the video (5.7 without the flow thread). The peak does
    # not grow with the video's length.
    assert peak < 9 * FRAME_BYTES, f"peak {peak / 1e6:.0f} MB"
    mask = cv2.imread(str(tmp_path / "masks" / "bin000008.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (UHD[1], UHD[0])


def test_the_check_uses_the_processing_size_not_the_native_one(uhd_video, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 300 * 2**20)
    code, _, errors = run(capsys, "preprocess", uhd_video, "--out", tmp_path, "--strides",
                               "1,2", "--flow", "dis-ultrafast", "--no-progress")
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(f"crossnet: error: {uhd_video} at 3840x2160 needs about ")
    assert errors[0].endswith("GiB of memory, only 0.3 GiB available; choose a smaller --size "
                              "or --batch-frames")
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    code, _, errors = run(capsys, "preprocess", uhd_video, "--out", tmp_path, "--size",
                          "320x180", "--strides", "1,2", "--flow", "dis-ultrafast",
                          "--no-progress")
    assert code == 0 and errors == []


HUGE = "100000x100000"


def test_requests_that_cannot_fit_are_refused_before_they_start(tmp_path, capsys):
    scene = write_scene(tmp_path / "scene")
    weights = tiny_model(tmp_path / "model.pt")
    data, split = training_caches(tmp_path / "train", count=3)
    cases = {
        "preprocess": (["preprocess", scene, "--out", tmp_path / "cache", "--size", HUGE,
                        "--no-progress"], f"preprocessing at {HUGE} needs about"),
        "segment": (["segment", scene / "input", "--out", tmp_path / "masks", "--weights",
                     weights, "--size", HUGE, "--no-progress"],
                    f"segmenting {scene / 'input'} at {HUGE} needs about"),
        "evaluate": (["evaluate", scene, "--method", "crossnet", "--weights", weights, "--size",
                      HUGE, "--no-progress"], f"crossnet on {scene} at {HUGE} needs about"),
        "train": (["train", "--data", data, "--split", split, "--out", tmp_path / "runs" / "run",
                   "--crop", "20000x20000", "--workers", "0", "--no-progress"],
                  "training on 20000x20000 crops in batches of 8 needs about"),
        "synth": (["synth", tmp_path / "synth", "--size", HUGE, "--no-progress"],
                  f"a synthetic scene of {HUGE} needs about"),
        "train-flow": (["train-flow", "--stage", "synthetic", "--out", tmp_path / "flow_run",
                        "--crop", "4000x4000", "--no-progress"],
                       ("training raft-small on 4000x4000 crops in batches of 4 with 12 updates "
                       "needs about")),
    }
    for command, (args, start) in cases.items():
        code, _, errors = run(capsys, *args)
        assert code == 1, command
        assert len(errors) == 1 and errors[0].startswith(f"crossnet: error: {start}"), errors
        assert "GiB of memory, only" in errors[0] and "available; choose a smaller" in errors[0]
    assert not (tmp_path / "masks").exists() or not list((tmp_path / "masks").iterdir())
    # The refused runs leave no run folder behind (nor the parent that train's run made).
    assert not (tmp_path / "runs").exists() and not (tmp_path / "flow_run").exists()
    assert not (tmp_path / "synth").exists() or not list((tmp_path / "synth").iterdir())


def test_raft_on_4k_images_is_refused_for_its_correlation_volume(tmp_path, capsys):
    weights = tmp_path / "raft.pt"
    torch.save(raft_small().state_dict(), weights)
    image = np.zeros((UHD[1], UHD[0], 3), np.uint8)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), image)
    code, _, errors = run(capsys, "flow", tmp_path / "a.png", tmp_path / "b.png", "--out",
                          tmp_path / "f.flo", "--backend", "raft-small", "--weights", weights)
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith("crossnet: error: flow at 3840x2160 with raft-small needs about")
    assert errors[0].endswith("use smaller images or a classical backend")


def test_estimates_scale_as_the_buffers_do():
    small = memory.flow_bytes((320, 240), strides=(1, 4, 8), batch_frames=8, backend="dis-fast")
    double = memory.flow_bytes((640, 480), strides=(1, 4, 8), batch_frames=8, backend="dis-fast")
    assert double == pytest.approx(4 * small)  # linear in pixels
    raft = memory.flow_bytes((640, 480), strides=(1,), batch_frames=1, backend="raft-small")
    raft_double = memory.flow_bytes((1280, 960), strides=(1,), batch_frames=1,
                                    backend="raft-small")
    assert raft_double > 8 * raft  # the all-pairs correlation grows with pixels squared
    config = HofamConfig(strides=(1, 2))
    one = memory.hofam_bytes(config, (160, 160), batch=1, training=True)
    assert memory.hofam_bytes(config, (160, 160), batch=4, training=True) == pytest.approx(4 * one)
    assert memory.hofam_bytes(config, (160, 160), batch=1, training=False) < one
    # RAFT training: linear in pairs and updates, the correlation quadratic in pixels; the
    # default train-flow settings (192x192, batch 4, 12 updates) need some hundreds of MB.
    flow = memory.raft_training_bytes("raft-small", (192, 192), pairs=4, num_flow_updates=12)
    assert 200e6 < flow < 2e9
    assert memory.raft_training_bytes("raft-small", (192, 192), pairs=8,
                                      num_flow_updates=12) == pytest.approx(2 * flow)
    assert memory.raft_training_bytes("raft-small", (192, 192), pairs=4,
                                      num_flow_updates=24) > flow
    assert memory.raft_training_bytes("raft-large", (192, 192), pairs=4,
                                      num_flow_updates=12) > 2 * flow
    big = memory.raft_training_bytes("raft-small", (1536, 1536), pairs=1, num_flow_updates=1)
    assert big > 4 * memory.raft_training_bytes("raft-small", (768, 768), pairs=1,
                                                num_flow_updates=1)
    # The default model at 320x240, batch 4: tens of MB, not GB (measured ~180 B/px/frame).
    assert 20e6 < memory.segment_bytes(HofamConfig(), (320, 240), batch_frames=4,
                                       backend="dis-fast") < 300e6


def test_available_memory_reads_the_machine():
    available = memory.available_bytes("cpu")
    assert available is None or available > 0
    assert memory.gib(3 * 2**30) == "3.0 GiB" and memory.gib(2**20) == "0.00 GiB"


@pytest.mark.parametrize(("size", "batch", "expected"), [
    ((320, 240), 4, 8),      # small frames: two whole batches ahead
    ((1920, 1080), 4, 5),    # 6.2 MB frames: as many as fit in 32 MB
    ((3840, 2160), 4, 1),    # 25 MB frames: one ahead, never zero
])
def test_the_flow_thread_reads_ahead_by_at_most_a_fixed_budget(size, batch, expected):
    assert memory.segment_lookahead_frames(size, batch) == expected


def test_the_flow_thread_budgets_a_mixed_size_folder_by_its_largest_frame(tmp_path,
                                                                          monkeypatch):
    import pipelines.segment
    from flow.backends import make_hop_backend
    from pipelines.segment import load_segmentation_model, segment_frames
    from pipelines.sources import FrameFolderSource

    # A first frame of 32x24, then 1920x1080 ones: the read-ahead is budgeted for the latter.
    folder = tmp_path / "clip"
    folder.mkdir()
    cv2.imwrite(str(folder / "in000001.png"), np.zeros((24, 32, 3), np.uint8))
    for number in (2, 3, 4):
        cv2.imwrite(str(folder / f"in{number:06d}.png"), np.full((1080, 1920, 3), number,
                                                                 np.uint8))
    depths = []
    real_prefetch = pipelines.segment.prefetch

    def recording_prefetch(items, depth=2, **options):
        depths.append(depth)
        return real_prefetch(items, depth, **options)

    monkeypatch.setattr(pipelines.segment, "prefetch", recording_prefetch)
    segmentation = load_segmentation_model(tiny_model(tmp_path / "model.pt"))
    source = FrameFolderSource(folder, mixed_sizes=True)
    masks = list(segment_frames(source, segmentation, size=(32, 24), batch_frames=4,
                                overlap=True,
                                backend=make_hop_backend(segmentation.flow_backend)))
    assert [mask.shape for _, mask in masks] == [(24, 32)] + [(1080, 1920)] * 3
    assert depths == [memory.segment_lookahead_frames((1920, 1080), 4)] == [5]
