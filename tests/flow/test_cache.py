"""HDF5 cache: round trip, random access, resume after abandon and after SIGKILL, bad files."""

import errno
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import flow.cache as flow_cache
from flow.cache import (
    FORMAT_VERSION,
    CacheBusyError,
    CacheInfo,
    CacheReader,
    CacheWriter,
    cache_path_for,
    is_complete,
    partial_path_for,
    recorded_info,
)

REPO = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH = 24, 32
STRIDES = (1, 4, 8)


def make_info(**changes) -> CacheInfo:
    fields = {"strides": STRIDES, "backend": "dis_fast", "weights_sha256": "",
              "size": (WIDTH, HEIGHT), "source_path": "/videos/clip.avi", "source_size": 12345,
              "source_mtime": 1.7e9 + 0.25, "fps": 25.0, "package_version": "0.1.0"}
    fields.update(changes)
    return CacheInfo(**fields)


def make_frame(number: int, height: int = HEIGHT, width: int = WIDTH):
    """Deterministic (rgb, flow, mask) for a frame number; mask only on even numbers.

    The rgb encodes the number (red = low byte, green = high byte) so a read-back frame tells
    which frame it is. The flow is random with a seed per frame, so its float16 rounding is
    not trivial.
    """
    rng = np.random.default_rng(number)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    rgb[0, 0, 0] = number % 256
    rgb[0, 0, 1] = number // 256
    flow = rng.normal(scale=5.0, size=(len(STRIDES), 2, height, width))
    mask = rng.choice(np.array([0, 50, 85, 170, 255], np.uint8), size=(height, width))
    return rgb, flow, (mask if number % 2 == 0 else None)


def frame_number_of(rgb: np.ndarray) -> int:
    return int(rgb[0, 0, 0]) + 256 * int(rgb[0, 0, 1])


def write_cache(path: Path, numbers, info: CacheInfo | None = None) -> Path:
    with CacheWriter.open(path, info=info or make_info(), expected_frames=len(numbers)) as writer:
        for number in numbers:
            writer.append(number, *make_frame(number))
        return writer.finish()


def check_contents(reader: CacheReader, numbers) -> None:
    """Every frame of ``numbers`` present once, in order, bit-exact / float16-exact."""
    assert len(reader) == len(numbers)
    np.testing.assert_array_equal(reader.frame_numbers, numbers)
    for t, number in enumerate(numbers):
        rgb, flow, mask = make_frame(number)
        sample = reader[t]
        assert sample.frame_number == number
        np.testing.assert_array_equal(sample.frame, rgb)
        assert sample.flow.dtype == np.float32
        np.testing.assert_array_equal(sample.flow, flow.astype(np.float16).astype(np.float32))
        if mask is None:
            assert sample.mask is None
        else:
            np.testing.assert_array_equal(sample.mask, mask)


def test_round_trip(tmp_path):
    path = cache_path_for(tmp_path, "clip")
    assert path == tmp_path / "clip.h5"
    numbers = [3, 4, 5, 7, 10, 11]
    assert write_cache(path, numbers) == path
    assert not partial_path_for(path).exists()
    assert is_complete(path)
    with CacheReader(path) as reader:
        check_contents(reader, numbers)
        np.testing.assert_array_equal(reader.has_mask, [n % 2 == 0 for n in numbers])
        assert reader.info.same_content_as(make_info())
        assert reader.info.fps == 25.0 and reader.info.package_version == "0.1.0"
        assert reader.info.created.endswith("+00:00")
        # Frames without ground truth hold zeros in the masks dataset (documented contract).
        assert reader.mask(0) is None
    with h5py.File(path, "r") as file:
        assert file["masks"][0].max() == 0
        assert file["flow"].dtype == np.float16
        assert file["flow"].chunks == (1, len(STRIDES), 2, HEIGHT, WIDTH)
        assert file["frames"].chunks == (1, HEIGHT, WIDTH, 3)
        assert file["flow"].compression == "gzip" and file["flow"].shuffle
        assert file.attrs["format_version"] == FORMAT_VERSION
        assert file.attrs["complete"] == 1
        assert file.attrs["expected_frames"] == len(numbers)
        np.testing.assert_array_equal(file.attrs["strides"], STRIDES)
        np.testing.assert_array_equal(file.attrs["size"], (WIDTH, HEIGHT))
        assert file.attrs["source_mtime"] == 1.7e9 + 0.25


