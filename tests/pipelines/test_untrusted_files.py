"""Untrusted files: a checkpoint or cache from elsewhere never runs code, and anything that is
not a crossnet checkpoint of a fitting configuration gets a clear one-line error.

The malicious files here would create a marker file if anything unpickled them the unsafe
way; every test checks that the marker never appears.
"""

from __future__ import annotations

import json
import os
import pickle
import time

import h5py
import numpy as np
import pytest
import torch

from crossnet.checkpoint import load_checkpoint, save_checkpoint
from crossnet.hofam import HofamConfig, build_hofam
from flow.cache import CacheReader, is_complete
from flow.raft import raft_small
from pipelines.segment import load_segmentation_model
from tests.pipelines.reliability_inputs import (
    run,
    tiny_model,
    training_caches,
    write_scene,
    write_video,
)


class _CreatesMarker:
    """Unpickling this calls os.system: the classic malicious pickle payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_files(folder, marker) -> dict[str, object]:
    """name -> path of files that run code when unpickled without weights_only."""
    payload = _CreatesMarker(marker)
    raw = folder / "raw_pickle.pt"  # a legacy (non-zip) pickle file
    with open(raw, "wb") as handle:
        pickle.dump({"format": "crossnet-hofam", "format_version": 1, "model": payload,
                     "model_config": {}}, handle, protocol=2)
    zipped = folder / "torch_zip.pt"  # torch.save's zip format, payload inside data.pkl
    model = build_hofam(HofamConfig(strides=(1, 2), widths=(8, 16, 16, 16)))
    torch.save({"format": "crossnet-hofam", "format_version": 1, "model": model.state_dict(),
                "model_config": model.config.to_dict(), "extra": payload}, zipped)
    state = folder / "raft_state.pt"  # a state dict for --weights of the RAFT backends
    torch.save({"state_dict": raft_small().state_dict(), "hook": payload}, state)
    return {"raw pickle": raw, "torch zip": zipped, "RAFT state dict": state}


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a file's embedded code was executed"


def test_the_payload_really_runs_when_unpickled_unsafely(tmp_path, marker):
    files = _malicious_files(tmp_path, marker)
    with open(files["raw pickle"], "rb") as handle:
        pickle.load(handle)  # what torch.load(weights_only=False) would do
    assert marker.exists()
    marker.unlink()  # the fixture's check is for the tests below


def test_malicious_checkpoints_are_refused_by_every_command(tmp_path, capsys, marker):
    files = _malicious_files(tmp_path, marker)
    clip = write_video(tmp_path / "clip.mp4", 4)
    scene = write_scene(tmp_path / "scene")
    for name in ("raw pickle", "torch zip"):
        weights = files[name]
        for args in (["segment", clip, "--out", tmp_path / "masks", "--weights", weights],
                     ["evaluate", scene, "--method", "crossnet", "--weights", weights]):
            code, _, errors = run(capsys, *args, "--no-progress")
            assert code == 1, (name, args[0])
            assert errors == [(f"crossnet: error: {weights}: refused: the file would call "
                              f"{os.system.__module__}.system on loading (code, not tensors); "
                              "nothing was run")]
    raft = files["RAFT state dict"]
    frames = tmp_path / "scene" / "input"
    for args in (["flow", frames / "in000001.png", frames / "in000002.png", "--out",
                  tmp_path / "f.flo", "--backend", "raft-small", "--weights", raft],
                 ["preprocess", clip, "--out", tmp_path / "cache", "--flow", "raft-small",
                  "--weights", raft, "--no-progress"]):
        code, _, errors = run(capsys, *args)
        assert code == 1
        assert errors == [(f"crossnet: error: {raft}: refused: the file would call "
                          f"{os.system.__module__}.system on loading (code, not tensors); "
                          "nothing was run")]


def test_a_malicious_last_pt_is_refused_on_resume(tmp_path, capsys, marker):
    files = _malicious_files(tmp_path, marker)
    cache, split = training_caches(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(files["torch zip"].read_bytes())
    code, _, errors = run(capsys, "train", "--data", cache, "--split", split,
                          "--out", run_dir, "--resume", "--crop", "32x32", "--workers", "0",
                          "--no-progress")
    assert code == 1 and len(errors) == 1 and "last.pt: refused" in errors[0]


FOREIGN = {
    "random bytes": lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)),
    "empty file": lambda path: path.write_bytes(b""),
    "text": lambda path: path.write_text("model weights, honestly"),
    "a JSON file": lambda path: path.write_text(json.dumps({"model": {}})),
    "a tensor": lambda path: torch.save(torch.zeros(3), path),
    "a torchvision-style state dict": lambda path: torch.save(raft_small().state_dict(), path),
    "another format version": lambda path: torch.save(
        {"format": "crossnet-hofam", "format_version": 7, "model": {}, "model_config": {}}, path),
}
FOREIGN_MESSAGES = {
    "random bytes": "not a readable checkpoint",
    "empty file": "not a readable checkpoint",
    "text": "not a readable checkpoint",
    "a JSON file": "not a readable checkpoint",
    "a tensor": "not a crossnet segmentation checkpoint",
    "a torchvision-style state dict": "not a crossnet segmentation checkpoint",
    "another format version": "checkpoint format version 7 is not supported",
}


@pytest.mark.parametrize("kind", list(FOREIGN), ids=list(FOREIGN))
def test_files_that_are_not_crossnet_checkpoints_get_one_clear_line(tmp_path, capsys, kind):
    weights = tmp_path / "weights.pt"
    FOREIGN[kind](weights)
    clip = write_video(tmp_path / "clip.mp4", 4)
    code, _, errors = run(capsys, "segment", clip, "--out", tmp_path / "masks", "--weights",
                          weights, "--no-progress")
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(f"crossnet: error: {weights}: {FOREIGN_MESSAGES[kind]}")
    assert not (tmp_path / "masks").exists()


def _checkpoint_with(path, **changes):
    model = build_hofam(HofamConfig(strides=(1, 2), widths=(8, 16, 16, 16)))
    document = {"model": model.state_dict(), "model_config": model.config.to_dict(),
                "flow_backend": "dis-ultrafast"}
    document.update(changes)
    save_checkpoint(path, document)
    return path


BAD_ENTRIES = {
    "another configuration": ({"model_config": HofamConfig(strides=(1, 2)).to_dict()},
                              "weights do not fit the checkpoint's model configuration"),
    "weights of another shape": ({"model": {"head.conv.weight": torch.zeros(1, 1, 3, 3)}},
                                 "weights do not fit the checkpoint's model configuration"),
    "a config of the wrong type": ({"model_config": [1, 2, 3]},
                                   "bad model configuration in the checkpoint"),
    "an unknown config key": ({"model_config": {"strides": [1, 2], "exec": "rm -rf /"}},
                              "bad model configuration in the checkpoint"),
    "a config value of the wrong type": ({"model_config": {"strides": "12"}},
                                         "bad model configuration in the checkpoint"),
    "model is not a state dict": ({"model": [torch.zeros(2)]},
                                  "the checkpoint's 'model' entry is not a state dict"),
    "an unknown flow backend": ({"flow_backend": "os.system"},
                                "unknown flow backend 'os.system' in the checkpoint"),
    "a threshold that is not a probability": ({"threshold": 7.0},
                                              ("threshold 7.0 in the checkpoint is not a "
                                              "probability")),
    "a threshold that is a string": ({"threshold": "0.5"},
                                     "threshold '0.5' in the checkpoint is not a probability"),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES), ids=list(BAD_ENTRIES))
def test_a_crossnet_checkpoint_with_bad_entries_is_refused(tmp_path, case):
    changes, message = BAD_ENTRIES[case]
    path = _checkpoint_with(tmp_path / "odd.pt", **changes)
    with pytest.raises(ValueError, match=rf"odd\.pt: {__import__('re').escape(message)}"):
        load_segmentation_model(path)


def test_a_config_asking_for_a_huge_model_is_refused_without_allocating_it(tmp_path):
    # 1e5 channels per stage would be some 10^12 parameters (terabytes) if built for real.
    huge = HofamConfig(strides=(1, 2), widths=(100_000,) * 4).to_dict()
    path = _checkpoint_with(tmp_path / "huge.pt", model_config=huge)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="weights do not fit"):
        load_segmentation_model(path)
    assert time.perf_counter() - started < 10


def test_a_real_checkpoint_still_loads(tmp_path):
    segmentation = load_segmentation_model(tiny_model(tmp_path / "ok.pt"))
    assert segmentation.flow_backend == "dis-ultrafast" and len(segmentation.weights_sha256) == 64


def test_caches_are_data_only_and_foreign_hdf5_files_are_refused(tmp_path, marker, caplog):
    # An HDF5 file carrying a pickled payload in an attribute and a dataset: h5py hands back
    # bytes, never unpickles, and the reader refuses the file for what it is.
    path = tmp_path / "scene_000.h5"
    payload = pickle.dumps(_CreatesMarker(marker), protocol=2)
    with h5py.File(path, "w") as file:
        file.attrs["format_version"] = np.int64(1)
        file.attrs["complete"] = np.uint8(1)
        file.attrs["strides"] = np.void(payload)
        file.create_dataset("frames", data=np.frombuffer(payload, np.uint8))
    assert not is_complete(path)
    with pytest.raises(ValueError, match=r"scene_000\.h5: "):
        CacheReader(path)
    with pytest.raises(ValueError, match=r"scene_000\.h5: "):
        load_checkpoint(path)  # and as a checkpoint it is no checkpoint either


def test_train_flow_refuses_foreign_and_malicious_checkpoints(tmp_path, capsys, marker):
    from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT

    files = _malicious_files(tmp_path, marker)
    out = tmp_path / "run"
    args = ["train-flow", "--stage", "synthetic", "--out", out, "--steps", "1", "--batch-size",
            "1", "--crop", "32x32", "--iters", "1", "--device", "cpu", "--no-progress"]
    refused = (": refused: the file would call "
               f"{os.system.__module__}.system on loading (code, not tensors); nothing was run")
    for path in files.values():
        code, _, errors = run(capsys, *args, "--init", path)
        assert code == 1 and errors == [f"crossnet: error: {path}{refused}"]
    segmentation = tiny_model(tmp_path / "segmentation.pt")
    foreign = tmp_path / "random.pt"
    FOREIGN["random bytes"](foreign)
    for path, message in (
            (segmentation, ("a crossnet segmentation checkpoint (from crossnet train), not a "
                           "flow network; --init takes a RAFT checkpoint, e.g. a train-flow "
                           "run's weights.pt")),
            (foreign, "not a readable checkpoint (not a torch file, or damaged)")):
        code, _, errors = run(capsys, *args, "--init", path)
        assert code == 1 and errors == [f"crossnet: error: {path}: {message}"]
    assert not (out / "last.pt").exists()

    # --resume reads last.pt as untrusted too.
    out.mkdir(exist_ok=True)
    cases = {
        "torch zip": (files["torch zip"], refused[2:]),
        "segmentation": (segmentation, "not a crossnet flow-network checkpoint"),
        "no resume state": (None, ("not a resumable checkpoint (no 'optimizer', 'scheduler', "
                                  "'step', 'history')")),
    }
    for name, (source, message) in cases.items():
        if source is None:
            save_checkpoint(out / "last.pt", {"model": raft_small().state_dict(),
                                              "model_config": {"name": "raft-small"},
                                              "train_config": {}},
                            checkpoint_format=FLOW_CHECKPOINT_FORMAT)
        else:
            (out / "last.pt").write_bytes(source.read_bytes())
        code, _, errors = run(capsys, *args, "--resume")
        assert code == 1 and errors == [f"crossnet: error: {out / 'last.pt'}: {message}"], name
