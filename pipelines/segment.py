"""Segmentation, streaming: any source in, ``(frame, mask)`` out, one frame at a time.

:func:`segment_frames` reads frames from a source, keeps only what the 3D-HOP of the next frames
needs (the encodings of the last ``max(strides)`` frames, see :mod:`flow.hop`) plus at most
``batch_frames`` frames waiting for the model, builds each frame's 3D-HOP, runs HOFAM and yields
the mask at the frame's own size. Memory stays constant for any length of video.

The model's inputs are made exactly as its training data made them (its configuration says
how): the running background estimate, and, for a model trained with camera-motion
compensation (:mod:`crossnet.camera_motion`), the 3D-HOP without the camera's own motion and
a background that moves with the camera. ``tests/pipelines/test_segment.py`` checks both
against the training datasets' functions, including after resuming at ``start``.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from crossnet.background import make_background, to_uint8
from crossnet.blocks import fold_batchnorm
from crossnet.camera_motion import camera_flows
from crossnet.checkpoint import load_checkpoint
from crossnet.ensemble import MAX_MEMBERS, LogitMean, check_same_inputs
from crossnet.flip_average import flip_averaged_logits
from crossnet.hofam import HOFAM, HofamConfig, build_hofam
from flow.backends import BACKEND_NAMES, file_sha256, is_sha256_or_empty
from flow.hop import build_hops, earlier_frame
from pipelines.errors import InputError
from pipelines.memory import segment_lookahead_frames
from pipelines.prefetch import prefetch
from pipelines.sources import Frame, Source, resize_rgb

PRECISIONS = ("fp32", "bf16")
CAMERA_MODES = ("none", "affine", "affine+background")
"""Camera-motion handling chosen at test time (``segment``/``evaluate --camera-motion``):
``none``, the flow and the running background as they are; ``affine``, the camera's own
motion fitted and removed from the 3D-HOP (:mod:`crossnet.camera_motion`); ``affine+background``,
that, and the running background moved along with the camera too
(:attr:`crossnet.hofam.HofamConfig.align_background`; for a model without a background input
the same as ``affine``). Where the fit does not explain the frames better than a still camera,
over the whole frame and across it, it is dropped, so a still camera's frames pass as they are.
"""
DEFAULT_CAMERA_MOTION = "affine+background"
"""What ``crossnet segment`` and ``crossnet evaluate`` use unless told otherwise, whatever the
checkpoint was trained with. Chosen 2026-11-25 by rules written before the runs
(``benchmarks/RESULTS.md``, "Camera-motion compensation at test time", the two records of that
day): the split's validation scenes all have still cameras, so synthetic clips with exact
ground truth (``crossnet synth --jitter``/``--pan``) judged the moving-camera side. On the
bundled weights, against ``none``: validation F 0.773 (0.773), still-camera clips 0.786
(0.786), shaking-camera clips 0.771 (0.628), panning-camera clips 0.596 (0.263); ``affine``
alone 0.724 and 0.317 there. :func:`load_segmentation_model` itself keeps a checkpoint's own
setting unless given one.
"""


def check_camera_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`CAMERA_MODES`.

    Raises:
        ValueError: an unknown mode, naming the known ones.
    """
    if mode not in CAMERA_MODES:
        raise ValueError(f"unknown camera motion {mode!r}, expected one of "
                         f"{', '.join(CAMERA_MODES)}")
    return mode


def with_camera_mode(config: HofamConfig, mode: str) -> HofamConfig:
    """``config`` with the test-time camera-motion handling ``mode`` (:data:`CAMERA_MODES`).

    The background is moved only where the configuration can (a background input from the EMA
    estimator and a stride-1 field, what :class:`crossnet.hofam.HofamConfig` requires of
    ``align_background``); otherwise ``affine+background`` is ``affine``.

    Raises:
        ValueError: an unknown mode, naming the known ones.
    """
    check_camera_mode(mode)
    movable = (config.use_background and config.background_estimator == "ema"
               and 1 in config.strides)
    return replace(config, camera_motion="none" if mode == "none" else "affine",
                   align_background=mode == "affine+background" and movable)


