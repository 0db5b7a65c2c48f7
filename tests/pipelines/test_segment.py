"""Streaming segmentation: one mask per frame, at the frame's size, in order, model plumbing."""

import json

import numpy as np
import pytest
import torch

from crossnet.checkpoint import save_checkpoint
from crossnet.hofam import HofamConfig, build_hofam
from flow.backends import file_sha256, make_hop_backend
from pipelines.cli import main
from pipelines.scenes import open_scene
from pipelines.segment import load_segmentation_model, segment_frames
from pipelines.synth import SynthConfig, generate_scenes


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    config = SynthConfig(size=(64, 48), num_frames=9, strides=(1, 2))
    return generate_scenes(root, num_scenes=1, config=config, seed=2, progress=False)[0]


def _constant_model(path, logit: float, **config):
    """A checkpoint whose model outputs ``logit`` everywhere (head weights zero, bias set)."""
    torch.manual_seed(0)
    model = build_hofam(HofamConfig(strides=(1, 2), **config))
    with torch.no_grad():
        model.head.conv.weight.zero_()
        model.head.conv.bias.fill_(logit)
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.config.to_dict(),
                           "flow_backend": "dis-ultrafast"})
    return path


@pytest.mark.parametrize(("logit", "value"), [(6.0, 255), (-6.0, 0)])
@pytest.mark.parametrize("size", [None, (32, 24)])
def test_masks_come_in_order_at_the_frames_own_size(scene, tmp_path, logit, value, size):
    segmentation = load_segmentation_model(_constant_model(tmp_path / "m.pt", logit))
    assert segmentation.flow_backend == "dis-ultrafast"
    source = open_scene(scene)
    results = list(segment_frames(source, segmentation, backend=make_hop_backend("dis-ultrafast"),
                                  size=size, batch_frames=4))
    assert [frame.number for frame, _ in results] == list(range(1, 10))
    for frame, mask in results:
        assert mask.shape == frame.rgb.shape[:2] == (48, 64)
        assert mask.dtype == np.uint8 and (mask == value).all()


def test_a_random_model_with_background_input_runs(scene, tmp_path):
    torch.manual_seed(1)
    model = build_hofam(HofamConfig(strides=(1, 2), use_background=True))
    save_checkpoint(tmp_path / "bg.pt", {"model": model.state_dict(),
                                         "model_config": model.config.to_dict()})
    segmentation = load_segmentation_model(tmp_path / "bg.pt")
    masks = [mask for _, mask in segment_frames(open_scene(scene), segmentation,
                                                backend=make_hop_backend("dis-ultrafast"))]
    assert len(masks) == 9 and set(np.unique(np.stack(masks))) <= {0, 255}


def test_a_checkpoint_for_another_configuration_is_refused(tmp_path):
    model = build_hofam(HofamConfig(strides=(1, 2)))
    config = model.config.to_dict() | {"widths": [8, 16, 32, 128]}
    save_checkpoint(tmp_path / "odd.pt", {"model": model.state_dict(), "model_config": config})
    with pytest.raises(ValueError, match="do not fit the checkpoint's model configuration"):
        load_segmentation_model(tmp_path / "odd.pt")


