"""Checkpoints on synthetic clips (the demo's, the end-to-end test's, and more), next to MOG2/KNN.

``make demo`` segments a clip from ``crossnet synth`` (320x240, 150 frames, seed 0), and
``tests/pipelines/test_segment_real.py`` another (320x240, 30 frames, seed 5), whose floor
(F > 0.6, and MOG2's F + 0.1) the bundled weights must pass. A checkpoint that scores well on
real scenes may still do badly on them (one trained on 128x96 synthetic scenes padded into
320x240 windows did). One clip is one scene, so besides those two this script makes more clips
like the test's (``--seeds``, default 6, 8, 9, 10) and scores each ``--weights`` (default: the
bundled weights) on every clip's frame folder through the streaming ``segment`` path, with MOG2
and KNN on the same frames in the same run (CDnet-2014 F; each clip's own ground truth). The
mean over all clips says whether a score on the demo's or the test's clip is typical of
synthetic video. Seed 7 is refused: scene 0 of ``crossnet synth --seed 7`` is a training scene
of the model card's recipe (``_runs.SYNTH_SEED``; records before 2026-11-25 03:30 UTC used seeds
6 to 9, so their seed-7 column and six-clip mean include that training scene).

Usage (from the repository root; about a minute per checkpoint on a 2-core CPU)::

    python benchmarks/synthetic_clip.py
    python benchmarks/synthetic_clip.py --weights run_a/best.pt run_b/best.pt --no-record
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _report import add_record_argument, environment, markdown_table, nan_mean, report
from _runs import SYNTH_SEED

from crossnet.weights import bundled_weights
from flow.backends import file_sha256, make_hop_backend
from pipelines.evaluate import ModelMethod, evaluate
from pipelines.segment import DEFAULT_CAMERA_MOTION, load_segmentation_model
from pipelines.synth import SynthConfig, generate_scenes

SIZE = (320, 240)
# (column label, synth seed, frames): the clips of `make demo` and of the end-to-end test.
NAMED_CLIPS = (("demo (seed 0, 150 frames)", 0, 150), ("e2e test (seed 5)", 5, 30))
EXTRA_FRAMES = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", help="checkpoints (default: the bundled one)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[6, 8, 9, 10],
                        help=f"synth seeds of the further clips ({EXTRA_FRAMES} frames each; "
                             f"not {SYNTH_SEED}, the training scenes' seed)")
    add_record_argument(parser)
    args = parser.parse_args()
    if SYNTH_SEED in args.seeds:
        parser.error(f"--seeds: {SYNTH_SEED} makes a training scene of the model card's recipe "
                     "(its synthetic scenes are crossnet synth --seed "
                     f"{SYNTH_SEED}), not a held-out clip")
    env = environment()
    started = time.perf_counter()
    checkpoints = [Path(p) for p in args.weights] if args.weights else [bundled_weights()]
    for path in checkpoints:
        if not path.is_file():
            raise SystemExit(f"{path}: no such checkpoint")

    clips = [*NAMED_CLIPS, *((f"seed {seed}", seed, EXTRA_FRAMES) for seed in args.seeds)]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        folders = make_clips(Path(work), clips)
        for path in checkpoints:
            scores = clip_scores(path, folders)
            rows.append([f"`{path}` (sha256 {file_sha256(path)[:12]})", *_row(scores)])
            listed = ", ".join(f"{s['F']:.3f}" for s in scores)
            print(f"{path}: F {listed}", flush=True)
        for report_ in evaluate(folders, ["mog2", "knn"], progress=False):
            rows.append([report_.method.upper(), *_row([s.scores for s in report_.scenes])])

    header = ["method", *(label for label, _, _ in clips), "mean F", "mean precision",
              "mean recall"]
    body = (
        f"Clips from `crossnet synth` at {SIZE[0]}x{SIZE[1]}: the one `make demo` segments "
        f"(seed 0, 150 frames), the one `tests/pipelines/test_segment_real.py` checks (seed 5, "
        f"30 frames) and {len(args.seeds)} more ({EXTRA_FRAMES} frames each), each scored on its "
        f"frame folder through the streaming `segment` path (each checkpoint's own flow backend "
        f"and threshold), CDnet-2014 F; MOG2/KNN with OpenCV defaults on the same frames in the "
        f"same run. Means are over the clips, each weighing the same.\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Checkpoints on synthetic clips: the demo's, the end-to-end test's and more", body,
           record=not args.no_record, env=env)


def make_clips(folder: Path, clips) -> list[Path]:
    """The frame folders of ``clips`` ((label, synth seed, frames) each) from ``crossnet
    synth`` at :data:`SIZE`, under ``folder``."""
    return [generate_scenes(folder / f"clip_{index}", num_scenes=1,
                            config=SynthConfig(size=SIZE, num_frames=frames), seed=seed,
                            progress=False)[0]
            for index, (_, seed, frames) in enumerate(clips)]


def clip_scores(weights: Path, folders: list[Path]) -> list[dict[str, float]]:
    """CDnet-2014 scores of a checkpoint on each clip folder, through the streaming
    ``segment`` path as the command runs it (its own flow backend and threshold, the default
    camera-motion compensation, which leaves these still-camera clips as they are)."""
    segmentation = load_segmentation_model(weights, camera_motion=DEFAULT_CAMERA_MOTION)
    model = ModelMethod(segmentation=segmentation,
                        backend=make_hop_backend(segmentation.flow_backend))
    return [s.scores for s in evaluate(folders, ["crossnet"], model=model,
                                       progress=False)[0].scenes]


def _row(scores: list[dict[str, float]]) -> list[float]:
    """F per clip, then mean F, precision and recall over the clips."""
    return [*(s["F"] for s in scores),
            *(nan_mean(s[key] for s in scores) for key in ("F", "Pr", "Re"))]


if __name__ == "__main__":
    main()
