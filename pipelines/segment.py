"""Segmentation, streaming: any source in, ``(frame, mask)`` out, one frame at a time.

:func:`segment_frames` reads frames from a source, keeps only what the 3D-HOP of the next frames
needs (the encodings of the last ``max(strides)`` frames, see :mod:`flow.hop`) plus at most
``batch_frames`` frames waiting for the model, builds each frame's 3D-HOP, runs HOFAM and yields
the mask at the frame's own size. Memory stays constant for any length of video.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from crossnet.background import RunningBackground, to_uint8
from crossnet.blocks import fold_batchnorm
from crossnet.checkpoint import load_checkpoint
from crossnet.hofam import HOFAM, HofamConfig, build_hofam
from flow.hop import build_hops
from pipelines.sources import Frame, Source, resize_rgb


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
    """

    model: HOFAM
    config: HofamConfig
    flow_backend: str
    threshold: float
    source: str


def load_segmentation_model(weights: str | os.PathLike, *, device: str | torch.device = "cpu"
                            ) -> SegmentationModel:
    """Load a crossnet checkpoint for inference.

    Raises:
        ValueError: not a crossnet checkpoint, or its weights do not fit its configuration.
        FileNotFoundError: no such file.
    """
    checkpoint = load_checkpoint(weights)
    config = HofamConfig.from_dict(checkpoint["model_config"])
    model = build_hofam(config)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"{weights}: weights do not fit the checkpoint's model configuration "
                         f"({str(error).splitlines()[0]})") from error
    model = fold_batchnorm(copy.deepcopy(model).eval()).to(device)
    backend = str(checkpoint.get("flow_backend", "dis-fast"))
    return SegmentationModel(model=model, config=config, flow_backend=backend,
                             threshold=float(checkpoint.get("threshold", 0.5)),
                             source=str(Path(weights)))


@torch.inference_mode()
def segment_frames(source: Source, segmentation: SegmentationModel, *, backend,
                   size: tuple[int, int] | None = None, threshold: float | None = None,
                   batch_frames: int = 4, device: str | torch.device = "cpu",
                   background_rate: float = 0.05, cache_dir: str | os.PathLike | None = None
                   ) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield ``(frame, mask)`` for every frame of ``source``, in order.

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
        cache_dir: reuse the source's HDF5 cache there when it is complete and matches, else
            write it while segmenting (see :mod:`pipelines.segment_cache`).

    Yields:
        The source's frame and its mask, (H, W) uint8, 255 foreground and 0 background.
    """
    threshold = segmentation.threshold if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    config = segmentation.config
    device = torch.device(device)
    logit_threshold = float(np.log(threshold / (1 - threshold)))
    pending: dict[int, tuple[Frame, np.ndarray, np.ndarray | None]] = {}
    background = RunningBackground(rate=background_rate) if config.use_background else None

    def processing_frames() -> Iterator[torch.Tensor]:
        for index, frame in enumerate(source):
            small = resize_rgb(frame.rgb, size) if size is not None else frame.rgb
            estimate = to_uint8(background.advance(small)) if background is not None else None
            pending[index] = (frame, small, estimate)
            yield torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)

    cache = None
    if cache_dir is not None:
        from pipelines.segment_cache import SegmentCache

        cache = SegmentCache.open(cache_dir, source, backend=backend, strides=config.strides,
                                  size=size or source.frame_size)
    try:
        if cache is not None and cache.reading:
            hops = cache.hops(processing_frames())
        else:
            hops = build_hops(processing_frames(), backend, config.strides,
                              batch_frames=batch_frames)
        batch: list[tuple[int, torch.Tensor]] = []
        for index, stack in hops:
            if cache is not None:
                cache.record(index, pending[index][0], pending[index][1], stack)
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
        yield frame, np.where(logit > logit_threshold, 255, 0).astype(np.uint8)


@dataclass
class SegmentSummary:
    """What :func:`segment_to_folder` wrote."""

    frames: int
    seconds: float
    mask_dir: Path
    video: Path | None = None
    overlay: Path | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


class _VideoOut:
    """An mp4 written under a temporary name and renamed when closed cleanly."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = path
        self._temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
        self._writer = cv2.VideoWriter(str(self._temporary), cv2.VideoWriter_fourcc(*"mp4v"),
                                       fps, size)
        if not self._writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write an mp4 video here")

    def write(self, bgr: np.ndarray) -> None:
        self._writer.write(bgr)

    def close(self, *, complete: bool) -> None:
        self._writer.release()
        if complete:
            os.replace(self._temporary, self.path)
        else:
            self._temporary.unlink(missing_ok=True)


def overlay_frame(rgb: np.ndarray, mask: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The frame with its foreground tinted red, as BGR uint8 (for OpenCV writers)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    foreground = mask > 0
    red = np.array([0, 0, 255], dtype=np.float32)
    bgr[foreground] = ((1 - alpha) * bgr[foreground] + alpha * red).astype(np.uint8)
    return bgr


def segment_to_folder(source: Source, segmentation: SegmentationModel, out_dir: Path, *,
                      backend, size: tuple[int, int] | None = None,
                      threshold: float | None = None,
                      batch_frames: int = 4, device: str | torch.device = "cpu",
                      video: Path | None = None, overlay: Path | None = None,
                      overwrite: bool = False, progress: bool = True,
                      cache_dir: Path | None = None) -> SegmentSummary:
    """Segment ``source`` into ``out_dir/binNNNNNN.png`` (0/255, the frame's own number).

    Masks already in ``out_dir`` are kept unless ``overwrite``: a rerun after an interruption
    writes only what is missing (the flow still runs from the start, since the 3D-HOP of a
    frame needs the frames before it). Optional mp4s of the masks and of the overlay, written
    under temporary names and renamed when complete. ``source`` must yield frames at their own
    size (open it without ``size``); ``size`` here is the processing size.
    """
    import time

    from tqdm import tqdm

    from pipelines.imageio import write_png_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    fps = source.fps or 25.0
    width, height = source.frame_size
    writers = {}
    try:
        if video is not None:
            writers["video"] = _VideoOut(video, fps, (width, height))
        if overlay is not None:
            writers["overlay"] = _VideoOut(overlay, fps, (width, height))
        frames = 0
        started = time.perf_counter()
        bar = tqdm(total=source.num_frames, desc=source.name, unit="frame", disable=not progress)
        with bar:
            for frame, mask in segment_frames(source, segmentation, backend=backend, size=size,
                                              threshold=threshold, batch_frames=batch_frames,
                                              device=device, cache_dir=cache_dir):
                path = out_dir / f"bin{frame.number:06d}.png"
                if overwrite or not path.exists():
                    write_png_atomic(path, mask)
                if "video" in writers:
                    writers["video"].write(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR))
                if "overlay" in writers:
                    writers["overlay"].write(overlay_frame(frame.rgb, mask))
                frames += 1
                bar.update()
        seconds = time.perf_counter() - started
    except BaseException:
        for writer in writers.values():
            writer.close(complete=False)
        raise
    for writer in writers.values():
        writer.close(complete=True)
    return SegmentSummary(frames=frames, seconds=seconds, mask_dir=out_dir, video=video,
                          overlay=overlay)

