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

import contextlib
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
from crossnet.checkpoint import CHECKPOINT_FORMAT as SEGMENTATION_CHECKPOINT_FORMAT
from crossnet.checkpoint import FLOW_CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from flow.backends import RAFT_BACKEND_NAMES, file_sha256, resolve_device
from flow.checkpoints import load_flow_checkpoint
from flow.safe_load import load_weights_only
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
from flow.weights import bundled_weights_path
from pipelines.errors import InputError, TrainingDiverged, one_line
from pipelines.flow_batches import synthetic_batches
from pipelines.flow_data import VideoPairSampler, load_clips, middlebury_pairs, texture_pool
from pipelines.memory import check_fits, format_size, raft_training_bytes
from pipelines.outputs import (
    write_jsonl_atomic,
    write_text_atomic,
)
from pipelines.progress import progress_bar
from pipelines.resume import check_resumable, held_run_folder, restoring

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
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
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


RUN_FILES = ("last.pt", "weights.pt", "log.jsonl", "config.json")
"""What a run folder holds; ``--overwrite`` deletes these (and nothing else) before a new run."""
_RESUME_KEYS = ("model", "train_config", "optimizer", "scheduler", "step", "history")


def train_flow(out_dir: str | os.PathLike, config: FlowTrainConfig, *,
               data_dirs: Sequence[str | os.PathLike] = (), init: str | os.PathLike | None = None,
               middlebury: str | os.PathLike | None = None, device: str = "auto",
               resume: bool = False, overwrite: bool = False, progress: bool = True,
               workers: int = 0) -> Path:
    """Train the flow network; returns the path of ``weights.pt``.

    Args:
        out_dir: the run folder.
        config: the settings.
        data_dirs: video stage: the videos / frame folders to train on (required); synthetic
            stage: optional real images to crop textures from. Unreadable sources under a
            folder are skipped with a warning (:func:`pipelines.flow_data.load_clips`).
        init: a RAFT checkpoint to start from (any layout :func:`flow.checkpoints.
            load_flow_checkpoint` reads, e.g. a previous run's ``weights.pt``), or a bundled
            network's name (``"raft-small"``, :func:`init_path`); with distillation on, also
            the teacher. Ignored on resume (the run's own state is used).
        middlebury: the Middlebury folder to report EPE on at every checkpoint, or None.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        resume: continue the run in ``out_dir`` from its ``last.pt``.
        overwrite: discard the run in ``out_dir`` (its :data:`RUN_FILES`) and start a new one;
            without it a folder holding ``last.pt`` or ``weights.pt`` is refused unless
            ``resume``. The old files are deleted only once the data and ``init`` have been
            read, so a typo costs no run. While it trains, the process holds ``out_dir``: a
            second run into it is refused (:func:`pipelines.resume.held_run_folder`).
        progress: show a progress bar.
        workers: synthetic stage: processes that make the coming steps' batches while the
            network trains (:mod:`pipelines.flow_batches`); the run is the same with any
            number. 0: made in this process, between steps.

    Raises:
        InputError: bad data folders, a run folder in the way, held by another process or
            not writable, nothing to resume, a ``last.pt`` that cannot be resumed or was made
            with other settings, an unreadable or foreign ``--init``, or a crop that cannot fit
            in memory.
        TrainingDiverged: the loss or the gradient became NaN or infinite.
        OSError: a checkpoint or log could not be written (a full disk); the message names the
            file, and the previous checkpoint is left whole.
    """
    with contextlib.ExitStack() as run_folder:
        return _train_flow(Path(out_dir), config, data_dirs=data_dirs, init=init,
                           middlebury=middlebury, device=device, resume=resume,
                           overwrite=overwrite, progress=progress, workers=workers,
                           run_folder=run_folder)


