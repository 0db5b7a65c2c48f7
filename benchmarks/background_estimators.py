"""How good is each running-background estimator, before any model sees it?

For every real scene with ground truth under the data folder (default ``<repo>/../shared/data``),
each estimator of :mod:`crossnet.background` makes the background of every frame, online, as
``segment`` does. A pixel is called foreground when it differs from that background by more than
a threshold (largest absolute difference over R, G and B): plain background subtraction. The
threshold is one for all scenes, each estimator's best from a fixed list (the mean F over all
scenes at each threshold is printed too), so the comparison is between estimators, not tuned per
scene. Scores follow CDnet-2014 rules (:class:`crossnet.metrics.VideoScorer`).

The same table also times each estimator on one 320x240 stream (milliseconds per frame in the
steady state, median of repeats), since ``segment`` updates it for every frame.

Usage (from the repository root)::

    python benchmarks/background_estimators.py
    python benchmarks/background_estimators.py --data /path/to/scenes --no-record
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _report import (
    add_record_argument,
    data_root,
    environment,
    markdown_table,
    median_seconds,
    nan_mean,
)
from _report import report as record_report

from crossnet.background import ESTIMATORS, make_background, running_backgrounds
from crossnet.metrics import VideoScorer
from pipelines.scenes import find_scenes

THRESHOLDS = (10, 15, 20, 25, 30, 40, 50)


def score_scene(scene, estimator: str) -> dict[int, float]:
    """F of thresholded |frame - background| at every threshold of :data:`THRESHOLDS`."""
    frames = list(scene)
    scorers = {threshold: VideoScorer() for threshold in THRESHOLDS}
    backgrounds = running_backgrounds((frame.rgb for frame in frames), estimator=estimator)
    for frame, background in zip(frames, backgrounds):
        if frame.mask is None:
            continue
        difference = np.abs(frame.rgb.astype(np.int16) - background.astype(np.int16)).max(-1)
        for threshold, scorer in scorers.items():
            scorer.add(frame.number, (difference > threshold).astype(np.uint8) * 255,
                       frame.mask, roi=scene.roi, temporal_roi=scene.temporal_roi)
    return {threshold: scorer.result()["F"] for threshold, scorer in scorers.items()}


def time_estimator(estimator: str, *, frames: int = 120) -> float:
    """Milliseconds per frame of ``advance`` on a 320x240 random stream, in the steady state
    (after the median's window has filled: its first 54 frames sort fewer samples, slower)."""
    rng = np.random.default_rng(0)
    stream = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(frames)]
    running = make_background(estimator)
    for frame in stream[:60]:
        running.advance(frame)

    def run() -> None:
        for frame in stream:
            running.advance(frame)

    return 1e3 * median_seconds(run, repeats=5) / frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder of scenes (default: <repo>/../shared/data)")
    add_record_argument(parser)
    args = parser.parse_args(argv)

    env = environment()
    root = data_root(args.data)
    start = time.perf_counter()
    scenes = [scene for scene in find_scenes([root]) if scene.scored_numbers]
    scores = {estimator: {scene.name: score_scene(scene, estimator) for scene in scenes}
              for estimator in ESTIMATORS}
    means = {estimator: {threshold: nan_mean([scores[estimator][scene.name][threshold]
                                              for scene in scenes])
                         for threshold in THRESHOLDS}
             for estimator in ESTIMATORS}
    best = {estimator: max(THRESHOLDS, key=lambda t, e=estimator: means[e][t])
            for estimator in ESTIMATORS}
    timing = {estimator: time_estimator(estimator) for estimator in ESTIMATORS}
    elapsed = time.perf_counter() - start

    summary = markdown_table(
        ["estimator", "best threshold", "mean F at it", "ms per frame (320x240)"]
        + [f"mean F at {t}" for t in THRESHOLDS],
        [[estimator, best[estimator], means[estimator][best[estimator]], timing[estimator]]
         + [means[estimator][t] for t in THRESHOLDS] for estimator in ESTIMATORS])
    per_scene = markdown_table(
        ["scene", "size", "frames scored"] + [f"{e} F (threshold {best[e]})" for e in ESTIMATORS],
        [[scene.name, f"{scene.frame_size[0]}x{scene.frame_size[1]}",
          len(scene.scored_numbers)]
         + [scores[e][scene.name][best[e]] for e in ESTIMATORS] for scene in scenes])
    body = (
        "Plain background subtraction with each running-background estimator: a pixel is "
        "foreground when max(|R - R_bg|, |G - G_bg|, |B - B_bg|) exceeds the threshold, one "
        f"threshold for all {len(scenes)} scenes (each estimator's best of "
        f"{', '.join(map(str, THRESHOLDS))} by mean F). CDnet-2014 F per scene; means weigh "
        f"every scene the same. The whole run took {elapsed:.0f} s.\n\n"
        f"{summary}\n\n{per_scene}"
    )
    record_report("Background estimators: plain subtraction with each running background",
                  body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
