"""Pseudo-labelled scenes from unlabeled video: a trained model's confident masks as labels.

``crossnet pseudo-label VIDEO... --out DIR`` runs a segmentation model over the first
``max_frames`` frames of each input, forwards and over the same frames in reverse order,
averages the two foreground probabilities and writes a CDnet-layout scene folder::

    DIR/pseudo_<name>/input/inNNNNNN.png         the frames, as decoded (NNNNNN: the frame's number)
    DIR/pseudo_<name>/groundtruth/gtNNNNNN.png   255 where p >= confidence, 0 where
                                                 p <= 1 - confidence, 170 elsewhere
    DIR/pseudo_<name>/pseudo_label.json          the model, its settings and these options

170 is CDnet's "unknown": neither scored nor trained on, so an uncertain pixel teaches nothing
rather than something wrong. ``crossnet preprocess`` reads such a folder as any CDnet scene and
``crossnet train`` trains on it when the split names it (``splits/cross_scene_v1_pseudo.json``).

Why both directions: the model's running background starts from the first frame it sees, so
whatever stands in that frame is background to it until the estimate forgets it, and early
frames are the least reliable. Run backwards, the first frame is the clip's last, so the two
runs are wrong at opposite ends and their average is better than either (a causal ``segment``
cannot do this; offline labelling can).

A scene folder is written under a temporary name and renamed when complete, so an interrupted
run leaves no half scene; a rerun skips a finished scene made with the same settings and refuses
one made with others.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pipelines.errors import InputError
from pipelines.outputs import temporary_name, write_text_atomic
from pipelines.segment import SegmentationModel, segment_frames
from pipelines.sources import MIN_FRAMES, Frame, Source

MANIFEST = "pseudo_label.json"
PREFIX = "pseudo_"
UNKNOWN = 170
"""CDnet's label for pixels that are neither scored nor trained on."""


@dataclass(frozen=True)
class _Frames:
    """Frames held in memory, as a :class:`pipelines.sources.Source` (``reverse``: last first)."""

    name: str
    path: str
    fps: float | None
    frame_size: tuple[int, int]
    native_size: tuple[int, int]
    frames: tuple[Frame, ...]

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    def reversed(self) -> _Frames:
        return _Frames(self.name, self.path, self.fps, self.frame_size, self.native_size,
                       self.frames[::-1])


def labels_from_probability(probability: np.ndarray, confidence: float) -> np.ndarray:
    """CDnet labels from a foreground probability: 255 at ``p >= confidence``, 0 at
    ``p <= 1 - confidence``, :data:`UNKNOWN` between."""
    labels = np.full(probability.shape, UNKNOWN, np.uint8)
    labels[probability >= confidence] = 255
    labels[probability <= 1.0 - confidence] = 0
    return labels


def pseudo_label(source: Source, out: str | os.PathLike, segmentation: SegmentationModel, *,
                 backend, backend_name: str, max_frames: int = 300, confidence: float = 0.7,
                 device: str = "cpu", progress: bool = False) -> tuple[Path, bool]:
    """Write the pseudo-labelled scene of ``source`` under ``out`` (see the module's text).

    Args:
        source: an unlabeled video or frame folder (any frame source).
        out: the folder that holds the scene folders.
        segmentation: the labelling model (:func:`pipelines.segment.load_segmentation_model`).
        backend: its 3D-HOP flow backend; ``backend_name`` its name, for the manifest.
        max_frames: label the first this many frames (all of them are held in memory).
        confidence: a pixel is labelled where the averaged probability is at least this
            (foreground) or at most 1 minus this (background), in (0.5, 1).
        device: where the model runs.
        progress: show a progress bar over the frames of both passes.

    Returns:
        The scene folder, and whether it was written now (False: it was complete already).

    Raises:
        InputError: fewer than two frames, an unreadable input, or a finished scene folder of
            the same name made with other settings.
        ValueError: ``confidence`` or ``max_frames`` out of range.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    if max_frames < MIN_FRAMES:
        raise ValueError(f"max_frames must be at least {MIN_FRAMES}, got {max_frames}")
    out = Path(out)
    final = out / f"{PREFIX}{source.name}"
    settings = {
        "source": str(Path(source.path).resolve()),
        "max_frames": max_frames,
        "confidence": confidence,
        "directions": ["forward", "reverse"],
        "model": segmentation.settings(backend=backend_name, size=None),
    }
    if final.exists():
        if _recorded(final) == settings:
            return final, False
        raise InputError(f"{final}: a scene folder made from another source or with other "
                         f"settings (see its {MANIFEST}); delete it or choose another --out")
    frames = tuple(itertools.islice(source, max_frames))
    if len(frames) < MIN_FRAMES:
        raise InputError(f"{source.path}: {len(frames)} frame(s); pseudo-labels need at least "
                         f"{MIN_FRAMES}")
    clip = _Frames(source.name, source.path, source.fps, source.frame_size, source.native_size,
                   frames)
    bar = tqdm(total=2 * len(frames), desc=f"pseudo-label {source.name}", unit="frame",
               leave=False, disable=not progress)
    with bar:
        forward = _probabilities(clip, segmentation, backend, device, bar)
        backward = _probabilities(clip.reversed(), segmentation, backend, device, bar)[::-1]
    out.mkdir(parents=True, exist_ok=True)
    partial = temporary_name(final)
    try:
        (partial / "input").mkdir(parents=True)
        (partial / "groundtruth").mkdir()
        for frame, ahead, behind in zip(frames, forward, backward):
            probability = (ahead.astype(np.float32) + behind.astype(np.float32)) / 2.0
            _write_png(partial / "input" / f"in{frame.number:06d}.png",
                       cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
            _write_png(partial / "groundtruth" / f"gt{frame.number:06d}.png",
                       labels_from_probability(probability, confidence))
        write_text_atomic(partial / MANIFEST, json.dumps(
            {**settings, "frames": len(frames)}, indent=2) + "\n")
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final, True


def _probabilities(clip: _Frames, segmentation: SegmentationModel, backend, device: str,
                   bar: tqdm) -> list[np.ndarray]:
    """Foreground probability of every frame of ``clip``, in its order (float16 to halve the
    memory of a long clip; the labels need no more precision)."""
    result = []
    for _, probability in segment_frames(clip, segmentation, backend=backend, device=device,
                                         probabilities=True):
        result.append(probability.astype(np.float16))
        bar.update()
    return result


def _recorded(folder: Path) -> dict[str, Any] | None:
    """The settings a finished scene folder was made with (None when unreadable)."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    recorded.pop("frames", None)
    return recorded


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: OpenCV could not write the image")
