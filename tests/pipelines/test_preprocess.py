"""`crossnet preprocess`: known motion in, known 3D-HOP out; skip, resume, failures, sharding."""

import os
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from flow.backends import make_hop_backend
from flow.cache import CacheReader, CacheWriter, cache_path_for, is_complete
from pipelines.cli import main
from pipelines.preprocess import preprocess, shard_for_rank
from pipelines.sources import open_source

SHIFT = 1.0  # pixels per frame, +x: the scene moves right, so flow to an EARLIER frame is -k


def _texture(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    noise = rng.uniform(0, 255, size=(height, width, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def _write_translating_frames(folder: Path, count: int, size=(96, 72)) -> None:
    """Frames ``frame_<n>.png``, n = 1..count; frame n is a texture shifted by SHIFT * (n - 1)."""
    folder.mkdir(parents=True)
    width, height = size
    texture = _texture(height + 40, width + 40)
    for index in range(count):
        matrix = np.float32([[1, 0, 20 - SHIFT * index], [0, 1, 20]])
        # Sampling the texture at x + 20 - shift moves the content right by `shift`.
        frame = cv2.warpAffine(texture, matrix, (width, height),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        cv2.imwrite(str(folder / f"frame_{index + 1}.png"), frame[:, :, ::-1])


def test_known_translation_gives_the_known_3d_hop(tmp_path):
    frames = tmp_path / "clip"
    _write_translating_frames(frames, 10)
    summary = preprocess([frames], tmp_path / "cache", backend=make_hop_backend("dis-medium"),
                         strides=(1, 2, 4), progress=False)
    assert summary.failed == [] and summary.written == [tmp_path / "cache" / "clip.h5"]
    with CacheReader(summary.written[0]) as reader:
        assert len(reader) == 10
        assert list(reader.frame_numbers) == list(range(1, 11))
        assert reader.info.strides == (1, 2, 4)
        assert reader.info.backend == "dis-medium"
        np.testing.assert_array_equal(reader.frame(3), cv2.imread(str(frames / "frame_4.png"))[:, :, ::-1])
        assert np.count_nonzero(reader.flow(0)) == 0  # frame 0 paired with itself
        for t in (2, 6, 9):
            for s, k in enumerate((1, 2, 4)):
                earlier = max(t - k, 0)
                interior = reader.flow(t)[s][:, 12:-12, 12:-12]
                # u: the point at x in frame t was at x - SHIFT * (t - earlier) in the earlier frame
                assert np.median(interior[0]) == pytest.approx(-SHIFT * (t - earlier), abs=0.15)
                assert np.median(interior[1]) == pytest.approx(0.0, abs=0.15)
        assert reader.mask(0) is None


def test_complete_caches_are_skipped_and_partial_ones_resume(tmp_path):
    frames = tmp_path / "clip"
    _write_translating_frames(frames, 9)
    backend = make_hop_backend("dis-fast")
    reference = preprocess([frames], tmp_path / "ref", backend=backend, strides=(1, 3),
                           progress=False).written[0]

    # An interrupted run: the first 4 frames of the same cache were committed, then it stopped.
    out = tmp_path / "out"
    out.mkdir()
    with CacheReader(reference) as done:
        info = done.info
        writer = CacheWriter.open(cache_path_for(out, "clip"), info=info)
        for t in range(4):
            writer.append(int(done.frame_numbers[t]), done.frame(t), done.flow(t), None)
        writer.close()
    assert not is_complete(cache_path_for(out, "clip"))

    summary = preprocess([frames], out, backend=backend, strides=(1, 3), progress=False)
    assert summary.written == [cache_path_for(out, "clip")]
    with CacheReader(reference) as expected, CacheReader(summary.written[0]) as resumed:
        assert len(resumed) == len(expected) == 9
        for t in range(9):
            np.testing.assert_array_equal(resumed.frame(t), expected.frame(t))
            np.testing.assert_array_equal(resumed.flow(t), expected.flow(t))

    again = preprocess([frames], out, backend=backend, strides=(1, 3), progress=False)
    assert again.skipped == summary.written and again.written == []

    other = preprocess([frames], out, backend=backend, strides=(1, 2), progress=False)
    assert len(other.failed) == 1 and "--overwrite" in other.failed[0][1]
    rebuilt = preprocess([frames], out, backend=backend, strides=(1, 2), overwrite=True,
                         progress=False)
    assert rebuilt.written == summary.written
    with CacheReader(rebuilt.written[0]) as reader:
        assert reader.info.strides == (1, 2)


def test_a_bad_video_is_reported_and_the_rest_still_finish(tmp_path, capsys):
    inputs = tmp_path / "inputs"
    _write_translating_frames(inputs / "good", 5)
    (inputs / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    code = main(["preprocess", str(inputs), "--out", str(out), "--strides", "1,2", "--preview",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert is_complete(out / "good.h5")
    preview = cv2.imread(str(out / "good_preview.png"))
    assert preview.shape == (72, 96 * 3, 3)  # frame | flow k=1 | flow k=2
    errors = [line for line in captured.err.splitlines() if line.startswith("crossnet: error")]
    assert len(errors) == 1 and "broken.mp4" in errors[0]
    assert captured.out.splitlines() == [f"wrote {out / 'good.h5'}",
                                         "1 written, 0 skipped, 1 failed"]
    assert "Traceback" not in captured.err


def test_size_and_max_frames(tmp_path):
    frames = tmp_path / "clip"
    _write_translating_frames(frames, 8)
    summary = preprocess([frames], tmp_path / "out", backend=make_hop_backend("dis-ultrafast"),
                         strides=(1,), size=(48, 36), max_frames=5, progress=False)
    with CacheReader(summary.written[0]) as reader:
        assert len(reader) == 5
        assert reader.frame(0).shape == (36, 48, 3)
        assert reader.flow(4).shape == (1, 2, 36, 48)


def test_scene_folders_keep_their_masks(shared_data, tmp_path):
    summary = preprocess([shared_data / "UCSD_BGS" / "rain"], tmp_path,
                         backend=make_hop_backend("dis-ultrafast"), strides=(1, 2),
                         progress=False)
    with CacheReader(summary.written[0]) as reader:
        assert list(reader.frame_numbers) == list(range(75, 89))
        mask = reader.mask(0)
        gt = cv2.imread(str(shared_data / "UCSD_BGS/rain/groundtruth/gt0075.png"), 0)
        np.testing.assert_array_equal(mask, gt)


def test_sharding_splits_inputs_between_ranks():
    items = list("abcdefg")
    assert shard_for_rank(items, rank=0, world_size=3) == ["a", "d", "g"]
    assert shard_for_rank(items, rank=2, world_size=3) == ["c", "f"]
    shards = [shard_for_rank(items, rank=r, world_size=3) for r in range(3)]
    assert sorted(item for shard in shards for item in shard) == items
    with pytest.raises(ValueError, match="rank 3 is outside world size 3"):
        shard_for_rank(items, rank=3, world_size=3)


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import flow.weights

    assert main(["preprocess", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 1
    assert "missing: no such file or folder" in capsys.readouterr().err
    # Without bundled weights, raft-small needs --weights.
    monkeypatch.setattr(flow.weights, "bundled_weights_path", lambda name: tmp_path / "no.pt")
    assert main(["preprocess", str(tmp_path), "--out", str(tmp_path / "o"), "--flow",
                 "raft-small"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights" in err[0]
    assert main(["preprocess", str(tmp_path), "--out", "o", "--strides", "4,1"]) == 2


def test_synthetic_scene_end_to_end_matches_its_exact_flow_and_masks(tmp_path):
    import h5py

    from flow.metrics import endpoint_error
    from pipelines.synth import SynthConfig, generate_scenes

    config = SynthConfig(size=(96, 72), num_frames=12, strides=(1, 4), noise_sigma=1.0,
                         camera_jitter=0.0)
    scene = generate_scenes(tmp_path / "synth", num_scenes=1, config=config, seed=11,
                            progress=False)[0]
    summary = preprocess([tmp_path / "synth"], tmp_path / "cache",
                         backend=make_hop_backend("dis-medium"), strides=(1, 4), progress=False)
    assert summary.failed == [] and len(summary.written) == 1
    with h5py.File(scene / "flow.h5", "r") as exact, CacheReader(summary.written[0]) as cache:
        assert len(cache) == 12
        assert list(cache.frame_numbers) == list(range(1, 13))
        errors, zero_errors = [], []
        for t in range(1, 12):
            truth = exact["flow"][t]
            np.testing.assert_array_equal(
                cache.mask(t), cv2.imread(str(scene / "groundtruth" / f"gt{t + 1:06d}.png"), 0))
            for s in range(2):
                moving = np.linalg.norm(truth[s], axis=0) > 1.0  # objects that moved > 1 px
                if moving.sum() < 20:
                    continue
                errors.append(endpoint_error(cache.flow(t)[s], truth[s], moving))
                zero_errors.append(endpoint_error(np.zeros_like(truth[s]), truth[s], moving))
    assert len(errors) >= 10
    # Measured here: DIS-medium 1.44 px mean EPE on moving pixels vs 2.16 px for zero flow (small
    # objects are DIS's weak spot). This checks the wiring: the cache holds flow that tracks the
    # scene's exact motion, with the right sign and stride.
    assert np.mean(errors) < 0.8 * np.mean(zero_errors), (np.mean(errors), np.mean(zero_errors))


def test_roi_is_folded_into_the_cached_masks_as_outside_roi():
    from pipelines.preprocess import with_roi

    mask = np.array([[0, 255], [170, 50]], dtype=np.uint8)
    roi = np.array([[True, False], [True, True]])
    np.testing.assert_array_equal(with_roi(mask, roi), [[0, 85], [170, 50]])
    assert with_roi(None, roi) is None
    np.testing.assert_array_equal(with_roi(mask, None), mask)
    with pytest.raises(ValueError, match="ROI shape"):
        with_roi(mask, np.ones((3, 2), bool))


def test_a_cache_is_stale_when_a_file_it_reads_changes_not_when_another_is_added(tmp_path):
    from pipelines.synth import SynthConfig, generate_scenes

    config = SynthConfig(size=(64, 48), num_frames=6, strides=(1, 2))
    scene = generate_scenes(tmp_path / "synth", num_scenes=1, config=config, seed=3,
                            progress=False)[0]
    backend = make_hop_backend("dis-ultrafast")

    def run():
        return preprocess([scene], tmp_path / "cache", backend=backend, strides=(1, 2),
                          progress=False)

    first = run()
    assert len(first.written) == 1
    (scene / "notes.txt").write_text("filmed on a Tuesday")
    (scene / "masks_of_another_tool").mkdir()
    (scene / "masks_of_another_tool" / "bin000001.png").write_bytes(b"not read by the scene")
    assert run().skipped == first.written  # nothing the cache is made from changed

    gt = scene / "groundtruth" / "gt000003.png"
    later = gt.stat().st_mtime + 10
    os.utime(gt, (later, later))  # touched, the same bytes: still the cache's source
    assert run().skipped == first.written
    cv2.imwrite(str(gt), 255 - cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE))
    os.utime(gt, (later + 10, later + 10))  # a GT mask edited after the cache was made
    stale = run()
    assert stale.skipped == [] and len(stale.failed) == 1
    assert "--overwrite" in stale.failed[0][1]


def _write_bmp_frames(folder: Path, count: int) -> None:
    """Frames ``in00000<n>.bmp``: a BMP's size depends only on the frame's, so one can be
    edited without its size changing."""
    folder.mkdir(parents=True)
    texture = _texture(48, 64)
    for index in range(count):
        cv2.imwrite(str(folder / f"in{index + 1:06d}.bmp"), np.roll(texture, 2 * index, axis=1))


def _touch_all(folder: Path, seconds: float) -> None:
    for file in folder.iterdir():
        later = file.stat().st_mtime + seconds
        os.utime(file, (later, later))


def test_a_copied_source_with_the_same_bytes_still_matches_its_cache(tmp_path, monkeypatch):
    from pipelines import sources

    frames = tmp_path / "clip"
    _write_bmp_frames(frames, 4)
    backend, out = make_hop_backend("dis-ultrafast"), tmp_path / "out"
    written = preprocess([frames], out, backend=backend, strides=(1,), progress=False).written
    with CacheReader(written[0]) as reader:
        recorded = reader.info.source_sha256
    assert recorded == sources.source_sha256(open_source(frames))

    hashed = []
    monkeypatch.setattr("pipelines.preprocess.source_sha256",
                        lambda source: hashed.append(source) or sources.source_sha256(source))
    assert preprocess([frames], out, backend=backend, strides=(1,),
                      progress=False).skipped == written
    assert hashed == []  # same mtime: nothing is hashed

    _touch_all(frames, 3600)  # a copy, a re-provisioned disk: new times, the same bytes
    assert preprocess([frames], out, backend=backend, strides=(1,),
                      progress=False).skipped == written
    assert len(hashed) == 1

    # An edit that keeps the size: the bytes differ, so the cache is stale.
    image = cv2.imread(str(frames / "in000002.bmp"))
    cv2.imwrite(str(frames / "in000002.bmp"), 255 - image)
    _touch_all(frames, 3600)
    stale = preprocess([frames], out, backend=backend, strides=(1,), progress=False)
    assert stale.skipped == [] and len(stale.failed) == 1
    assert "source_mtime" in stale.failed[0][1] and "--overwrite" in stale.failed[0][1]
    assert "the source's bytes differ too" in stale.failed[0][1]

    # A cache made before caches recorded the hash: a new time alone makes it stale, and the
    # message says why the bytes were not compared.
    with h5py.File(written[0], "r+") as file:
        del file.attrs["source_sha256"]
    cv2.imwrite(str(frames / "in000002.bmp"), image)
    assert preprocess([frames], out, backend=backend, strides=(1,), overwrite=True,
                      progress=False).written == written
    with h5py.File(written[0], "r+") as file:
        del file.attrs["source_sha256"]
    _touch_all(frames, 3600)
    legacy = preprocess([frames], out, backend=backend, strides=(1,), progress=False)
    assert "predates recording the source's sha256" in legacy.failed[0][1]


def test_a_partial_cache_of_a_copied_source_resumes(tmp_path):
    from flow.cache import partial_path_for
    from pipelines.preprocess import cache_info, info_to_write

    frames = tmp_path / "clip"
    _write_bmp_frames(frames, 4)
    backend, path = make_hop_backend("dis-ultrafast"), tmp_path / "out" / "clip.h5"
    path.parent.mkdir()
    source = open_source(frames)
    info = info_to_write(path, cache_info(source, backend=backend, strides=(1,),
                                          size=source.frame_size), source)
    with CacheWriter.open(path, info=info) as writer:  # interrupted after two frames
        for number in (1, 2):
            writer.append(number, np.zeros((48, 64, 3), np.uint8),
                          np.zeros((1, 2, 48, 64), np.float16))
    _touch_all(frames, 3600)
    again = cache_info(source, backend=backend, strides=(1,), size=source.frame_size)
    assert again.source_mtime != info.source_mtime
    resumed = info_to_write(path, again, source)
    assert resumed.source_mtime == info.source_mtime
    assert resumed.source_sha256 == info.source_sha256
    summary = preprocess([frames], tmp_path / "out", backend=backend, strides=(1,),
                         progress=False)
    assert summary.written == [path] and not partial_path_for(path).exists()
    with CacheReader(path) as reader:  # the two frames kept, the rest appended
        assert len(reader) == 4 and not reader.frame(0).any()
        assert reader.frame(2).any()


def test_the_sha256_written_with_a_partial_cache(tmp_path, monkeypatch):
    from pipelines.preprocess import cache_info, info_to_write
    from pipelines.sources import source_sha256

    frames = tmp_path / "clip"
    _write_bmp_frames(frames, 3)
    backend, path = make_hop_backend("dis-ultrafast"), tmp_path / "out" / "clip.h5"
    path.parent.mkdir()
    source = open_source(frames)
    info = cache_info(source, backend=backend, strides=(1,), size=source.frame_size)
    digest = source_sha256(source)
    with CacheWriter.open(path, info=info) as writer:  # a partial file without the hash
        writer.append(1, np.zeros((48, 64, 3), np.uint8), np.zeros((1, 2, 48, 64), np.float16))
    # Hashed all the same: should the old partial file turn out unusable, the new one the
    # writer starts records it.
    assert info_to_write(path, info, source).source_sha256 == digest
    path.with_name("clip.h5.partial").unlink()
    with CacheWriter.open(path, info=info_to_write(path, info, source)) as writer:
        writer.append(1, np.zeros((48, 64, 3), np.uint8), np.zeros((1, 2, 48, 64), np.float16))

    def no_hashing(source):
        raise AssertionError("hashed although the partial file records the sha256")

    monkeypatch.setattr("pipelines.preprocess.source_sha256", no_hashing)
    assert info_to_write(path, info, source).source_sha256 == digest  # read, not hashed


def test_raft_caches_record_their_settings_and_are_reused_across_precisions(tmp_path):
    frames = tmp_path / "clip"
    _write_translating_frames(frames, 3, size=(64, 48))
    backend = make_hop_backend("raft-small", num_flow_updates=2)
    backend.bf16 = False
    out = tmp_path / "out"
    written = preprocess([frames], out, backend=backend, strides=(1,), progress=False).written
    with CacheReader(written[0]) as reader:
        assert reader.info.flow_settings == "updates=2 warm_updates=none precision=fp32"
    backend.bf16 = True  # another machine: the same flow up to rounding, so the cache serves
    assert preprocess([frames], out, backend=backend, strides=(1,),
                      progress=False).skipped == written
    backend.num_flow_updates = 4  # other flow: refused, not silently reused
    other = preprocess([frames], out, backend=backend, strides=(1,), progress=False)
    assert len(other.failed) == 1 and "other settings" in other.failed[0][1]


def test_a_cache_is_the_same_whatever_way_its_source_path_is_typed(tmp_path, monkeypatch):
    frames = tmp_path / "data" / "clip"
    _write_translating_frames(frames, 4)
    backend, out = make_hop_backend("dis-ultrafast"), tmp_path / "out"
    written = preprocess([frames], out, backend=backend, strides=(1,), progress=False).written
    with CacheReader(written[0]) as reader:
        assert reader.info.source_path == str(frames.resolve())
    monkeypatch.chdir(tmp_path / "data")
    for typed in ("clip", "./clip", "../data//clip"):
        assert preprocess([typed], out, backend=backend, strides=(1,),
                          progress=False).skipped == written, typed
    # A cache written when paths were recorded as typed: read from the current folder.
    with h5py.File(written[0], "r+") as file:
        file.attrs["source_path"] = "clip"
    assert preprocess([frames], out, backend=backend, strides=(1,),
                      progress=False).skipped == written


def test_another_max_frames_is_another_cache_and_the_refusal_names_it(tmp_path):
    frames = tmp_path / "clip"
    _write_translating_frames(frames, 6)
    backend, out = make_hop_backend("dis-ultrafast"), tmp_path / "out"
    first = preprocess([frames], out, backend=backend, strides=(1,), max_frames=3,
                       progress=False)
    assert preprocess([frames], out, backend=backend, strides=(1,), max_frames=3,
                      progress=False).skipped == first.written
    for max_frames, expected in ((4, 4), (None, 6)):
        other = preprocess([frames], out, backend=backend, strides=(1,),
                           max_frames=max_frames, progress=False)
        assert [path for path, _ in other.failed] == [str(frames)]
        assert ("(frames expected: 3 in the cache, "
                f"{expected} now (--max-frames)); pass --overwrite") in other.failed[0][1]
    # More than the source has changes nothing: the cache holds every frame already.
    whole = preprocess([frames], tmp_path / "whole", backend=backend, strides=(1,),
                       progress=False).written
    assert preprocess([frames], tmp_path / "whole", backend=backend, strides=(1,),
                      max_frames=50, progress=False).skipped == whole
    other = preprocess([frames], out, backend=backend, strides=(1, 2), max_frames=3,
                       progress=False)
    assert "(strides: (1,) in the cache, (1, 2) now)" in other.failed[0][1]
    # A video that decodes fewer frames than its header says ran out before either count.
    with h5py.File(whole[0], "r+") as file:
        file.attrs["expected_frames"] = 9  # as if the header had promised 9
    for max_frames in (None, 7, 20):
        assert preprocess([frames], tmp_path / "whole", backend=backend, strides=(1,),
                          max_frames=max_frames, progress=False).skipped == whole, max_frames
    other = preprocess([frames], tmp_path / "whole", backend=backend, strides=(1,),
                       max_frames=5, progress=False)  # fewer than it holds: another cache
    assert "(frames expected: 9 in the cache, 5 now (--max-frames))" in other.failed[0][1]


def test_each_input_is_reported_when_it_is_done_not_after_the_batch(tmp_path, monkeypatch):
    inputs = tmp_path / "inputs"
    for name in ("a", "c"):
        _write_translating_frames(inputs / name, 3)
    (inputs / "b.mp4").write_text("not a video")
    out = tmp_path / "out"
    reports = []

    def record(kind, text):  # what exists when a line is printed
        reports.append((kind, Path(text).name if kind != "failed" else "b.mp4" in text,
                        sorted(p.name for p in out.glob("*.h5"))))

    preprocess([inputs], out, backend=make_hop_backend("dis-ultrafast"), strides=(1,),
               progress=False, on_result=record)
    # The unreadable video fails when the inputs are opened, before any flow.
    assert reports == [("failed", True, []), ("wrote", "a.h5", ["a.h5"]),
                       ("wrote", "c.h5", ["a.h5", "c.h5"])]


def test_a_picture_next_to_videos_does_not_hide_them(tmp_path, caplog):
    """A cover picture or thumbnail among videos used to make their folder a frame folder of
    one image: the videos were never read. Images with no video beside them are still frames."""
    from tests.pipelines.reliability_inputs import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 4)
    write_video(videos / "b.avi", 4, seed=1)
    for name in ("cover.png", "thumb0001.jpg"):
        cv2.imwrite(str(videos / name), np.zeros((8, 8, 3), np.uint8))
    _write_translating_frames(tmp_path / "frames", 3)
    # A hidden video (macOS's ._ files) and a subfolder do not make a frame folder a container.
    (tmp_path / "frames" / "._clip.mp4").write_bytes(b"resource fork")
    (tmp_path / "frames" / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "masks" / "bin000001.png"), np.zeros((8, 8), np.uint8))
    with caplog.at_level("WARNING", logger="pipelines.preprocess"):
        summary = preprocess([videos, tmp_path / "frames"], tmp_path / "out",
                             backend=make_hop_backend("dis-ultrafast"), strides=(1,),
                             progress=False)
    assert summary.failed == []
    assert sorted(path.name for path in summary.written) == ["a.h5", "b.h5", "frames.h5"]
    warning = (f"{videos}: holds videos and 2 image file(s) (cover.png, thumb0001.jpg); the "
               "videos are read, the images are not (a folder of frames holds frames only)")
    assert [record.getMessage() for record in caplog.records] == [warning]


def test_an_input_given_twice_is_cached_once(tmp_path, caplog):
    """It used to be cached twice, as <name>.h5 and <name>_2.h5 (an identical copy)."""
    _write_translating_frames(tmp_path / "clip", 3)
    with caplog.at_level("WARNING", logger="pipelines.preprocess"):
        summary = preprocess([tmp_path / "clip", tmp_path / ".." / tmp_path.name / "clip"],
                             tmp_path / "out", backend=make_hop_backend("dis-ultrafast"),
                             strides=(1,), progress=False)
    assert [path.name for path in summary.written] == ["clip.h5"] and summary.failed == []
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["clip.h5"]
    assert [record.getMessage() for record in caplog.records] == [
        (f"{tmp_path / '..' / tmp_path.name / 'clip'}: already included by an earlier input; "
        "cached once")]