@dataclass(frozen=True)
class SegmentationModel:
    """A loaded HOFAM ready for inference, with what it expects.

    Attributes:
        model: the network in eval mode (BatchNorm folded into the convolutions); for an
            ensemble checkpoint, the mean of its members' logits
            (:class:`crossnet.ensemble.LogitMean`).
        config: its configuration (strides, background input...).
        flow_backend: the flow backend it was trained with (from its checkpoint).
        flow_weights_sha256: sha256 of the weights of that backend's network ("" for
            classical flow and for checkpoints from before 2026-11-25, which did not record
            it); :func:`check_flow_weights` holds a backend to it.
        threshold: the foreground-probability threshold picked on validation scenes in
            training (0.5 for checkpoints without one).
        source: where the weights came from.
        weights_sha256: sha256 of the checkpoint file, recorded with the masks it makes.
        flip_average: average the logits of each frame and of its mirror image
            (:mod:`crossnet.flip_average`): higher F on validation and test scenes, at the
            cost of a second HOFAM pass.
    """

    model: HOFAM | LogitMean
    config: HofamConfig
    flow_backend: str
    threshold: float
    source: str
    weights_sha256: str = ""
    flip_average: bool = True
    flow_weights_sha256: str = ""

    def settings(self, *, backend, size: tuple[int, int] | None,
                 threshold: float | None = None, precision: str = "fp32") -> dict[str, Any]:
        """What decides this model's masks besides the frames: its weights (sha256), the flow
        ``backend`` that feeds it (its name and, for a network, its weights' sha256; that
        entry is left out for classical flow, as before it existed), the processing ``size``
        (None: each input's own), the ``threshold`` (None: its own), the ``precision``, flip
        averaging and the camera-motion handling. A mask
        folder's manifest records them (``crossnet segment``), so do pseudo-labelled scenes,
        and ``crossnet evaluate --json`` next to the scores they made."""
        flow_weights = getattr(backend, "weights_sha256", "")
        return {"weights_sha256": self.weights_sha256, "flow_backend": backend.name,
                **({"flow_weights_sha256": flow_weights} if flow_weights else {}),
                "size": None if size is None else list(size),
                "threshold": float(self.threshold if threshold is None else threshold),
                "precision": precision, "flip_average": self.flip_average,
                "camera_motion": self.config.camera_motion,
                "align_background": self.config.align_background}


