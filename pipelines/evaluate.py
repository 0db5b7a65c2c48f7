"""`crossnet evaluate`: run a method online over benchmark scenes and score it by CDnet-2014 rules.

Each method sees every frame of a scene in order (a background model needs the frames before the
scored ones); only frames with ground truth inside the scene's temporal ROI are scored, only
pixels inside its ROI. Scores follow :mod:`crossnet.metrics`. Speed (``fps``) is frames per
second of reading the frames plus the method (for ``crossnet``: flow and model), not scoring, so
methods compare fairly on the same frames.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossnet.metrics import VideoScorer, mean_scores
from pipelines.baselines import BASELINE_NAMES, OpenCVSubtractor
from pipelines.error_pictures import error_picture, picture_frame_numbers
from pipelines.errors import InputError, one_line
from pipelines.outputs import json_safe, write_text_atomic
from pipelines.progress import progress_bar
from pipelines.scenes import Scene, find_scenes
from pipelines.sources import MIN_FRAMES

logger = logging.getLogger(__name__)

METHOD_NAMES = ("crossnet", *BASELINE_NAMES)

TABLE_COLUMNS = ("Re", "Pr", "F", "PWC", "fps")
"""The columns of the score table, in order: printed, and in ``--report``'s report.md (every
score is in the JSON)."""


@dataclass
class SceneResult:
    """One method's scores on one scene: the CDnet scores, Dice, frames scored and fps."""

    scene: str
    method: str
    scores: dict[str, float]
    fps: float
    frames_seen: int
    pictures: dict[int, np.ndarray] = field(default_factory=dict, repr=False)


@dataclass
class MethodReport:
    """One method's results over all scenes, in scene order."""

    method: str
    scenes: list[SceneResult] = field(default_factory=list)
    settings: dict[str, Any] | None = None
    """For ``crossnet``, what made its masks (weights file and sha256, flow backend, size,
    threshold, precision, flip averaging, camera motion, background alignment):
    :meth:`ModelMethod.settings`."""

    def mean(self) -> dict[str, float]:
        """The mean of every score over the scenes (NaN-aware, see :func:`mean_scores`), except
        ``frames``, the frames scored in all scenes together, and ``fps``, every frame the
        method saw over all the time it took (a mean of rates would weigh a short scene as
        much as a long one)."""
        means = mean_scores({**result.scores, "fps": result.fps} for result in self.scenes)
        means["frames"] = int(sum(result.scores["frames"] for result in self.scenes))
        timed = [result for result in self.scenes if result.fps > 0]
        seconds = sum(result.frames_seen / result.fps for result in timed)
        means["fps"] = (sum(result.frames_seen for result in timed) / seconds if seconds > 0
                        else math.nan)
        return means

    def to_dict(self) -> dict:
        document = {
            "scenes": {r.scene: {**r.scores, "fps": r.fps} for r in self.scenes},
            "mean": self.mean(),
        }
        if self.settings is not None:
            document["settings"] = self.settings
        return document


@dataclass(frozen=True)
class ModelMethod:
    """What the ``crossnet`` method needs: the loaded model and its flow backend."""

    segmentation: object  # pipelines.segment.SegmentationModel
    backend: object  # a flow.hop.HopBackend
    size: tuple[int, int] | None = None
    device: str = "cpu"

    def settings(self) -> dict[str, Any]:
        """The weights file and everything else that decides the masks (the model's
        :meth:`pipelines.segment.SegmentationModel.settings`)."""
        return {"weights": self.segmentation.source,
                **self.segmentation.settings(backend=self.backend, size=self.size)}


