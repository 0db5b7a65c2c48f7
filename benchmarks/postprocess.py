"""Post-processing the foreground probability at test time: temporal smoothing and small blobs.

The bundled weights (or ``--weights``) run once per input through the streaming ``segment``
path as the command runs it (its threshold, flow backend, flip averaging and camera-motion
default) and yield each frame's foreground probability; every variant below is then applied
to the same probabilities, frame by frame as a video streams, and scored (CDnet-2014 F):

- temporal: none; an exponential moving average of the probability with the past weighing
  0.3 or 0.5 (``ema``); the same with the past first carried along the stride-1 DIS-fast flow
  (``warp``, the field the 3D-HOP holds before camera-motion removal);
- small blobs: none; dropping 8-connected foreground regions under 0.05 % (``blob-s``) or
  0.2 % (``blob-l``) of the frame's area;
- every pair of the two, and a Gaussian blur of the probability (sigma 1 px) alone.

All are causal (frame t's result uses frames up to t) with constant memory, as ``segment``
streams. None is part of ``segment``: none raised validation F by 0.01 (RESULTS.md,
2026-11-25), so they live here, where the record can be rerun.

Inputs: the split's VALIDATION scenes (what chooses), the synthetic camera clips of
``camera_at_test.py`` (16 seeds, a still, a shaking and a panning camera; each variant is
compared with the bare threshold clip by clip: mean difference and its standard error), the
``make demo`` clip and the end-to-end test's clip (with MOG2 beside them), and, with ``--test``,
the TEST scenes (reported, never used for a choice).

Usage (from the repository root; about two and a half minutes on a 2-core CPU, three and a
half with ``--test``)::

    python benchmarks/postprocess.py --no-record
    python benchmarks/postprocess.py --test
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from _report import (
    add_record_argument,
    data_root,
    environment,
    f_measure,
    markdown_table,
    nan_mean,
    report,
)
from _split import split_scenes
from camera_at_test import CLIP_CAMERAS, CLIP_SEEDS, paired_difference
from camera_at_test import make_clips as make_camera_clips
from synthetic_clip import NAMED_CLIPS
from synthetic_clip import make_clips as make_named_clips

from crossnet.metrics import VideoScorer
from crossnet.split import load_split
from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend
from flow.classical import make_classical_backend
from pipelines.evaluate import evaluate
from pipelines.scenes import open_scene
from pipelines.segment import DEFAULT_CAMERA_MOTION, load_segmentation_model, segment_frames


def warp_to_current(previous: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``previous`` (H, W), defined on frame t - 1, resampled onto frame t.

    ``flow`` is (2, H, W), the flow (u, v) from frame t to frame t - 1 in pixels: frame t's
    pixel x shows what frame t - 1 shows at x + flow(x), which is where ``previous`` is read
    (bilinearly; outside the frame the nearest edge value).
    """
    if flow.shape != (2, *previous.shape):
        raise ValueError(f"flow of shape {flow.shape} does not match a map of shape "
                         f"{previous.shape}; expected (2, H, W)")
    height, width = previous.shape
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(previous, dtype=np.float32),
                     grid_x + flow[0].astype(np.float32), grid_y + flow[1].astype(np.float32),
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class TemporalSmoothing:
    """``q_t = (1 - rate) p_t + rate q_{t-1}`` over one video's probabilities, in order.

    Args:
        rate: the weight of the past, in [0, 1); 0 returns every probability unchanged.
        motion_compensated: carry ``q_{t-1}`` to frame t along the flow passed with each frame
            (:func:`warp_to_current`) before averaging.

    The first frame, and any frame whose size differs from the one before, start afresh.
    """

    def __init__(self, rate: float, *, motion_compensated: bool = True) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.motion_compensated = motion_compensated
        self._previous: np.ndarray | None = None

    def __call__(self, probability: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
        """The smoothed probability of the next frame, (H, W) float32.

        ``flow``: (2, H, W), frame t to frame t - 1; required when motion-compensated (ignored
        for the first frame of a video).
        """
        probability = np.asarray(probability, dtype=np.float32)
        previous = self._previous
        if previous is None or previous.shape != probability.shape or self.rate == 0.0:
            smoothed = probability
        else:
            if self.motion_compensated:
                if flow is None:
                    raise ValueError("motion-compensated smoothing needs each frame's flow to "
                                     "the frame before")
                previous = warp_to_current(previous, np.asarray(flow))
            smoothed = (1.0 - self.rate) * probability + self.rate * previous
        self._previous = smoothed
        return smoothed


def remove_small_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """``mask`` (H, W, nonzero = foreground) without its 8-connected foreground components of
    fewer than ``min_fraction`` of the frame's H * W pixels; uint8 0/255."""
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction}")
    foreground = (np.asarray(mask) > 0).astype(np.uint8)
    min_area = min_fraction * foreground.size
    if min_area <= 1.0 or not foreground.any():
        return foreground * np.uint8(255)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False  # label 0 is the background
    return np.where(keep[labels], np.uint8(255), np.uint8(0))


