"""CDnet-2014 change-detection metrics: confusion matrices, scores, and their means.

The rules follow the CDnet-2014 benchmark (changedetection.net; Wang et al., "CDnet 2014: an
expanded change detection benchmark dataset", CVPR 2014 workshops):

Ground-truth labels, one uint8 value per pixel:

- ``MOTION`` (255) is foreground; ``STATIC`` (0) and ``SHADOW`` (50) are background.
- ``OUTSIDE_ROI`` (85) and ``UNKNOWN`` (170, motion blur and object boundaries) are not scored.
- Any other value comes from anti-aliased or resampled masks and is thresholded at 128:
  ``>= 128`` is foreground, anything lower background.

Pixels outside the scene's ``ROI.bmp`` are not scored; frames outside ``temporalROI.txt`` (an
inclusive range of frame numbers) are not scored.

Predictions are ``bool`` (True = foreground) or ``uint8`` where ``>= 128`` is foreground, so the
shadow value 127 that OpenCV's MOG2/KNN subtractors write counts as background and 255 as
foreground.

Per video, ONE confusion matrix is summed over all scored frames and the seven scores come from
it (not a mean of per-frame scores):

- ``Re = TP / (TP + FN)``, ``Sp = TN / (TN + FP)``, ``FPR = FP / (FP + TN)``,
  ``FNR = FN / (TP + FN)``, ``PWC = 100 * (FN + FP) / (TP + FN + FP + TN)``,
  ``Pr = TP / (TP + FP)``, ``F = 2 * Pr * Re / (Pr + Re)``.
- A ratio whose denominator is zero is NaN (e.g. ``Re`` of a video with no foreground pixel in
  its ground truth). ``F`` is NaN when ``Pr`` or ``Re`` is NaN, and 0 when ``Pr + Re == 0``.

Per frame, Dice ``2 TP / (2 TP + FP + FN)`` over the scored pixels is reported too; it is 1.0
when neither prediction nor ground truth has a scored foreground pixel in that frame. A video's
Dice is the plain mean of its per-frame values.

A category's score is the mean over its videos and the overall score the mean over categories.
Both means skip NaN values (a video without foreground does not make its category's recall
NaN); a key that is NaN for every member stays NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

STATIC = 0
SHADOW = 50
OUTSIDE_ROI = 85
UNKNOWN = 170
MOTION = 255

# Anti-aliased / resampled label values at or above this are foreground (CDnet-2014 rule), and
# so are uint8 predictions: MOG2's shadow value 127 falls just below it.
FOREGROUND_THRESHOLD = 128

SCORE_NAMES = ("Re", "Sp", "FPR", "FNR", "PWC", "Pr", "F")


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator``, NaN when the denominator is zero."""
    if denominator == 0:
        return math.nan
    return numerator / denominator


@dataclass(frozen=True)
class ConfusionMatrix:
    """Pixel counts of one frame, or summed over the frames of a video.

    Attributes:
        tp: foreground predicted as foreground.
        fp: background predicted as foreground.
        fn: foreground predicted as background.
        tn: background predicted as background.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __post_init__(self) -> None:
        counts = {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}
        negative = {name: value for name, value in counts.items() if value < 0}
        if negative:
            raise ValueError(f"ConfusionMatrix: counts must be >= 0, got {negative}")

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return ConfusionMatrix(
            tp=self.tp + other.tp,
            fp=self.fp + other.fp,
            fn=self.fn + other.fn,
            tn=self.tn + other.tn,
        )

    @property
    def total(self) -> int:
        """Number of scored pixels."""
        return self.tp + self.fp + self.fn + self.tn

    def scores(self) -> dict[str, float]:
        """The seven CDnet-2014 scores of this matrix.

        Returns:
            ``{"Re", "Sp", "FPR", "FNR", "PWC", "Pr", "F"}`` as floats; a ratio with a zero
            denominator is NaN. PWC is a percentage.
        """
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        if math.isnan(precision) or math.isnan(recall):
            f_measure = math.nan
        else:
            # 2 Pr Re / (Pr + Re) equals 2 TP / (2 TP + FP + FN) whenever Pr and Re exist; the
            # count form is exact in integers and gives 0 (not 0/0) when TP == 0.
            f_measure = _ratio(2 * tp, 2 * tp + fp + fn)
        return {
            "Re": recall,
            "Sp": _ratio(tn, tn + fp),
            "FPR": _ratio(fp, fp + tn),
            "FNR": _ratio(fn, tp + fn),
            "PWC": _ratio(100 * (fn + fp), self.total),
            "Pr": precision,
            "F": f_measure,
        }

    def dice(self) -> float:
        """Dice ``2 TP / (2 TP + FP + FN)``; 1.0 when there is no foreground on either side."""
        denominator = 2 * self.tp + self.fp + self.fn
        if denominator == 0:
            return 1.0
        return 2 * self.tp / denominator


def _prediction_foreground(prediction: np.ndarray) -> np.ndarray:
    if prediction.dtype == np.bool_:
        return prediction
    if prediction.dtype == np.uint8:
        return prediction >= FOREGROUND_THRESHOLD
    raise ValueError(
        f"frame_confusion: prediction dtype must be bool or uint8 (>= 128 is foreground), got "
        f"{prediction.dtype}; threshold probabilities first, e.g. `probabilities >= 0.5`"
    )


def _groundtruth_labels(groundtruth: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Foreground mask and scored mask (None: every pixel) of a ground-truth array."""
    if groundtruth.dtype == np.bool_:
        return groundtruth, None
    if groundtruth.dtype != np.uint8:
        raise ValueError(
            f"frame_confusion: groundtruth dtype must be uint8 (CDnet labels) or bool, got "
            f"{groundtruth.dtype}"
        )
    scored = (groundtruth != OUTSIDE_ROI) & (groundtruth != UNKNOWN)
    return groundtruth >= FOREGROUND_THRESHOLD, scored


