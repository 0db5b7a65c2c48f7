"""Tests for crossnet.metrics: CDnet-2014 labelling rules, scores and their means."""

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from crossnet.metrics import (
    MOTION,
    OUTSIDE_ROI,
    SCORE_NAMES,
    SHADOW,
    STATIC,
    UNKNOWN,
    ConfusionMatrix,
    VideoScorer,
    frame_confusion,
    frame_dice,
    in_temporal_roi,
    mean_scores,
    overall_scores,
)

DATA_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def u8(rows):
    return np.array(rows, dtype=np.uint8)


def as_bool(rows):
    return np.array(rows, dtype=bool)


def test_label_constants_match_cdnet():
    assert (STATIC, SHADOW, OUTSIDE_ROI, UNKNOWN, MOTION) == (0, 50, 85, 170, 255)


def test_frame_confusion_hand_computed_bool_prediction():
    prediction = as_bool([
        [1, 1, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 1, 1],
    ])
    groundtruth = u8([
        [255, 0, 255, 0],
        [255, 0, 0, 0],
        [0, 255, 255, 0],
    ])
    # Row 0: TP FP FN TN; row 1: TP TN TN TN; row 2: TN FN TP FP.
    # TP = 3, FP = 2, FN = 2, TN = 5.
    assert frame_confusion(prediction, groundtruth) == ConfusionMatrix(tp=3, fp=2, fn=2, tn=5)


def test_every_label_value_and_anti_aliased_values():
    groundtruth = u8([
        [STATIC, SHADOW, OUTSIDE_ROI, UNKNOWN],
        [MOTION, 127, 128, 1],
        [MOTION, SHADOW, UNKNOWN, OUTSIDE_ROI],
    ])
    prediction = as_bool([
        [1, 1, 1, 1],
        [0, 1, 0, 0],
        [1, 0, 0, 1],
    ])
    # Row 0: 0 bg pred fg -> FP; 50 bg pred fg -> FP; 85 and 170 not scored.
    # Row 1: 255 fg pred bg -> FN; 127 bg pred fg -> FP; 128 fg pred bg -> FN; 1 bg bg -> TN.
    # Row 2: 255 fg fg -> TP; 50 bg bg -> TN; 170 and 85 not scored.
    # TP = 1, FP = 3, FN = 2, TN = 2; 8 of 12 pixels scored.
    confusion = frame_confusion(prediction, groundtruth)
    assert confusion == ConfusionMatrix(tp=1, fp=3, fn=2, tn=2)
    assert confusion.total == 8


def test_unscored_labels_ignore_any_prediction():
    groundtruth = u8([[OUTSIDE_ROI, UNKNOWN], [UNKNOWN, OUTSIDE_ROI]])
    for value in (0, 255):
        prediction = np.full((2, 2), value, dtype=np.uint8)
        assert frame_confusion(prediction, groundtruth) == ConfusionMatrix()


def test_uint8_prediction_threshold_and_mog2_shadow():
    groundtruth = u8([[255, 255, 255, 255, 0, 0, 0, 0]])
    prediction = u8([[0, 127, 128, 255, 0, 127, 128, 255]])
    # Foreground predictions are 128 and 255 (127 = MOG2 shadow is background).
    # GT fg: 0 -> FN, 127 -> FN, 128 -> TP, 255 -> TP; GT bg: 0 TN, 127 TN, 128 FP, 255 FP.
    assert frame_confusion(prediction, groundtruth) == ConfusionMatrix(tp=2, fp=2, fn=2, tn=2)


def test_uint8_and_bool_predictions_agree():
    groundtruth = u8([[255, 0, 50, 255], [0, 128, 170, 1]])
    mask = as_bool([[1, 1, 0, 0], [0, 1, 1, 0]])
    uint8_mask = np.where(mask, 255, 0).astype(np.uint8)
    # Shadow 127 where the mask is background must not change anything.
    uint8_with_shadow = np.where(mask, 255, 127).astype(np.uint8)
    expected = frame_confusion(mask, groundtruth)
    # Row 0: TP FP TN FN; row 1: TN TP (170 not scored) TN -> TP 2, FP 1, FN 1, TN 3.
    assert expected == ConfusionMatrix(tp=2, fp=1, fn=1, tn=3)
    assert frame_confusion(uint8_mask, groundtruth) == expected
    assert frame_confusion(uint8_with_shadow, groundtruth) == expected


def test_bool_groundtruth_scores_every_pixel():
    groundtruth = as_bool([[1, 0], [0, 1]])
    prediction = as_bool([[1, 1], [0, 0]])
    assert frame_confusion(prediction, groundtruth) == ConfusionMatrix(tp=1, fp=1, fn=1, tn=1)


