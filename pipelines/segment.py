"""Segmentation, streaming: any source in, ``(frame, mask)`` out, one frame at a time.

:func:`segment_frames` reads frames from a source, keeps only what the 3D-HOP of the next frames
needs (the encodings of the last ``max(strides)`` frames, see :mod:`flow.hop`) plus at most
``batch_frames`` frames waiting for the model, builds each frame's 3D-HOP, runs HOFAM and yields
the mask at the frame's own size. Memory stays constant for any length of video.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import crossnet
from crossnet.background import RunningBackground, to_uint8
from crossnet.blocks import fold_batchnorm
from crossnet.checkpoint import load_checkpoint
from crossnet.hofam import HOFAM, HofamConfig, build_hofam
from flow.backends import BACKEND_NAMES, file_sha256
from flow.hop import build_hops
from pipelines.errors import InputError
from pipelines.memory import check_fits, format_size, segment_bytes
from pipelines.outputs import (
    check_output_file,
    prepare_output_folder,
    remove_stale_temporaries,
    write_text_atomic,
)
from pipelines.sources import Frame, Source, StreamSource, resize_rgb

MIN_FRAMES = 2
"""Fewest frames a source needs: one frame has no motion, so no 3D-HOP."""

MANIFEST_NAME = "segment.json"
"""The record, in a mask folder, of what its masks were made from (see segment_to_folder)."""

_MASK_NAME = re.compile(r"bin\d{6,}\.png")


@dataclass(frozen=True)
class SegmentationModel:
    """A loaded HOFAM ready for inference, with what it expects.

    Attributes:
        model: the network in eval mode (BatchNorm folded into the convolutions).
        config: its configuration (strides, background input...).
        flow_backend: the flow backend it was trained with (from its checkpoint).
        threshold: the foreground-probability threshold picked on validation scenes in
            training (0.5 for checkpoints without one).
        source: where the weights came from.
        weights_sha256: sha256 of the checkpoint file, recorded with the masks it makes.
    """

    model: HOFAM
    config: HofamConfig
    flow_backend: str
    threshold: float
    source: str
    weights_sha256: str = ""


def load_segmentation_model(weights: str | os.PathLike, *, device: str | torch.device = "cpu"
                            ) -> SegmentationModel:
    """Load a crossnet checkpoint for inference.

    The file is read with ``torch.load(weights_only=True)`` (see
    :func:`crossnet.checkpoint.load_checkpoint`), so nothing in it runs. Its configuration is
    built on the ``meta`` device first and compared with the stored weights, so a file whose
    configuration asks for a huge model allocates nothing before it is refused.

    Raises:
        ValueError: not a crossnet checkpoint, a malformed configuration, threshold or flow
            backend entry, or weights that do not fit the configuration; the message names
            the file.
        FileNotFoundError: no such file.
    """
    checkpoint = load_checkpoint(weights)
    state = checkpoint["model"]
    try:
        if not isinstance(checkpoint["model_config"], dict):
            raise TypeError(f"a {type(checkpoint['model_config']).__name__}, not a dict")
        config = HofamConfig.from_dict(checkpoint["model_config"])
        with torch.device("meta"):
            expected = build_hofam(config).state_dict()
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
        raise ValueError(f"{weights}: bad model configuration in the checkpoint "
                         f"({str(error).splitlines()[0] if str(error) else error!r})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights}: the checkpoint's 'model' entry is not a state dict of "
                         "tensors")
    misfits = sorted(set(expected) ^ set(state)) + sorted(
        key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    if misfits:
        raise ValueError(f"{weights}: weights do not fit the checkpoint's model configuration "
                         f"({len(misfits)} missing, unexpected or misshapen, e.g. {misfits[0]})")
    model = build_hofam(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{weights}: weights do not fit the checkpoint's model configuration "
                         f"({str(error).splitlines()[0]})") from error
    model = fold_batchnorm(copy.deepcopy(model).eval()).to(device)
    backend = checkpoint.get("flow_backend", "dis-fast")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"{weights}: unknown flow backend {backend!r} in the checkpoint")
    threshold = checkpoint.get("threshold", 0.5)
    if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
            or not 0.0 < threshold < 1.0):
        raise ValueError(f"{weights}: threshold {threshold!r} in the checkpoint is not a "
                         "probability in (0, 1)")
    return SegmentationModel(model=model, config=config, flow_backend=backend,
                             threshold=float(threshold), source=str(Path(weights)),
                             weights_sha256=file_sha256(weights))


@torch.inference_mode()
def segment_frames(source: Source, segmentation: SegmentationModel, *, backend,
                   size: tuple[int, int] | None = None, threshold: float | None = None,
                   batch_frames: int = 4, device: str | torch.device = "cpu",
                   background_rate: float = 0.05, start: int = 0,
                   cache_dir: str | os.PathLike | None = None
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
            write it while segmenting (see :mod:`pipelines.segment_cache`).

    Yields:
        The source's frame and its mask, (H, W) uint8, 255 foreground and 0 background;
        ``None`` for the frames before ``start``.
    """
    threshold = segmentation.threshold if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    config = segmentation.config
    device = torch.device(device)
    logit_threshold = float(np.log(threshold / (1 - threshold)))
    pending: dict[int, tuple[Frame, np.ndarray, np.ndarray | None]] = {}
    background = RunningBackground(rate=background_rate) if config.use_background else None

    def as_tensor(small: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)

    frames = iter(source)
    # The frames just before `start` that the 3D-HOP of the frames from `start` on pairs with.
    context: deque[torch.Tensor] = deque(maxlen=max(config.strides))
    for _ in range(start):
        frame = next(frames, None)
        if frame is None:
            return
        small = resize_rgb(frame.rgb, size) if size is not None else frame.rgb
        if background is not None:
            background.advance(small)
        context.append(as_tensor(small))
        yield frame, None
    offset = len(context)  # the index of frame `start` among the frames build_hops sees

    def processing_frames() -> Iterator[torch.Tensor]:
        yield from list(context)
        context.clear()
        for index, frame in enumerate(frames, start=offset):
            small = resize_rgb(frame.rgb, size) if size is not None else frame.rgb
            estimate = to_uint8(background.advance(small)) if background is not None else None
            pending[index] = (frame, small, estimate)
            yield as_tensor(small)

    cache = None
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
        batch: list[tuple[int, torch.Tensor]] = []
        for index, stack in hops:
            if cache is not None:
                cache.record(index + start - offset, pending[index][0], pending[index][1], stack)
            batch.append((index, stack))
            if len(batch) == batch_frames:
                yield from _run_model(batch, pending, segmentation.model, device,
                                      logit_threshold)
                batch = []
        if batch:
            yield from _run_model(batch, pending, segmentation.model, device, logit_threshold)
        if cache is not None:
            cache.finish()
    finally:
        if cache is not None:
            cache.close()


