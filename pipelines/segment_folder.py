"""`crossnet segment` into a folder: masks named by frame number, resumable, with optional videos.

:func:`segment_to_folder` drives :func:`pipelines.segment.segment_frames` and writes
``binNNNNNN.png`` per frame (atomically), ``segment.json`` (what made the masks, whether the run
completed) and optional mp4s of the masks and of an overlay.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import crossnet
from pipelines.errors import InputError
from pipelines.memory import check_fits, format_size, segment_bytes
from pipelines.outputs import (
    check_output_file,
    held_folder,
    remove_stale_temporaries,
    write_text_atomic,
)
from pipelines.segment import SegmentationModel, segment_frames
from pipelines.sources import MIN_FRAMES, Source, StreamSource

MANIFEST_NAME = "segment.json"
"""The record, in a mask folder, of what its masks were made from (see segment_to_folder)."""

_MASK_NAME = re.compile(r"bin\d{6,}\.png")


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
        complete_before: the folder already held this run, complete (videos included), so
            nothing was done.
    """

    frames: int
    seconds: float
    mask_dir: Path
    written: int = 0
    video: Path | None = None
    overlay: Path | None = None
    complete_before: bool = False

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

    def __init__(self, path: Path, fps: float, size: tuple[int, int], *,
                 interpolation: int = cv2.INTER_NEAREST) -> None:
        self.path = path
        self.frames = 0
        self._size = size
        self._interpolation = interpolation  # for frames of another size than the first
        self._temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
        self._writer = cv2.VideoWriter(str(self._temporary), cv2.VideoWriter_fourcc(*"mp4v"),
                                       fps, size)
        if not self._writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write an mp4 video here")

    def write(self, bgr: np.ndarray) -> None:
        if (bgr.shape[1], bgr.shape[0]) != self._size:  # a frame of another size in the input
            bgr = cv2.resize(bgr, self._size, interpolation=self._interpolation)
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


def run_identity(source: Source, segmentation: SegmentationModel, *, backend,
                 size: tuple[int, int] | None, threshold: float,
                 precision: str = "fp32") -> dict[str, Any]:
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
    return {**fingerprint, **segmentation.settings(backend=backend, size=size,
                                                   threshold=threshold, precision=precision)}


# What an identity entry missing from an older manifest stood for (the option came later).
# Before `--camera-motion`, a run used its checkpoint's own mode, "none" and no background
# alignment for every shipped or recorded checkpoint; a folder made by a checkpoint trained
# otherwise is refused once (other settings) and needs --overwrite.
_ABSENT_MEANS = {"precision": "fp32", "flip_average": False, "camera_motion": "none",
                 "align_background": False}


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
        there = recorded.get(key, _ABSENT_MEANS.get(key))
        if there != value:
            return f"{key}: {there!r} there, {value!r} now"
    return None


