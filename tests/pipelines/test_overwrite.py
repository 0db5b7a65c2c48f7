"""Paths named on the command line are never overwritten unless ``--overwrite`` is given; the
refusal comes before any work, and a rerun of the same command continues rather than clobbers.
"""

from __future__ import annotations

import json

import cv2
import pytest

from crossnet.checkpoint import load_checkpoint
from flow.cache import CacheReader
from tests.pipelines.reliability_inputs import (
    run,
    tiny_model,
    training_caches,
    write_frames,
    write_scene,
    write_video,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    write_video(root / "a.mp4", 5)
    write_video(root / "b.mp4", 5, seed=1)
    write_frames(root / "frames", 2)
    write_scene(root / "scene", count=3)
    tiny_model(root / "model.pt")
    return root


def _one_error(errors, *fragments):
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_flow_out_and_png(inputs, tmp_path, capsys):
    first, second = inputs / "frames" / "in000001.png", inputs / "frames" / "in000002.png"
    out, png = tmp_path / "ab.flo", tmp_path / "ab.png"
    for path in (out, png):
        path.write_bytes(b"precious")
    code, _, errors = run(capsys, "flow", first, second, "--out", out)
    assert code == 1
    _one_error(errors, f"{out}: exists; pass --overwrite to replace it")
    code, _, errors = run(capsys, "flow", first, second, "--out", tmp_path / "new.flo",
                          "--png", png)
    assert code == 1
    _one_error(errors, f"{png}: exists; pass --overwrite")
    assert out.read_bytes() == png.read_bytes() == b"precious"
    assert not (tmp_path / "new.flo").exists()  # refused before computing anything
    code, _, errors = run(capsys, "flow", first, second, "--out", out, "--png", png,
                          "--overwrite")
    assert code == 0 and errors == []
    assert out.read_bytes()[:4] == b"PIEH" and cv2.imread(str(png)) is not None


def test_synth_out(tmp_path, capsys):
    args = ["synth", tmp_path, "--frames", "2", "--size", "16x16", "--no-progress"]
    assert run(capsys, *args)[0] == 0
    stamp = (tmp_path / "scene_000" / "scene.json").stat().st_mtime_ns
    assert run(capsys, *args)[0] == 0  # the same scene: kept, not regenerated
    assert (tmp_path / "scene_000" / "scene.json").stat().st_mtime_ns == stamp
    code, _, errors = run(capsys, *args, "--seed", "5")
    assert code == 1
    _one_error(errors, "scene_000: holds a scene made with other settings (seed",
               "pass --overwrite to regenerate it")
    assert (tmp_path / "scene_000" / "scene.json").stat().st_mtime_ns == stamp
    assert run(capsys, *args, "--seed", "5", "--overwrite")[0] == 0
    assert (tmp_path / "scene_000" / "scene.json").stat().st_mtime_ns != stamp


def test_evaluate_json_and_report(inputs, tmp_path, capsys):
    scores = tmp_path / "scores.json"
    scores.write_text("precious")
    code, stdout, errors = run(capsys, "evaluate", inputs / "scene", "--json", scores,
                               "--no-progress")
    assert code == 1 and stdout == ""  # refused before scoring anything
    _one_error(errors, f"{scores}: exists; pass --overwrite to replace it")
    assert scores.read_text() == "precious"
    report = tmp_path / "report"
    assert run(capsys, "evaluate", inputs / "scene", "--report", report, "--no-progress")[0] == 0
    (report / "report.md").write_text("precious")
    code, _, errors = run(capsys, "evaluate", inputs / "scene", "--report", report,
                          "--no-progress")
    assert code == 1
    _one_error(errors, "report.md: exists; pass --overwrite to replace the report")
    assert (report / "report.md").read_text() == "precious"
    code, _, _ = run(capsys, "evaluate", inputs / "scene", "--json", scores, "--report", report,
                     "--overwrite", "--no-progress")
    assert code == 0
    assert "scene" in json.loads(scores.read_text())["scenes"]
    assert (report / "report.md").read_text().startswith("# crossnet evaluation")


def test_segment_overlap_flags_make_the_same_masks_and_the_same_run(inputs, tmp_path, capsys):
    base = ["--weights", inputs / "model.pt", "--no-progress"]
    masks = {}
    for flag in ([], ["--overlap"], ["--no-overlap"]):
        out = tmp_path / ("masks" + "".join(flag))
        assert run(capsys, "segment", inputs / "a.mp4", "--out", out, *flag, *base)[0] == 0
        masks[tuple(flag)] = {p.name: p.read_bytes() for p in out.glob("bin*.png")}
    assert masks[()] and masks[("--overlap",)] == masks[()] == masks[("--no-overlap",)]
    # The masks do not depend on it, so a folder made one way is the same run the other way:
    # nothing to redo, nothing refused.
    code, stdout, _ = run(capsys, "segment", inputs / "a.mp4", "--out", tmp_path / "masks",
                          "--overlap", *base)
    assert code == 0 and "already complete" in stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "masks").glob("bin*.png")} == masks[()]


