"""`crossnet train-flow`: runs, resume == uninterrupted, NaN stops cleanly, bad input is one line.

A tiny RAFT (tests/flow/test_raft.py) replaces raft-small so that a run takes seconds.
"""

import json
import logging
import multiprocessing

import cv2
import numpy as np
import pytest
import torch

import pipelines.flow_batches as flow_batches_module
import pipelines.train_flow as train_flow_module
from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT, load_checkpoint
from flow.checkpoints import load_flow_checkpoint
from flow.synthetic_pairs import SyntheticPairConfig
from pipelines.cli import main
from pipelines.errors import InputError, TrainingDiverged
from pipelines.train_flow import FlowTrainConfig, train_flow
from tests.flow.test_raft import tiny_raft


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    monkeypatch.setattr(train_flow_module, "build_flow_model", lambda name: tiny_raft())


def _config(**changes) -> FlowTrainConfig:
    values = {"steps": 6, "batch_size": 2, "crop_size": (32, 32), "num_flow_updates": 2,
              "checkpoint_every": 3, "validation_pairs": 2, "lr": 1e-3,
              "synthetic": SyntheticPairConfig(min_objects=1, max_objects=2)}
    values.update(changes)
    return FlowTrainConfig(**values)


def _load(path):
    return load_checkpoint(path, checkpoint_format=FLOW_CHECKPOINT_FORMAT)


@pytest.fixture
def frame_folder(tmp_path):
    """Six 48x40 frames of a smooth texture moving 1 px right per frame."""
    folder = tmp_path / "clip"
    folder.mkdir()
    generator = np.random.default_rng(0)
    scene = cv2.GaussianBlur(generator.integers(0, 256, (40, 60, 3)).astype(np.uint8), (5, 5), 1)
    for number in range(1, 7):
        cv2.imwrite(str(folder / f"frame_{number}.png"), scene[:, 10 - number:58 - number])
    return folder


