"""`crossnet train`: the HOFAM segmentation model on cached 3D-HOP stacks and ground-truth masks.

Data: every complete cache (``<scene>.h5`` from ``crossnet preprocess``) under ``--data`` whose
scene is in the split's training part, plus composites (objects of one training scene pasted,
moving, into another, with the 3D-HOP recomputed). Validation F (CDnet rules) is measured after
every epoch on the split's validation scenes, which are never trained on; test scenes are never
touched here.

Outputs in the run folder: ``last.pt`` (everything needed to resume) and ``best.pt`` (best
validation F), both written atomically; ``log.jsonl`` (one JSON line per epoch);
``config.json``. ``--resume`` continues the same schedule from ``last.pt``; every random choice
is derived from (seed, epoch, rank), so a resumed run reproduces the uninterrupted one.

Under ``torchrun --nproc_per_node=N`` each process trains on its own share of every epoch's
samples (DistributedDataParallel; gloo on CPU, nccl on GPU); rank 0 validates and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

import crossnet
from crossnet.augment import AugmentConfig, augment_batch
from crossnet.checkpoint import load_checkpoint, save_checkpoint
from crossnet.data import CacheFrameDataset, scene_balanced_weights
from crossnet.flip_average import flip_averaged_logits
from crossnet.hofam import HOFAM, HofamConfig, build_hofam
from crossnet.losses import LossConfig, SegmentationLoss
from crossnet.metrics import VideoScorer, mean_scores
from crossnet.split import Split, load_split
from crossnet.weight_average import WeightAverage
from flow.backends import CLASSICAL_BACKEND_NAMES, is_sha256_or_empty, resolve_device
from flow.cache import CacheReader, is_complete
from pipelines.errors import InputError, TrainingDiverged
from pipelines.memory import check_fits, hofam_bytes
from pipelines.outputs import (
    write_jsonl_atomic,
    write_text_atomic,
)
from pipelines.progress import progress_bar
from pipelines.resume import check_resumable, held_run_folder, restoring

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train (saved in every checkpoint and in ``config.json``).

    Attributes:
        epochs: passes of ``samples_per_epoch`` samples each.
        batch_size: samples per step and process.
        lr: peak learning rate of the one-cycle schedule (AdamW).
        weight_decay: AdamW weight decay.
        samples_per_epoch: samples drawn per epoch over all processes (scene-balanced, with
            replacement: each training scene is equally likely, whatever its length).
        crop_size: (height, width) of the training crops. The default, 240 x 320, is a
            whole frame at the usual CDnet size (smaller frames are padded, see
            :mod:`crossnet.data`): a crop's edge is almost never the frame's edge, where
            objects enter and the flow is poorest, and models trained on whole frames
            scored higher on unseen scenes (``benchmarks/RESULTS.md``, "Training on
            crops or on whole frames"). A frame much smaller than the window is mostly
            padding: make synthetic scenes at the size the model will segment.
        composite_fraction: share of samples that are composites.
        composite_flow: flow backend that recomputes the 3D-HOP of composites. None (the
            default): the training caches' own, which :func:`train` records here; another
            backend is refused, since the model would learn from two kinds of flow and
            ``segment`` feeds it only one.
        camera_pan: share of composites filmed by a panning camera
            (:mod:`crossnet.camera_pan`: the real training scenes all have still cameras).
            Half, by default: at 128x128 crops it raised validation F from 0.695 to 0.741
            and test F from 0.560 to 0.570, both seeds (``benchmarks/RESULTS.md``, "Recipe
            options"); 0 films every composite with a still camera, as older code did.
        grad_clip: gradient norm clip.
        weight_average: decay of the moving average of the weights
            (:mod:`crossnet.weight_average`) that is validated and saved instead of the raw
            weights; 0 (the default) trains and saves the raw weights.
        amp: bf16 autocast (CPU and CUDA).
        seed: the seed every random choice derives from.
        num_workers: data-loading worker processes per training process.
        validation_thresholds: foreground-probability thresholds tried on the validation
            scenes; the best (by mean F) is stored in the checkpoint and used by ``segment``.
        validation_flip_average: validate on the mean of the logits of each frame and of its
            mirror image (:mod:`crossnet.flip_average`), as ``segment`` and ``evaluate``
            segment by default, so that the epoch and threshold are chosen on the answers
            they will give; a second forward pass per validation frame. Off by default: with
            the camera-pan recipe it chose the same checkpoints as one-pass validation on
            both seeds (``benchmarks/RESULTS.md``, "Recipe options").
        model: the HOFAM configuration (strides are set from the caches).
        loss: the loss configuration.
        augment: the augmentation configuration.
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    samples_per_epoch: int = 2000
    crop_size: tuple[int, int] = (240, 320)
    composite_fraction: float = 0.3
    composite_flow: str | None = None
    camera_pan: float = 0.5
    grad_clip: float = 1.0
    weight_average: float = 0.0
    amp: bool = False
    seed: int = 0
    num_workers: int = 2
    validation_thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    validation_flip_average: bool = False
    model: HofamConfig = field(default_factory=HofamConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "samples_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.composite_fraction <= 1.0:
            raise ValueError(f"composite_fraction must be in [0, 1], got {self.composite_fraction}")
        if not 0.0 <= self.camera_pan <= 1.0:
            raise ValueError(f"camera_pan must be in [0, 1], got {self.camera_pan}")
        if (self.camera_pan > 0 and self.model.use_background
                and self.model.background_estimator != "ema"):
            raise ValueError("camera_pan needs the ema background estimator, not "
                             f"{self.model.background_estimator!r}")
        if not 0.0 <= self.weight_average < 1.0:
            raise ValueError(f"weight_average must be in [0, 1), got {self.weight_average}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
        if not self.validation_thresholds or not all(
                0 < t < 1 for t in self.validation_thresholds):
            raise ValueError("validation_thresholds must be probabilities in (0, 1), got "
                             f"{self.validation_thresholds}")

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["crop_size"] = list(self.crop_size)
        values["validation_thresholds"] = list(self.validation_thresholds)
        values["model"] = self.model.to_dict()
        values["loss"] = self.loss.to_dict()
        values["augment"] = dataclasses.asdict(self.augment)
        return values


@dataclass
class EpochRecord:
    """One line of ``log.jsonl``."""

    epoch: int
    train_loss: float
    validation_f: float
    threshold: float
    validation: dict[str, float]
    best_f: float
    seconds: float
    lr: float


def find_caches(data_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """Every complete ``*.h5`` cache under the given folders (recursively), sorted.

    A ``*.h5`` file that is not a complete cache (truncated, corrupt, another kind of HDF5
    file such as a synthetic scene's ``flow.h5``) is skipped with a warning naming it: it is
    never read as training data. ``crossnet preprocess`` rebuilds a damaged cache.
    """
    caches: list[Path] = []
    for directory in data_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise InputError(f"{directory}: no such folder of caches")
        found = []
        for path in sorted(directory.rglob("*.h5")):
            if is_complete(path):
                found.append(path)
            else:
                logger.warning("%s: not a complete crossnet cache (truncated, corrupt or "
                               "another kind of file); skipped", path)
        if not found:
            raise InputError(f"{directory}: no complete cache (*.h5 from crossnet preprocess)")
        caches.extend(found)
    return caches


def _shared(caches: Sequence[Path], read: Callable[[Any], Any],
            differs: Callable[[Path, Any, Any], str]) -> Any:
    """``read(info)`` of the first cache, once every other cache reads the same (else
    InputError with ``differs(path, own, first)``); ValueError for no caches."""
    if not caches:
        raise ValueError("no caches to read from")
    first = None
    for index, path in enumerate(caches):
        with CacheReader(path) as reader:
            own = read(reader.info)
        if index == 0:
            first = own
        elif own != first:
            raise InputError(differs(path, own, first))
    return first


def cache_strides(caches: Sequence[Path]) -> tuple[int, ...]:
    """The strides shared by all caches (InputError naming the first that differs)."""
    return _shared(caches, lambda info: tuple(info.strides), lambda path, own, first: (
        f"{path}: strides {own} differ from {first} of {caches[0]}"))


def cache_flow(caches: Sequence[Path]) -> str:
    """The flow backend that made all caches (InputError naming the first that differs: a
    model trained on two kinds of flow would be fed only one by ``segment``; ValueError for
    no caches)."""
    return _shared(caches, lambda info: info.backend, lambda path, own, first: (
        f"{path}: made with {own} flow, not {first} as {caches[0]}; preprocess every scene "
        "with one --flow"))


def cache_flow_weights(caches: Sequence[Path]) -> str:
    """The sha256 of the flow weights that made all caches ("" for classical flow; InputError
    naming the first cache made with other weights: ``segment`` can feed the model the flow of
    one network only, and checks it against this record)."""
    return _shared(caches, lambda info: info.weights_sha256, lambda path, own, first: (
        f"{path}: its flow comes from other network weights (sha256 {own[:12] or 'none'}) "
        f"than {caches[0]}'s ({first[:12] or 'none'}); preprocess every scene with one "
        "--weights"))


def _check_composite_flow(path: Path, recorded: dict[str, Any], flow_backend: str,
                          makes_composites: bool) -> None:
    """Make a resumed run's recorded composite flow comparable with today's resolved one.

    Code before composites followed the caches recorded ``"dis-fast"`` whatever the caches
    held. Where the run makes no composites the entry never mattered and takes the caches'
    backend; where it made composites with another flow than its caches', it cannot go on
    as it started (InputError naming ``path``).
    """
    if not makes_composites:
        recorded["composite_flow"] = flow_backend
    elif recorded.get("composite_flow") not in (None, flow_backend):
        raise InputError(f"{path}: its composites were made with {recorded['composite_flow']} "
                         f"flow but its caches hold {flow_backend} flow (older code); start "
                         "over with --overwrite")


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _generator(*keys: int) -> torch.Generator:
    """A torch generator seeded from a tuple of integers (seed, epoch, rank, ...)."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


def _to_model_inputs(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    inputs = {"frames": batch["frame"].to(device).float() / 255.0,
              "hop": batch["hop"].to(device).float()}
    if "background" in batch:
        inputs["background"] = batch["background"].to(device).float() / 255.0
    return inputs


@torch.inference_mode()
def validate(model: HOFAM, caches: Sequence[Path], *, device: torch.device,
             thresholds: Sequence[float], amp: bool, flip_average: bool = False
             ) -> tuple[float, dict[str, float]]:
    """Pick the threshold with the best mean F over the validation scenes.

    Every frame with ground truth of every scene, whole frames, CDnet rules; F per scene (NaN,
    i.e. no foreground predicted, counts as 0 here: for choosing, that is the worst case).
    ``flip_average``: score the mean of the logits of each frame and of its mirror image
    (:func:`crossnet.flip_average.flip_averaged_logits`), as ``segment`` does by default.

    Returns:
        (threshold, F per scene at that threshold).
    """
    model.eval()
    scores = {threshold: {} for threshold in thresholds}
    for path in caches:
        # The model's own inputs: its background, if it takes one, made as it was trained.
        dataset = CacheFrameDataset([path], crop_size=None, **input_options(model.config))
        scorers = {threshold: VideoScorer() for threshold in thresholds}
        for index in range(len(dataset)):
            item = dataset[index]
            batch = {key: value[None] if torch.is_tensor(value) else value
                     for key, value in item.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                inputs = _to_model_inputs(batch, device)
                logits = (flip_averaged_logits(model, **inputs) if flip_average
                          else model(**inputs))
            probability = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
            for threshold, scorer in scorers.items():
                scorer.add(index, probability > threshold, item["labels"].numpy())
        for threshold, scorer in scorers.items():
            f_measure = scorer.result()["F"]
            scores[threshold][path.stem] = 0.0 if math.isnan(f_measure) else f_measure
    model.train()
    best = max(thresholds, key=lambda t: (float(np.mean(list(scores[t].values()))), -abs(t - 0.5)))
    return best, scores[best]


def input_options(model_config: HofamConfig) -> dict[str, Any]:
    """The dataset options that make a model's inputs as its configuration defines them
    (background estimate, camera-motion compensation), for :class:`CacheFrameDataset` and
    :class:`crossnet.composite.CompositeDataset`."""
    return {"use_background": model_config.use_background,
            "background_estimator": model_config.background_estimator,
            "camera_motion": model_config.camera_motion,
            "align_background": model_config.align_background}


def _build_training_set(train_caches: Sequence[Path], config: TrainConfig,
                        model_config: HofamConfig):
    real = CacheFrameDataset(train_caches, crop_size=config.crop_size,
                             **input_options(model_config), seed=config.seed)
    real_weights = scene_balanced_weights(real)
    real_weights = real_weights / real_weights.sum()
    if config.composite_fraction == 0 or len(train_caches) < 2:
        return real, real_weights, [real]
    from crossnet.composite import CompositeDataset
    from flow.backends import make_hop_backend

    composites = CompositeDataset(train_caches, train_caches,
                                  backend=make_hop_backend(config.composite_flow),
                                  strides=model_config.strides, crop_size=config.crop_size,
                                  length=max(config.samples_per_epoch, 1), seed=config.seed,
                                  pan_fraction=config.camera_pan,
                                  **input_options(model_config))
    composite_weights = torch.full((len(composites),), 1.0 / len(composites))
    weights = torch.cat([real_weights * (1 - config.composite_fraction),
                         composite_weights * config.composite_fraction])
    return ConcatDataset([real, composites]), weights, [real, composites]


RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "config.json")
"""What a run folder holds; ``--overwrite`` deletes these (and nothing else) before a new run."""


def train(data_dirs: Sequence[str | os.PathLike], split: Split | str | os.PathLike,
          out_dir: str | os.PathLike, config: TrainConfig, *, device: str = "auto",
          resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Train HOFAM; returns the path of the best checkpoint (``best.pt``).

    While it trains, the process holds ``out_dir`` (the first process under ``torchrun``): a
    second run into it is refused (:func:`pipelines.resume.held_run_folder`).

    Args:
        data_dirs: folders of caches from ``crossnet preprocess``.
        split: the cross-scene split, the path of its JSON file, or a bundled split's name
            (``"cross_scene_v1"``, :func:`crossnet.split.load_split`).
        out_dir: the run folder.
        config: how to train.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        resume: continue the run in ``out_dir`` from ``last.pt``.
        overwrite: delete the run in ``out_dir`` first (without it, a folder holding
            ``last.pt`` or ``best.pt`` is refused unless ``resume``).
        progress: show progress bars.

    Raises:
        InputError: no training caches, caches of two flow backends or of two RAFT networks,
            composites that cannot be made with the caches' flow (``config.composite_flow``
            another backend, or RAFT caches), a run folder in the way or held by another
            process, nothing to resume, a checkpoint that cannot be resumed (or was trained on
            another network's flow), or a request that would not fit in memory.
        TrainingDiverged: the loss or the gradients became NaN or infinite (``last.pt`` and
            ``best.pt`` keep the last good epoch).
    """
    with contextlib.ExitStack() as run_folder:
        return _train(data_dirs, split, Path(out_dir), config, device=device, resume=resume,
                      overwrite=overwrite, progress=progress, run_folder=run_folder)


def _train(data_dirs: Sequence[str | os.PathLike], split: Split | str | os.PathLike,
           out_dir: Path, config: TrainConfig, *, device: str, resume: bool, overwrite: bool,
           progress: bool, run_folder: contextlib.ExitStack) -> Path:
    """:func:`train`, holding the run folder in ``run_folder`` once it is known."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    if not isinstance(split, Split):
        try:
            split = load_split(split)
        except FileNotFoundError as error:  # neither a file nor a bundled split's name
            raise InputError(str(error)) from None
    caches = find_caches(data_dirs)
    train_caches = split.select(caches, "train")
    validation_caches = split.select(caches, "validation")
    if not train_caches:
        raise InputError(f"no training scene of split {split.name!r} among the "
                         f"{len(caches)} caches under {', '.join(map(str, data_dirs))}")
    if not validation_caches:
        logger.warning("split %r: none of its validation scenes (%s) among the caches: no "
                       "validation F, so best.pt is the newest epoch and the threshold stays "
                       "0.5", split.name, ", ".join(split.validation) or "none listed")
    strides = cache_strides(train_caches + validation_caches)
    flow_backend = cache_flow(train_caches + validation_caches)  # what segment must feed
    flow_weights = cache_flow_weights(train_caches + validation_caches)  # and from which weights
    makes_composites = config.composite_fraction > 0 and len(train_caches) > 1
    if makes_composites and config.composite_flow not in (None, flow_backend):
        raise InputError(f"composites would be made with {config.composite_flow} flow, but "
                         f"the caches hold {flow_backend} flow")
    if makes_composites and flow_backend not in CLASSICAL_BACKEND_NAMES:
        raise InputError(f"composites recompute their 3D-HOP with the caches' flow, and "
                         f"{flow_backend} caches cannot be matched (its weights are not "
                         "known here); pass --composite-fraction 0")
    model_config = dataclasses.replace(config.model, strides=strides)
    config = dataclasses.replace(config, model=model_config, composite_flow=flow_backend)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
    rank, world_size = _rank_and_world()
    if world_size > 1 and torch.cuda.is_available() and device != "cpu":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        run_device = torch.device("cuda", local_rank)
    else:
        run_device = resolve_device(device)

    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if rank == 0:
        run_folder.enter_context(held_run_folder(
            out_dir, what="crossnet train", run_files=RUN_FILES,
            checkpoints=(last_path.name, best_path.name), resume=resume, overwrite=overwrite))
        if overwrite:
            for name in RUN_FILES:
                (out_dir / name).unlink(missing_ok=True)
    check_fits(hofam_bytes(model_config, (config.crop_size[1], config.crop_size[0]),
                           batch=config.batch_size, training=True),
               what=f"training on {config.crop_size[1]}x{config.crop_size[0]} crops in batches "
                    f"of {config.batch_size}",
               hint="choose a smaller --crop or --batch-size", device=run_device)

    torch.manual_seed(config.seed)
    model = build_hofam(model_config).to(run_device)
    criterion = SegmentationLoss(config.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = max(1, config.samples_per_epoch // (config.batch_size * world_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
        pct_start=0.15)
    # What is validated and saved: the moving average of the weights, or the weights.
    average = WeightAverage(model, config.weight_average) if config.weight_average else None
    saved = average.model if average else model
    start_epoch, best_f, history = 0, -math.inf, []
    if resume:
        checkpoint = load_checkpoint(last_path, map_location=run_device)
        if isinstance(checkpoint.get("train_config"), dict):
            checkpoint["train_config"] = with_new_defaults(checkpoint["train_config"])
            _check_composite_flow(last_path, checkpoint["train_config"], flow_backend,
                                  makes_composites)
        recorded_weights = checkpoint.get("flow_weights_sha256", "")
        if not is_sha256_or_empty(recorded_weights):
            raise InputError(f"{last_path}: flow_weights_sha256 {recorded_weights!r} in the "
                             "checkpoint is not a sha256")
        if recorded_weights and recorded_weights != flow_weights:
            now = (f"network weights {flow_weights[:12]}" if flow_weights
                   else "a classical backend")
            raise InputError(f"{last_path}: trained so far on flow from network weights "
                             f"{recorded_weights[:12]}, but the caches now hold flow from "
                             f"{now}; point --data at the caches it started on, or start "
                             "over with --overwrite")
        check_resumable(last_path, checkpoint,
                        keys=("train_config", "optimizer", "scheduler", "epoch", "best_f"),
                        train_config=config.to_dict(), ignore=_RESUME_IGNORES)
        with restoring(last_path):
            model.load_state_dict(checkpoint["trained_model" if average else "model"])
            if average:
                average.load_state_dict({"model": checkpoint["model"],
                                         **checkpoint["weight_average"]})
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            start_epoch = int(checkpoint["epoch"])
            best_f = float(checkpoint["best_f"])
        history = list(checkpoint.get("history", []))
        if rank == 0:
            best = f", best validation F so far {best_f:.4f}" if best_f > -math.inf else ""
            tqdm.write(f"resuming {last_path}: {start_epoch} of {config.epochs} epochs done{best}")
    trained = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model

    dataset, weights, parts = _build_training_set(train_caches, config, model_config)
    if model_config.use_background:
        for part in parts:  # once, here: otherwise every worker re-reads every video per epoch
            part.prepare_backgrounds()
    if rank == 0:
        write_text_atomic(out_dir / "config.json", json.dumps(
            {"train_config": config.to_dict(), "split": split.to_dict(),
             "train_caches": [str(p) for p in train_caches],
             "validation_caches": [str(p) for p in validation_caches],
             "code_version": crossnet.__version__}, indent=2) + "\n")
    samples_per_rank = steps_per_epoch * config.batch_size

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        for part in parts:
            part.set_epoch(epoch)
        indices = torch.multinomial(weights, samples_per_rank, replacement=True,
                                    generator=_generator(config.seed, epoch, rank)).tolist()
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=indices,
                            num_workers=config.num_workers, drop_last=True,
                            persistent_workers=False)
        augment_generator = torch.Generator(device=run_device).manual_seed(
            _generator(config.seed, epoch, rank, 1).initial_seed())
        trained.train()
        losses = []
        bar = progress_bar(loader, total=steps_per_epoch,
                           desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False,
                           disable=not progress or rank != 0)
        for batch in bar:
            batch = {k: v.to(run_device) if torch.is_tensor(v) else v for k, v in batch.items()}
            batch = augment_batch(batch, config.augment, augment_generator)
            with torch.autocast(run_device.type, dtype=torch.bfloat16, enabled=config.amp):
                logits = trained(**_to_model_inputs(batch, run_device))
            loss, _ = criterion(logits.float(), batch["labels"])
            if not torch.isfinite(loss):
                raise TrainingDiverged(_divergence_message(loss.item(), batch, epoch, last_path))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gradient_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            # A finite loss can still have an overflowing gradient; a step with it would turn
            # every weight into NaN and the next checkpoint with them.
            if not torch.isfinite(gradient_norm):
                raise TrainingDiverged(
                    f"the gradient norm became {gradient_norm.item()} in epoch {epoch + 1}; "
                    f"{last_path} keeps the last good epoch (try a lower --lr)")
            optimizer.step()
            scheduler.step()
            if average:
                average.update(model)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        train_loss = float(np.mean(losses))
        if world_size > 1:
            total = torch.tensor([train_loss], device=run_device)
            dist.all_reduce(total)
            train_loss = total.item() / world_size
        if rank == 0:
            threshold, per_scene = (
                validate(saved, validation_caches, device=run_device,
                         thresholds=config.validation_thresholds, amp=config.amp,
                         flip_average=config.validation_flip_average)
                if validation_caches else (0.5, {}))
            validation_f = (mean_scores({"F": f} for f in per_scene.values())["F"]
                            if per_scene else math.nan)
            # Without validation scenes the newest epoch counts as the best.
            improved = validation_f > best_f if per_scene else True
            best_f = max(best_f, validation_f) if per_scene else best_f
            record = EpochRecord(epoch=epoch + 1, train_loss=train_loss,
                                 validation_f=validation_f, threshold=threshold,
                                 validation=per_scene,
                                 best_f=best_f, seconds=time.perf_counter() - started,
                                 lr=scheduler.get_last_lr()[0])
            history.append(dataclasses.asdict(record))
            if not all(torch.isfinite(value).all() for value in saved.state_dict().values()
                       if value.is_floating_point()):
                raise TrainingDiverged(f"the weights became non-finite in epoch {epoch + 1}; "
                                       f"{last_path} keeps the last good epoch")
            checkpoint = {"model": saved.state_dict(), "model_config": model_config.to_dict(),
                          "train_config": config.to_dict(), "split": split.to_dict(),
                          "code_version": crossnet.__version__, "flow_backend": flow_backend,
                          "flow_weights_sha256": flow_weights,
                          "epoch": epoch + 1, "threshold": threshold,
                          "best_f": best_f, "history": history,
                          "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict()}
            if average:  # what resuming needs besides the averaged weights
                checkpoint["trained_model"] = model.state_dict()
                checkpoint["weight_average"] = {"steps": average.steps}
            save_checkpoint(last_path, checkpoint)
            if improved:
                save_checkpoint(best_path, {k: v for k, v in checkpoint.items()
                                            if k not in _RESUME_ONLY})
            write_jsonl_atomic(out_dir / "log.jsonl", history)
            scores = (f"validation F {validation_f:.4f} (threshold {threshold})  "
                      f"best {best_f:.4f}" if per_scene else "no validation scenes")
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  train loss {train_loss:.4f}  "
                       f"{scores}  ({record.seconds:.0f} s)")
        if world_size > 1:
            dist.barrier()
    return best_path


def _divergence_message(loss: float, batch: dict, epoch: int, last_path: Path) -> str:
    """Why training stops: bad values in the data, or the optimisation itself diverging."""
    bad = [key for key in ("frames", "frame", "hop", "background")
           if torch.is_tensor(batch.get(key)) and batch[key].is_floating_point()
           and not torch.isfinite(batch[key]).all()]
    kept = f"{last_path} keeps the last good epoch"
    if bad:
        scenes = sorted(set(batch.get("scene", []))) or ["?"]
        return (f"the loss became {loss} in epoch {epoch + 1}: the batch's {', '.join(bad)} "
                f"holds NaN or infinite values (scenes {', '.join(map(str, scenes))}; rebuild "
                f"their caches with crossnet preprocess --overwrite); {kept}")
    return f"the loss became {loss} in epoch {epoch + 1}; {kept} (try a lower --lr)"


# Settings a resumed run may change: samples are seeded per index, so the worker count does
# not change them.
_RESUME_IGNORES = ("num_workers",)
# Checkpoint entries only resuming needs; best.pt, the one users load, goes without them.
_RESUME_ONLY = ("optimizer", "scheduler", "trained_model", "weight_average")


# Settings added with a default that differs from what the code before them did: a recorded
# train_config without them was trained with these values.
_BEFORE_ADDED = {"camera_pan": 0.0}


def with_new_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded ``train_config`` (a checkpoint's or ``config.json``'s) completed with the
    settings added since it was written (top-level, augmentation and model options): their
    defaults, or where a default changes what training does, the value that reproduces the
    older code (:data:`_BEFORE_ADDED`); so a run of older code compares equal to the same run
    made today."""
    defaults = TrainConfig().to_dict()
    completed = {**defaults, **_BEFORE_ADDED, **recorded}
    if isinstance(recorded.get("augment"), dict):
        completed["augment"] = {**defaults["augment"], **recorded["augment"]}
    if isinstance(recorded.get("model"), dict):
        completed["model"] = HofamConfig.from_dict(recorded["model"]).to_dict()
    return completed


