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
``crossnet train`` trains on it when the split names it (the bundled ``cross_scene_v1_pseudo``,
``crossnet/splits/cross_scene_v1_pseudo.json``).

Why both directions: the model's running background starts from the first frame it sees, so
whatever stands in that frame is background to it until the estimate forgets it, and early
frames are the least reliable. Run backwards, the first frame is the clip's last, so the two
runs are wrong at opposite ends and their average is better than either (a causal ``segment``
cannot do this; offline labelling can).

A scene folder is written under a temporary name and renamed when complete, so an interrupted
run leaves no half scene (a rerun removes what a killed one left); a rerun skips a finished scene
made from the same files with the same settings and refuses one made otherwise, naming what
differs. Live streams are refused: their frames cannot be checked on a rerun.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from crossnet.metrics import UNKNOWN
from pipelines.errors import InputError
from pipelines.imageio import write_png_atomic
from pipelines.memory import check_fits, format_size, segment_bytes
from pipelines.outputs import prepare_output_folder, temporary_name, write_text_atomic
from pipelines.progress import progress_bar
from pipelines.segment import SegmentationModel, segment_frames
from pipelines.sources import MIN_FRAMES, Frame, Source, StreamSource, source_identity

MANIFEST = "pseudo_label.json"
PREFIX = "pseudo_"
STREAM_REFUSED = ("a live stream cannot be pseudo-labelled (a rerun could not tell whether its "
                  "frames are the same); record it to a file first")


@dataclass(frozen=True)
class _Frames:
    """Frames held in memory, as a :class:`pipelines.sources.Source` (:meth:`reversed`: the
    same frames, last first)."""

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


def scene_name(source: Source) -> str:
    """The name of the scene folder made from ``source``: ``pseudo_<source name>``."""
    return f"{PREFIX}{source.name}"


def labels_from_probability(probability: np.ndarray, confidence: float) -> np.ndarray:
    """CDnet labels from a foreground probability: 255 at ``p >= confidence``, 0 at
    ``p <= 1 - confidence``, :data:`crossnet.metrics.UNKNOWN` (170) between."""
    labels = np.full(probability.shape, UNKNOWN, np.uint8)
    labels[probability >= confidence] = 255
    labels[probability <= 1.0 - confidence] = 0
    return labels


def pseudo_label(source: Source, out: str | os.PathLike, segmentation: SegmentationModel, *,
                 backend, max_frames: int = 300, confidence: float = 0.7,
                 device: str = "cpu", progress: bool = False) -> tuple[Path, bool]:
    """Write the pseudo-labelled scene of ``source`` under ``out`` (see the module's text).

    Args:
        source: an unlabeled video or frame folder (any frame source but a live stream).
        out: the folder that holds the scene folders.
        segmentation: the labelling model (:func:`pipelines.segment.load_segmentation_model`).
        backend: its 3D-HOP flow backend (its name and network weights go into the manifest).
        max_frames: label the first this many frames (all of them are held in memory).
        confidence: a pixel is labelled where the averaged probability is at least this
            (foreground) or at most 1 minus this (background), in (0.5, 1).
        device: where the model runs.
        progress: show a progress bar over the frames of both passes. The model's camera
            handling and flip averaging are ``segmentation``'s own (recorded).

    Returns:
        The scene folder, and whether it was written now (False: it was complete already).

    Raises:
        InputError: a live stream, fewer than two frames, an unreadable input, more memory
            than there is, or a finished scene folder of the same name made from other files
            or with other settings.
        ValueError: ``confidence`` or ``max_frames`` out of range.
        OSError: ``out`` or a file in it could not be written.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    if max_frames < MIN_FRAMES:
        raise ValueError(f"max_frames must be at least {MIN_FRAMES}, got {max_frames}")
    if isinstance(source, StreamSource):
        raise InputError(f"{source.path}: {STREAM_REFUSED}")
    out = prepare_output_folder(out)
    final = out / scene_name(source)
    _remove_leftovers(out, final.name)
    size_bytes, mtime = source_identity(source)
    settings = {
        "source": str(Path(source.path).resolve()),
        "source_bytes": size_bytes,
        "source_mtime": mtime,
        "max_frames": max_frames,
        "confidence": confidence,
        "directions": ["forward", "reverse"],
        "model": segmentation.settings(backend=backend, size=None),
    }
    if final.exists():
        recorded = _recorded(final)
        if recorded == settings:
            return final, False
        differing = (_differing(settings, recorded) if recorded is not None
                     else [f"no readable {MANIFEST}"])
        raise InputError(f"{final}: exists, made from other files or with other settings "
                         f"({', '.join(differing)}); delete it or choose another --out")
    count = min(max_frames, source.num_frames or max_frames)
    width, height = source.frame_size
    what = f"pseudo-labelling {count} frames of {source.path} at {format_size(source.frame_size)}"
    # In host memory: every frame (uint8 RGB, and a scene's uint8 labels) and both passes'
    # probabilities (float16); where the model runs: its own working memory.
    check_fits(count * width * height * (3 + 1 + 2 * 2), what=what,
               hint="choose a smaller --max-frames")
    check_fits(segment_bytes(segmentation.config, source.frame_size, batch_frames=4,
                             backend=backend.name, native_size=source.native_size),
               what=what, hint="choose a smaller --max-frames", device=device)
    frames = tuple(itertools.islice(source, max_frames))
    if len(frames) < MIN_FRAMES:
        raise InputError(f"{source.path}: {len(frames)} frame(s); pseudo-labels need at least "
                         f"{MIN_FRAMES}")
    clip = _Frames(source.name, source.path, source.fps, source.frame_size, source.native_size,
                   frames)
    bar = progress_bar(total=2 * len(frames), desc=f"pseudo-label {source.name}",
                       unit="frame", leave=False, disable=not progress)
    with bar:
        forward = _probabilities(clip, segmentation, backend, device, bar)
        backward = _probabilities(clip.reversed(), segmentation, backend, device, bar)[::-1]
    partial = temporary_name(final)
    try:
        (partial / "input").mkdir(parents=True)
        (partial / "groundtruth").mkdir()
        for frame, ahead, behind in zip(frames, forward, backward):
            probability = (ahead.astype(np.float32) + behind.astype(np.float32)) / 2.0
            write_png_atomic(partial / "input" / f"in{frame.number:06d}.png", frame.rgb)
            write_png_atomic(partial / "groundtruth" / f"gt{frame.number:06d}.png",
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


def _differing(settings: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """The settings that differ, as ``key`` or ``model.key``; a key the record lacks is
    "key not recorded" (a folder of an older version)."""
    differing = []
    for key in sorted(settings.keys() | recorded.keys()):
        if key not in recorded:
            differing.append(f"{key} not recorded")
        elif isinstance(settings.get(key), dict) and isinstance(recorded[key], dict):
            differing.extend(f"{key}.{inner}" for inner in _differing(settings[key],
                                                                      recorded[key]))
        elif settings.get(key) != recorded[key]:
            differing.append(key)
    return differing


def _remove_leftovers(out: Path, name: str) -> None:
    """Remove the temporary folders of ``name`` that a killed run left in ``out``
    (``.<name>.<pid>.<12 hex>.tmp``, :func:`pipelines.outputs.temporary_name`) whose process no
    longer runs."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[0-9a-f]{{12}}\.tmp")
    for entry in out.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not _running(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (this process's own pid: no, its calls have ended)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True
