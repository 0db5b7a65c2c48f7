"""`crossnet evaluate`: the JSON contract, and the F it reports checked by an independent scorer."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.cli import main


def _independent_f(scene: Path) -> float:
    """F of OpenCV MOG2 on a UCSD scene, computed with none of the project's code.

    Reads the files directly, runs MOG2 with defaults, and counts pixels by CDnet rules for a
    UCSD scene (GT 0/255, ROI.bmp, temporalROI.txt, gtNNNN.png <-> frame_N.jpg).
    """
    first, last = (int(v) for v in (scene / "temporalROI.txt").read_text().split())
    roi = cv2.imread(str(scene / "ROI.bmp"), cv2.IMREAD_GRAYSCALE) > 0
    numbers = sorted(int(p.stem.split("_")[1]) for p in (scene / "in").glob("frame_*.jpg"))
    mog2 = cv2.createBackgroundSubtractorMOG2()
    tp = fp = fn = 0
    for number in numbers:
        gray = cv2.imread(str(scene / "in" / f"frame_{number}.jpg"), cv2.IMREAD_GRAYSCALE)
        predicted = mog2.apply(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)) == 255
        gt_path = scene / "groundtruth" / f"gt{number:04d}.png"
        if not (first <= number <= last) or not gt_path.exists():
            continue
        gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
        truth, scored = gt == 255, roi & ((gt == 0) | (gt == 255))
        tp += int(np.sum(predicted & truth & scored))
        fp += int(np.sum(predicted & ~truth & scored))
        fn += int(np.sum(~predicted & truth & scored))
    return 2 * tp / (2 * tp + fp + fn)


def test_birds_f_matches_an_independent_computation(shared_data, tmp_path, capsys):
    scene = shared_data / "UCSD_BGS" / "birds"
    out = tmp_path / "out.json"
    code = main(["evaluate", str(scene), "--method", "mog2", "--json", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) == {"method", "scenes", "mean"}
    scores = report["scenes"]["birds"]
    assert {"Re", "Pr", "F", "PWC", "Sp", "FPR", "FNR", "fps"} <= set(scores)
    assert scores["F"] == pytest.approx(_independent_f(scene), abs=1e-9)
    assert scores["frames"] == 71
    assert report["mean"]["F"] == pytest.approx(scores["F"])
    assert scores["fps"] > 0
    printed = capsys.readouterr().out
    assert "birds" in printed and "mean of 1 scene" in printed
    assert "mean of 1 scenes" not in printed


def test_two_methods_side_by_side_on_every_ucsd_scene(shared_data, tmp_path):
    out = tmp_path / "both.json"
    code = main(["evaluate", str(shared_data / "UCSD_BGS"), "--method", "mog2", "--method", "knn",
                 "--json", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())["methods"]
    assert set(report) == {"mog2", "knn"}
    for method in report.values():
        assert len(method["scenes"]) == 14
        for scores in method["scenes"].values():
            assert 0.0 <= scores["F"] <= 1.0 and scores["frames"] > 0
        f_values = [s["F"] for s in method["scenes"].values()]
        assert method["mean"]["F"] == pytest.approx(sum(f_values) / len(f_values))


def test_every_real_scene_loads_and_scores(shared_data, tmp_path):
    out = tmp_path / "all.json"
    assert main(["evaluate", str(shared_data), "--method", "mog2", "--json", str(out),
                 "--no-progress"]) == 0
    scenes = json.loads(out.read_text())["scenes"]
    assert len(scenes) == 29  # 11 SBI + 14 UCSD + 1 Wallflower + 3 HOFAM demo runs
    for name, scores in scenes.items():
        assert scores["frames"] >= 1, name
        assert scores["F"] is None or 0.0 <= scores["F"] <= 1.0, name
    assert scenes["WavingTrees"]["frames"] == 1  # one hand-segmented frame
    assert not math.isnan(json.loads(out.read_text())["mean"]["F"])


def test_bad_inputs_fail_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["evaluate", str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "Traceback" not in err[0]
    assert main(["evaluate", str(tmp_path), "--method", "vibe"]) == 2


def test_the_mean_row_counts_all_frames_and_all_time():
    from pipelines.evaluate import MethodReport, SceneResult

    def scene(name, f, frames, seen, fps):
        return SceneResult(scene=name, method="mog2", scores={"F": f, "frames": frames},
                           fps=fps, frames_seen=seen)

    # 100 frames in 1 s, then 10 frames in 1 s: 110 frames in 2 s, not (100 + 10) / 2 fps.
    report = MethodReport("mog2", [scene("long", 0.5, 71, 100, 100.0),
                                   scene("short", float("nan"), 1, 10, 10.0)])
    mean = report.mean()
    assert mean["F"] == 0.5  # an undefined score is left out of the mean of scores
    assert mean["frames"] == 72 and isinstance(mean["frames"], int)
    assert mean["fps"] == pytest.approx(55.0)