def test_a_synthetic_run_writes_checkpoints_weights_and_a_log(tmp_path):
    weights = train_flow(tmp_path / "run", _config(), device="cpu", progress=False)
    last = _load(tmp_path / "run" / "last.pt")
    assert weights == tmp_path / "run" / "weights.pt"
    assert last["step"] == 6 and "optimizer" in last and "scheduler" in last
    exported = _load(weights)
    assert "optimizer" not in exported and exported["model_config"] == {"name": "raft-small"}
    load_flow_checkpoint(tiny_raft(), weights)  # --weights / --init read it as it is
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().split("\n")
             if line]
    assert [line["step"] for line in lines] == [3, 6]
    assert all(line["validation_epe"] > 0 and line["loss"] > 0 for line in lines)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_config"]["crop_size"] == [32, 32]
    assert config["train_config"]["synthetic"]["size"] == [32, 32]
    with pytest.raises(InputError, match="pass --resume"):
        train_flow(tmp_path / "run", _config(), device="cpu", progress=False)


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    train_flow(tmp_path / "whole", _config(), device="cpu", progress=False)
    whole = _load(tmp_path / "whole" / "last.pt")

    real_generate = flow_batches_module.generate_batch
    training_batches = []

    def generate_then_die(config, *, keys, **kwargs):
        if keys[0] == train_flow_module._TRAIN_STREAM:
            training_batches.append(keys)
            if len(training_batches) == 5:  # step 5 dies; the checkpoint of step 3 stays
                raise KeyboardInterrupt
        return real_generate(config, keys=keys, **kwargs)

    monkeypatch.setattr(flow_batches_module, "generate_batch", generate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_flow(tmp_path / "cut", _config(), device="cpu", progress=False)
    assert _load(tmp_path / "cut" / "last.pt")["step"] == 3
    monkeypatch.setattr(flow_batches_module, "generate_batch", real_generate)
    train_flow(tmp_path / "cut", _config(), device="cpu", resume=True, progress=False)
    resumed = _load(tmp_path / "cut" / "last.pt")
    assert resumed["step"] == 6
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in whole["history"]], rel=1e-6)
    with pytest.raises(InputError, match="other settings"):
        train_flow(tmp_path / "cut", _config(lr=5e-4), device="cpu", resume=True,
                   progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train_flow(tmp_path / "none", _config(), device="cpu", resume=True, progress=False)


def test_workers_making_the_batches_ahead_give_the_same_run(tmp_path):
    train_flow(tmp_path / "in_line", _config(steps=4), device="cpu", progress=False)
    train_flow(tmp_path / "ahead", _config(steps=4), device="cpu", progress=False, workers=2)
    in_line, ahead = (_load(tmp_path / name / "last.pt") for name in ("in_line", "ahead"))
    for key, value in in_line["model"].items():
        torch.testing.assert_close(ahead["model"][key], value, rtol=0, atol=0, msg=key)


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = train_flow_module.supervised_loss
    calls = []

    def loss_that_explodes(*args, **kwargs):
        calls.append(1)
        loss, parts = real_loss(*args, **kwargs)
        return (loss * float("nan"), parts) if len(calls) == 5 else (loss, parts)

    monkeypatch.setattr(train_flow_module, "supervised_loss", loss_that_explodes)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5.*\(step 3\)"):
        train_flow(tmp_path / "run", _config(), device="cpu", progress=False)
    assert _load(tmp_path / "run" / "last.pt")["step"] == 3
    assert _load(tmp_path / "run" / "weights.pt")["step"] == 3
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_run_leaves_no_worker_processes(tmp_path, monkeypatch):
    def loss_that_explodes(*args, **kwargs):
        raise TrainingDiverged("stopped on purpose")

    monkeypatch.setattr(train_flow_module, "supervised_loss", loss_that_explodes)
    try:
        train_flow(tmp_path / "run", _config(), device="cpu", progress=False, workers=2)
    except TrainingDiverged as error:
        # Held, as a caller that reports it holds it: its traceback keeps the run's frame
        # (and any batch source in it) alive.
        caught = error
    assert "on purpose" in str(caught)
    assert multiprocessing.active_children() == []


def test_the_video_stage_trains_on_frames_with_distillation(tmp_path, frame_folder):
    train_flow(tmp_path / "synthetic", _config(steps=3), device="cpu", progress=False)
    config = _config(stage="video", steps=3, loss=train_flow_module.SelfSupervisedLossConfig(
        distillation_weight=0.5))
    train_flow(tmp_path / "video", config, data_dirs=[frame_folder],
               init=tmp_path / "synthetic" / "weights.pt", device="cpu", progress=False)
    last = _load(tmp_path / "video" / "last.pt")
    line = json.loads((tmp_path / "video" / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3 and "teacher" in last
    assert {"census", "ssim", "smoothness", "distillation", "non_occluded"} <= set(line)
    assert last["init"]["path"] == str(tmp_path / "synthetic" / "weights.pt")


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    run = ["train-flow", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*run, "--stage", "video", "--data", str(tmp_path / "nothing")]) == 1
    assert _one_error_line(capsys) == (
        f"crossnet: error: {tmp_path / 'nothing'}: no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no video here")
    assert main([*run, "--stage", "video", "--data", str(empty)]) == 1
    assert "no video, frame folder or scene under it" in _one_error_line(capsys)
    assert main([*run, "--stage", "video"]) == 2  # a usage error, as a bad option value
    assert "Error: --stage video needs --data" in capsys.readouterr().err
    assert main([*run, "--stage", "synthetic", "--init", str(tmp_path / "absent.pt")]) == 1
    assert "absent.pt: no such checkpoint file" in _one_error_line(capsys)
    assert main([*run, "--stage", "synthetic", "--validate-middlebury", str(empty)]) == 1
    assert "no Middlebury pair" in _one_error_line(capsys)
    assert main([*run, "--stage", "synthetic", "--crop", "32"]) == 2
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cli_runs_a_tiny_synthetic_stage(tmp_path, capsys):
    threads = torch.get_num_threads()  # --threads sets it for the whole process
    try:
        code = main(["train-flow", "--stage", "synthetic", "--out", str(tmp_path / "run"),
                     "--steps", "2", "--batch-size", "1", "--crop", "32x32", "--iters", "1",
                     "--checkpoint-every", "2", "--threads", "1", "--device", "cpu",
                     "--no-progress"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    assert capsys.readouterr().out.strip().endswith(f"weights: {tmp_path / 'run' / 'weights.pt'}")
    assert _load(tmp_path / "run" / "last.pt")["train_config"]["num_flow_updates"] == 1


def test_the_video_stage_from_random_weights_warns_that_only_smoothness_trains(
        tmp_path, frame_folder, caplog):
    config = _config(stage="video", steps=2)
    with caplog.at_level(logging.WARNING, logger="pipelines.train_flow"):
        train_flow(tmp_path / "random", config, data_dirs=[frame_folder], device="cpu",
                   progress=False)
    assert "--stage video without --init starts from random weights" in caplog.text
    # What the warning says: no pixel passes the occlusion check, no photometric term acts.
    line = json.loads((tmp_path / "random" / "log.jsonl").read_text().splitlines()[-1])
    assert line["non_occluded"] == line["census"] == line["ssim"] == 0.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.train_flow"):
        train_flow(tmp_path / "video", config, data_dirs=[frame_folder], device="cpu",
                   init=tmp_path / "random" / "weights.pt", progress=False)
    assert "without --init" not in caplog.text


def test_init_takes_the_bundled_network_by_name(tmp_path, monkeypatch, capsys):
    """`--init raft-small` is the shipped network wherever the package is installed (a pip
    user has no flow/weights/raft_small.pt relative to the working directory); other names
    fail in one line."""
    from flow.backends import file_sha256
    from flow.training import build_flow_model
    from flow.weights import bundled_weights_path

    monkeypatch.setattr(train_flow_module, "build_flow_model", build_flow_model)  # not tiny
    monkeypatch.chdir(tmp_path)
    run = ["train-flow", "--stage", "synthetic", "--steps", "1", "--batch-size", "1",
           "--crop", "32x32", "--iters", "1", "--device", "cpu", "--no-progress"]
    assert main([*run, "--out", "a", "--init", "raft-small"]) == 0
    bundled = bundled_weights_path("raft-small")
    init = _load(tmp_path / "a" / "last.pt")["init"]
    assert init["path"] == str(bundled) and init["sha256"] == file_sha256(bundled)
    assert main([*run, "--out", "b", "--init", "raft-large"]) == 1
    assert _one_error_line(capsys).endswith(
        f"raft-large: no bundled weights (raft_large.pt is not in {bundled.parent}); name a "
        "checkpoint file")
    assert main([*run, "--out", "c", "--init", "raft-tiny"]) == 1
    assert _one_error_line(capsys).endswith(
        "raft-tiny: no such checkpoint file (nor a bundled network: raft-small)")