def _train_flow(out_dir: Path, config: FlowTrainConfig, *, data_dirs: Sequence[str | os.PathLike],
                init: str | os.PathLike | None, middlebury: str | os.PathLike | None,
                device: str, resume: bool, overwrite: bool, progress: bool, workers: int,
                run_folder: contextlib.ExitStack) -> Path:
    """:func:`train_flow`, holding the run folder in ``run_folder`` once it is known."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    last_path, weights_path = out_dir / "last.pt", out_dir / "weights.pt"
    if config.stage == "video" and not data_dirs:
        raise InputError("--stage video needs --data: folders of videos or frame folders")
    if config.loss.distillation_weight > 0 and init is None and not resume:
        raise InputError("distillation needs --init: the network to distil from")
    if config.stage == "video" and init is None and not resume:
        # Measured by an audit: from random weights every pixel fails the forward-backward
        # check, so census and SSIM are 0 and only smoothness trains the network.
        logger.warning("--stage video without --init starts from random weights, whose flow "
                       "fails the occlusion check everywhere: only the smoothness term trains "
                       "it. Pass --init (e.g. raft-small, the bundled network, or a "
                       "synthetic stage's weights.pt)")
    for path in data_dirs:
        if not Path(path).exists():
            raise InputError(f"{path}: no such file or folder")
    if init is not None and not resume:
        init = init_path(init)

    # The run folder before any real work: a wrong --out fails within a second.
    run_folder.enter_context(held_run_folder(
        out_dir, what="crossnet train-flow", run_files=RUN_FILES,
        checkpoints=(last_path.name, weights_path.name), resume=resume, overwrite=overwrite))
    run_device = resolve_device(device)
    crop_width_height = (config.crop_size[1], config.crop_size[0])
    check_fits(raft_training_bytes(
                   config.model, crop_width_height,
                   pairs=config.batch_size * (2 if config.stage == "video" else 1),
                   num_flow_updates=config.num_flow_updates),
               what=f"training {config.model} on {format_size(crop_width_height)} crops in "
                    f"batches of {config.batch_size} with {config.num_flow_updates} updates",
               hint="choose a smaller --crop, --batch-size or --iters", device=run_device)

    middlebury_set = middlebury_pairs(middlebury) if middlebury is not None else []
    clips = load_clips(data_dirs, max_frames=config.max_frames, max_side=config.max_side,
                       min_size=config.crop_size, exclude=out_dir) if data_dirs else []
    pool = texture_pool(clips) if clips and config.stage == "synthetic" else None
    sampler = (VideoPairSampler(clips, crop_size=config.crop_size)
               if config.stage == "video" else None)

    torch.manual_seed(config.seed)
    model = build_flow_model(config.model)
    init_record = None
    if init is not None and not resume:
        _load_init(model, Path(init))
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
        check_resumable(last_path, checkpoint,
                        keys=_RESUME_KEYS + (("teacher",) if teacher is not None else ()),
                        train_config=config.to_dict())
        with restoring(last_path):
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            if teacher is not None:
                teacher.load_state_dict(checkpoint["teacher"])
            start_step, history = int(checkpoint["step"]), list(checkpoint["history"])
        if not 0 <= start_step <= config.steps:
            raise InputError(f"{last_path}: step {start_step} is outside this run's "
                             f"{config.steps} steps")
        init_record = checkpoint.get("init")
    if overwrite:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
    write_text_atomic(out_dir / "config.json", json.dumps(
        {"train_config": config.to_dict(), "data": [str(p) for p in data_dirs],
         "init": init_record, "middlebury": None if middlebury is None else str(middlebury),
         "clips": [clip.name for clip in clips], "device": str(run_device),
         "code_version": crossnet.__version__}, indent=2) + "\n")
    validation = _to_device(_validation_batches(config), run_device)
    middlebury_set = [(pair.name, _to_device([(pair.image1, pair.image2, pair.flow, None)],
                                             run_device)) for pair in middlebury_set]

    running: dict[str, list[float]] = {}
    started = time.perf_counter()
    bar = progress_bar(range(start_step, config.steps), total=config.steps,
                       initial=start_step, desc=f"train-flow ({config.stage})", unit="step",
                       disable=not progress)
    batches = (synthetic_batches(config.synthetic,
                                 [(_TRAIN_STREAM, config.seed, step)
                                  for step in range(start_step, config.steps)],
                                 batch_size=config.batch_size, texture_pool=pool,
                                 workers=workers)
               if config.stage == "synthetic" else None)
    try:
        for step in bar:
            if batches is not None:
                batch = {key: value.to(run_device) for key, value in next(batches).items()}
                loss, parts = supervised_loss(model, batch,
                                              num_flow_updates=config.num_flow_updates,
                                              gamma=config.gamma)
            else:
                image1, image2 = sampler.sample(
                    seeded_generator(_VIDEO_STREAM, config.seed, step), config.batch_size)
                loss, parts = self_supervised_step_loss(
                    model, image1.to(run_device), image2.to(run_device),
                    num_flow_updates=config.num_flow_updates, config=config.loss, teacher=teacher)
            if not torch.isfinite(loss):
                raise TrainingDiverged(_divergence_message(
                    f"the loss became {loss.item()}", step + 1, last_path, history))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            # A finite loss can still have an overflowing gradient; a step with it would turn the
            # weights into NaN, and the next checkpoint with them.
            if not torch.isfinite(norm):
                raise TrainingDiverged(_divergence_message(
                    f"the gradient became {norm.item()}", step + 1, last_path, history))
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
            if not all(torch.isfinite(value).all() for value in model.state_dict().values()
                       if value.is_floating_point()):
                raise TrainingDiverged(_divergence_message("the weights became non-finite", done,
                                                           last_path, history))
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
            write_jsonl_atomic(out_dir / "log.jsonl", history)
            message = (f"step {done}/{config.steps}  loss {record['loss']:.4f}  "
                       f"validation EPE {record['validation_epe']:.3f}")
            if middlebury_set:
                message += "  Middlebury EPE " + " ".join(
                    f"{name} {epe:.3f}" for name, epe in record["middlebury_epe"].items())
            tqdm.write(message + f"  ({record['seconds']:.0f} s)")
    finally:
        bar.close()
        if batches is not None:
            batches.close()  # stops the worker processes of a run that failed or ended
    if start_step == config.steps and _exported_step(weights_path) != start_step:
        # A run killed between writing its final last.pt and weights.pt: finish the exports.
        _export_weights(weights_path, model, config, step=start_step, history=history,
                        init=init_record)
        write_jsonl_atomic(out_dir / "log.jsonl", history)
    return weights_path


def _divergence_message(what: str, step: int, last_path: Path, history: list[dict]) -> str:
    if history:
        kept = f"{last_path} keeps the last good checkpoint (step {history[-1]['step']})"
    else:
        kept = "no checkpoint had been written yet"
    return f"{what} at step {step}; {kept}; try a lower --lr"


def _exported_step(path: Path) -> int | None:
    """The step of a run's ``weights.pt``, or None when it is missing or unreadable."""
    try:
        return int(load_checkpoint(path, checkpoint_format=FLOW_CHECKPOINT_FORMAT)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def init_path(init: str | os.PathLike) -> Path:
    """The file ``--init`` names: a checkpoint file, or a bundled network by its backend name
    (``raft-small``: ``flow/weights/raft_small.pt`` inside the installed package).

    Raises:
        InputError: neither.
    """
    path = Path(init)
    if path.is_file():
        return path
    if str(init) in RAFT_BACKEND_NAMES:
        bundled = bundled_weights_path(str(init))
        if bundled.is_file():
            return bundled
        raise InputError(f"{init}: no bundled weights ({bundled.name} is not in "
                         f"{bundled.parent}); name a checkpoint file")
    shipped = [name for name in RAFT_BACKEND_NAMES if bundled_weights_path(name).is_file()]
    raise InputError(f"{init}: no such checkpoint file (nor a bundled network: "
                     f"{', '.join(shipped) or 'none'})")


def _load_init(model: torch.nn.Module, path: Path) -> None:
    """Load ``--init`` into ``model``, read once with ``weights_only=True``.

    Raises:
        InputError: the file is refused (code in it), unreadable, a crossnet checkpoint of
            another kind (the segmentation model), or weights that do not fit ``model``.
    """
    try:
        document = load_weights_only(path)
    except (OSError, ValueError) as error:
        raise InputError(one_line(error)) from error
    kind = document.get("format") if isinstance(document, dict) else None
    if kind == SEGMENTATION_CHECKPOINT_FORMAT:
        raise InputError(f"{path}: a crossnet segmentation checkpoint (from crossnet train), "
                         "not a flow network; --init takes a RAFT checkpoint, e.g. a "
                         "train-flow run's weights.pt")
    if isinstance(kind, str) and kind != FLOW_CHECKPOINT_FORMAT:
        raise InputError(f"{path}: a {kind!r} checkpoint, not a flow network")
    try:
        load_flow_checkpoint(model, document, source=str(path))
    except ValueError as error:
        raise InputError(one_line(error)) from error