def frame_confusion(
    prediction: np.ndarray,
    groundtruth: np.ndarray,
    roi: np.ndarray | None = None,
) -> ConfusionMatrix:
    """Confusion matrix of one frame under the CDnet-2014 labelling rules.

    Args:
        prediction: predicted mask with shape (H, W), bool (True = foreground) or uint8
            (``>= 128`` is foreground, so MOG2's shadow value 127 is background).
        groundtruth: CDnet labels with shape (H, W), uint8 (see the module docstring), or bool
            (True = foreground, every pixel scored).
        roi: spatial region of interest with shape (H, W), bool (True = scored), e.g.
            ``roi_image > 0`` for a CDnet ``ROI.bmp``; None scores every pixel.

    Returns:
        The counts over the scored pixels.

    Raises:
        ValueError: a shape is not (H, W) or the shapes differ; a dtype is not one listed above.
    """
    if prediction.ndim != 2 or prediction.shape != groundtruth.shape:
        raise ValueError(
            f"frame_confusion: prediction and groundtruth must both have shape (H, W), got "
            f"prediction {prediction.shape} and groundtruth {groundtruth.shape}"
        )
    predicted = _prediction_foreground(prediction)
    actual, scored = _groundtruth_labels(groundtruth)
    if roi is not None:
        if roi.shape != groundtruth.shape:
            raise ValueError(
                f"frame_confusion: roi shape {roi.shape} does not match groundtruth shape "
                f"{groundtruth.shape}"
            )
        if roi.dtype != np.bool_:
            raise ValueError(
                f"frame_confusion: roi dtype must be bool (True = scored), got {roi.dtype}; "
                f"convert a ROI.bmp image with `roi_image > 0`"
            )
        scored = roi if scored is None else scored & roi

    # Four counts from three masked reductions: TP directly, the others by difference.
    if scored is None:
        num_scored = actual.size
        predicted_scored = predicted
        actual_scored = actual
    else:
        num_scored = np.count_nonzero(scored)
        predicted_scored = predicted & scored
        actual_scored = actual & scored
    tp = int(np.count_nonzero(predicted_scored & actual_scored))
    num_predicted = int(np.count_nonzero(predicted_scored))
    num_actual = int(np.count_nonzero(actual_scored))
    fp = num_predicted - tp
    fn = num_actual - tp
    tn = int(num_scored) - num_predicted - fn
    return ConfusionMatrix(tp=tp, fp=fp, fn=fn, tn=tn)


def frame_dice(
    prediction: np.ndarray,
    groundtruth: np.ndarray,
    roi: np.ndarray | None = None,
) -> float:
    """Dice of one frame over its scored pixels.

    Args:
        prediction: predicted mask with shape (H, W); see :func:`frame_confusion`.
        groundtruth: CDnet labels with shape (H, W); see :func:`frame_confusion`.
        roi: bool mask with shape (H, W), True = scored; None scores every pixel.

    Returns:
        ``2 TP / (2 TP + FP + FN)``, or 1.0 when neither side has a scored foreground pixel
        (an empty frame predicted empty is a perfect answer).

    Raises:
        ValueError: as :func:`frame_confusion`.
    """
    return frame_confusion(prediction, groundtruth, roi).dice()


