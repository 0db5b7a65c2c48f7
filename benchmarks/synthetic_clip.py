"""Checkpoints on the synthetic clip of the demo and the end-to-end test, next to MOG2 and KNN.

``make demo`` and ``tests/pipelines/test_segment_real.py`` segment a clip from ``crossnet
synth`` (320x240, 30 frames, seed 5). A checkpoint that scores well on real scenes may still do
badly there (one trained on 128x96 synthetic scenes padded into 320x240 windows did), and the
test's floor (F > 0.6, and MOG2's F + 0.1) would fail with it as the bundled weights. This
script makes that clip and scores each ``--weights`` (default: the bundled weights) on its
frames through the streaming ``segment`` path, with MOG2 and KNN on the same frames in the same
run (CDnet-2014 F; the clip's own ground truth).

Usage (from the repository root; under a minute per checkpoint on a 2-core CPU)::

    python benchmarks/synthetic_clip.py
    python benchmarks/synthetic_clip.py --weights run_a/best.pt run_b/best.pt --no-record
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _report import add_record_argument, environment, markdown_table, report

from crossnet.weights import bundled_weights
from flow.backends import file_sha256, make_hop_backend
from pipelines.evaluate import ModelMethod, evaluate
from pipelines.segment import load_segmentation_model
from pipelines.synth import SynthConfig, generate_scenes

SIZE, FRAMES, SEED = (320, 240), 30, 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", help="checkpoints (default: the bundled one)")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()
    checkpoints = [Path(p) for p in args.weights] if args.weights else [bundled_weights()]
    for path in checkpoints:
        if not path.is_file():
            raise SystemExit(f"{path}: no such checkpoint")

    rows = []
    with tempfile.TemporaryDirectory() as work:
        config = SynthConfig(size=SIZE, num_frames=FRAMES)
        clip = generate_scenes(Path(work) / "synth", num_scenes=1, config=config, seed=SEED,
                               progress=False)[0]
        for path in checkpoints:
            segmentation = load_segmentation_model(path)
            model = ModelMethod(segmentation=segmentation,
                                backend=make_hop_backend(segmentation.flow_backend))
            scores = evaluate([clip], ["crossnet"], model=model, progress=False)[0].scenes[0]
            label = f"`{path}` (sha256 {file_sha256(path)[:12]})"
            rows.append([label, scores.scores["F"], scores.scores["Pr"],
                         scores.scores["Re"]])
            print(f"{path}: F {scores.scores['F']:.3f}", flush=True)
        for report_ in evaluate([clip], ["mog2", "knn"], progress=False):
            scores = report_.scenes[0].scores
            rows.append([report_.method.upper(), scores["F"], scores["Pr"],
                         scores["Re"]])

    body = (
        f"The clip of `make demo` and `tests/pipelines/test_segment_real.py`: `crossnet synth`, "
        f"{SIZE[0]}x{SIZE[1]}, {FRAMES} frames, seed {SEED}, scored on its frame folder through "
        f"the streaming `segment` path (each checkpoint's own flow backend and threshold), "
        f"CDnet-2014 rules; MOG2/KNN with OpenCV defaults on the same frames in the same run.\n\n"
        f"{markdown_table(['method', 'F', 'precision', 'recall'], rows)}\n\n"
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Checkpoints on the synthetic demo clip", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