def test_segment_out_video_and_overlay(inputs, tmp_path, capsys):
    out = tmp_path / "masks"
    base = ["--weights", inputs / "model.pt", "--no-progress"]
    assert run(capsys, "segment", inputs / "a.mp4", "--out", out, *base)[0] == 0
    masks_of_a = {p.name: p.read_bytes() for p in out.glob("bin*.png")}

    # Another source, other weights, another size or threshold: refused, nothing touched.
    other_weights = tiny_model(tmp_path / "other.pt", seed=9)
    for args, difference in (
            (["segment", inputs / "b.mp4", "--out", out, *base], "source:"),
            (["segment", inputs / "a.mp4", "--out", out, "--weights", other_weights,
              "--no-progress"], "weights_sha256:"),
            (["segment", inputs / "a.mp4", "--out", out, "--size", "32x24", *base], "size:"),
            (["segment", inputs / "a.mp4", "--out", out, "--threshold", "0.9", *base],
             "threshold:"),
            (["segment", inputs / "a.mp4", "--out", out, "--precision", "bf16", *base],
             "precision: 'fp32' there, 'bf16' now"),
            (["segment", inputs / "a.mp4", "--out", out, "--no-flip-average", *base],
             "flip_average: True there, False now"),
            (["segment", inputs / "a.mp4", "--out", out, "--camera-motion", "none", *base],
             "camera_motion: 'affine' there, 'none' now"),
            (["segment", inputs / "a.mp4", "--out", out, "--camera-motion", "affine", *base],
             "align_background: True there, False now")):
        code, _, errors = run(capsys, *args)
        assert code == 1
        _one_error(errors, f"{out}: holds masks of another run ({difference}",
                   "pass --overwrite to replace them, or choose another --out")
    assert {p.name: p.read_bytes() for p in out.glob("bin*.png")} == masks_of_a

    # A manifest from before --precision existed stands for fp32: the same run, nothing to do;
    # naming the default camera motion is the same run too.
    manifest = json.loads((out / "segment.json").read_text())
    assert manifest["identity"]["camera_motion"] == "affine"
    assert manifest["identity"]["align_background"] is True
    del manifest["identity"]["precision"]
    (out / "segment.json").write_text(json.dumps(manifest))
    code, stdout, _ = run(capsys, "segment", inputs / "a.mp4", "--out", out, *base)
    assert code == 0 and {p.name: p.read_bytes() for p in out.glob("bin*.png")} == masks_of_a
    code, stdout, _ = run(capsys, "segment", inputs / "a.mp4", "--out", out,
                          "--camera-motion", "affine+background", *base)
    assert code == 0 and "already complete" in stdout
    # One from before --camera-motion existed stands for none, the one mode there was for a
    # model trained without compensation: today's default is another run and is refused, and
    # --camera-motion none is that same run.
    del manifest["identity"]["camera_motion"], manifest["identity"]["align_background"]
    (out / "segment.json").write_text(json.dumps(manifest))
    code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, *base)
    assert code == 1
    _one_error(errors, f"{out}: holds masks of another run (camera_motion: 'none' there, "
               "'affine' now", "pass --overwrite to replace them, or choose another --out")
    code, stdout, _ = run(capsys, "segment", inputs / "a.mp4", "--out", out,
                          "--camera-motion", "none", *base)
    assert code == 0 and "already complete" in stdout

    # Masks without a record of what made them (an older version, another tool): refused.
    (out / "segment.json").unlink()
    code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, *base)
    assert code == 1
    _one_error(errors, f"{out}: holds masks without a segment.json")

    # --overwrite replaces them all, including masks the new source does not have.
    (out / "bin000099.png").write_bytes(masks_of_a["bin000001.png"])
    code, stdout, _ = run(capsys, "segment", inputs / "b.mp4", "--out", out, *base,
                          "--overwrite")
    assert code == 0 and "5 masks in" in stdout
    assert sorted(p.name for p in out.glob("bin*.png")) == [f"bin{n:06d}.png"
                                                             for n in range(1, 6)]
    assert json.loads((out / "segment.json").read_text())["identity"]["source"].endswith("b.mp4")

    # --video / --overlay files that exist are refused before any work.
    video = tmp_path / "masks.mp4"
    video.write_bytes(b"precious")
    code, _, errors = run(capsys, "segment", inputs / "b.mp4", "--out", tmp_path / "new",
                          "--video", video, *base)
    assert code == 1
    _one_error(errors, f"{video}: exists; pass --overwrite to replace it")
    assert video.read_bytes() == b"precious" and not list((tmp_path / "new").glob("bin*"))
    code, _, _ = run(capsys, "segment", inputs / "b.mp4", "--out", tmp_path / "new",
                     "--video", video, "--overlay", tmp_path / "overlay.mp4", "--overwrite",
                     *base)
    assert code == 0 and video.read_bytes() != b"precious"