BASE = "none"
TEMPORAL = {"none": None, "ema 0.3": (0.3, False), "ema 0.5": (0.5, False),
            "warp 0.3": (0.3, True), "warp 0.5": (0.5, True)}
BLOBS = {"none": 0.0, "blob-s": 0.0005, "blob-l": 0.002}


@dataclass
class Variant:
    """One post-processing chain: temporal smoothing, blur, threshold, small-blob removal."""

    name: str
    temporal: tuple[float, bool] | None = None
    blob: float = 0.0
    blur: float = 0.0

    def start(self) -> Callable[[np.ndarray, np.ndarray | None, float], np.ndarray]:
        """A fresh chain for one video: (probability, flow t -> t-1, threshold) -> 0/255 mask."""
        smoothing = (TemporalSmoothing(self.temporal[0], motion_compensated=self.temporal[1])
                     if self.temporal else None)

        def step(probability, flow, threshold):
            if smoothing is not None:
                probability = smoothing(probability, flow)
            if self.blur:
                probability = cv2.GaussianBlur(probability, (0, 0), self.blur)
            mask = np.where(probability > threshold, np.uint8(255), np.uint8(0))
            return remove_small_components(mask, self.blob) if self.blob else mask

        return step


def variants() -> list[Variant]:
    """The fixed list: every temporal x blob pair (the bare threshold first), then the blur."""
    made = []
    for temporal_name, temporal in TEMPORAL.items():
        for blob_name, blob in BLOBS.items():
            parts = [p for p in (temporal_name, blob_name) if p != "none"]
            made.append(Variant(" + ".join(parts) or BASE, temporal, blob))
    made.append(Variant("blur 1", blur=1.0))
    return made


