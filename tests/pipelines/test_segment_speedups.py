"""The fast paths of `segment` against its reference path.

- overlap (the 3D-HOP of the next frames built in a background thread while HOFAM runs):
  the masks are bit-identical to the sequential path, also when resuming, and errors of the
  source still reach the caller; it is the default only where the model runs on a GPU;
- bf16 autocast for HOFAM: masks agree with fp32 on at least 99.5 % of the pixels and the F
  score against the synthetic ground truth moves by at most 0.01;
- torch.compile for HOFAM: one static-shape graph serves the run (a short last batch is padded,
  and the padding changes no mask), every new processing size in one process is compiled (not
  run eagerly past dynamo's recompile limit), and (slow) the compiled masks agree with eager's.
"""

import numpy as np
import pytest
import torch

from crossnet.metrics import VideoScorer
from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend
from pipelines.scenes import open_scene
from pipelines.segment import load_segmentation_model, overlap_by_default, segment_frames
from pipelines.synth import SynthConfig, generate_scenes

# Tolerances of the bf16 path; measured on this clip with the bundled weights (a7afe1ad):
# 0.9998 agreement, F 0.7278 -> 0.7278 (the previous file: 0.9998, 0.6509 -> 0.6527).
BF16_MIN_AGREEMENT = 0.995
BF16_MAX_F_CHANGE = 0.01


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    config = SynthConfig(size=(320, 240), num_frames=24)
    return generate_scenes(tmp_path_factory.mktemp("speedups"), num_scenes=1, config=config,
                           seed=5, progress=False)[0]


@pytest.fixture(scope="module")
def segmentation():
    return load_segmentation_model(bundled_weights())


def _masks(clip, segmentation, **options):
    results = segment_frames(open_scene(clip), segmentation,
                             backend=make_hop_backend(segmentation.flow_backend), **options)
    return {frame.number: mask for frame, mask in results if mask is not None}


def _f_score(clip, masks):
    scene = open_scene(clip)
    scorer = VideoScorer()
    for frame in scene:
        scorer.add(frame.number, masks[frame.number], frame.mask, roi=scene.roi,
                   temporal_roi=scene.temporal_roi)
    return scorer.result()["F"]


@pytest.mark.parametrize("batch_frames", [1, 3])
def test_overlap_gives_the_masks_of_the_sequential_path(clip, segmentation, batch_frames):
    reference = _masks(clip, segmentation, overlap=False, batch_frames=batch_frames)
    overlapped = _masks(clip, segmentation, overlap=True, batch_frames=batch_frames)
    assert len(reference) == 24 and list(overlapped) == list(reference)
    assert any(mask.any() for mask in reference.values()), "a blank clip proves nothing"
    for number, mask in reference.items():
        np.testing.assert_array_equal(overlapped[number], mask, err_msg=f"frame {number}")


def test_a_resumed_overlapped_run_gives_the_masks_of_an_uninterrupted_one(clip, segmentation):
    reference = _masks(clip, segmentation, overlap=False)
    resumed = _masks(clip, segmentation, overlap=True, start=10)
    assert sorted(resumed) == sorted(reference)[10:]
    for number, mask in resumed.items():
        np.testing.assert_array_equal(mask, reference[number], err_msg=f"frame {number}")


class _FailingSource:
    """A scene whose reading fails after ``good`` frames, like a video cut short by a bad
    packet."""

    def __init__(self, scene, good):
        self._scene, self._good = scene, good
        self.name, self.path, self.fps = scene.name, scene.path, scene.fps
        self.frame_size, self.num_frames = scene.frame_size, scene.num_frames

    def __iter__(self):
        for index, frame in enumerate(self._scene):
            if index == self._good:
                raise OSError(f"{self.path}: corrupt frame {frame.number}")
            yield frame


@pytest.mark.parametrize("overlap", [False, True])
def test_a_read_error_reaches_the_caller_after_the_masks_before_it(clip, segmentation,
                                                                   overlap):
    source = _FailingSource(open_scene(clip), good=13)
    received = []
    with pytest.raises(OSError, match="corrupt frame 14"):
        for frame, _ in segment_frames(source, segmentation, overlap=overlap, batch_frames=4,
                                       backend=make_hop_backend(segmentation.flow_backend)):
            received.append(frame.number)
    # Batches of 4: the masks of frames 1..12 were complete before the read failed.
    assert received == list(range(1, 13))


def test_bf16_masks_agree_with_fp32_within_tolerance(clip, segmentation):
    fp32 = _masks(clip, segmentation, precision="fp32")
    bf16 = _masks(clip, segmentation, precision="bf16")
    reference, fast = np.stack(list(fp32.values())), np.stack(list(bf16.values()))
    agreement = float((reference == fast).mean())
    assert agreement >= BF16_MIN_AGREEMENT, agreement
    f_fp32, f_bf16 = _f_score(clip, fp32), _f_score(clip, bf16)
    assert f_fp32 > 0.5, "the check needs a clip the model segments"
    assert abs(f_bf16 - f_fp32) <= BF16_MAX_F_CHANGE, (f_fp32, f_bf16)