def test_segment_a_stream_never_resumes_into_old_masks(inputs, tmp_path):
    from pipelines.errors import InputError
    from pipelines.segment import load_segmentation_model
    from pipelines.segment_folder import segment_to_folder
    from pipelines.sources import StreamSource, VideoSource

    out = tmp_path / "masks"
    segmentation = load_segmentation_model(inputs / "model.pt")
    from flow.backends import make_hop_backend

    backend = make_hop_backend("dis-ultrafast")
    segment_to_folder(VideoSource(inputs / "a.mp4"), segmentation, out, backend=backend,
                      progress=False)
    stream = StreamSource.__new__(StreamSource)  # a camera without the camera
    stream.__dict__.update(name="camera0", path="0", fps=None, num_frames=None,
                           frame_size=(64, 48), native_size=(64, 48))
    with pytest.raises(InputError, match="a live stream cannot resume; pass --overwrite"):
        segment_to_folder(stream, segmentation, out, backend=backend, progress=False)


def test_train_out(inputs, tmp_path, capsys):
    cache, split = training_caches(tmp_path, count=3)
    out = tmp_path / "run"
    args = ["train", "--data", cache, "--split", split, "--out", out, "--epochs",
            "1", "--batch-size", "2", "--samples-per-epoch", "2", "--crop", "32x32",
            "--composite-fraction", "0", "--workers", "0", "--no-progress"]
    assert run(capsys, *args)[0] == 0
    first = (out / "last.pt").read_bytes()
    code, _, errors = run(capsys, *args)
    assert code == 1
    _one_error(errors, f"{out}: holds a run already (last.pt, best.pt); pass --resume to "
                       "continue it, --overwrite to start over, or choose another --out")
    assert (out / "last.pt").read_bytes() == first
    # A folder with only a best.pt (copied from elsewhere) is protected too.
    (out / "last.pt").unlink()
    code, _, errors = run(capsys, *args)
    assert code == 1
    _one_error(errors, "holds a run already (best.pt)")
    code, _, errors = run(capsys, *args, "--overwrite", "--seed", "7")
    assert code == 0, errors
    assert load_checkpoint(out / "last.pt")["train_config"]["seed"] == 7
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in log] == [1]