def test_roi_excludes_pixels():
    groundtruth = u8([
        [255, 0, 255],
        [0, 255, 0],
    ])
    prediction = as_bool([
        [0, 1, 1],
        [1, 1, 0],
    ])
    roi = as_bool([
        [0, 0, 1],
        [1, 1, 1],
    ])
    # Without ROI: FN FP TP / FP TP TN -> TP 2, FP 2, FN 1, TN 1.
    # The ROI drops the FN and FP of row 0: TP 2, FP 1, FN 0, TN 1.
    assert frame_confusion(prediction, groundtruth) == ConfusionMatrix(tp=2, fp=2, fn=1, tn=1)
    assert frame_confusion(prediction, groundtruth, roi) == ConfusionMatrix(tp=2, fp=1, fn=0, tn=1)


def test_roi_and_unknown_labels_combine():
    groundtruth = u8([[UNKNOWN, 255, 0, 0]])
    prediction = as_bool([[1, 1, 1, 0]])
    roi = as_bool([[1, 1, 0, 1]])
    # Pixel 0 unknown, pixel 2 outside the ROI: TP (pixel 1) and TN (pixel 3) remain.
    assert frame_confusion(prediction, groundtruth, roi) == ConfusionMatrix(tp=1, fp=0, fn=0, tn=1)