def segment_to_folder(source: Source, segmentation: SegmentationModel, out_dir: Path, *,
                      backend, size: tuple[int, int] | None = None,
                      threshold: float | None = None,
                      batch_frames: int = 4, device: str | torch.device = "cpu",
                      video: Path | None = None, overlay: Path | None = None,
                      overwrite: bool = False, progress: bool = True,
                      cache_dir: Path | None = None, precision: str = "fp32",
                      overlap: bool | None = None, compile_model: bool = False
                      ) -> SegmentSummary:
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
    processing size. ``overlap`` and ``compile_model`` are
    :func:`pipelines.segment.segment_frames`' (``overlap`` None: the default for ``device``);
    the masks are the same either way (up to float rounding for ``compile_model``), so neither
    is part of the record that a resumed run must match.

    While a run writes into ``out_dir`` it holds the folder (:func:`pipelines.outputs.folder_lock`):
    a second run into the same folder is refused until the first ends. A run that creates
    ``out_dir`` and fails before its first mask removes it again.

    Raises:
        InputError: an output is in the way (see above) or not writable, another run is
            writing into ``out_dir``, the source has fewer than 2 frames, or the request would
            not fit in memory.
        OSError: a write failed (disk full...); the masks written so far are whole, and a
            rerun continues from them.
    """
    from pipelines.imageio import read_label_mask, write_png_atomic
    from pipelines.progress import progress_bar

    # Held while masks are written; a failed run that made the folder and wrote no mask (at most
    # its record) removes it again, and leaves the parents it made.
    with held_folder(out_dir, what="crossnet segment", disposable=frozenset({MANIFEST_NAME}),
                     remove_parents=False) as folder:
        remove_stale_temporaries(folder, _MASK_NAME)  # left by a killed run (none is live)
        threshold = segmentation.threshold if threshold is None else float(threshold)
        identity = run_identity(source, segmentation, backend=backend, size=size,
                                threshold=threshold, precision=precision)
        manifest_path = folder / MANIFEST_NAME
        manifest = _read_manifest(manifest_path)
        existing = _existing_masks(folder)
        if not existing and manifest is not None and not manifest.get("complete"):
            # A run that stopped before its first mask (bad input, a refused setting): nothing
            # to resume or to protect, so its record does not hold the corrected rerun back.
            manifest = None
        if overwrite:
            for number in existing:
                mask_path(folder, number).unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)
            existing, manifest = set(), None
        elif existing or manifest is not None:
            hint = "pass --overwrite to replace them, or choose another --out"
            if isinstance(source, StreamSource):
                raise InputError(f"{folder}: holds masks already, and a live stream cannot resume; "
                                 f"{hint}")
            if manifest is None:
                raise InputError(f"{folder}: holds masks without a {MANIFEST_NAME} saying what "
                                 f"made them; {hint}")
            difference = _differing(manifest["identity"], identity)
            if difference is not None:
                raise InputError(f"{folder}: holds masks of another run ({difference}); {hint}")
        requested = {"video": video, "overlay": overlay}
        if (manifest is not None and manifest.get("complete")
                and len(existing) == manifest.get("frames")
                and all(path is None or (manifest.get(kind) == str(path) and path.exists())
                        for kind, path in requested.items())):
            return SegmentSummary(frames=len(existing), seconds=0.0, mask_dir=folder, written=0,
                                  video=video, overlay=overlay, complete_before=True)
        for kind, path in requested.items():
            if path is not None:
                check_output_file(path, overwrite=overwrite, option=f"--{kind}")
        if source.num_frames is not None and source.num_frames < MIN_FRAMES:
            raise InputError(f"{source.path}: {source.num_frames} frame(s); segmentation needs at "
                             f"least {MIN_FRAMES} (motion between frames)")
        processing = size or source.frame_size
        check_fits(segment_bytes(segmentation.config, processing, batch_frames=batch_frames,
                                 backend=backend.name,
                                 native_size=getattr(source, "max_frame_size", None)
                                 or getattr(source, "native_size", None)),
                   what=f"segmenting {source.path} at {format_size(processing)}",
                   hint="choose a smaller --size or --batch-size", device=device)
        start = 0 if overwrite else _first_missing(source, existing)
        _write_manifest(manifest_path, identity)

        fps = source.fps or 25.0
        width, height = source.frame_size
        writers: dict[str, _VideoOut] = {}
        frames = written = 0
        new_masks: list[Path] = []
        started = time.perf_counter()
        try:
            for kind, path in requested.items():
                if path is not None:
                    # Masks stay 0/255 when a frame of another size is fitted; overlays smooth.
                    writers[kind] = _VideoOut(path, fps, (width, height),
                                              interpolation=cv2.INTER_NEAREST if kind == "video"
                                              else cv2.INTER_AREA)
            bar = progress_bar(total=source.num_frames, desc=source.name, unit="frame",
                               disable=not progress)
            with bar:
                for frame, mask in segment_frames(source, segmentation, backend=backend, size=size,
                                                  threshold=threshold, batch_frames=batch_frames,
                                                  device=device, start=start,
                                                  cache_dir=cache_dir, precision=precision,
                                                  overlap=overlap, compile_model=compile_model):
                    path = mask_path(folder, frame.number)
                    if mask is None or (not overwrite and path.exists()):
                        if writers:  # the videos need it: read back the mask that is kept
                            mask = read_label_mask(path)
                            if mask.shape != frame.rgb.shape[:2]:
                                raise InputError(f"{path}: mask size {mask.shape[1]}x"
                                                 f"{mask.shape[0]} differs from the frame's "
                                                 f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}; "
                                                 "pass --overwrite")
                    else:
                        write_png_atomic(path, mask)
                        written += 1
                        if len(new_masks) < MIN_FRAMES:  # all that the check below may remove
                            new_masks.append(path)
                    if "video" in writers:
                        writers["video"].write(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR))
                    if "overlay" in writers:
                        writers["overlay"].write(overlay_frame(frame.rgb, mask))
                    frames += 1
                    bar.update()
            if frames < MIN_FRAMES:
                # A video whose container announced more frames than the one that decoded: its
                # mask is no result (no motion was seen), so it does not stay behind as one.
                for path in new_masks:
                    path.unlink(missing_ok=True)
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
        return SegmentSummary(frames=frames, seconds=seconds, mask_dir=folder, written=written,
                              video=video, overlay=overlay)

