"""`crossnet train-flow`: train the RAFT-style flow network, on synthetic pairs or on real video.

Two stages (``--stage``):

- ``synthetic``: supervised, on pairs drawn by :mod:`flow.synthetic_pairs` with exact flow
  (textures procedural, and crops of real frames when ``--data`` folders are given), RAFT's
  sequence loss;
- ``video``: self-supervised, on consecutive frames of the videos / frame folders / scenes
  under ``--data`` (:mod:`pipelines.flow_data`), census + SSIM photometric loss with
  forward-backward occlusion masks and edge-aware smoothness, optionally distilled from the
  ``--init`` network (:mod:`flow.self_supervised_loss`).

Both: AdamW, one-cycle schedule, gradient clipping (:mod:`flow.training`). Every
``checkpoint_every`` steps and at the end the run measures the validation EPE on held-out
synthetic pairs (procedural textures, drawn from their own seed stream, so every run is measured
on the same pairs), and on the Middlebury pairs when asked (reported only: nothing is chosen by
it), then writes, in the run folder:

- ``last.pt``: everything needed to resume (model, optimiser, schedule, step, history);
- ``weights.pt``: the network alone with how it was made, for ``--weights`` / ``--init`` and to
  ship as ``flow/weights/raft_small.pt``;
- ``log.jsonl``: one JSON line per checkpoint (mean training loss and its terms since the last
  line, learning rate, validation EPE, seconds);
- ``config.json``: the settings, data folders and code version.

Checkpoints are written atomically (:mod:`crossnet.checkpoint`). Every random choice comes from
generators seeded by (seed, step, item), so ``--resume`` continues the same schedule on the
same batches and reproduces the uninterrupted run. A NaN or infinite loss or gradient stops the
run with :class:`pipelines.errors.TrainingDiverged`, leaving the last checkpoint as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import crossnet
from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from flow.backends import file_sha256, resolve_device
from flow.checkpoints import load_flow_checkpoint
from flow.self_supervised_loss import SelfSupervisedLossConfig
from flow.synthetic_pairs import SyntheticPairConfig, generate_batch, seeded_generator
from flow.training import (
    MODEL_NAMES,
    average_epe,
    build_flow_model,
    one_cycle_optimizer,
    self_supervised_step_loss,
    supervised_loss,
)
from pipelines.errors import InputError, TrainingDiverged
from pipelines.flow_data import VideoPairSampler, load_clips, middlebury_pairs, texture_pool

logger = logging.getLogger(__name__)

STAGES = ("synthetic", "video")
# Seed streams: training batches, validation pairs and video crops never share a generator.
_TRAIN_STREAM, _VALIDATION_STREAM, _VIDEO_STREAM = 1, 2, 3


@dataclass(frozen=True)
class FlowTrainConfig:
    """How to train (saved in every checkpoint and in ``config.json``).

    Attributes:
        stage: ``synthetic`` (supervised) or ``video`` (self-supervised).
        model: ``raft-small`` or ``raft-large``.
        steps: optimiser steps of the whole run.
        batch_size: pairs per step.
        lr: peak learning rate of the one-cycle schedule.
        weight_decay: AdamW weight decay.
        crop_size: (height, width) of the training pairs.
        num_flow_updates: recurrent updates per pair in training and validation.
        grad_clip: gradient-norm clip.
        gamma: decay of the per-update loss weights.
        seed: the seed every random choice derives from.
        checkpoint_every: steps between validations, log lines and checkpoints.
        validation_pairs: held-out synthetic pairs measured at each checkpoint.
        max_frames: frames read per video (first ones), video stage and textures.
        max_side: longest side of the frames read, pixels (never below the crop).
        synthetic: how synthetic pairs are drawn (its size is the crop size).
        loss: the self-supervised loss (video stage).
    """

    stage: str = "synthetic"
    model: str = "raft-small"
    steps: int = 2000
    batch_size: int = 4
    lr: float = 4e-4
    weight_decay: float = 1e-4
    crop_size: tuple[int, int] = (192, 192)
    num_flow_updates: int = 12
    grad_clip: float = 1.0
    gamma: float = 0.8
    seed: int = 0
    checkpoint_every: int = 200
    validation_pairs: int = 8
    max_frames: int = 150
    max_side: int = 480
    synthetic: SyntheticPairConfig = field(default_factory=SyntheticPairConfig)
    loss: SelfSupervisedLossConfig = field(default_factory=SelfSupervisedLossConfig)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        for name in ("steps", "batch_size", "num_flow_updates", "checkpoint_every",
                     "validation_pairs", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 16:
            raise ValueError(f"crop_size must be (height, width) >= 16, got {self.crop_size}")
        if tuple(self.synthetic.size) != tuple(self.crop_size):
            object.__setattr__(self, "synthetic",
                               dataclasses.replace(self.synthetic, size=tuple(self.crop_size)))

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["crop_size"] = list(self.crop_size)
        values["synthetic"] = self.synthetic.to_dict()
        values["loss"] = self.loss.to_dict()
        return values


def _validation_batches(config: FlowTrainConfig) -> list[tuple]:
    """The held-out synthetic pairs: procedural textures, their own seed stream."""
    pairs = []
    for item in range(config.validation_pairs):
        batch = generate_batch(config.synthetic, keys=(_VALIDATION_STREAM, item), batch_size=1)
        pairs.append((batch["image1"], batch["image2"], batch["flow"], None))
    return pairs


def _to_device(pairs: list[tuple], device: torch.device) -> list[tuple]:
    return [tuple(None if t is None else t.to(device) for t in pair) for pair in pairs]


def _export_weights(path: Path, model: torch.nn.Module, config: FlowTrainConfig, *,
                    step: int, history: list[dict], init: dict | None) -> None:
    """``weights.pt``: the network and its provenance, no optimiser state."""
    save_checkpoint(path, {
        "model": model.state_dict(), "model_config": {"name": config.model},
        "train_config": config.to_dict(), "step": step, "init": init,
        "history": history, "code_version": crossnet.__version__,
    }, checkpoint_format=FLOW_CHECKPOINT_FORMAT)


def _write_log(path: Path, history: list[dict]) -> None:
    """Rewrite the JSONL log from the checkpoint's history, atomically: after a resume the log
    holds each checkpoint exactly once."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(json.dumps(_nan_to_none(line)) + "\n" for line in history))
    os.replace(temporary, path)


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _settings(config: dict) -> dict:
    """A config dict through JSON, as it is compared on resume."""
    return json.loads(json.dumps(config))