def test_preprocess_out(inputs, tmp_path, capsys):
    def args(strides, *extra):
        return ["preprocess", inputs / "a.mp4", "--out", tmp_path, "--flow", "dis-ultrafast",
                "--strides", strides, "--preview", "--no-progress", *extra]

    assert run(capsys, *args("1,2"))[0] == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    code, stdout, _ = run(capsys, *args("1,2"))
    assert code == 0 and "skipped" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps  # preview too
    code, _, errors = run(capsys, *args("1,4"))
    assert code == 1
    _one_error(errors, "a.h5: exists, made from other settings", "pass --overwrite to rebuild")
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    assert run(capsys, *args("1,4", "--overwrite"))[0] == 0
    with CacheReader(tmp_path / "a.h5") as reader:
        assert reader.info.strides == (1, 4)
    assert (tmp_path / "a_preview.png").stat().st_mtime_ns != stamps["a_preview.png"]


def test_train_flow_out(tmp_path, capsys):
    from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT

    out = tmp_path / "run"
    args = ["train-flow", "--stage", "synthetic", "--out", out, "--steps", "1", "--batch-size",
            "1", "--crop", "32x32", "--iters", "1", "--device", "cpu", "--no-progress"]
    assert run(capsys, *args)[0] == 0
    first = {name: (out / name).read_bytes() for name in ("last.pt", "weights.pt")}
    code, _, errors = run(capsys, *args)
    assert code == 1
    _one_error(errors, f"{out}: holds a run already (last.pt, weights.pt); pass --resume to "
                       "continue it, --overwrite to start over, or choose another --out")
    assert {name: (out / name).read_bytes() for name in first} == first
    # A folder holding only weights.pt (the network to ship) is protected too.
    (out / "last.pt").unlink()
    code, _, errors = run(capsys, *args)
    assert code == 1
    _one_error(errors, "holds a run already (weights.pt)")
    assert (out / "weights.pt").read_bytes() == first["weights.pt"]
    # --overwrite keeps the old run until the new one's inputs were read: a bad --init
    # leaves it as it was.
    code, _, errors = run(capsys, *args, "--overwrite", "--init", tmp_path / "bad.pt")
    assert code == 1 and (out / "weights.pt").read_bytes() == first["weights.pt"]
    code, _, errors = run(capsys, *args, "--overwrite", "--seed", "7")
    assert code == 0, errors
    last = load_checkpoint(out / "last.pt", checkpoint_format=FLOW_CHECKPOINT_FORMAT)
    assert last["train_config"]["seed"] == 7
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
            ] == [1]


def test_a_second_training_run_into_a_live_runs_folder_is_refused(inputs, tmp_path, capsys):
    """A live run's folder is held: a second run into it, even with --overwrite, touches
    nothing (before, --overwrite deleted the live run's checkpoints and the start of any run
    deleted its checkpoint temporaries mid-write)."""
    from pipelines.outputs import folder_lock

    cache, split = training_caches(tmp_path, count=3)
    runs = {"train": ["train", "--data", cache, "--split", split, "--epochs", "1",
                      "--batch-size", "2", "--samples-per-epoch", "2", "--crop", "32x32",
                      "--composite-fraction", "0", "--workers", "0"],
            "train-flow": ["train-flow", "--stage", "synthetic", "--steps", "1",
                           "--batch-size", "1", "--crop", "32x32", "--iters", "1",
                           "--device", "cpu"]}
    for command, args in runs.items():
        out = tmp_path / command
        args = [*args, "--out", out, "--no-progress"]
        assert run(capsys, *args)[0] == 0
        (out / ".last.pt.123.0123456789ab.tmp").write_bytes(b"a live writer's temporary")
        held = {p.name: p.read_bytes() for p in out.iterdir()}
        with folder_lock(out, what=f"crossnet {command}"):  # as a live run holds it
            for extra in ([], ["--overwrite"], ["--resume"]):
                code, _, errors = run(capsys, *args, *extra)
                assert code == 1, (command, extra)
                _one_error(errors, f"{out}: another crossnet {command} is writing into this "
                                   "folder")
                assert {p.name: p.read_bytes() for p in out.iterdir()} == held
        code, _, errors = run(capsys, *args, "--overwrite")  # once it is free
        assert code == 0, errors
        assert not (out / ".last.pt.123.0123456789ab.tmp").exists()