def load_segmentation_model(weights: str | os.PathLike, *, device: str | torch.device = "cpu",
                            flip_average: bool = True,
                            camera_motion: str | None = None) -> SegmentationModel:
    """Load a crossnet checkpoint for inference (``flip_average``: see
    :class:`SegmentationModel`).

    ``camera_motion`` (one of :data:`CAMERA_MODES`) replaces the checkpoint's own camera-motion
    handling at test time (:func:`with_camera_mode`); None keeps the checkpoint's. The commands
    pass :data:`DEFAULT_CAMERA_MOTION` unless told otherwise: where the fitted camera motion does
    not explain the frames better than a still camera, the fit is dropped and the 3D-HOP and
    background pass unchanged (see :mod:`crossnet.camera_motion`; measured on the bundled
    weights in ``benchmarks/RESULTS.md``, "Camera-motion compensation at test time").

    An ensemble checkpoint (``crossnet ensemble``, :mod:`crossnet.ensemble`) loads as the mean
    of its members' logits, with the ensemble's own threshold; ``config`` is its first
    member's (all members read the same inputs, checked here too).

    The file is read with ``torch.load(weights_only=True)`` (see
    :func:`crossnet.checkpoint.load_checkpoint`), so nothing in it runs. Its configuration is
    built on the ``meta`` device first and compared with the stored weights, so a file whose
    configuration asks for a huge model allocates nothing before it is refused.

    Raises:
        ValueError: not a crossnet checkpoint, a malformed configuration, threshold or flow
            backend entry, weights that do not fit the configuration, or ensemble members
            that read different inputs; the message names the file (and the member). An
            unknown ``camera_motion``.
        FileNotFoundError: no such file.
    """
    if camera_motion is not None:
        check_camera_mode(camera_motion)
    checkpoint = load_checkpoint(weights)
    extra = checkpoint.get("extra_members", [])
    if not isinstance(extra, list) or not all(isinstance(m, dict) for m in extra):
        raise ValueError(f"{weights}: the checkpoint's 'extra_members' entry is not a list of "
                         "dicts")
    if len(extra) + 1 > MAX_MEMBERS:
        raise ValueError(f"{weights}: an ensemble of {len(extra) + 1} members (at most "
                         f"{MAX_MEMBERS})")
    members = [_build_member(weights, checkpoint, "")]
    for index, member in enumerate(extra, start=2):
        members.append(_build_member(weights, member, f"member {index}: "))
    config = members[0][1]
    try:
        check_same_inputs([member_config for _, member_config in members])
    except ValueError as error:
        raise ValueError(f"{weights}: {error}") from error
    model = (members[0][0] if len(members) == 1
             else LogitMean([member for member, _ in members])).to(device)
    backend = checkpoint.get("flow_backend", "dis-fast")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"{weights}: unknown flow backend {backend!r} in the checkpoint")
    flow_weights = checkpoint.get("flow_weights_sha256", "")
    if not is_sha256_or_empty(flow_weights):
        raise ValueError(f"{weights}: flow_weights_sha256 {flow_weights!r} in the checkpoint "
                         "is not a sha256")
    threshold = checkpoint.get("threshold", 0.5)
    if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
            or not 0.0 < threshold < 1.0):
        raise ValueError(f"{weights}: threshold {threshold!r} in the checkpoint is not a "
                         "probability in (0, 1)")
    if camera_motion is not None:
        config = with_camera_mode(config, camera_motion)
    return SegmentationModel(model=model, config=config, flow_backend=backend,
                             threshold=float(threshold), source=str(Path(weights)),
                             weights_sha256=file_sha256(weights), flip_average=flip_average,
                             flow_weights_sha256=flow_weights)


def check_flow_weights(segmentation: SegmentationModel, backend, *,
                       weights_named: bool = True) -> None:
    """Refuse ``backend`` when it is the model's own flow backend run by other network weights
    than the ones that made the model's training flow (``--flow raft-small`` without
    ``--flow-weights`` loads the bundled network, which need not be the one the caches were
    made with). Another backend chosen on purpose (``--flow``) and classical flow pass.

    A model trained on RAFT flow before checkpoints recorded the network (2026-11-25) names no
    weights; it was trained before the bundled network existed, so where the bundled weights
    were loaded by default (``weights_named`` False: the commands without ``--flow-weights``)
    that pairing is refused too. Weights named on purpose are the caller's word.

    Raises:
        InputError: naming the checkpoint and both weights.
    """
    name = segmentation.flow_backend
    if getattr(backend, "name", None) != name:
        return
    wanted = segmentation.flow_weights_sha256
    own = getattr(backend, "weights_sha256", "")
    how = (f"pass --flow-weights with the {name} network its training caches were made with "
           "(their weights_sha256)")
    if wanted and own != wanted:
        raise InputError(f"{segmentation.source}: trained on {name} flow from network weights "
                         f"{wanted[:12]}, but this {name} backend runs weights "
                         f"{own[:12] or 'none'}; {how}")
    if not wanted and not weights_named and own and own == _bundled_flow_sha256(name):
        raise InputError(f"{segmentation.source}: trained on {name} flow before checkpoints "
                         f"recorded the network, so not on the bundled {name} weights; {how}")