def test_random_access_in_any_order(tmp_path):
    numbers = list(range(12))
    path = write_cache(tmp_path / "clip.h5", numbers)
    reader = CacheReader(path)
    order = np.random.default_rng(0).permutation(len(numbers))
    for t in order:
        assert frame_number_of(reader.frame(t)) == numbers[t]
        _, flow, _ = make_frame(numbers[t])
        np.testing.assert_array_equal(reader.flow(t), flow.astype(np.float16).astype(np.float32))
    assert frame_number_of(reader[-1].frame) == numbers[-1]
    with pytest.raises(IndexError, match="frame 12 out of range for 12 frames"):
        reader.frame(12)
    with pytest.raises(IndexError):
        reader.mask(-13)
    reader.close()


def test_reader_survives_pickle_and_fork(tmp_path):
    path = write_cache(tmp_path / "clip.h5", list(range(4)))
    reader = CacheReader(path)
    reader.frame(0)
    copy = pickle.loads(pickle.dumps(reader))
    assert frame_number_of(copy.frame(2)) == 2
    with multiprocessing.get_context("fork").Pool(1) as pool:
        # The reader (with its parent's open handle) travels to the forked worker.
        assert pool.map(_frame_number_in_worker, [(reader, 3), (reader, 1)]) == [3, 1]
    assert frame_number_of(reader.frame(3)) == 3


def _frame_number_in_worker(job):
    reader, t = job
    return frame_number_of(reader.frame(t))


def test_resume_after_abandon(tmp_path):
    path = tmp_path / "clip.h5"
    numbers = list(range(9))
    with pytest.raises(RuntimeError, match="stop"), \
            CacheWriter.open(path, info=make_info()) as writer:
        for number in numbers[:5]:
            writer.append(number, *make_frame(number))
        raise RuntimeError("stop")
    assert not path.exists() and partial_path_for(path).exists()
    assert not is_complete(path)

    with CacheWriter.open(path, info=make_info(created="ignored")) as writer:
        assert writer.frames_written == 5
        with pytest.raises(ValueError, match="frame_number must increase: got 4 after 4"):
            writer.append(4, *make_frame(4))
        for number in numbers[writer.frames_written:]:
            writer.append(number, *make_frame(number))
        writer.finish()
    with CacheReader(path) as reader:
        check_contents(reader, numbers)
        assert reader.info.created != "ignored"  # a resumed file keeps its creation time


@pytest.fixture
def free_space(monkeypatch) -> dict:
    """``free_space["bytes"]``: the free space the cache writer sees (None: the real one)."""
    real_usage = flow_cache.shutil.disk_usage
    free = {"bytes": None}

    def disk_usage(folder):
        usage = real_usage(folder)
        return usage if free["bytes"] is None else usage._replace(free=free["bytes"])

    monkeypatch.setattr(flow_cache.shutil, "disk_usage", disk_usage)
    return free