def train_flow(out_dir: str | os.PathLike, config: FlowTrainConfig, *,
               data_dirs: Sequence[str | os.PathLike] = (), init: str | os.PathLike | None = None,
               middlebury: str | os.PathLike | None = None, device: str = "auto",
               resume: bool = False, progress: bool = True) -> Path:
    """Train the flow network; returns the path of ``weights.pt``.

    Args:
        out_dir: the run folder.
        config: the settings.
        data_dirs: video stage: the videos / frame folders to train on (required); synthetic
            stage: optional real images to crop textures from.
        init: a RAFT checkpoint to start from (any layout :func:`flow.checkpoints.
            load_flow_checkpoint` reads, e.g. a previous run's ``weights.pt``); with
            distillation on, also the teacher. Ignored on resume (the run's own state is used).
        middlebury: the Middlebury folder to report EPE on at every checkpoint, or None.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        resume: continue the run in ``out_dir`` from its ``last.pt``.
        progress: show a progress bar.

    Raises:
        InputError: bad data folders, a run folder in the way, nothing to resume, a resumed run
            with other settings, or an unreadable ``--init``.
        TrainingDiverged: the loss or the gradient became NaN or infinite.
    """
    out_dir = Path(out_dir)
    last_path, weights_path = out_dir / "last.pt", out_dir / "weights.pt"
    if last_path.exists() and not resume:
        raise InputError(f"{out_dir}: holds a run already (last.pt); pass --resume to continue "
                         "it, or choose another --out")
    if resume and not last_path.exists():
        raise InputError(f"{last_path}: nothing to resume")
    if config.stage == "video" and not data_dirs:
        raise InputError("--stage video needs --data: folders of videos or frame folders")
    if config.loss.distillation_weight > 0 and init is None and not resume:
        raise InputError("distillation needs --init: the network to distil from")
    if init is not None and not Path(init).is_file():
        raise InputError(f"{init}: no such checkpoint file")
    middlebury_set = middlebury_pairs(middlebury) if middlebury is not None else []

    clips = load_clips(data_dirs, max_frames=config.max_frames, max_side=config.max_side,
                       min_size=config.crop_size) if data_dirs else []
    pool = texture_pool(clips) if clips and config.stage == "synthetic" else None
    sampler = (VideoPairSampler(clips, crop_size=config.crop_size)
               if config.stage == "video" else None)
    run_device = resolve_device(device)

    torch.manual_seed(config.seed)
    model = build_flow_model(config.model)
    init_record = None
    if init is not None and not resume:
        try:
            load_flow_checkpoint(model, init)
        except ValueError as error:
            raise InputError(str(error)) from error
        init_record = {"path": str(init), "sha256": file_sha256(init)}
    model = model.to(run_device).train()
    teacher = None
    if config.loss.distillation_weight > 0 and config.stage == "video":
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer, scheduler = one_cycle_optimizer(model, lr=config.lr,
                                               weight_decay=config.weight_decay,
                                               total_steps=config.steps)
    start_step, history = 0, []
    if resume:
        checkpoint = load_checkpoint(last_path, map_location=run_device,
                                     checkpoint_format=FLOW_CHECKPOINT_FORMAT)
        if _settings(checkpoint["train_config"]) != _settings(config.to_dict()):
            raise InputError(f"{last_path}: was trained with other settings; resume with the "
                             "same options")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_step, history = int(checkpoint["step"]), list(checkpoint["history"])
        init_record = checkpoint.get("init")
        if teacher is not None:
            teacher.load_state_dict(checkpoint["teacher"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(
        {"train_config": config.to_dict(), "data": [str(p) for p in data_dirs],
         "init": init_record, "middlebury": None if middlebury is None else str(middlebury),
         "clips": [clip.name for clip in clips], "device": str(run_device),
         "code_version": crossnet.__version__}, indent=2) + "\n")
    validation = _to_device(_validation_batches(config), run_device)
    middlebury_set = [(pair.name, _to_device([(pair.image1, pair.image2, pair.flow, None)],
                                             run_device)) for pair in middlebury_set]

    running: dict[str, list[float]] = {}
    started = time.perf_counter()
    bar = tqdm(range(start_step, config.steps), total=config.steps, initial=start_step,
               desc=f"train-flow ({config.stage})", unit="step", disable=not progress)
    for step in bar:
        if config.stage == "synthetic":
            batch = generate_batch(config.synthetic, keys=(_TRAIN_STREAM, config.seed, step),
                                   batch_size=config.batch_size, texture_pool=pool)
            batch = {key: value.to(run_device) for key, value in batch.items()}
            loss, parts = supervised_loss(model, batch, num_flow_updates=config.num_flow_updates,
                                          gamma=config.gamma)
        else:
            image1, image2 = sampler.sample(
                seeded_generator(_VIDEO_STREAM, config.seed, step), config.batch_size)
            loss, parts = self_supervised_step_loss(
                model, image1.to(run_device), image2.to(run_device),
                num_flow_updates=config.num_flow_updates, config=config.loss, teacher=teacher)
        last_good = history[-1]["step"] if history else 0
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {step + 1}; {last_path} keeps the last "
                f"good checkpoint (step {last_good}); try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if not torch.isfinite(norm):
            raise TrainingDiverged(
                f"the gradient became {norm.item()} at step {step + 1}; {last_path} keeps the "
                f"last good checkpoint (step {last_good}); try a lower --lr")
        optimizer.step()
        scheduler.step()
        for name, value in {"loss": loss.item(), **parts}.items():
            running.setdefault(name, []).append(value)
        bar.set_postfix(loss=f"{np.mean(running['loss'][-20:]):.3f}")

        done = step + 1
        if done % config.checkpoint_every and done != config.steps:
            continue
        record: dict[str, Any] = {"step": done, "stage": config.stage}
        record.update({name: float(np.mean(values)) for name, values in running.items()})
        record["lr"] = scheduler.get_last_lr()[0]
        record["validation_epe"] = float(np.mean(
            average_epe(model, validation, num_flow_updates=config.num_flow_updates)))
        if middlebury_set:
            record["middlebury_epe"] = {
                name: average_epe(model, pair, num_flow_updates=config.num_flow_updates)[0]
                for name, pair in middlebury_set}
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        running, started = {}, time.perf_counter()
        state = {"model": model.state_dict(), "model_config": {"name": config.model},
                 "train_config": config.to_dict(), "step": done, "history": history,
                 "init": init_record, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "code_version": crossnet.__version__}
        if teacher is not None:
            state["teacher"] = teacher.state_dict()
        save_checkpoint(last_path, state, checkpoint_format=FLOW_CHECKPOINT_FORMAT)
        _export_weights(weights_path, model, config, step=done, history=history,
                        init=init_record)
        _write_log(out_dir / "log.jsonl", history)
        message = (f"step {done}/{config.steps}  loss {record['loss']:.4f}  "
                   f"validation EPE {record['validation_epe']:.3f}")
        if middlebury_set:
            message += "  Middlebury EPE " + " ".join(
                f"{name} {epe:.3f}" for name, epe in record["middlebury_epe"].items())
        tqdm.write(message + f"  ({record['seconds']:.0f} s)")
    bar.close()
    return weights_path