def _bundled_flow_sha256(name: str) -> str:
    """sha256 of the bundled weights of a RAFT backend, "" where none are bundled."""
    from flow.weights import bundled_weights_path

    path = bundled_weights_path(name)
    return file_sha256(path) if path.is_file() else ""


def _build_member(weights, entries: dict, prefix: str) -> tuple[HOFAM, HofamConfig]:
    """One HOFAM of a checkpoint from its ``"model"`` and ``"model_config"`` entries, in eval
    mode with BatchNorm folded; a ValueError naming the file (and ``prefix``: which member)
    for anything that does not fit."""
    if "model" not in entries or "model_config" not in entries:
        raise ValueError(f"{weights}: {prefix}no 'model' or 'model_config' entry")
    state = entries["model"]
    try:
        if not isinstance(entries["model_config"], dict):
            raise TypeError(f"a {type(entries['model_config']).__name__}, not a dict")
        config = HofamConfig.from_dict(entries["model_config"])
        with torch.device("meta"):
            expected = build_hofam(config).state_dict()
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
        raise ValueError(f"{weights}: {prefix}bad model configuration in the checkpoint "
                         f"({str(error).splitlines()[0] if str(error) else error!r})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights}: {prefix}the checkpoint's 'model' entry is not a state dict "
                         "of tensors")
    misfits = sorted(set(expected) ^ set(state)) + sorted(
        key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    if misfits:
        raise ValueError(f"{weights}: {prefix}weights do not fit the checkpoint's model "
                         f"configuration ({len(misfits)} missing, unexpected or misshapen, e.g. "
                         f"{misfits[0]})")
    model = build_hofam(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{weights}: {prefix}weights do not fit the checkpoint's model "
                         f"configuration ({str(error).splitlines()[0]})") from error
    return fold_batchnorm(model.eval()), config


def overlap_by_default(device: str | torch.device) -> bool:
    """Whether ``segment`` overlaps its stages (:func:`segment_frames`' ``overlap``) when not
    told: when the model runs on a GPU, so that the flow (OpenCV, on the CPU) and HOFAM run on
    different hardware. Not when the model runs on the CPU: there both stages want the same
    cores, and on the 2-core machine of ``benchmarks/RESULTS.md`` the background thread gave no
    steady gain ("segment throughput": slower in five records in a row, e.g. 54.6 against 58.5
    frames/s; side by side in rotated rounds, the latest record a speed-up of 0.84, 0.76 to 0.87
    per round)."""
    return torch.device(device).type != "cpu"


@torch.inference_mode()
def segment_frames(source: Source, segmentation: SegmentationModel, *, backend,
                   size: tuple[int, int] | None = None, threshold: float | None = None,
                   batch_frames: int = 4, device: str | torch.device = "cpu",
                   background_rate: float = 0.05, start: int = 0,
                   cache_dir: str | os.PathLike | None = None, overlap: bool | None = None,
                   precision: str = "fp32", probabilities: bool = False,
                   compile_model: bool = False
                   ) -> Iterator[tuple[Frame, np.ndarray | None]]:
    """Yield ``(frame, mask)`` for every frame of ``source``, in order.

    With ``start`` (resuming), the first ``start`` frames are read and yielded with ``None``
    for a mask: the running background still advances over them and the last ``max(strides)``
    of them feed the 3D-HOP of the frames after, but no flow or model runs for them, so the
    masks from ``start`` on are those an uninterrupted run makes.

    Args:
        source: any frame source (video, folder, scene, stream).
        segmentation: the model, from :func:`load_segmentation_model`.
        backend: a 3D-HOP flow backend (:func:`flow.backends.make_hop_backend`).
        size: processing size (width, height) for flow and model; None keeps the source's size.
            Masks are always returned at the frame's own size.
        threshold: foreground probability threshold; None uses the model's own (picked on
            validation scenes in training).
        batch_frames: frames per flow/model batch (latency vs throughput).
        device: where the model runs.
        background_rate: EMA rate of the running background (when the model takes one).
        start: index of the first frame to segment (see above).
        cache_dir: reuse the source's HDF5 cache there when it is complete and matches, else
            write it while segmenting (see :mod:`pipelines.segment_cache`); a file or folder
            source only (a stream or camera raises :class:`pipelines.errors.InputError`).
        overlap: decode, update the running background and build the 3D-HOP of the next
            frames in a background thread while HOFAM runs on the current batch
            (:mod:`pipelines.prefetch`); a background that follows the camera
            (``align_background``) is updated in the calling thread, once its frame's camera
            flow is known. The masks are the same either way; False runs every
            stage in the calling thread, one after the other. None (default):
            :func:`overlap_by_default` for ``device``.
        precision: ``"fp32"``, or ``"bf16"`` to run HOFAM under bfloat16 autocast (meant for
            CPUs with AVX512-BF16 or AMX and for GPUs; on the AVX512-BF16 CPU of
            ``benchmarks/RESULTS.md`` about 1.13x, 0.91 to 1.21 per round, not steadily;
            masks agree with fp32 on all
            but a few pixels at object edges, see ``tests/pipelines/test_segment_speedups.py``).
        probabilities: yield each frame's foreground probability instead of its mask
            (``threshold`` is then unused; the mask is ``probability > threshold``).
        compile_model: run HOFAM through ``torch.compile`` (inductor, static shapes): its
            forward 1.6-1.8x and ``segment`` 1.11-1.15x faster on the development CPU
            (``benchmarks/compile.py``), after compiling on the first batch of a run (15-30 s
            there with an empty inductor cache, about 3 s once its on-disk cache holds it). A
            short last batch is padded to ``batch_frames`` so that one compiled graph serves
            the whole run; a run at another processing size than the previous one in this
            process compiles anew (``_compile``). In float32 the masks equal the eager path's
            up to float rounding (a slow test checks it); under bf16 the compiled logits
            differ from eager bf16's by up to about 0.2 (compile.py), as bf16 differs from
            float32.

    Yields:
        The source's frame and its mask, (H, W) uint8, 255 foreground and 0 background (with
        ``probabilities``: (H, W) float32 in [0, 1]); ``None`` for the frames before
        ``start``.

    Raises:
        TypeError: ``backend`` given as a name instead of a backend.
        ValueError: a threshold outside (0, 1), a negative ``start``, ``batch_frames`` below 1
            or an unknown precision.
        InputError: the model's own flow backend run by other network weights
            (:func:`check_flow_weights`), or an unreadable source.
    """
    if isinstance(backend, str | os.PathLike):  # an easy slip, and a confusing TypeError later
        raise TypeError(f"backend must be a flow backend, e.g. flow.backends.make_hop_backend("
                        f"{str(backend)!r}), not its name")
    threshold = segmentation.threshold if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    check_flow_weights(segmentation, backend)
    config = segmentation.config
    device = torch.device(device)
    logit_threshold = float(np.log(threshold / (1 - threshold)))
    pending: dict[int, tuple[Frame, np.ndarray, np.ndarray | None]] = {}
    background = (make_background(config.background_estimator, rate=background_rate)
                  if config.use_background else None)
    # With a moving background the estimate of frame t needs frame t's camera flow, so it is
    # made when frame t's 3D-HOP arrives rather than when the frame is read.
    align = config.align_background
    compensate = config.camera_motion != "none" or align
    # Frames by build_hops index, while a later frame still pairs with them (for the camera
    # fit's check against the frames themselves).
    history: dict[int, np.ndarray] = {}

    def as_tensor(small: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)

    frames = iter(source)
    # The frames just before `start` that the 3D-HOP of the frames from `start` on pairs with.
    context: deque[np.ndarray] = deque(maxlen=max(config.strides))
    previous = None
    for _ in range(start):
        frame = next(frames, None)
        if frame is None:
            return
        small = resize_rgb(frame.rgb, size) if size is not None else frame.rgb
        if background is not None:
            motion = (_camera_step(backend, small, previous)
                      if align and previous is not None else None)
            background.advance(small, motion)
        context.append(small)
        previous = small
        yield frame, None
    offset = len(context)  # the index of frame `start` among the frames build_hops sees

    def processing_frames() -> Iterator[torch.Tensor]:
        for index, small in enumerate(list(context)):
            if compensate:
                history[index] = small
            yield as_tensor(small)
        context.clear()
        for index, frame in enumerate(frames, start=offset):
            small = resize_rgb(frame.rgb, size) if size is not None else frame.rgb
            estimate = (to_uint8(background.advance(small))
                        if background is not None and not align else None)
            if compensate:
                history[index] = small
            pending[index] = (frame, small, estimate)
            yield as_tensor(small)

    cache = hops = None
    if cache_dir is not None:
        from pipelines.segment_cache import SegmentCache

        cache = SegmentCache.open(cache_dir, source, backend=backend, strides=config.strides,
                                  size=size or source.frame_size)
    try:
        # build_hops numbers the frames it sees from 0: the context frames, then frame `start`
        # at `offset`; the source's own index of a frame is index + start - offset.
        if cache is not None and cache.reading:
            hops = cache.hops(processing_frames(), first=offset, shift=start - offset)
        else:
            hops = build_hops(processing_frames(), backend, config.strides,
                              batch_frames=batch_frames, start=offset)
        if overlap_by_default(device) if overlap is None else overlap:
            # The next batch is ready when HOFAM finishes the current one. The frames read
            # ahead are held at their own sizes: a mixed-size folder's largest counts.
            largest = getattr(source, "max_frame_size", source.frame_size)
            hops = prefetch(hops, depth=segment_lookahead_frames(largest, batch_frames),
                            name="segment-flow")
        model = segmentation.model
        if compile_model:
            model = _compile(model, inputs=(id(model), size or source.frame_size, batch_frames,
                                            segmentation.flip_average, device, precision))
        run = functools.partial(_run_model, pending=pending, model=model, device=device,
                                logit_threshold=None if probabilities else logit_threshold,
                                bf16=precision == "bf16",
                                flip_average=segmentation.flip_average,
                                pad_to=batch_frames if compile_model else None)
        longest = max(config.strides)
        # The fields whose camera flow is needed: every stride's to compensate the 3D-HOP,
        # else only stride 1's, for the background.
        fitted = config.strides if config.camera_motion != "none" else (1,)
        fields = [config.strides.index(k) for k in fitted]
        batch: list[tuple[int, torch.Tensor]] = []
        for index, stack in hops:
            frame, small, estimate = pending[index]
            if cache is not None:
                cache.record(index + start - offset, frame, small, stack)
            if compensate:
                earlier = np.stack([history[earlier_frame(index, k)] for k in fitted])
                history.pop(index - longest, None)  # no later frame pairs with it
                camera = camera_flows(stack[fields].cpu(), fitted, small.transpose(2, 0, 1),
                                      earlier.transpose(0, 3, 1, 2))
                if config.camera_motion != "none":
                    stack = stack - camera.to(stack)
                if align:
                    estimate = to_uint8(background.advance(small, camera[fitted.index(1)]))
                    pending[index] = (frame, small, estimate)
            batch.append((index, stack))
            if len(batch) == batch_frames:
                yield from run(batch)
                batch = []
        if batch:
            yield from run(batch)
        if cache is not None:
            cache.finish()
    finally:
        if hops is not None:
            hops.close()  # with overlap: stops the background thread before the cache closes
        if cache is not None:
            cache.close()


# What this process last compiled HOFAM for (see _compile).
_compiled_inputs: tuple | None = None


def _compile(model: torch.nn.Module, *, inputs: tuple):
    """``torch.compile(model, dynamic=False)``, with dynamo's caches cleared first when the
    last compile of this process was for other ``inputs`` (the model and what its graph is
    specialised on: processing size, batch, flip averaging, device, precision).

    Dynamo keeps the graphs of a forward in one cache per code object, shared by every
    ``torch.compile`` wrapper of it; past ``torch._dynamo.config.recompile_limit`` entries (8
    by default, also in torch 2.13) it runs that forward eagerly, with only a logged warning.
    A process that segments sources of many sizes (the scenes of a HOFAM demo folder, or
    ``segment`` called per scene) would pass it: every size after the eighth would run
    uncompiled.
    Clearing the caches keeps each new size compiled at the cost of a recompile where the
    inputs change (seconds, from inductor's on-disk cache), none where consecutive sources
    share them. Not chosen: raising the limit (process-wide, or scoped around each model call
    of a generator), or torch 2.13's ``isolate_recompiles`` (missing from the torch 2.1 that
    setup.cfg allows, and its regions still share ``accumulated_recompile_limit``). The reset
    also drops whatever else this process compiled (nothing, in ``crossnet``).
    """
    import torch._dynamo

    global _compiled_inputs
    if inputs != _compiled_inputs:
        torch._dynamo.reset()
        _compiled_inputs = inputs
    return torch.compile(model, dynamic=False)


def _camera_step(backend, small: np.ndarray, previous: np.ndarray) -> torch.Tensor:
    """The camera's flow from frame ``small`` to frame ``previous`` (stride 1), for frames
    whose 3D-HOP is not built (those before ``start``)."""
    current, before = backend.encode(torch.from_numpy(np.stack([small, previous])
                                                      ).permute(0, 3, 1, 2))
    flow = backend.estimate([current], [before]).cpu()
    return camera_flows(flow, (1,), small.transpose(2, 0, 1),
                        previous.transpose(2, 0, 1)[None])[0]


def _run_model(batch, *, pending, model, device, logit_threshold, bf16, flip_average,
               pad_to: int | None = None) -> list[tuple[Frame, np.ndarray]]:
    """HOFAM on one batch: ``(frame, mask)`` per entry, masks at the frames' own size
    (``logit_threshold`` None: ``(frame, probability)``, float32). ``pad_to``: a shorter
    batch is padded with copies of its last entry to this many (a compiled model then sees
    one shape); their logits are dropped, and HOFAM treats every sample on its own.

    Returns a list rather than yielding, so that the autocast context never stays open while
    the caller runs its own code between masks.
    """
    entries = [pending.pop(index) for index, _ in batch]
    frames = torch.stack([torch.from_numpy(small).permute(2, 0, 1) for _, small, _ in entries])
    hops = torch.stack([stack for _, stack in batch]).to(device)
    inputs = {"frames": frames.to(device).float() / 255.0, "hop": hops}
    if entries[0][2] is not None:
        backgrounds = torch.stack([torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)
                                   for _, _, b in entries])
        inputs["background"] = backgrounds.to(device).float() / 255.0
    count = len(entries)
    if pad_to is not None and count < pad_to:
        inputs = {name: torch.cat([value, value[-1:].expand(pad_to - count, *value.shape[1:])])
                  for name, value in inputs.items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if flip_average:
            logits = flip_averaged_logits(model, **inputs)[:, 0]
        else:
            logits = model(**inputs)[:, 0]
    logits = logits[:count].float().cpu().numpy()
    masks = []
    for (frame, small, _), logit in zip(entries, logits):
        height, width = frame.rgb.shape[:2]
        if logit.shape != (height, width):
            # Interpolate the logits, then threshold: smoother edges than resizing a binary mask.
            logit = cv2.resize(logit, (width, height), interpolation=cv2.INTER_LINEAR)
        if logit_threshold is None:
            # The logistic function, written with tanh so that no exp overflows.
            masks.append((frame, (0.5 + 0.5 * np.tanh(0.5 * logit)).astype(np.float32)))
            continue
        # uint8 from the start: an int64 intermediate would be 8 bytes per pixel of a frame
        # that may be 4K.
        masks.append((frame, np.where(logit > logit_threshold, np.uint8(255), np.uint8(0))))
    return masks