def test_an_unknown_precision_is_refused(clip, segmentation):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        _masks(clip, segmentation, precision="fp8")


@pytest.mark.parametrize(("device", "expected"), [
    ("cpu", False), ("cuda", True), ("cuda:1", True), (torch.device("cpu"), False)])
def test_segment_overlaps_its_stages_by_default_only_when_the_model_has_a_gpu(device, expected):
    # On the CPU both stages want the same cores (slower on the 2-core machine of the records).
    assert overlap_by_default(device) is expected


class _RecordingCompile:
    """Stands in for torch.compile: runs the model eagerly, records the options and the batch
    size of every call."""

    def __init__(self):
        self.options, self.batches = [], []

    def __call__(self, model, **options):
        self.options.append(options)

        def compiled(frames, hop, background=None):
            self.batches.append(frames.shape[0])
            return model(frames, hop, background)

        return compiled


@pytest.mark.parametrize("flip_average", [False, True])
def test_compiled_model_sees_one_batch_shape_and_padding_changes_no_mask(
        clip, segmentation, monkeypatch, flip_average):
    import dataclasses

    segmentation = dataclasses.replace(segmentation, flip_average=flip_average)
    reference = _masks(clip, segmentation, batch_frames=5)  # 24 frames: the last batch has 4
    recording = _RecordingCompile()
    monkeypatch.setattr(torch, "compile", recording)
    compiled = _masks(clip, segmentation, batch_frames=5, compile_model=True)
    assert recording.options == [{"dynamic": False}]
    assert set(recording.batches) == {10 if flip_average else 5}
    assert len(recording.batches) == 5
    assert list(compiled) == list(reference)
    for number, mask in reference.items():
        np.testing.assert_array_equal(compiled[number], mask, err_msg=f"frame {number}")


def test_every_new_processing_size_is_compiled_past_dynamos_recompile_limit(
        clip, segmentation, monkeypatch):
    # Real dynamo with a backend that only counts its graphs (no inductor): past
    # recompile_limit distinct sizes dynamo used to run the model eagerly. A limit of 2 makes
    # the third size the first one past it.
    import functools

    import torch._dynamo

    import pipelines.segment

    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile,
                                                            backend=counting_backend))
    monkeypatch.setattr(pipelines.segment, "_compiled_inputs", None)
    torch._dynamo.reset()
    sizes = [(48, 32), (48, 32), (64, 32), (80, 32)]
    counts = []
    try:
        # The setting's name since torch 2.6; before, cache_size_limit.
        name = ("recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit")
                else "cache_size_limit")
        with torch._dynamo.config.patch(**{name: 2}):
            for size in sizes:
                _masks(clip, segmentation, size=size, batch_frames=4, compile_model=True)
                counts.append(len(graphs))
    finally:
        torch._dynamo.reset()
    per_size = counts[0]
    assert per_size >= 1
    # The second run at the first size reuses its graphs; each new size compiles its own.
    assert counts == [per_size, per_size, 2 * per_size, 3 * per_size]


@pytest.mark.slow
def test_torch_compile_gives_the_eager_masks(clip, segmentation):
    reference = _masks(clip, segmentation, batch_frames=4)
    compiled = _masks(clip, segmentation, batch_frames=4, compile_model=True)
    assert list(compiled) == list(reference)
    agreement = np.mean([np.mean(compiled[n] == mask) for n, mask in reference.items()])
    assert agreement > 0.9999


def test_compile_without_a_cxx_compiler_is_a_usage_error(clip, tmp_path, monkeypatch, capsys):
    import pipelines.cli
    from pipelines.cli import main

    monkeypatch.setattr(pipelines.cli, "_cxx_compiler", lambda: None)
    code = main(["segment", str(clip), "--out", str(tmp_path / "m"), "--compile",
                 "--device", "cpu", "--no-progress"])
    assert code == 2
    assert "--compile on a CPU needs a C++ compiler" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_the_cxx_compiler_is_found_by_cxx_or_the_usual_names(monkeypatch):
    import shutil

    import pipelines.cli

    found = {"g++": "/usr/bin/g++", "/opt/cc/bin/my++": "/opt/cc/bin/my++"}
    monkeypatch.setattr(shutil, "which", found.get)
    monkeypatch.delenv("CXX", raising=False)
    assert pipelines.cli._cxx_compiler() == "g++"
    monkeypatch.setenv("CXX", "/opt/cc/bin/my++")
    assert pipelines.cli._cxx_compiler() == "/opt/cc/bin/my++"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert pipelines.cli._cxx_compiler() is None