def test_a_full_disk_refuses_the_frame_and_the_file_resumes(tmp_path, free_space):
    # HDF5 hitting a full disk mid-flush leaves a file h5py cannot close, and the process dies
    # with a segmentation fault at exit; so the writer checks the free space before each frame.
    path = tmp_path / "clip.h5"
    frame_bytes = WIDTH * HEIGHT * 3 + len(STRIDES) * 2 * WIDTH * HEIGHT * 2 + WIDTH * HEIGHT
    with CacheWriter.open(path, info=make_info()) as writer:
        for number in range(3):
            writer.append(number, *make_frame(number))
        free_space["bytes"] = frame_bytes + flow_cache.SPACE_MARGIN - 1
        with pytest.raises(OSError, match="No space left on device") as refused:
            writer.append(3, *make_frame(3))
        assert refused.value.errno == errno.ENOSPC
        assert refused.value.filename == str(partial_path_for(path))
        assert writer.frames_written == 3
    free_space["bytes"] = frame_bytes + flow_cache.SPACE_MARGIN  # just enough
    with CacheWriter.open(path, info=make_info()) as writer:
        assert writer.frames_written == 3
        writer.append(3, *make_frame(3))
        writer.finish()
    check_contents(CacheReader(path), [0, 1, 2, 3])


def test_a_full_disk_refuses_to_start_or_finish_a_cache(tmp_path, free_space):
    # Creating a file and finishing it write to the disk as well (HDF5 failing there crashed
    # the process the same way as mid-frame).
    path = tmp_path / "clip.h5"
    free_space["bytes"] = 0
    with pytest.raises(OSError, match="needed to write the cache's header") as refused:
        CacheWriter.open(path, info=make_info())
    assert refused.value.errno == errno.ENOSPC and not partial_path_for(path).exists()
    free_space["bytes"] = None
    with CacheWriter.open(path, info=make_info()) as writer:
        for number in range(2):
            writer.append(number, *make_frame(number))
        free_space["bytes"] = 0
        with pytest.raises(OSError, match="needed to write the cache's end"):
            writer.finish()
    assert not path.exists() and partial_path_for(path).exists()
    free_space["bytes"] = None
    with CacheWriter.open(path, info=make_info()) as writer:
        assert writer.frames_written == 2
        writer.finish()
    check_contents(CacheReader(path), [0, 1])


def test_resume_discards_uncommitted_data(tmp_path):
    path = tmp_path / "clip.h5"
    with CacheWriter.open(path, info=make_info()) as writer:
        for number in range(3):
            writer.append(number, *make_frame(number))
    # Simulate a writer that extended the datasets but died before committing the frame.
    with h5py.File(partial_path_for(path), "r+") as file:
        for name in ("frames", "flow", "masks", "has_mask", "frame_numbers"):
            file[name].resize(4, axis=0)
    with CacheWriter.open(path, info=make_info()) as writer:
        assert writer.frames_written == 3
        writer.append(3, *make_frame(3))
        writer.finish()
    check_contents(CacheReader(path), [0, 1, 2, 3])


@pytest.mark.parametrize("change", [
    {"source_mtime": 1.7e9 + 1.0}, {"source_size": 1}, {"source_path": "/videos/other.avi"},
    {"strides": (1, 2)}, {"backend": "farneback"}, {"weights_sha256": "ab" * 32},
    {"size": (WIDTH, HEIGHT + 2)}, {"flow_settings": "updates=6 warm_updates=none"},
])
def test_resume_with_other_info_starts_over(tmp_path, caplog, change):
    path = tmp_path / "clip.h5"
    with CacheWriter.open(path, info=make_info()) as writer:
        writer.append(0, *make_frame(0))
    info = make_info(**change)
    with caplog.at_level(logging.WARNING, logger="flow.cache"):
        writer = CacheWriter.open(path, info=info)
    assert writer.frames_written == 0
    assert "starting over" in caplog.text
    writer.close()


def test_unreadable_partial_starts_over(tmp_path, caplog):
    path = tmp_path / "clip.h5"
    partial_path_for(path).write_bytes(b"not an HDF5 file at all" * 100)
    with caplog.at_level(logging.WARNING, logger="flow.cache"), \
            CacheWriter.open(path, info=make_info()) as writer:
        assert writer.frames_written == 0
        writer.append(0, *make_frame(0))
        writer.finish()
    assert "unreadable partial cache" in caplog.text
    check_contents(CacheReader(path), [0])