def _reference_confusion(prediction, groundtruth, roi):
    """Pixel-by-pixel reading of the CDnet-2014 rules, to check the vectorised counts."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for row in range(groundtruth.shape[0]):
        for column in range(groundtruth.shape[1]):
            label = int(groundtruth[row, column])
            if label in (85, 170) or not roi[row, column]:
                continue
            actual = label >= 128
            predicted = int(prediction[row, column]) >= 128
            key = ("t" if predicted == actual else "f") + ("p" if predicted else "n")
            counts[key] += 1
    return ConfusionMatrix(**counts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frame_confusion_matches_pixelwise_reference(seed):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1, 50, 85, 127, 128, 170, 200, 255], dtype=np.uint8)
    groundtruth = rng.choice(labels, size=(7, 9))
    prediction = rng.choice(np.array([0, 127, 128, 255], dtype=np.uint8), size=(7, 9))
    roi = rng.random((7, 9)) < 0.8
    expected = _reference_confusion(prediction, groundtruth, roi)
    assert frame_confusion(prediction, groundtruth, roi) == expected


def test_shape_mismatch_raises_with_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        frame_confusion(np.zeros((3, 4), bool), np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        frame_confusion(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"roi shape \(2, 2\)"):
        frame_confusion(np.zeros((2, 3), bool), np.zeros((2, 3), np.uint8), np.ones((2, 2), bool))


def test_dtype_errors():
    groundtruth = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="float32"):
        frame_confusion(np.zeros((2, 2), np.float32), groundtruth)
    with pytest.raises(ValueError, match="int64"):
        frame_confusion(np.zeros((2, 2), bool), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="roi dtype"):
        frame_confusion(np.zeros((2, 2), bool), groundtruth, np.full((2, 2), 255, np.uint8))


def test_scores_exact_fractions():
    scores = ConfusionMatrix(tp=3, fp=1, fn=2, tn=6).scores()
    assert tuple(scores) == SCORE_NAMES
    expected = {
        "Re": Fraction(3, 5),
        "Sp": Fraction(6, 7),
        "FPR": Fraction(1, 7),
        "FNR": Fraction(2, 5),
        "PWC": Fraction(100 * 3, 12),
        "Pr": Fraction(3, 4),
        # 2 * (3/4) * (3/5) / (3/4 + 3/5) = (9/10) / (27/20) = 2/3.
        "F": Fraction(2, 3),
    }
    for name, value in expected.items():
        assert scores[name] == float(value), name
    assert scores["F"] == pytest.approx(
        2 * scores["Pr"] * scores["Re"] / (scores["Pr"] + scores["Re"]), rel=1e-15
    )


def test_scores_empty_matrix_is_all_nan():
    scores = ConfusionMatrix().scores()
    assert all(math.isnan(scores[name]) for name in SCORE_NAMES)


def test_scores_without_foreground_in_groundtruth():
    # A perfect empty prediction on an empty GT: recall-like ratios are 0/0.
    scores = ConfusionMatrix(tp=0, fp=0, fn=0, tn=10).scores()
    for name in ("Re", "FNR", "Pr", "F"):
        assert math.isnan(scores[name]), name
    assert (scores["Sp"], scores["FPR"], scores["PWC"]) == (1.0, 0.0, 0.0)

    # False alarms only: Pr = 0 but Re is 0/0, so F is NaN.
    scores = ConfusionMatrix(tp=0, fp=2, fn=0, tn=8).scores()
    assert scores["Pr"] == 0.0
    assert math.isnan(scores["Re"])
    assert math.isnan(scores["F"])
    assert scores["PWC"] == 20.0


def test_f_is_zero_when_precision_and_recall_are_zero():
    scores = ConfusionMatrix(tp=0, fp=1, fn=1, tn=0).scores()
    assert (scores["Pr"], scores["Re"], scores["F"]) == (0.0, 0.0, 0.0)
    assert scores["Sp"] == 0.0  # TN / (TN + FP) = 0 / 1
    assert scores["PWC"] == 100.0


def test_confusion_matrix_add_and_validation():
    total = ConfusionMatrix(tp=1, fp=2, fn=3, tn=4) + ConfusionMatrix(tp=10, fp=20, fn=30, tn=40)
    assert total == ConfusionMatrix(tp=11, fp=22, fn=33, tn=44)
    assert total.total == 110
    with pytest.raises(ValueError, match="'fn': -1"):
        ConfusionMatrix(tp=1, fp=0, fn=-1, tn=0)


def test_dice_conventions():
    assert ConfusionMatrix(tp=0, fp=0, fn=0, tn=5).dice() == 1.0
    assert ConfusionMatrix().dice() == 1.0
    assert ConfusionMatrix(tp=1, fp=1, fn=0, tn=5).dice() == float(Fraction(2, 3))
    assert ConfusionMatrix(tp=0, fp=1, fn=1, tn=5).dice() == 0.0

    empty = np.zeros((2, 3), np.uint8)
    assert frame_dice(np.zeros((2, 3), bool), empty) == 1.0
    # Foreground predicted only on an unknown pixel: nothing scored is foreground.
    groundtruth = u8([[UNKNOWN, 0, 0], [0, 0, 0]])
    assert frame_dice(as_bool([[1, 0, 0], [0, 0, 0]]), groundtruth) == 1.0
    # TP 1 (pixel 0), FP 1 (pixel 1), FN 1 (pixel 3): 2 / (2 + 1 + 1).
    groundtruth = u8([[255, 0, 0], [255, 0, 0]])
    prediction = as_bool([[1, 1, 0], [0, 0, 0]])
    assert frame_dice(prediction, groundtruth) == 0.5


@pytest.mark.parametrize(
    ("frame_number", "expected"),
    [(9, False), (10, True), (15, True), (20, True), (21, False)],
)
def test_in_temporal_roi_is_inclusive(frame_number, expected):
    assert in_temporal_roi(frame_number, (10, 20)) is expected


def test_in_temporal_roi_none_and_invalid():
    assert in_temporal_roi(0, None)
    assert in_temporal_roi(10**6, None)
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        in_temporal_roi(4, (5, 4))


def _frame(groundtruth_rows, prediction_rows):
    return as_bool(prediction_rows), u8(groundtruth_rows)


def test_video_scorer_skips_frames_outside_temporal_roi():
    perfect = _frame([[255, 0]], [[1, 0]])  # TP 1, TN 1
    miss = _frame([[255, 0]], [[0, 1]])  # FN 1, FP 1
    scorer = VideoScorer()
    added = [
        scorer.add(1, *miss, temporal_roi=(2, 3)),
        scorer.add(2, *perfect, temporal_roi=(2, 3)),
        scorer.add(3, *perfect, temporal_roi=(2, 3)),
        scorer.add(4, *miss, temporal_roi=(2, 3)),
    ]
    assert added == [False, True, True, False]
    assert scorer.confusion == ConfusionMatrix(tp=2, fp=0, fn=0, tn=2)
    result = scorer.result()
    assert result["frames"] == 2
    assert result["F"] == 1.0
    assert result["Dice"] == 1.0
    assert scorer.frame_dice == [1.0, 1.0]


def test_video_scorer_applies_roi():
    scorer = VideoScorer()
    roi = as_bool([[1, 0]])
    assert scorer.add(7, as_bool([[1, 1]]), u8([[255, 0]]), roi=roi)
    assert scorer.confusion == ConfusionMatrix(tp=1, fp=0, fn=0, tn=0)


def test_video_scores_come_from_summed_matrix_not_mean_of_frames():
    scorer = VideoScorer()
    # Frame 1: the single foreground pixel is found: TP 1, TN 3; Re = 1, Dice = 1.
    scorer.add(1, as_bool([[1, 0, 0, 0]]), u8([[255, 0, 0, 0]]))
    # Frame 2: three foreground pixels, all missed: FN 3, TN 1; Re = 0, Dice = 0.
    scorer.add(2, as_bool([[0, 0, 0, 0]]), u8([[255, 255, 255, 0]]))
    assert scorer.confusion == ConfusionMatrix(tp=1, fp=0, fn=3, tn=4)
    result = scorer.result()
    # Summed: Re = 1 / 4; the mean of per-frame recalls would be 1 / 2.
    assert result["Re"] == 0.25
    assert result["FNR"] == 0.75
    assert result["Pr"] == 1.0
    # F = 2 TP / (2 TP + FP + FN) = 2 / 5; the mean of per-frame F would be NaN-skipped 1.0.
    assert result["F"] == 0.4
    assert result["PWC"] == 100 * 3 / 8
    # Dice is the mean of the per-frame values, by definition.
    assert result["Dice"] == 0.5
    assert result["frames"] == 2
    assert set(result) == set(SCORE_NAMES) | {"Dice", "frames"}


def test_video_scorer_with_no_frames():
    result = VideoScorer().result()
    assert result["frames"] == 0
    assert math.isnan(result["Dice"])
    assert math.isnan(result["F"])


def test_mean_scores_skips_nan():
    results = [
        {"Re": math.nan, "F": 0.5, "frames": 4},
        {"Re": 0.25, "F": 1.0, "frames": 2},
        {"Re": 0.75, "F": 0.0, "frames": 3},
    ]
    assert mean_scores(results) == {"Re": 0.5, "F": 0.5, "frames": 3.0}
    # Accepts any iterable, a generator included.
    assert mean_scores(result for result in results[1:]) == {"Re": 0.5, "F": 0.5, "frames": 2.5}


def test_mean_scores_all_nan_is_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means = mean_scores([{"Re": math.nan}, {"Re": math.nan}])
    assert math.isnan(means["Re"])


def test_mean_scores_errors():
    with pytest.raises(ValueError, match="empty"):
        mean_scores([])
    with pytest.raises(ValueError, match=r"results\[1\]"):
        mean_scores([{"Re": 1.0, "F": 1.0}, {"Re": 1.0}])


def test_overall_scores_weigh_categories_equally():
    categories = {
        "baseline": [{"F": 1.0}, {"F": 0.0}, {"F": 0.5}],  # category mean 0.5
        "shadow": [{"F": 1.0}],  # category mean 1.0
        "night": [{"F": math.nan}, {"F": 0.25}],  # category mean 0.25 (NaN skipped)
    }
    # Mean over categories: (0.5 + 1.0 + 0.25) / 3; a mean over the 6 videos would differ.
    assert overall_scores(categories)["F"] == pytest.approx(1.75 / 3, rel=1e-15)
    assert overall_scores({"baseline": categories["baseline"]}) == {"F": 0.5}


def test_overall_scores_errors():
    with pytest.raises(ValueError, match="empty"):
        overall_scores({})
    with pytest.raises(ValueError, match="'night'"):
        overall_scores({"baseline": [{"F": 1.0}], "night": []})


def test_real_sbi_groundtruth_scored_against_itself():
    scene = DATA_ROOT / "SBI2015" / "Board"
    if not scene.is_dir():
        pytest.skip(f"real data not found at {scene}")
    cv2 = pytest.importorskip("cv2")
    roi = cv2.imread(str(scene / "ROI.bmp"), cv2.IMREAD_GRAYSCALE) > 0
    scorer = VideoScorer()
    missed = VideoScorer()
    scored_pixels = []
    for frame_number in range(5):
        path = scene / "groundtruth" / f"gt{frame_number:06d}.png"
        groundtruth = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        # This scene's GT holds 0, 170 (unknown) and 255.
        assert set(np.unique(groundtruth).tolist()) <= {0, 170, 255}
        scored_pixels.append(int(np.count_nonzero((groundtruth != UNKNOWN) & roi)))
        scorer.add(frame_number, groundtruth, groundtruth, roi=roi, temporal_roi=(1, 227))
        missed.add(frame_number, np.zeros_like(roi), groundtruth, roi=roi)
    # temporalROI.txt says "1 227": frame 0 is not scored.
    assert scorer.result()["frames"] == 4
    confusion = scorer.confusion
    assert (confusion.fp, confusion.fn) == (0, 0)
    assert confusion.tp > 0
    assert scorer.result()["F"] == 1.0
    # Unknown pixels and pixels outside ROI.bmp are the only ones left out.
    assert missed.confusion.total == sum(scored_pixels)
    assert confusion.total == sum(scored_pixels[1:])
    assert missed.result()["Re"] == 0.0
    assert math.isnan(missed.result()["Pr"])