def _run_model(batch, pending, model, device, logit_threshold):
    entries = [pending.pop(index) for index, _ in batch]
    frames = torch.stack([torch.from_numpy(small).permute(2, 0, 1) for _, small, _ in entries])
    inputs = {"frames": frames.to(device).float() / 255.0,
              "hop": torch.stack([stack for _, stack in batch]).to(device)}
    if entries[0][2] is not None:
        backgrounds = torch.stack([torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)
                                   for _, _, b in entries])
        inputs["background"] = backgrounds.to(device).float() / 255.0
    logits = model(**inputs)[:, 0].float().cpu().numpy()
    for (frame, small, _), logit in zip(entries, logits):
        height, width = frame.rgb.shape[:2]
        if logit.shape != (height, width):
            # Interpolate the logits, then threshold: smoother edges than resizing a binary mask.
            logit = cv2.resize(logit, (width, height), interpolation=cv2.INTER_LINEAR)
        # uint8 from the start: an int64 intermediate would be 8 bytes per pixel of a frame
        # that may be 4K.
        yield frame, np.where(logit > logit_threshold, np.uint8(255), np.uint8(0))


@dataclass
class SegmentSummary:
    """What :func:`segment_to_folder` did.

    Attributes:
        frames: masks of the source now in the folder.
        seconds: time spent reading, flowing and segmenting.
        mask_dir: the mask folder.
        written: masks written by this run (the others were kept from an interrupted one).
        video: the mask video written, if any.
        overlay: the overlay video written, if any.
    """

    frames: int
    seconds: float
    mask_dir: Path
    written: int = 0
    video: Path | None = None
    overlay: Path | None = None

    @property
    def kept(self) -> int:
        """Masks kept from an earlier run of the same command."""
        return self.frames - self.written

    @property
    def fps(self) -> float:
        """Masks written per second."""
        return self.written / self.seconds if self.seconds > 0 else float("nan")