def make_method(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A fresh, stateful per-scene baseline: RGB (H, W, 3) uint8 in, (H, W) 0/255 mask out."""
    if name in BASELINE_NAMES:
        return OpenCVSubtractor(name)
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHOD_NAMES)}")


def _baseline_predictions(scene: Scene, method: str):
    subtract = make_method(method)
    for frame in scene:
        yield frame, subtract(frame.rgb)


def _model_predictions(scene: Scene, model: ModelMethod):
    from pipelines.segment import segment_frames

    yield from segment_frames(scene, model.segmentation, backend=model.backend, size=model.size,
                              device=model.device)


def evaluate_scene(scene: Scene, method: str, *, model: ModelMethod | None = None,
                   progress: bool = False, picture_frames: Collection[int] = ()) -> SceneResult:
    """Run ``method`` online over every frame of ``scene`` and score it.

    Args:
        scene: a benchmark scene with ground truth.
        method: a name from :data:`METHOD_NAMES`.
        model: the loaded model, for the ``crossnet`` method.
        progress: show a progress bar over the scene's frames.
        picture_frames: frame numbers to draw an error picture of (see
            :func:`pipelines.error_pictures.error_picture`); frames without ground truth are
            skipped.

    Returns:
        The scene's scores (a NaN score where nothing was scored; a warning is logged). For
        ``crossnet`` the time counts flow and model together, as a user experiences it.
    """
    if method == "crossnet":
        if model is None:
            raise ValueError("the crossnet method needs a model (weights)")
        predictions = _model_predictions(scene, model)
    else:
        predictions = _baseline_predictions(scene, method)
    scorer = VideoScorer()
    pictures: dict[int, np.ndarray] = {}
    seconds = 0.0
    frames_seen = 0
    bar = progress_bar(total=scene.num_frames, desc=f"{method} {scene.name}", unit="frame",
                       leave=False, disable=not progress)
    with bar:
        while True:
            # Time the method (reading frames included for both kinds: the sources are shared).
            start = time.perf_counter()
            item = next(predictions, None)
            seconds += time.perf_counter() - start
            if item is None:
                break
            frame, prediction = item
            frames_seen += 1
            bar.update()
            if frame.mask is not None:
                scorer.add(frame.number, prediction, frame.mask, roi=scene.roi,
                           temporal_roi=scene.temporal_roi)
                if frame.number in picture_frames:
                    pictures[frame.number] = error_picture(frame.rgb, frame.mask, prediction,
                                                           scene.roi)
    scores = scorer.result()
    if scores["frames"] == 0:
        logger.warning("%s: no frame has ground truth inside the temporal ROI; nothing scored",
                       scene.path)
    fps = frames_seen / seconds if seconds > 0 else math.nan
    return SceneResult(scene=scene.name, method=method, scores=scores, fps=fps,
                       frames_seen=frames_seen, pictures=pictures)


def evaluate(paths: Iterable[str | os.PathLike], methods: Sequence[str], *,
             model: ModelMethod | None = None, progress: bool = True,
             pictures_per_scene: int = 0,
             failed: list[tuple[str, str]] | None = None) -> list[MethodReport]:
    """Score each method on every scene found under ``paths``, side by side on the same frames.

    Args:
        paths: scene folders, or folders holding scene folders at any depth.
        methods: method names from :data:`METHOD_NAMES`; each runs on every scene.
        model: the loaded model, needed by the ``crossnet`` method.
        progress: show progress bars.
        pictures_per_scene: error pictures to draw per scene and method, of frames spread
            evenly over the scored ones (for :func:`pipelines.report.write_report`).
        failed: where given (a batch), a path or scene that cannot be read or scored is
            appended to it as ``(path, one-line reason)``, left out of every report, and the
            other scenes still run; without it, the first such error is raised.

    Returns:
        One report per method, in the order given; every report lists the same scenes.

    Raises:
        pipelines.errors.InputError: a path holds no scene, a scene cannot be read or has
            fewer than 2 frames, or would not fit in memory (only without ``failed``).
        ValueError: an unknown method name.
    """
    for method in methods:  # fail on a bad method before any work is done
        if method == "crossnet":
            if model is None:
                raise ValueError("the crossnet method needs a model (weights)")
        else:
            make_method(method)
    scenes = find_scenes(paths, failed=failed)
    reports = [MethodReport(method, settings=model.settings() if method == "crossnet" else None)
               for method in methods]
    for scene in progress_bar(scenes, desc="scenes", unit="scene",
                              disable=not progress or len(scenes) < 2):
        numbers = [f.number for f in scene.files if f.ground_truth is not None]
        chosen = set(picture_frame_numbers(numbers, scene.temporal_roi, pictures_per_scene))
        try:
            _check_scene(scene, methods, model)
            # Every method first, then the reports: a scene that fails for one method is left
            # out of all of them, so the reports stay side by side.
            results = [evaluate_scene(scene, method, model=model, progress=progress,
                                      picture_frames=chosen) for method in methods]
        except Exception as error:  # one bad scene must not stop the batch
            if failed is None:
                raise
            failed.append((scene.path, _failure_line(error, scene)))
            continue
        for report, result in zip(reports, results, strict=True):
            report.scenes.append(result)
    return reports


def _check_scene(scene: Scene, methods: Sequence[str], model: ModelMethod | None) -> None:
    """Refuse, before running, a scene too short to have motion or too big for memory."""
    if scene.num_frames < MIN_FRAMES:
        raise InputError(f"{scene.path}: {scene.num_frames} frame(s); a background model needs "
                         f"at least {MIN_FRAMES}")
    if "crossnet" in methods and model is not None:
        from pipelines.memory import check_fits, format_size, segment_bytes

        size = model.size or scene.frame_size
        check_fits(segment_bytes(model.segmentation.config, size, batch_frames=4,
                                 backend=model.backend.name, native_size=scene.frame_size),
                   what=f"crossnet on {scene.path} at {format_size(size)}",
                   hint="choose a smaller --size", device=model.device)


def _failure_line(error: Exception, scene: Scene) -> str:
    """One line for a failed scene that names it; unexpected errors keep their type."""
    logger.debug("evaluation failed for %s", scene.path, exc_info=error)  # shown with --debug
    text = one_line(error)
    if not isinstance(error, (InputError, ValueError, OSError)):
        text = f"internal error: {type(error).__name__}: {text}"
    return text if scene.path in text else f"{scene.path}: {text}"


def format_table(reports: Sequence[MethodReport]) -> str:
    """A plain-text table: one row per scene and method, then each method's mean."""
    header = f"{'scene':<28} {'method':<8} " + " ".join(f"{c:>7}" for c in TABLE_COLUMNS)
    lines = [header, "-" * len(header)]

    def row(scene: str, method: str, values: dict[str, float]) -> str:
        cells = " ".join(_format_number(values.get(c, math.nan)) for c in TABLE_COLUMNS)
        return f"{scene:<28} {method:<8} {cells}"

    scene_names = [result.scene for result in reports[0].scenes] if reports else []
    for index, scene in enumerate(scene_names):
        for report in reports:
            result = report.scenes[index]
            lines.append(row(scene, report.method, {**result.scores, "fps": result.fps}))
    lines.append("-" * len(header))
    for report in reports:
        count = len(report.scenes)
        lines.append(row(f"mean of {count} scene{'' if count == 1 else 's'}", report.method,
                         report.mean()))
    return "\n".join(lines)


def _format_number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>7}"
    if abs(value) >= 100:
        return f"{value:7.1f}"
    return f"{value:7.4f}" if abs(value) < 10 else f"{value:7.2f}"


def write_json(reports: Sequence[MethodReport], path: str | os.PathLike, *,
               failed: Sequence[tuple[str, str]] = ()) -> None:
    """Write the results as JSON, atomically.

    One method: ``{"method": name, "scenes": {scene: {"Re", "Pr", "F", "PWC", "Sp", "FPR", "FNR",
    "Dice", "frames", "fps"}}, "mean": {...}}``, and for ``crossnet`` also ``"settings"``
    (:meth:`ModelMethod.settings`: weights, sha256, flow, size, threshold, precision, flip
    averaging, camera motion, background alignment). Several methods: ``{"methods": {name:
    {"scenes": ..., "mean": ..., ["settings": ...]}}}``. Undefined scores (NaN) are written
    as ``null`` so the file is strict JSON. Scenes that failed, if any, are listed under
    ``"failed": {path: reason}``.
    """
    if len(reports) == 1:
        document = {"method": reports[0].method, **reports[0].to_dict()}
    else:
        document = {"methods": {report.method: report.to_dict() for report in reports}}
    if failed:
        document["failed"] = dict(failed)
    write_text_atomic(path, json.dumps(json_safe(document), indent=2) + "\n")