_WRITER_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from tests.flow.test_cache import make_frame, make_info
    from flow.cache import CacheWriter

    path, count, sleep, kill_after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \\
        int(sys.argv[4])
    writer = CacheWriter.open(path, info=make_info(), expected_frames=count)
    for number in range(count):
        if number == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        writer.append(number, *make_frame(number))
        time.sleep(sleep)
    writer.finish()
""")


def start_writer(path: Path, *, count: int, sleep: float, kill_after: int = -1):
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER_SCRIPT, str(path), str(count), str(sleep),
         str(kill_after)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def committed_frames(partial: Path) -> int:
    """frames_written of a partial file being written, read the SWMR way; 0 if not readable."""
    try:
        with h5py.File(partial, "r", swmr=True) as file:
            return int(file["frames_written"][()])
    except (OSError, KeyError):
        return 0


def test_writer_killed_by_itself_resumes(tmp_path):
    path = tmp_path / "clip.h5"
    process = start_writer(path, count=10, sleep=0.0, kill_after=6)
    assert process.wait(timeout=30) == -signal.SIGKILL
    with pytest.raises(OSError):
        h5py.File(partial_path_for(path), "r")  # HDF5's "open for writing" flag is still set
    # What it was made from is still readable (a SWMR reader ignores the flag), so a caller
    # can tell whose partial file it is before resuming it.
    recorded = recorded_info(partial_path_for(path))
    assert recorded is not None and recorded.same_content_as(make_info())
    with CacheWriter.open(path, info=make_info()) as writer:
        assert writer.frames_written == 6
        for number in range(6, 10):
            writer.append(number, *make_frame(number))
        writer.finish()
    check_contents(CacheReader(path), list(range(10)))


def test_writer_killed_mid_run_resumes(tmp_path):
    path = tmp_path / "clip.h5"
    partial = partial_path_for(path)
    total = 400
    process = start_writer(path, count=total, sleep=0.001)
    deadline = time.monotonic() + 25
    seen = 0
    while seen < 8 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        seen = committed_frames(partial)
    try:
        # A live writer's file is never taken over, though HDF5 alone cannot tell it from a
        # killed writer's.
        with pytest.raises(CacheBusyError, match=r"clip\.h5\.partial: being written"):
            CacheWriter.open(path, info=make_info())
        # Whose file it is can be read meanwhile, so `segment --cache` gives another video of
        # the same name the next free name instead of colliding with this writer.
        from pipelines.segment_cache import source_cache_path

        assert recorded_info(partial).same_content_as(make_info())
        assert source_cache_path(tmp_path, "clip", make_info()) == path
        other = make_info(source_path="/videos/b/clip.avi")
        assert source_cache_path(tmp_path, "clip", other) == tmp_path / "clip_2.h5"
    finally:
        process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    assert seen >= 8, f"the writer committed only {seen} frames before the deadline"

    with CacheWriter.open(path, info=make_info()) as writer:
        resumed = writer.frames_written
        assert seen <= resumed < total
        for number in range(resumed, total):
            writer.append(number, *make_frame(number))
        writer.finish()
    with CacheReader(path) as reader:
        np.testing.assert_array_equal(reader.frame_numbers, np.arange(total))
        for t in range(total):
            assert frame_number_of(reader.frame(t)) == t
        # Full content check around the resume point, where a torn write would show.
        for t in range(max(resumed - 3, 0), min(resumed + 3, total)):
            rgb, flow, _ = make_frame(t)
            np.testing.assert_array_equal(reader.frame(t), rgb)
            np.testing.assert_array_equal(reader.flow(t), flow.astype(np.float16).astype(np.float32))


def test_truncated_file_is_rejected(tmp_path):
    path = write_cache(tmp_path / "clip.h5", list(range(6)))
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(size - 1000)
    assert not is_complete(path)
    with pytest.raises(ValueError, match=r"clip\.h5: unreadable cache, truncated or corrupt"):
        CacheReader(path)


def test_incomplete_file_is_rejected(tmp_path):
    path = tmp_path / "clip.h5"
    with CacheWriter.open(path, info=make_info()) as writer:
        writer.append(0, *make_frame(0))
    partial = partial_path_for(path)
    assert not is_complete(partial) and not is_complete(path)
    with pytest.raises(ValueError, match=r"clip\.h5\.partial: incomplete cache"):
        CacheReader(partial)


def test_other_format_version_is_rejected(tmp_path):
    path = write_cache(tmp_path / "clip.h5", [0, 1])
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = np.int64(FORMAT_VERSION + 1)
    assert not is_complete(path)
    with pytest.raises(ValueError, match=f"clip.h5: cache format_version {FORMAT_VERSION + 1}"):
        CacheReader(path)


def test_missing_and_foreign_files(tmp_path):
    assert not is_complete(tmp_path / "missing.h5")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        CacheReader(tmp_path / "missing.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as file:
        file["x"] = np.zeros(3)
    assert not is_complete(foreign)
    with pytest.raises(ValueError, match="foreign.h5: not a crossnet cache"):
        CacheReader(foreign)


def test_append_checks_inputs(tmp_path):
    rgb, flow, mask = make_frame(0)
    with CacheWriter.open(tmp_path / "clip.h5", info=make_info()) as writer:
        with pytest.raises(ValueError, match=r"rgb must have shape \(24, 32, 3\), got \(24, 32\)"):
            writer.append(0, rgb[..., 0], flow, mask)
        with pytest.raises(ValueError, match="rgb must be uint8, got float32"):
            writer.append(0, rgb.astype(np.float32), flow, mask)
        with pytest.raises(ValueError, match=r"flow must have shape \(3, 2, 24, 32\)"):
            writer.append(0, rgb, flow[:2], mask)
        with pytest.raises(ValueError, match="flow must be floating point, got int64"):
            writer.append(0, rgb, flow.astype(np.int64), mask)
        with pytest.raises(ValueError, match="flow must be finite"):
            writer.append(0, rgb, flow * 1e5, mask)
        with pytest.raises(ValueError, match=r"mask must have shape \(24, 32\)"):
            writer.append(0, rgb, flow, mask[:5])
        with pytest.raises(ValueError, match="mask must be uint8, got bool"):
            writer.append(0, rgb, flow, mask > 0)
        assert writer.frames_written == 0
        writer.close()
        with pytest.raises(ValueError, match="the writer is closed"):
            writer.append(0, rgb, flow, mask)


RAFT = "updates=12 warm_updates=none"


def test_flow_settings_are_recorded_and_compared_without_precision(tmp_path):
    made = make_info(backend="raft-small", flow_settings=f"{RAFT} precision=bf16")
    path = write_cache(tmp_path / "clip.h5", [0, 1], made)
    with h5py.File(path, "r") as file:
        assert file.attrs["flow_settings"] == f"{RAFT} precision=bf16"
    with CacheReader(path) as reader:
        assert reader.info.flow_settings == f"{RAFT} precision=bf16"
        # Another machine's float32 flow serves as well; other updates or warm starts do not.
        assert reader.info.same_content_as(
            make_info(backend="raft-small", flow_settings=f"{RAFT} precision=fp32"))
        for other in ("updates=6 warm_updates=none", "updates=12 warm_updates=4"):
            assert not reader.info.same_content_as(
                make_info(backend="raft-small", flow_settings=f"{other} precision=bf16"))


@pytest.mark.parametrize("backend, read_as", [("raft-small", RAFT), ("dis-fast", "")])
def test_caches_without_flow_settings_read_as_what_made_them(tmp_path, backend, read_as):
    path = write_cache(tmp_path / "clip.h5", [0, 1], make_info(backend=backend))
    with h5py.File(path, "r+") as file:  # as written before the attribute existed
        del file.attrs["flow_settings"]
    with CacheReader(path) as reader:
        assert reader.info.flow_settings == read_as
        settings = "" if backend == "dis-fast" else f"{RAFT} precision=fp32"
        assert reader.info.same_content_as(make_info(backend=backend, flow_settings=settings))
        if backend != "dis-fast":
            assert not reader.info.same_content_as(
                make_info(backend=backend, flow_settings="updates=8 warm_updates=none"))


def test_the_source_sha256_is_recorded_but_is_not_an_identity_field(tmp_path):
    digest = "3c" * 32
    path = write_cache(tmp_path / "clip.h5", [0, 1], make_info(source_sha256=digest))
    with h5py.File(path, "r") as file:
        assert file.attrs["source_sha256"] == digest
    with CacheReader(path) as reader:
        assert reader.info.source_sha256 == digest
        # Compared by the caller only when the mtimes differ (pipelines.preprocess).
        assert reader.info.same_content_as(make_info(source_sha256="4d" * 32))
        assert not reader.info.same_content_as(make_info(source_sha256=digest,
                                                         source_mtime=1.7e9 + 1.0))
    with h5py.File(path, "r+") as file:  # as written before the attribute existed
        del file.attrs["source_sha256"]
    with CacheReader(path) as reader:
        assert reader.info.source_sha256 == ""
    with pytest.raises(ValueError, match="source_sha256 must be 64 lowercase hex"):
        make_info(source_sha256="ABC")


def test_a_source_path_is_compared_as_the_file_it_names(tmp_path, monkeypatch):
    (tmp_path / "disk").mkdir()
    (tmp_path / "disk" / "clip.avi").write_bytes(b"x")
    (tmp_path / "data").symlink_to(tmp_path / "disk")
    real = make_info(source_path=str(tmp_path / "disk" / "clip.avi"))
    monkeypatch.chdir(tmp_path)
    for typed in ("data/clip.avi", str(tmp_path / "data" / "clip.avi"), "disk/../disk/clip.avi"):
        assert make_info(source_path=typed).same_content_as(real), typed
    other = make_info(source_path="data/other.avi")  # names no file here: compared as written
    assert other.difference(real) == (f"source_path: 'data/other.avi' in the cache, "
                                      f"'{tmp_path / 'disk' / 'clip.avi'}' now")
    # A partial file recorded with a relative path resumes when the same file is asked for.
    path = tmp_path / "clip.h5"
    with CacheWriter.open(path, info=make_info(source_path="data/clip.avi")) as writer:
        writer.append(0, *make_frame(0))
    with CacheWriter.open(path, info=real) as writer:
        assert writer.frames_written == 1


def test_info_checks_values():
    with pytest.raises(ValueError, match="strictly increasing"):
        make_info(strides=(4, 1))
    with pytest.raises(ValueError, match=r"size must be \(W, H\)"):
        make_info(size=(32, 0))
    with pytest.raises(ValueError, match="weights_sha256 must be 64 lowercase hex digits"):
        make_info(weights_sha256="abc")
    with pytest.raises(ValueError, match="fps must be >= 0"):
        make_info(fps=float("nan"))
    with pytest.raises(ValueError, match="key=value words, got 'fast'"):
        make_info(flow_settings="updates=12 fast")
    with pytest.raises(ValueError, match="name 'updates' twice"):
        make_info(flow_settings="updates=12 updates=6")
    info = make_info(strides=[1, 2], size=[8, 6])
    assert info.strides == (1, 2) and info.size == (8, 6)
    assert info.same_content_as(make_info(strides=(1, 2), size=(8, 6), fps=30.0, created="x"))
    with pytest.raises(ValueError, match="plain file name"):
        cache_path_for("/out", "a/b")
