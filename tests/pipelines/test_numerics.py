"""Numerics: a NaN or infinite loss, an overflowing gradient or non-finite training data stops
training with one clear line, and last.pt / best.pt keep the last good epoch, loadable and
finite. Non-finite settings are refused before anything runs.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import pipelines.train as train_module
from crossnet.checkpoint import load_checkpoint
from pipelines.train import TrainConfig
from tests.pipelines.reliability_inputs import run, training_caches


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return training_caches(tmp_path_factory.mktemp("numerics"))


def _train(capsys, data, out, *extra):
    cache, split = data
    return run(capsys, "train", "--data", cache, "--split", split, "--out", out, "--epochs",
               "2", "--batch-size", "2", "--samples-per-epoch", "4", "--crop", "32x32",
               "--composite-fraction", "0", "--workers", "0", "--device", "cpu",
               "--no-progress", *extra)


def _assert_last_good_epoch_kept(out, epoch):
    for name in ("last.pt", "best.pt"):
        checkpoint = load_checkpoint(out / name)
        assert checkpoint["epoch"] == epoch, name
        assert all(torch.isfinite(value).all() for value in checkpoint["model"].values()
                   if value.is_floating_point()), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epoch + 1))


def _fail_from_step(monkeypatch, step, corrupt):
    """Make the loss function hand ``corrupt(loss, logits)`` back from training step ``step``
    (1-based) on; steps before are left alone."""
    real_forward = train_module.SegmentationLoss.forward
    calls = []

    def forward(self, logits, labels, roi=None):
        total, parts = real_forward(self, logits, labels, roi)
        if logits.requires_grad:
            calls.append(1)
            if len(calls) >= step:
                return corrupt(total, logits), parts
        return total, parts

    monkeypatch.setattr(train_module.SegmentationLoss, "forward", forward)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_epoch(
        data, tmp_path, capsys, monkeypatch, value):
    # 2 steps per epoch: step 3 is the first of epoch 2.
    _fail_from_step(monkeypatch, 3, lambda loss, logits: loss * float(value))
    out = tmp_path / "run"
    code, _, errors = _train(capsys, data, out)
    assert code == 1
    assert errors == [(f"crossnet: error: the loss became {value} in epoch 2; {out / 'last.pt'} "
                      "keeps the last good epoch (try a lower --lr)")]
    _assert_last_good_epoch_kept(out, 1)
    if value == "nan":
        monkeypatch.undo()
        code, _, errors = _train(capsys, data, out, "--resume")  # and the run can go on
        assert code == 0, errors
        assert load_checkpoint(out / "last.pt")["epoch"] == 2


def test_an_overflowing_gradient_with_a_finite_loss_stops_before_the_weights_go_bad(
        data, tmp_path, capsys, monkeypatch):
    def infinite_gradient(loss, logits):
        logits.register_hook(lambda gradient: torch.full_like(gradient, float("inf")))
        return loss  # finite: only the backward pass overflows

    _fail_from_step(monkeypatch, 3, infinite_gradient)
    out = tmp_path / "run"
    code, _, errors = _train(capsys, data, out)
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith("crossnet: error: the gradient norm became ")
    assert errors[0].endswith(f"in epoch 2; {out / 'last.pt'} keeps the last good epoch (try a "
                              "lower --lr)")
    _assert_last_good_epoch_kept(out, 1)


def test_non_finite_values_in_a_cache_are_named_as_the_cause(data, tmp_path, capsys):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(data[0], cache)
    with h5py.File(cache / "scene_000.h5", "r+") as file:  # as a foreign tool could leave it
        flow = file["flow"][...]
        flow[:] = np.float16("nan")
        file["flow"][...] = flow
    out = tmp_path / "run"
    code, _, errors = _train(capsys, (cache, data[1]), out)
    assert code == 1
    assert errors == [("crossnet: error: the loss became nan in epoch 1: the batch's hop holds NaN "
                      "or infinite values (scenes scene_000; rebuild their caches with crossnet "
                      f"preprocess --overwrite); {out / 'last.pt'} keeps the last good epoch")]
    assert not (out / "last.pt").exists()  # no epoch was good: nothing was written


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, -1.0])
def test_non_finite_or_non_positive_learning_rates_are_refused(lr):
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        TrainConfig(lr=lr)


def test_non_finite_numbers_on_the_command_line_are_usage_errors(capsys):
    for args in (["train", "--data", "d", "--split", "s", "--out", "o", "--lr", "nan"],
                 ["segment", "x", "--out", "o", "--threshold", "nan"],
                 ["synth", "o", "--jitter", "nan"],
                 ["train", "--data", "d", "--split", "s", "--out", "o", "--composite-fraction",
                  "nan"]):
        code, _, errors = run(capsys, *args)
        assert code == 2 and any("is not a finite number" in line for line in errors), args


def test_the_cache_never_stores_non_finite_flow(tmp_path):
    from flow.cache import CacheInfo, CacheWriter

    info = CacheInfo(strides=(1,), backend="dis-fast", weights_sha256="", size=(4, 3),
                     source_path="x", source_size=1, source_mtime=0.0, fps=0.0,
                     package_version="0")
    with CacheWriter.open(tmp_path / "c.h5", info=info) as writer:
        flow = np.zeros((1, 2, 3, 4), np.float32)
        flow[0, 0, 1, 1] = np.inf
        with pytest.raises(ValueError, match="flow must be finite"):
            writer.append(1, np.zeros((3, 4, 3), np.uint8), flow)
        flow[0, 0, 1, 1] = 1e6  # finite, but not in float16
        with pytest.raises(ValueError, match="flow must be finite in float16"):
            writer.append(1, np.zeros((3, 4, 3), np.uint8), flow)
        assert writer.frames_written == 0


# train-flow: a run of 3 steps with a checkpoint after each; step 2 goes wrong.
def _train_flow(capsys, out, *extra):
    return run(capsys, "train-flow", "--stage", "synthetic", "--out", out, "--steps", "3",
               "--batch-size", "1", "--crop", "32x32", "--iters", "1", "--checkpoint-every",
               "1", "--device", "cpu", "--no-progress", *extra)


def _break_flow_loss_from_step(monkeypatch, step, corrupt):
    import pipelines.train_flow as train_flow_module

    real_loss = train_flow_module.supervised_loss
    calls = []

    def loss(*args, **kwargs):
        total, parts = real_loss(*args, **kwargs)
        calls.append(1)
        return (corrupt(total) if len(calls) >= step else total), parts

    monkeypatch.setattr(train_flow_module, "supervised_loss", loss)


def _assert_flow_step_kept(out, step):
    from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT
    from flow.checkpoints import load_flow_checkpoint
    from flow.raft import raft_small

    for name in ("last.pt", "weights.pt"):
        checkpoint = load_checkpoint(out / name, checkpoint_format=FLOW_CHECKPOINT_FORMAT)
        assert checkpoint["step"] == step, name
        assert all(torch.isfinite(value).all() for value in checkpoint["model"].values()
                   if value.is_floating_point()), name
    load_flow_checkpoint(raft_small(), out / "weights.pt")  # loads as --weights / --init
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, step + 1))


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_train_flow_stops_on_a_non_finite_loss_and_keeps_the_last_good_step(tmp_path, capsys,
                                                                            monkeypatch, value):
    _break_flow_loss_from_step(monkeypatch, 2, lambda loss: loss * float(value))
    out = tmp_path / "run"
    code, _, errors = _train_flow(capsys, out)
    assert code == 1
    assert errors == [(f"crossnet: error: the loss became {value} at step 2; {out / 'last.pt'} "
                      "keeps the last good checkpoint (step 1); try a lower --lr")]
    _assert_flow_step_kept(out, 1)
    if value == "nan":
        monkeypatch.undo()
        code, _, errors = _train_flow(capsys, out, "--resume")
        assert code == 0, errors
        _assert_flow_step_kept(out, 3)


def test_train_flow_stops_on_an_overflowing_gradient_before_the_weights_go_bad(
        tmp_path, capsys, monkeypatch):
    def infinite_gradient(loss):
        loss.register_hook(lambda gradient: torch.full_like(gradient, float("inf")))
        return loss  # finite: only the backward pass overflows

    _break_flow_loss_from_step(monkeypatch, 2, infinite_gradient)
    out = tmp_path / "run"
    code, _, errors = _train_flow(capsys, out)
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith("crossnet: error: the gradient became ")
    assert errors[0].endswith(f"at step 2; {out / 'last.pt'} keeps the last good checkpoint "
                              "(step 1); try a lower --lr")
    _assert_flow_step_kept(out, 1)


def test_train_flow_diverging_before_its_first_checkpoint_says_none_was_written(
        tmp_path, capsys, monkeypatch):
    _break_flow_loss_from_step(monkeypatch, 1, lambda loss: loss * float("nan"))
    out = tmp_path / "run"
    code, _, errors = _train_flow(capsys, out)
    assert code == 1
    assert errors == [("crossnet: error: the loss became nan at step 1; no checkpoint had been "
                      "written yet; try a lower --lr")]
    assert not (out / "last.pt").exists() and not (out / "weights.pt").exists()


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, -1.0])
def test_train_flow_refuses_non_finite_or_non_positive_learning_rates(lr):
    from pipelines.train_flow import FlowTrainConfig

    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        FlowTrainConfig(lr=lr)


def test_train_flow_non_finite_numbers_on_the_command_line_are_usage_errors(capsys):
    for option in ("--lr", "--distill"):
        for value in ("nan", "inf"):
            code, _, errors = run(capsys, "train-flow", "--stage", "video", "--out", "o",
                                  option, value)
            assert code == 2 and any(f"'{value}' is not a finite number" in line
                                     for line in errors), (option, value)