class _VideoOut:
    """An mp4 written under a temporary name and renamed when closed cleanly."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = path
        self.frames = 0
        self._temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
        self._writer = cv2.VideoWriter(str(self._temporary), cv2.VideoWriter_fourcc(*"mp4v"),
                                       fps, size)
        if not self._writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write an mp4 video here")

    def write(self, bgr: np.ndarray) -> None:
        self._writer.write(bgr)
        self.frames += 1

    def close(self, *, complete: bool) -> None:
        self._writer.release()
        if not complete:
            self._temporary.unlink(missing_ok=True)
            return
        # OpenCV's writer reports no write errors (a full disk goes unnoticed), so the file is
        # checked before it takes the final name.
        capture = cv2.VideoCapture(str(self._temporary))
        written = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        if written < self.frames:
            self._temporary.unlink(missing_ok=True)
            raise OSError(f"{self.path}: the video was not written completely ({written} of "
                          f"{self.frames} frames; is the disk full?)")
        os.replace(self._temporary, self.path)


def overlay_frame(rgb: np.ndarray, mask: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The frame with its foreground tinted red, as BGR uint8 (for OpenCV writers)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    foreground = mask > 0
    red = np.array([0, 0, 255], dtype=np.float32)
    bgr[foreground] = ((1 - alpha) * bgr[foreground] + alpha * red).astype(np.uint8)
    return bgr


def mask_path(out_dir: Path, number: int) -> Path:
    """Where the mask of frame ``number`` goes: ``out_dir/binNNNNNN.png``."""
    return out_dir / f"bin{number:06d}.png"


def _existing_masks(out_dir: Path) -> set[int]:
    return {int(entry.name[3:-4]) for entry in out_dir.iterdir()
            if _MASK_NAME.fullmatch(entry.name)}


def run_identity(source: Source, segmentation: SegmentationModel, *, backend: str,
                 size: tuple[int, int] | None, threshold: float) -> dict[str, Any]:
    """What decides the masks of a run: the source's files, the weights and the settings.

    Recorded in the mask folder's manifest; a rerun continues the folder only when its own
    identity is the same (the batch size is not part of it: it changes no mask).
    """
    if isinstance(source, StreamSource):
        fingerprint: dict[str, Any] = {"stream": source.path}
    else:
        path = Path(source.path).resolve()
        files = [path] if path.is_file() else list(getattr(source, "frame_files", [path]))
        stats = [file.stat() for file in files]
        fingerprint = {"files": len(stats), "bytes": sum(stat.st_size for stat in stats),
                       "mtime": max((stat.st_mtime for stat in stats), default=0.0)}
        fingerprint = {"source": str(path), **fingerprint}
    return {**fingerprint, "weights_sha256": segmentation.weights_sha256, "flow_backend": backend,
            "size": None if size is None else list(size), "threshold": float(threshold)}


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest as written by this module, or None (absent or unreadable)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("identity"), dict):
        return None
    return document


def _write_manifest(path: Path, identity: dict[str, Any], *, frames: int | None = None,
                    video: Path | None = None, overlay: Path | None = None) -> None:
    document = {"identity": identity, "complete": frames is not None, "frames": frames,
                "video": None if video is None else str(video),
                "overlay": None if overlay is None else str(overlay),
                "code_version": crossnet.__version__}
    write_text_atomic(path, json.dumps(document, indent=2) + "\n")


def _first_missing(source: Source, existing: set[int]) -> int:
    """The index of the first frame whose mask is not in the folder."""
    numbers = getattr(source, "frame_numbers", None)
    if numbers is None:  # videos and streams: frames are numbered 1, 2, ... as decoded
        index = 0
        while index + 1 in existing:
            index += 1
        return index
    return next((index for index, number in enumerate(numbers) if number not in existing),
                len(numbers))


def _differing(recorded: dict[str, Any], identity: dict[str, Any]) -> str | None:
    for key, value in identity.items():
        if recorded.get(key) != value:
            return f"{key}: {recorded.get(key)!r} there, {value!r} now"
    return None


def segment_to_folder(source: Source, segmentation: SegmentationModel, out_dir: Path, *,
                      backend, size: tuple[int, int] | None = None,
                      threshold: float | None = None,
                      batch_frames: int = 4, device: str | torch.device = "cpu",
                      video: Path | None = None, overlay: Path | None = None,
                      overwrite: bool = False, progress: bool = True,
                      cache_dir: Path | None = None) -> SegmentSummary:
    """Segment ``source`` into ``out_dir/binNNNNNN.png`` (0/255, the frame's own number).

    Each mask is written atomically (a hidden temporary file, then a rename), so the folder
    never holds a partial mask, whatever stops the run. ``out_dir/segment.json`` records what
    the masks are made from (source files, weights sha256, flow backend, size, threshold) and
    whether the run completed.

    Rerunning the same command after an interruption resumes: the masks already there are
    kept, the frames before the first missing mask are read without flow or model (the running
    background and the 3D-HOP need them), and the rest is segmented, so the folder ends up as
    an uninterrupted run would have left it. A rerun of a complete run does nothing. A folder
    holding masks of another source, other weights or settings (or masks without a record) is
    refused unless ``overwrite``, which deletes its masks first; a live stream never resumes.
    Optional mp4s of the masks and of the overlay are written under temporary names, checked,
    and renamed when complete; an existing one is refused unless ``overwrite``. ``source``
    must yield frames at their own size (open it without ``size``); ``size`` here is the
    processing size.

    Raises:
        InputError: an output is in the way (see above) or not writable, the source has fewer
            than 2 frames, or the request would not fit in memory.
        OSError: a write failed (disk full...); the masks written so far are whole, and a
            rerun continues from them.
    """
    from tqdm import tqdm

    from pipelines.imageio import read_label_mask, write_png_atomic

    out_dir = prepare_output_folder(out_dir)
    remove_stale_temporaries(out_dir, _MASK_NAME)  # left by a killed run
    threshold = segmentation.threshold if threshold is None else float(threshold)
    identity = run_identity(source, segmentation, backend=backend.name, size=size,
                            threshold=threshold)
    manifest_path = out_dir / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    existing = _existing_masks(out_dir)
    if overwrite:
        for number in existing:
            mask_path(out_dir, number).unlink(missing_ok=True)
        manifest_path.unlink(missing_ok=True)
        existing, manifest = set(), None
    elif existing or manifest is not None:
        hint = "pass --overwrite to replace them, or choose another --out"
        if isinstance(source, StreamSource):
            raise InputError(f"{out_dir}: holds masks already, and a live stream cannot resume; "
                             f"{hint}")
        if manifest is None:
            raise InputError(f"{out_dir}: holds masks without a {MANIFEST_NAME} saying what made "
                             f"them; {hint}")
        difference = _differing(manifest["identity"], identity)
        if difference is not None:
            raise InputError(f"{out_dir}: holds masks of another run ({difference}); {hint}")
    requested = {"video": video, "overlay": overlay}
    if (manifest is not None and manifest.get("complete")
            and len(existing) == manifest.get("frames")
            and all(path is None or (manifest.get(kind) == str(path) and path.exists())
                    for kind, path in requested.items())):
        return SegmentSummary(frames=len(existing), seconds=0.0, mask_dir=out_dir, written=0,
                              video=video, overlay=overlay)
    for kind, path in requested.items():
        if path is not None:
            check_output_file(path, overwrite=overwrite, option=f"--{kind}")
    if source.num_frames is not None and source.num_frames < MIN_FRAMES:
        raise InputError(f"{source.path}: {source.num_frames} frame(s); segmentation needs at "
                         f"least {MIN_FRAMES} (motion between frames)")
    processing = size or source.frame_size
    check_fits(segment_bytes(segmentation.config, processing, batch_frames=batch_frames,
                             backend=backend.name,
                             native_size=getattr(source, "native_size", None)),
               what=f"segmenting {source.path} at {format_size(processing)}",
               hint="choose a smaller --size or --batch-size", device=device)
    start = 0 if overwrite else _first_missing(source, existing)
    _write_manifest(manifest_path, identity)

    fps = source.fps or 25.0
    width, height = source.frame_size
    writers: dict[str, _VideoOut] = {}
    frames = written = 0
    started = time.perf_counter()
    try:
        for kind, path in requested.items():
            if path is not None:
                writers[kind] = _VideoOut(path, fps, (width, height))
        bar = tqdm(total=source.num_frames, desc=source.name, unit="frame", disable=not progress)
        with bar:
            for frame, mask in segment_frames(source, segmentation, backend=backend, size=size,
                                              threshold=threshold, batch_frames=batch_frames,
                                              device=device, start=start,
                                              cache_dir=cache_dir):
                path = mask_path(out_dir, frame.number)
                if mask is None or (not overwrite and path.exists()):
                    if writers:  # the videos need it: read back the mask that is kept
                        mask = read_label_mask(path)
                        if mask.shape != frame.rgb.shape[:2]:
                            raise InputError(f"{path}: mask size {mask.shape[1]}x"
                                             f"{mask.shape[0]} differs from the frame's "
                                             f"{width}x{height}; pass --overwrite")
                else:
                    write_png_atomic(path, mask)
                    written += 1
                if "video" in writers:
                    writers["video"].write(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR))
                if "overlay" in writers:
                    writers["overlay"].write(overlay_frame(frame.rgb, mask))
                frames += 1
                bar.update()
        if frames < MIN_FRAMES:
            raise InputError(f"{source.path}: {frames} frame(s) decoded; segmentation needs at "
                             f"least {MIN_FRAMES} (motion between frames)")
        seconds = time.perf_counter() - started
        while writers:  # a writer that fails its check removes its own file
            writers.popitem()[1].close(complete=True)
    except BaseException:
        for writer in writers.values():
            writer.close(complete=False)
        raise
    _write_manifest(manifest_path, identity, frames=frames, video=video, overlay=overlay)
    return SegmentSummary(frames=frames, seconds=seconds, mask_dir=out_dir, written=written,
                          video=video, overlay=overlay)