def test_a_run_that_failed_before_any_mask_does_not_block_the_corrected_rerun(
        inputs, tmp_path, capsys):
    out = tmp_path / "masks"
    base = ["--weights", inputs / "model.pt", "--no-progress"]
    code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, "--size", "7x5",
                          *base)
    assert code == 1
    _one_error(errors, "frames of 7x5 pixels; DIS needs them at least 32 high")
    assert "internal error" not in errors[0]
    assert not out.exists()  # the refused run created the folder, and took it away again
    out.mkdir()  # a folder the user made is left, with the failed run's record
    code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, "--size", "7x5",
                          *base)
    assert code == 1 and out.is_dir()
    manifest = json.loads((out / "segment.json").read_text())
    assert manifest["complete"] is False and not list(out.glob("bin*.png"))
    code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, *base)
    assert code == 0 and errors == [], errors
    assert len(list(out.glob("bin*.png"))) == 5
    # An incomplete run WITH masks still protects them from another run's settings.
    (out / "bin000005.png").unlink()
    record = json.loads((out / "segment.json").read_text())
    record["complete"] = False
    (out / "segment.json").write_text(json.dumps(record))
    code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, "--threshold",
                          "0.9", *base)
    assert code == 1
    _one_error(errors, f"{out}: holds masks of another run (threshold:")


def test_a_second_segment_run_into_a_live_runs_folder_is_refused(inputs, tmp_path, capsys):
    from pipelines.outputs import folder_lock

    out = tmp_path / "masks"
    out.mkdir()
    base = ["--weights", inputs / "model.pt", "--no-progress"]
    with folder_lock(out, what="crossnet segment"):  # as a live run holds it
        code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, *base)
        assert code == 1
        _one_error(errors, f"{out}: another crossnet segment is writing into this folder")
        assert sorted(p.name for p in out.iterdir()) == []  # nothing touched
    code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, *base)
    assert code == 0 and errors == [], errors
    assert len(list(out.glob("bin*.png"))) == 5


def test_a_segment_rerun_says_what_it_wrote_and_what_it_kept(inputs, tmp_path, capsys):
    out, overlay, video = tmp_path / "masks", tmp_path / "overlay.mp4", tmp_path / "masks.mp4"
    base = ["segment", inputs / "a.mp4", "--out", out, "--weights", inputs / "model.pt",
            "--no-progress"]
    code, stdout, _ = run(capsys, *base, "--overlay", overlay)
    assert code == 0 and f"wrote {overlay}" in stdout
    written = overlay.stat().st_mtime_ns
    code, stdout, _ = run(capsys, *base, "--overlay", overlay)  # nothing to do
    assert code == 0 and overlay.stat().st_mtime_ns == written
    assert stdout.splitlines() == [f"5 masks in {out} (already complete)",
                                   f"{overlay} (already complete)"]
    code, stdout, _ = run(capsys, *base, "--video", video)  # the masks are kept, a video made
    assert code == 0 and video.is_file()
    assert stdout.splitlines() == [f"5 masks in {out} (all kept from the earlier run)",
                                   f"wrote {video}"]


def test_a_run_refused_by_the_lock_never_removes_the_live_runs_folder(inputs, tmp_path, capsys,
                                                                      monkeypatch):
    import contextlib

    import pipelines.outputs
    from pipelines.outputs import folder_lock

    out = tmp_path / "masks"
    real_prepare = pipelines.outputs.prepare_output_folder
    holder = contextlib.ExitStack()

    def another_run_starts_meanwhile(path):  # between this run's mkdir and its lock
        folder = real_prepare(path)
        (folder / "segment.json").write_text('{"identity": {}, "complete": false}')
        holder.enter_context(folder_lock(folder, what="crossnet segment"))
        return folder

    monkeypatch.setattr(pipelines.outputs, "prepare_output_folder",
                        another_run_starts_meanwhile)
    with holder:
        code, _, errors = run(capsys, "segment", inputs / "a.mp4", "--out", out, "--weights",
                              inputs / "model.pt", "--no-progress")
        assert code == 1
        _one_error(errors, f"{out}: another crossnet segment is writing into this folder")
        assert (out / "segment.json").is_file()  # the live run's folder and record are intact