def test_evaluate_scores_the_model_next_to_the_baselines(scene, tmp_path):
    weights = _constant_model(tmp_path / "all.pt", 6.0)
    out = tmp_path / "scores.json"
    code = main(["evaluate", str(scene), "--method", "crossnet", "--method", "mog2",
                 "--weights", str(weights), "--json", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())["methods"]
    everything = report["crossnet"]["scenes"][scene.name]
    assert everything["Re"] == 1.0 and everything["FNR"] == 0.0  # all-foreground model
    assert report["mog2"]["scenes"][scene.name]["frames"] == everything["frames"] == 9
    # The scores say what made them; the baselines have no settings to record.
    assert report["crossnet"]["settings"] == {
        "weights": str(weights), "weights_sha256": file_sha256(weights),
        "flow_backend": "dis-ultrafast", "size": None, "threshold": 0.5, "precision": "fp32",
        "flip_average": True, "camera_motion": "affine", "align_background": True}
    assert "settings" not in report["mog2"]
    assert main(["evaluate", str(scene), "--method", "crossnet", "--no-progress"]) == 0  # bundled


def test_evaluate_camera_motion_leaves_a_still_cameras_scores_alone(scene, tmp_path):
    # The synthetic scene's camera is still: the fitted camera motion explains no frame pair
    # better than a still camera, so --camera-motion affine drops it and scores the same.
    scores = {}
    for mode in ("none", "affine"):
        out = tmp_path / f"{mode}.json"
        assert main(["evaluate", str(scene), "--method", "crossnet", "--camera-motion", mode,
                     "--json", str(out), "--no-progress"]) == 0
        document = json.loads(out.read_text())
        assert document["settings"]["camera_motion"] == mode
        scores[mode] = document["scenes"][scene.name]
        del scores[mode]["fps"]
    assert scores["none"]["frames"] == 9 and scores["none"]["F"] > 0
    assert scores["affine"] == scores["none"]
    assert main(["evaluate", str(scene), "--method", "crossnet", "--camera-motion", "zoom",
                 "--no-progress"]) == 2


def test_segment_command_writes_numbered_masks_and_videos_and_resumes(scene, tmp_path, capsys):
    import cv2

    weights = _constant_model(tmp_path / "all.pt", 6.0)
    clip = scene / f"{scene.name}.mp4"
    out = tmp_path / "masks"
    args = ["segment", str(clip), "--out", str(out), "--weights", str(weights),
            "--video", str(tmp_path / "masks.mp4"), "--overlay", str(tmp_path / "overlay.mp4"),
            "--size", "32x24", "--no-progress"]
    assert main(args) == 0
    assert "9 masks in" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    # 1-based video frame numbers, and the record of what made them
    assert names == [f"bin{n:06d}.png" for n in range(1, 10)] + ["segment.json"]
    mask = cv2.imread(str(out / "bin000004.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (48, 64) and (mask == 255).all()
    for video in ("masks.mp4", "overlay.mp4"):
        capture = cv2.VideoCapture(str(tmp_path / video))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 9
        capture.release()
    stamp = (out / "bin000004.png").stat().st_mtime_ns
    assert main(args) == 0  # a rerun keeps the masks already written
    assert (out / "bin000004.png").stat().st_mtime_ns == stamp
    assert main(["segment", str(tmp_path / "absent.mp4"), "--out", str(out),
                 "--weights", str(weights)]) == 1
    assert "absent.mp4" in capsys.readouterr().err


def test_evaluate_report_writes_markdown_and_error_pictures(scene, tmp_path):
    weights = _constant_model(tmp_path / "everything.pt", 6.0)
    out = tmp_path / "report"
    code = main(["evaluate", str(scene), "--method", "crossnet", "--method", "mog2",
                 "--weights", str(weights), "--report", str(out), "--pictures", "2",
                 "--no-progress"])
    assert code == 0
    text = (out / "report.md").read_text()
    assert "| crossnet |" in text and "| mog2 |" in text
    # The columns of the table evaluate prints, in its order.
    assert "| scene | method | Re | Pr | F | PWC | fps |" in text.splitlines()
    pictures = sorted(p.name for p in (out / scene.name).glob("*.png"))
    assert pictures == ["crossnet_000001.png", "crossnet_000009.png",
                        "mog2_000001.png", "mog2_000009.png"]
    for name in pictures:
        assert f"({scene.name}/{name})" in text
    # --pictures 0: the scores alone.
    assert main(["evaluate", str(scene), "--method", "mog2", "--report", str(tmp_path / "r0"),
                 "--pictures", "0", "--no-progress"]) == 0
    assert [p.name for p in (tmp_path / "r0").iterdir()] == ["report.md"]
    assert "| mog2 |" in (tmp_path / "r0" / "report.md").read_text()


def test_segment_cache_is_written_then_reused_with_the_same_masks(scene, tmp_path, monkeypatch):
    from flow.cache import CacheReader, is_complete

    clip = str(scene / f"{scene.name}.mp4")  # segmented with the bundled weights
    first, second, cache = tmp_path / "first", tmp_path / "second", tmp_path / "cache"
    base = ["segment", clip, "--size", "48x36", "--no-progress", "--cache", str(cache)]
    assert main([*base, "--out", str(first)]) == 0
    path = cache / f"{scene.name}.h5"
    assert is_complete(path)
    with CacheReader(path) as reader:
        assert len(reader) == 9 and reader.info.size == (48, 36)
        assert reader.info.strides == (1, 4, 8) and reader.info.backend == "dis-fast"
        assert list(reader.frame_numbers) == list(range(1, 10))

    def no_flow(*args, **kwargs):
        raise AssertionError("the flow ran although the cache was complete")

    monkeypatch.setattr("pipelines.segment.build_hops", no_flow)
    assert main([*base, "--out", str(second)]) == 0
    import cv2

    masks = [[cv2.imread(str(folder / f"bin{n:06d}.png"), cv2.IMREAD_UNCHANGED)
              for n in range(1, 10)] for folder in (first, second)]
    a, b = np.stack(masks[0]), np.stack(masks[1])
    assert a.shape == (9, 48, 64) and 0 < (a == 255).mean() < 1  # masks that depend on input
    assert (a == b).mean() > 0.99  # the cache holds float16 flow: a few edge pixels may flip
    other = ["segment", clip, "--size", "32x24", "--no-progress", "--cache", str(cache),
             "--out", str(tmp_path / "third")]
    assert main(other) == 1  # a cache of another size is in the way: one clear error


def test_two_videos_of_one_name_each_find_their_own_cache(scene, tmp_path, monkeypatch):
    import shutil

    from flow.cache import CacheReader, is_complete

    clips = []
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
        clips.append(tmp_path / folder / "clip.mp4")
        shutil.copyfile(scene / f"{scene.name}.mp4", clips[-1])
    cache = tmp_path / "cache"
    size = ["--size", "48x36", "--no-progress"]
    assert main(["preprocess", str(clips[0]), str(clips[1]), "--out", str(cache), *size]) == 0
    sources = {}
    for name in ("clip", "clip_2"):
        with CacheReader(cache / f"{name}.h5") as reader:
            sources[name] = reader.info.source_path
    assert sources == {"clip": str(clips[0]), "clip_2": str(clips[1])}

    def no_flow(*args, **kwargs):
        raise AssertionError("the flow ran although the cache was complete")

    with monkeypatch.context() as patch:
        patch.setattr("pipelines.segment.build_hops", no_flow)
        for clip in clips[:2]:  # b/clip.mp4 used to find a/clip.mp4's clip.h5 and stop there
            assert main(["segment", str(clip), "--cache", str(cache), "--out",
                         str(clip.parent / "masks"), *size]) == 0
            assert (clip.parent / "masks" / "bin000009.png").exists()
    # A third clip.mp4 gets a cache of its own, next to the two.
    assert main(["segment", str(clips[2]), "--cache", str(cache), "--out",
                 str(tmp_path / "c" / "masks"), *size]) == 0
    with CacheReader(cache / "clip_3.h5") as reader:
        assert reader.info.source_path == str(clips[2])
    assert is_complete(cache / "clip.h5") and is_complete(cache / "clip_2.h5")

    # a/clip.mp4's cache only partly written: b/clip.mp4 still finds clip_2.h5 beyond it (it
    # used to take the free name clip.h5, delete a's partial file and run the flow again).
    partial = cache / "clip.h5.partial"
    (cache / "clip.h5").rename(partial)
    with monkeypatch.context() as patch:
        patch.setattr("pipelines.segment.build_hops", no_flow)
        assert main(["segment", str(clips[1]), "--cache", str(cache), "--out",
                     str(tmp_path / "b" / "again"), *size]) == 0
    assert partial.exists()


def test_segment_reuses_the_cache_of_a_copied_video(scene, tmp_path, monkeypatch):
    import os
    import shutil

    clip, cache = tmp_path / "clip.mp4", tmp_path / "cache"
    shutil.copyfile(scene / f"{scene.name}.mp4", clip)
    base = ["segment", str(clip), "--size", "48x36", "--no-progress", "--cache", str(cache)]
    assert main([*base, "--out", str(tmp_path / "first")]) == 0
    later = clip.stat().st_mtime + 3600
    os.utime(clip, (later, later))  # copied again, or restored: new time, the same bytes

    def no_flow(*args, **kwargs):
        raise AssertionError("the flow ran although the cache holds this video")

    with monkeypatch.context() as patch:
        patch.setattr("pipelines.segment.build_hops", no_flow)
        assert main([*base, "--out", str(tmp_path / "second")]) == 0
    with open(clip, "r+b") as file:  # an edit that keeps the size: the cache is stale
        file.seek(-1, os.SEEK_END)
        last = file.read(1)
        file.seek(-1, os.SEEK_END)
        file.write(bytes([last[0] ^ 0xFF]))
    os.utime(clip, (later + 1, later + 1))
    assert main([*base, "--out", str(tmp_path / "third")]) == 1


def test_segment_refuses_a_cache_for_a_stream(scene, tmp_path, capsys):
    from pipelines.errors import InputError
    from pipelines.segment_cache import SegmentCache
    from pipelines.sources import open_source

    # A URL: each run reads whatever the camera or server sends now, so a cache of the last
    # recording would be read for the next one (it used to be, silently).
    url = (scene / f"{scene.name}.mp4").as_uri()
    code = main(["segment", url, "--out", str(tmp_path / "masks"), "--cache",
                 str(tmp_path / "cache"), "--no-progress"])
    assert code == 2
    assert "a camera's or a stream's frames differ on every run" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "masks").exists()
    with pytest.raises(InputError, match="--cache needs a video file or a folder"):
        SegmentCache.open(tmp_path / "cache", open_source(url), backend=None, strides=(1,),
                          size=(48, 36))


def test_cache_names_of_same_named_sources_never_repeat():
    from types import SimpleNamespace

    from pipelines.preprocess import unique_cache_names

    named = [SimpleNamespace(name=name) for name in ("clip", "clip", "clip_2", "clip")]
    # The third is a source literally named clip_2: it used to get the second one's name.
    assert unique_cache_names(named) == ["clip", "clip_2", "clip_2_2", "clip_3"]


def test_a_resumed_run_reads_the_right_frames_from_the_cache(scene, tmp_path):
    from crossnet.weights import bundled_weights

    segmentation = load_segmentation_model(bundled_weights())
    backend = make_hop_backend("dis-fast")
    cache = tmp_path / "cache"
    full = [mask for _, mask in segment_frames(open_scene(scene), segmentation, backend=backend,
                                               cache_dir=cache)]
    assert (cache / f"{scene.name}.h5").exists()
    resumed = [mask for _, mask in segment_frames(open_scene(scene), segmentation,
                                                  backend=backend, start=4, cache_dir=cache)]
    assert all(mask is None for mask in resumed[:4])
    assert len(resumed) == len(full) == 9
    assert 0 < (np.stack(full[4:]) == 255).mean() < 1  # masks that depend on the frames
    for a, b in zip(full[4:], resumed[4:]):
        assert (a == b).mean() > 0.99  # same frames, same flow (float16 in the cache)
    shifted = [mask for _, mask in segment_frames(open_scene(scene), segmentation,
                                                  backend=backend, start=4)]
    for a, b in zip(shifted[4:], resumed[4:]):
        assert (a == b).mean() > 0.99  # and what the flow gives without the cache


@pytest.mark.parametrize("estimator", ["ema", "median"])
def test_the_model_gets_the_background_estimate_it_was_trained_with(scene, tmp_path, estimator):
    # segment must build the same running background as training (crossnet.data) does.
    from dataclasses import replace

    from crossnet.background import running_backgrounds

    torch.manual_seed(1)
    model = build_hofam(HofamConfig(strides=(1, 2), use_background=True,
                                    background_estimator=estimator))
    save_checkpoint(tmp_path / "bg.pt", {"model": model.state_dict(),
                                         "model_config": model.config.to_dict()})
    segmentation = load_segmentation_model(tmp_path / "bg.pt")
    seen = []

    def recording(frames, hop, background):
        seen.extend(background.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
        return segmentation.model(frames, hop, background)

    spy = replace(segmentation, model=recording, flip_average=False)
    list(segment_frames(open_scene(scene), spy, backend=make_hop_backend("dis-ultrafast"),
                        batch_frames=4))
    frames = [frame.rgb for frame in open_scene(scene)]
    expected = list(running_backgrounds(frames, estimator=estimator))
    assert len(seen) == len(expected) == 9
    for t, (got, want) in enumerate(zip(seen, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"frame {t}")


@pytest.fixture(scope="module")
def panning(tmp_path_factory):
    """A frame folder filmed by a camera panning right at 2 px/frame over a textured scene,
    with a 10x10 square moving down at 1 px/frame: 9 frames of 64x48."""
    import cv2

    folder = tmp_path_factory.mktemp("panning")
    rows, columns = np.mgrid[0:48, 0:200].astype(np.float64)
    scene = (128 + 50 * np.sin(0.31 * columns + 0.17 * rows)
             + 40 * np.sin(-0.23 * columns + 0.29 * rows + 1))
    for t in range(9):
        grey = scene[:, 2 * t:2 * t + 64].copy()
        grey[10 + t:20 + t, 30:40] = 20
        rgb = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        cv2.imwrite(str(folder / f"in{t + 1:06d}.png"), rgb)
    return folder


def _spy(segmentation, seen):
    """``segmentation`` with a model that records the 3D-HOP and background it is given (one
    pass per frame: no flip averaging)."""
    from dataclasses import replace

    def recording(frames, hop, background=None):
        for index in range(len(hop)):
            picture = (None if background is None else
                       background[index].mul(255).round().to(torch.uint8).permute(1, 2, 0)
                       .numpy())
            seen.append((hop[index], picture))
        return segmentation.model(frames, hop, background)

    return replace(segmentation, model=recording, flip_average=False)


def _expected_inputs(frames, backend, strides, camera_motion, align):
    """The 3D-HOP and background of every frame as the training datasets make them."""
    from crossnet.background import running_backgrounds
    from crossnet.camera_motion import camera_flows
    from flow.hop import build_hops, earlier_frame

    tensors = [torch.from_numpy(rgb).permute(2, 0, 1) for rgb in frames]
    hops, motions = [], []
    for t, stack in build_hops(iter(tensors), backend, strides):
        earlier = torch.stack([tensors[earlier_frame(t, k)] for k in strides])
        camera = camera_flows(stack, strides, tensors[t], earlier)
        hops.append(stack - camera if camera_motion != "none" else stack)
        motions.append(camera[strides.index(1)])
    backgrounds = list(running_backgrounds(frames, motions=motions if align else None))
    return hops, backgrounds, motions


@pytest.mark.parametrize("camera_motion", ["none", "affine"])
def test_the_model_gets_the_3d_hop_with_the_camera_motion_it_was_trained_with(
        panning, tmp_path, camera_motion):
    # segment must hand the model the 3D-HOP that training (crossnet.data) gave it.
    from pipelines.sources import open_source

    torch.manual_seed(1)
    model = build_hofam(HofamConfig(strides=(1, 2), camera_motion=camera_motion))
    save_checkpoint(tmp_path / "cm.pt", {"model": model.state_dict(),
                                         "model_config": model.config.to_dict()})
    seen = []
    spy = _spy(load_segmentation_model(tmp_path / "cm.pt"), seen)
    backend = make_hop_backend("dis-ultrafast")
    list(segment_frames(open_source(panning), spy, backend=backend, batch_frames=4))
    frames = [frame.rgb for frame in open_source(panning)]
    hops, _, motions = _expected_inputs(frames, backend, (1, 2), camera_motion, False)
    assert len(seen) == len(hops) == 9
    for t, ((got, _), want) in enumerate(zip(seen, hops)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=f"frame {t}")
    # The pan was found (2 px/frame, from frame t to frame t - 1: u = +2) on most frames.
    found = [m[0].median().item() for m in motions[1:]]
    assert sum(abs(u - 2.0) < 0.3 for u in found) >= 6, found
    if camera_motion == "affine":
        assert max(got.abs().median() for got, _ in seen) < 0.3


def test_camera_motion_chosen_at_test_time_replaces_the_checkpoints_own(panning, tmp_path):
    # `segment --camera-motion affine` on a model trained without it: the model gets the
    # compensated 3D-HOP, exactly as a model trained with it would.
    from pipelines.sources import open_source

    torch.manual_seed(1)
    model = build_hofam(HofamConfig(strides=(1, 2)))
    save_checkpoint(tmp_path / "still.pt", {"model": model.state_dict(),
                                            "model_config": model.config.to_dict()})
    plain = load_segmentation_model(tmp_path / "still.pt")
    chosen = load_segmentation_model(tmp_path / "still.pt", camera_motion="affine")
    assert plain.config.camera_motion == "none" and chosen.config.camera_motion == "affine"
    assert chosen.config == HofamConfig(strides=(1, 2), camera_motion="affine")
    assert load_segmentation_model(tmp_path / "still.pt",
                                   camera_motion="none").config == plain.config
    seen = []
    backend = make_hop_backend("dis-ultrafast")
    list(segment_frames(open_source(panning), _spy(chosen, seen), backend=backend,
                        batch_frames=4))
    frames = [frame.rgb for frame in open_source(panning)]
    hops, _, _ = _expected_inputs(frames, backend, (1, 2), "affine", False)
    assert len(seen) == len(hops) == 9
    for t, ((got, _), want) in enumerate(zip(seen, hops)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=f"frame {t}")
    assert max(got.abs().median() for got, _ in seen) < 0.3

    with pytest.raises(ValueError, match="unknown camera motion 'homography'"):
        load_segmentation_model(tmp_path / "still.pt", camera_motion="homography")


@pytest.mark.parametrize("camera_motion", ["none", "affine"])
@pytest.mark.parametrize("start", [0, 5])
def test_a_background_aligned_with_the_camera_is_what_training_made_even_after_resuming(
        panning, tmp_path, start, camera_motion):
    from crossnet.background import running_backgrounds
    from pipelines.sources import open_source

    torch.manual_seed(1)
    model = build_hofam(HofamConfig(strides=(1, 2), camera_motion=camera_motion,
                                    align_background=True))
    save_checkpoint(tmp_path / "al.pt", {"model": model.state_dict(),
                                         "model_config": model.config.to_dict()})
    seen = []
    spy = _spy(load_segmentation_model(tmp_path / "al.pt"), seen)
    backend = make_hop_backend("dis-ultrafast")
    results = list(segment_frames(open_source(panning), spy, backend=backend, batch_frames=4,
                                  start=start))
    assert [mask is None for _, mask in results] == [t < start for t in range(9)]
    frames = [frame.rgb for frame in open_source(panning)]
    hops, backgrounds, _ = _expected_inputs(frames, backend, (1, 2), camera_motion, True)
    assert len(seen) == 9 - start
    for t, (hop, background) in enumerate(seen, start=start):
        torch.testing.assert_close(hop, hops[t], atol=1e-4, rtol=0, msg=f"frame {t}")
        np.testing.assert_array_equal(background, backgrounds[t], err_msg=f"frame {t}")
    # Moved with the camera, the background matches the frame away from the square; the
    # still EMA, smeared along the pan, does not.
    still = list(running_backgrounds(frames))
    away = np.ones((48, 64), bool)
    away[8:30, 28:42] = False
    aligned_error = np.mean([np.abs(backgrounds[t].astype(int) - frames[t])[away].mean()
                             for t in range(4, 9)])
    still_error = np.mean([np.abs(still[t].astype(int) - frames[t])[away].mean()
                           for t in range(4, 9)])
    assert aligned_error < 0.1 * still_error, (aligned_error, still_error)


def test_the_commands_remove_camera_motion_by_default(panning, tmp_path):
    # segment and evaluate share the option; its default is the module's constant, and the
    # bundled weights (trained without compensation) then see a panning camera's frames
    # compensated, flow and background: the masks equal --camera-motion affine+background's
    # and differ from none's and from affine's (the flow only).
    from pipelines import cli
    from pipelines.imageio import read_label_mask
    from pipelines.segment import CAMERA_MODES, DEFAULT_CAMERA_MOTION

    for command in (cli.segment, cli.evaluate):
        option = next(p for p in command.params if p.name == "camera_motion")
        assert option.default == DEFAULT_CAMERA_MOTION == "affine+background"
        assert tuple(option.type.choices) == CAMERA_MODES
    masks = {}
    for name in ("default", *CAMERA_MODES):
        extra = [] if name == "default" else ["--camera-motion", name]
        out = tmp_path / name.replace("+", "_")
        assert main(["segment", str(panning), "--out", str(out), "--no-progress", *extra]) == 0
        masks[name] = np.stack([read_label_mask(out / f"bin{t:06d}.png") for t in range(1, 10)])
    np.testing.assert_array_equal(masks["default"], masks["affine+background"])
    for other in ("none", "affine"):
        assert (masks[other] != masks["affine+background"]).mean() > 0.005, other


def test_camera_modes_set_the_models_inputs():
    from pipelines.segment import with_camera_mode

    config = HofamConfig(strides=(1, 2))
    assert config.use_background and config.camera_motion == "none"
    assert with_camera_mode(config, "affine+background") == HofamConfig(
        strides=(1, 2), camera_motion="affine", align_background=True)
    assert with_camera_mode(config, "affine") == HofamConfig(strides=(1, 2),
                                                             camera_motion="affine")
    assert with_camera_mode(with_camera_mode(config, "affine+background"), "none") == config
    # Without a background input there is nothing to move: the same as affine.
    plain = HofamConfig(strides=(1, 2), use_background=False)
    assert with_camera_mode(plain, "affine+background") == with_camera_mode(plain, "affine")
    with pytest.raises(ValueError, match="unknown camera motion 'pan', expected one of none, "
                                         "affine, affine\\+background"):
        with_camera_mode(config, "pan")


def test_the_api_takes_a_camera_index_as_an_int_and_refuses_a_backend_name(scene):
    from crossnet.weights import bundled_weights
    from pipelines.errors import InputError
    from pipelines.sources import open_source

    # As "7" on the command line: a camera (none here); it used to be a TypeError about paths.
    with pytest.raises(InputError, match="^7: could not open the camera"):
        open_source(7)
    segmentation = load_segmentation_model(bundled_weights())
    with pytest.raises(TypeError, match=r"make_hop_backend\('dis-fast'\), not its name"):
        next(segment_frames(open_source(scene), segmentation, backend="dis-fast"))
