"""Streaming segmentation: one mask per frame, at the frame's size, in order, model plumbing."""

import json

import numpy as np
import pytest
import torch

from crossnet.checkpoint import save_checkpoint
from crossnet.hofam import HofamConfig, build_hofam
from flow.backends import make_hop_backend
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
    assert main(["evaluate", str(scene), "--method", "crossnet", "--no-progress"]) == 0  # bundled


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
    pictures = sorted(p.name for p in (out / scene.name).glob("*.png"))
    assert pictures == ["crossnet_000001.png", "crossnet_000009.png",
                        "mog2_000001.png", "mog2_000009.png"]
    for name in pictures:
        assert f"({scene.name}/{name})" in text


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

    spy = replace(segmentation, model=recording)
    list(segment_frames(open_scene(scene), spy, backend=make_hop_backend("dis-ultrafast"),
                        batch_frames=4))
    frames = [frame.rgb for frame in open_scene(scene)]
    expected = list(running_backgrounds(frames, estimator=estimator))
    assert len(seen) == len(expected) == 9
    for t, (got, want) in enumerate(zip(seen, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"frame {t}")


@pytest.mark.parametrize("camera_motion", ["none", "affine"])
def test_the_model_gets_the_3d_hop_with_the_camera_motion_it_was_trained_with(
        scene, tmp_path, camera_motion):
    # segment must hand the model the 3D-HOP that training (crossnet.data) gave it.
    from dataclasses import replace

    from crossnet.camera_motion import remove_camera_motion
    from flow.hop import build_hops

    torch.manual_seed(1)
    model = build_hofam(HofamConfig(strides=(1, 2), camera_motion=camera_motion))
    save_checkpoint(tmp_path / "cm.pt", {"model": model.state_dict(),
                                         "model_config": model.config.to_dict()})
    segmentation = load_segmentation_model(tmp_path / "cm.pt")
    seen = []

    def recording(frames, hop, background=None):
        seen.extend(hop)
        return segmentation.model(frames, hop, background)

    backend = make_hop_backend("dis-ultrafast")
    spy = replace(segmentation, model=recording)
    list(segment_frames(open_scene(scene), spy, backend=backend, batch_frames=4))
    frames = (torch.from_numpy(frame.rgb).permute(2, 0, 1) for frame in open_scene(scene))
    raw = [stack for _, stack in build_hops(frames, backend, (1, 2))]
    assert len(seen) == len(raw) == 9
    for t, (got, stack) in enumerate(zip(seen, raw)):
        want = remove_camera_motion(stack, (1, 2), camera_motion)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=f"frame {t}")
    if camera_motion == "affine":
        assert max((a - b).abs().max() for a, b in zip(seen, raw)) > 0
