"""Flow at a reduced resolution: does the segmentation keep its accuracy, and what is saved?

HOFAM's motion stream mean-pools the 3D-HOP to half resolution, so flow estimated on frames
downscaled by ``--scales`` (default 1.0, 0.75, 0.5; the flow is then upsampled back and its
vectors scaled by the same factor) might serve as well for less work. Each scale wraps the
checkpoint's own flow backend (:class:`ScaledBackend`) and scores the bundled weights (or
``--weights``) through the streaming ``segment`` path as the command runs it, on the split's
VALIDATION scenes and the synthetic camera clips of ``camera_at_test.py`` (16 seeds, a still,
a shaking and a panning camera), with the time each pass takes (flow, model and reading
together; the clips are made beforehand) and each clip kind's paired difference from scale
1.0.

Usage (from the repository root; about four minutes on an idle 2-core CPU)::

    python benchmarks/flow_resolution.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
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
from camera_at_test import CLIP_CAMERAS, CLIP_SEEDS, make_clips, paired_difference

from crossnet.split import load_split
from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend
from pipelines.evaluate import ModelMethod, evaluate
from pipelines.segment import DEFAULT_CAMERA_MOTION, load_segmentation_model


class ScaledBackend:
    """A 3D-HOP backend that runs ``inner`` on frames resized by ``scale`` (INTER_AREA) and
    returns the flow at the frames' own size (bilinear, vectors divided by the scale)."""

    def __init__(self, inner, scale: float) -> None:
        self.inner, self.scale = inner, scale
        # The model's own backend's name, so that segment runs it as that backend: a benchmark
        # device, not a backend for caches (which would record no scale).
        self.name = inner.name
        self.weights_sha256 = getattr(inner, "weights_sha256", "")

    def encode(self, frames: torch.Tensor) -> list:
        _, _, height, width = frames.shape
        size = (max(2, round(width * self.scale)), max(2, round(height * self.scale)))
        small = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                          for frame in frames.permute(0, 2, 3, 1).numpy()])
        encoded = self.inner.encode(torch.from_numpy(small).permute(0, 3, 1, 2))
        return [(encoding, (height, width)) for encoding in encoded]

    def estimate(self, first: list, second: list) -> torch.Tensor:
        flow = self.inner.estimate([a for a, _ in first], [b for b, _ in second])
        height, width = first[0][1]
        small_height, small_width = flow.shape[-2:]
        flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
        return flow * torch.tensor([width / small_width, height / small_height]).view(1, 2, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default="cross_scene_v1")
    parser.add_argument("--weights", help="checkpoint (default: the bundled weights)")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.75, 0.5],
                        help="factors the frames are resized by for the flow (1.0 required: "
                             "the reference)")
    add_record_argument(parser)
    args = parser.parse_args()
    if 1.0 not in args.scales:
        parser.error("--scales must include 1.0, the reference")
    env = environment()
    started = time.perf_counter()
    weights = Path(args.weights) if args.weights else bundled_weights()
    split = load_split(args.split)
    scenes = split_scenes(data_root(args.data), split)
    segmentation = load_segmentation_model(weights, camera_motion=DEFAULT_CAMERA_MOTION)
    scores, seconds = {}, {}
    with tempfile.TemporaryDirectory() as work:
        clips = make_clips(Path(work), CLIP_SEEDS)
        paths = [*(scenes[n] for n in split.validation), *clips]
        # Warm-up: the first pass of a process pays for reading files and starting threads.
        evaluate(paths[:1], ["crossnet"], progress=False,
                 model=ModelMethod(segmentation=segmentation,
                                   backend=make_hop_backend(segmentation.flow_backend)))
        for scale in args.scales:
            backend = ScaledBackend(make_hop_backend(segmentation.flow_backend), scale)
            begin = time.perf_counter()
            result = evaluate(paths, ["crossnet"], progress=False,
                              model=ModelMethod(segmentation=segmentation, backend=backend))[0]
            seconds[scale] = time.perf_counter() - begin
            scores[scale] = {s.scene: f_measure(s.scores) for s in result.scenes}
            print(f"scale {scale}: validation F "
                  f"{nan_mean(scores[scale][n] for n in split.validation):.3f}", flush=True)
    kinds = [kind for kind, _ in CLIP_CAMERAS]
    rows = []
    for scale in args.scales:
        f = scores[scale]
        differences = [paired_difference(f, scores[1.0], kind) for kind in kinds]
        rows.append([scale, *(f[n] for n in split.validation),
                     nan_mean(f[n] for n in split.validation),
                     *(nan_mean(v for c, v in f.items() if c.startswith(f"{kind}_"))
                       for kind in kinds),
                     *(f"{d[0]:+.3f} ± {d[2]:.3f}" if scale != 1.0 else "-"
                       for d in differences),
                     seconds[scale], seconds[1.0] / seconds[scale]])
    header = ["flow scale", *(f"{n} (val)" for n in split.validation), "val F",
              *(f"{kind} clips F" for kind in kinds),
              *(f"{kind}: diff ± se" for kind in kinds), "pass s", "speed-up"]
    body = (
        f"Weights `{weights}` (flow backend `{segmentation.flow_backend}`, trained on flow at "
        f"full resolution), through the streaming `segment` path (flip averaging, "
        f"`--camera-motion {DEFAULT_CAMERA_MOTION}`). `flow scale`: the 3D-HOP is estimated "
        f"on frames resized by this factor and brought back to the frame size. CDnet-2014 F "
        f"on the split's validation scenes and on the synthetic camera clips of "
        f"`camera_at_test.py` (16 per kind); `diff ± se`: the mean of the per-clip "
        f"differences from scale 1.0 and its standard error. `pass s`: seconds for all these "
        f"inputs (reading, flow, model; after a warm-up pass on one scene); `speed-up`: scale "
        f"1.0's seconds over this one's.\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Flow at a reduced resolution", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