def score_sources(weights: Path, sources: dict[str, Path], chains: list[Variant]
                  ) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    """F of every variant on every input folder, by the input's label in ``sources`` then
    variant name; each variant's post-processing time in milliseconds per frame; and the
    threshold (the checkpoint's own)."""
    segmentation = load_segmentation_model(weights, camera_motion=DEFAULT_CAMERA_MOTION)
    backend = make_hop_backend(segmentation.flow_backend)
    dis = make_classical_backend("dis-fast")
    threshold = segmentation.threshold
    scores: dict[str, dict[str, float]] = {}
    seconds = dict.fromkeys((v.name for v in chains), 0.0)
    frames_done = 0
    for label, path in sources.items():
        scene = open_scene(path)
        scorers = {v.name: VideoScorer() for v in chains}
        steps = {v.name: v.start() for v in chains}
        previous = None
        for frame, probability in segment_frames(scene, segmentation, backend=backend,
                                                 probabilities=True):
            # The raw stride-1 flow, as the 3D-HOP holds it before camera-motion removal.
            flow = (dis.compute_flow(frame.rgb, previous) if previous is not None
                    else np.zeros((2, *frame.rgb.shape[:2]), np.float32))
            previous = frame.rgb
            frames_done += 1
            for name, step in steps.items():
                started = time.perf_counter()
                mask = step(probability, flow, threshold)
                seconds[name] += time.perf_counter() - started
                if frame.mask is not None:
                    scorers[name].add(frame.number, mask, frame.mask, roi=scene.roi,
                                      temporal_roi=scene.temporal_roi)
        scores[label] = {name: f_measure(scorer.result()) for name, scorer in scorers.items()}
        print(f"{label}: " + ", ".join(f"{n} {f:.3f}" for n, f in
                                         list(scores[label].items())[:4]), flush=True)
    return (scores, {name: 1000 * s / max(frames_done, 1) for name, s in seconds.items()},
            threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default="cross_scene_v1")
    parser.add_argument("--weights", help="checkpoint (default: the bundled weights)")
    parser.add_argument("--test", action="store_true",
                        help="also score the split's test scenes (reported, never chosen on)")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()
    weights = Path(args.weights) if args.weights else bundled_weights()
    split = load_split(args.split)
    scenes = split_scenes(data_root(args.data), split)
    chains = variants()
    names = [v.name for v in chains]
    with tempfile.TemporaryDirectory() as work:
        camera_clips = make_camera_clips(Path(work) / "camera", CLIP_SEEDS)
        named = make_named_clips(Path(work) / "named", NAMED_CLIPS)
        real = [*split.validation, *(split.test if args.test else ())]
        named_names = [label for label, _, _ in NAMED_CLIPS]
        sources = {**{n: scenes[n] for n in real}, **{p.name: p for p in camera_clips},
                   **dict(zip(named_names, named, strict=True))}
        scores, timing, threshold = score_sources(weights, sources, chains)
        mog2 = dict(zip(named_names, (s.scores["F"] for s in
                                      evaluate(named, ["mog2"], progress=False)[0].scenes),
                        strict=True))

    def by_variant(scene_names):
        return {v: {s: scores[s][v] for s in scene_names} for v in names}

    val = by_variant(split.validation)
    val_mean = {v: nan_mean(val[v].values()) for v in names}
    clips = by_variant([p.name for p in camera_clips])
    header = ["variant", *(f"{n} (val)" for n in split.validation), "val F",
              *(f"{kind} clips F" for kind, _ in CLIP_CAMERAS), "all clips F",
              *named_names, "ms/frame"]
    rows = []
    for v in names:
        kinds = [nan_mean(f for c, f in clips[v].items() if c.startswith(f"{kind}_"))
                 for kind, _ in CLIP_CAMERAS]
        rows.append([v, *val[v].values(), val_mean[v], *kinds, nan_mean(clips[v].values()),
                     *(scores[n][v] for n in named_names), timing[v]])
    rows.append(["MOG2", *[math.nan] * (len(split.validation) + len(CLIP_CAMERAS) + 2),
                 *(mog2[n] for n in named_names), math.nan])
    difference_header = ["variant", *(f"{kind} {what}" for kind, _ in CLIP_CAMERAS
                                      for what in ("mean diff", "se"))]
    difference_rows = []
    for v in names[1:]:  # BASE is the first
        differences = [paired_difference(clips[v], clips[BASE], kind)
                       for kind, _ in CLIP_CAMERAS]
        difference_rows.append([v, *(value for mean, _, se, _ in differences
                                     for value in (mean, se))])
    body = (
        f"Weights `{weights}`, through the streaming `segment` path (its threshold "
        f"{threshold:g}, flow backend, flip averaging, "
        f"`--camera-motion {DEFAULT_CAMERA_MOTION}`): each variant post-processes the same "
        f"per-frame foreground probabilities, causally (frame t uses frames up to t). `ema a`: "
        f"q_t = (1 - a) p_t + a q_(t-1); `warp a`: the same with q_(t-1) carried to frame t "
        f"along the stride-1 DIS-fast flow; `blob-s` / `blob-l`: 8-connected foreground regions "
        f"under 0.05 % / 0.2 % of the frame dropped; `blur 1`: Gaussian blur, sigma 1 px. "
        f"CDnet-2014 F (0 where ground truth has foreground and a variant marks none) on the "
        f"split's validation scenes, the synthetic camera clips of `camera_at_test.py` "
        f"(seeds {', '.join(map(str, CLIP_SEEDS))}; mean F per camera kind), the "
        f"`make demo` clip and the end-to-end test's clip (MOG2 on the same "
        f"frames). ms/frame: the post-processing alone, on this machine.\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"Each variant minus `{BASE}` on the same synthetic clip: mean of the per-clip "
        f"differences and its standard error, per camera kind.\n\n"
        f"{markdown_table(difference_header, difference_rows)}\n\n"
    )
    if args.test:
        test = by_variant(split.test)
        test_rows = [[v, *test[v].values(), nan_mean(test[v].values())] for v in names]
        body += (f"Test scenes (never used for a choice):\n\n"
                 f"{markdown_table(['variant', *split.test, 'test mean F'], test_rows)}\n\n")
    body += f"Whole run: {time.perf_counter() - started:.0f} s."
    report("Post-processing the foreground probability", body, record=not args.no_record,
           env=env)


if __name__ == "__main__":
    main()