def in_temporal_roi(frame_number: int, temporal_roi: tuple[int, int] | None) -> bool:
    """Whether a frame is inside a CDnet temporal ROI.

    Args:
        frame_number: the frame's number as in its file name (``in000470.jpg`` is 470), which is
            what ``temporalROI.txt`` counts.
        temporal_roi: ``(first, last)``, both inclusive, as read from ``temporalROI.txt``; None
            means every frame.

    Returns:
        True when ``first <= frame_number <= last`` (always when ``temporal_roi`` is None).

    Raises:
        ValueError: ``first > last``.
    """
    if temporal_roi is None:
        return True
    first, last = temporal_roi
    if first > last:
        raise ValueError(f"in_temporal_roi: temporal_roi {temporal_roi} has first > last")
    return first <= frame_number <= last


class VideoScorer:
    """Accumulates one video's confusion matrix and per-frame Dice, frame by frame.

    Example::

        scorer = VideoScorer()
        for frame_number, mask, labels in frames:
            scorer.add(frame_number, mask, labels, roi=roi, temporal_roi=(470, 1700))
        result = scorer.result()  # {"Re": ..., "F": ..., "Dice": ..., "frames": ...}
    """

    def __init__(self) -> None:
        self._confusion = ConfusionMatrix()
        self._frame_dice: list[float] = []

    def add(
        self,
        frame_number: int,
        prediction: np.ndarray,
        groundtruth: np.ndarray,
        roi: np.ndarray | None = None,
        temporal_roi: tuple[int, int] | None = None,
    ) -> bool:
        """Scores one frame unless it lies outside the temporal ROI.

        Args:
            frame_number: the frame's number as in its file name.
            prediction: predicted mask with shape (H, W); see :func:`frame_confusion`.
            groundtruth: CDnet labels with shape (H, W); see :func:`frame_confusion`.
            roi: bool mask with shape (H, W), True = scored; None scores every pixel.
            temporal_roi: inclusive ``(first, last)`` frame numbers; None scores every frame.

        Returns:
            Whether the frame was scored. A frame inside the temporal ROI is scored (and counts
            in ``frames``) even when none of its pixels is.

        Raises:
            ValueError: as :func:`frame_confusion` and :func:`in_temporal_roi`.
        """
        if not in_temporal_roi(frame_number, temporal_roi):
            return False
        confusion = frame_confusion(prediction, groundtruth, roi)
        self._confusion = self._confusion + confusion
        self._frame_dice.append(confusion.dice())
        return True

    @property
    def confusion(self) -> ConfusionMatrix:
        """The confusion matrix summed over the scored frames so far."""
        return self._confusion

    @property
    def frame_dice(self) -> list[float]:
        """Dice of each scored frame, in the order they were added."""
        return list(self._frame_dice)

    def result(self) -> dict[str, float]:
        """The video's scores.

        Returns:
            The seven scores of :meth:`ConfusionMatrix.scores` on the summed matrix, plus
            ``"Dice"`` (mean per-frame Dice, NaN when no frame was scored) and ``"frames"``
            (number of scored frames).
        """
        result = self._confusion.scores()
        result["Dice"] = (
            sum(self._frame_dice) / len(self._frame_dice) if self._frame_dice else math.nan
        )
        result["frames"] = len(self._frame_dice)
        return result


def mean_scores(results: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each key over several results (videos of a category, or categories), NaN skipped.

    Args:
        results: score dictionaries with the same keys, e.g. from :meth:`VideoScorer.result`.
            Every key is averaged, ``"frames"`` included (giving the mean frames per member).

    Returns:
        For each key, the mean of its non-NaN values; NaN when every value is NaN.

    Raises:
        ValueError: ``results`` is empty, or the dictionaries have different keys.
    """
    results = list(results)
    if not results:
        raise ValueError("mean_scores: results is empty; there is nothing to average")
    keys = list(results[0])
    for index, result in enumerate(results[1:], start=1):
        if set(result) != set(keys):
            raise ValueError(
                f"mean_scores: results[{index}] has keys {sorted(result)}, results[0] has "
                f"{sorted(keys)}"
            )
    means: dict[str, float] = {}
    for key in keys:
        values = [float(result[key]) for result in results if not math.isnan(result[key])]
        # A hand-written nanmean: numpy's warns on an all-NaN column, which is a valid outcome
        # here (e.g. recall over videos that all lack foreground).
        means[key] = sum(values) / len(values) if values else math.nan
    return means


def overall_scores(categories: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, float]:
    """CDnet overall scores: the mean over categories of each category's mean over its videos.

    Args:
        categories: category name -> the results of its videos.

    Returns:
        For each key, the NaN-skipping mean (see :func:`mean_scores`) of the category means, so
        every category weighs the same whatever its number of videos.

    Raises:
        ValueError: no category, a category without videos, or mismatched keys.
    """
    if not categories:
        raise ValueError("overall_scores: categories is empty; there is nothing to average")
    empty = [name for name, videos in categories.items() if len(videos) == 0]
    if empty:
        raise ValueError(f"overall_scores: categories {empty} have no video results")
    return mean_scores(mean_scores(videos) for videos in categories.values())
