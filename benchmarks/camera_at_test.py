"""Camera-motion handling chosen at test time, for the bundled weights and other checkpoints.

``segment`` and ``evaluate`` take ``--camera-motion`` (:data:`pipelines.segment.CAMERA_MODES`):
the camera's own motion, fitted to each flow field (:mod:`crossnet.camera_motion`), can be
removed from the 3D-HOP, and the running background moved along with the camera, before a model
that was trained without either. This script scores each checkpoint through the streaming
``segment`` path with each mode:

- ``none``: the flow and the background as they are (the bundled weights' training inputs);
- ``affine``: the camera's motion removed from the 3D-HOP;
- ``affine+background``: that, and the running background moved with the camera (the default
  of the commands since 2026-11-25; records before then call it ``affine+align``);

on the split's VALIDATION scenes (what chooses a default) and its TEST scenes (never used for a
choice), per scene, with each scene's median camera speed (``_camera``) and MOG2 and KNN on the
same test scenes in the same run.

The validation scenes are all filmed by still cameras, so they show only what compensation
costs where its fit triggers wrongly, never what it is for. Synthetic clips with exact ground
truth fill that gap: ``crossnet synth`` clips (320x240; seeds ``--clip-seeds``, default 6, 8, 9,
10 and 11-22, never the training scenes' 7) filmed by a still camera (30 frames), a shaking one
(``--jitter 2``, 30 frames) and a panning one (``--pan 4``: a sweep back and forth peaking at
4 px/frame, 60 frames); each setting is scored on every clip, with MOG2 and KNN beside it.

A last table compares each checkpoint with the bundled weights clip by clip (same camera mode):
the mean of the per-clip differences of each camera kind, their standard deviation and the
standard error of the mean. Records before 2026-11-25 12:00 used the 4 clips 6, 8, 9, 10 alone
(the one of 12:04 used the 12 clips 11-22; the 16 are the default from 12:25): there a per-clip
difference varied by about 0.10, so a 4-clip mean moves by about 0.05 between two equally good
checkpoints: judge differences against the standard error.

Usage (from the repository root; about two minutes per checkpoint and setting on a 2-core CPU)::

    python benchmarks/camera_at_test.py
    python benchmarks/camera_at_test.py --weights runs/x/best.pt
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from _camera import camera_speed
from _report import (
    add_record_argument,
    data_root,
    environment,
    markdown_table,
    nan_mean,
    report,
)
from _runs import SYNTH_SEED, baseline_rows, scene_scores, score_run, seed_means
from _split import split_scenes

from crossnet.split import load_split
from crossnet.weights import bundled_weights
from pipelines.evaluate import evaluate
from pipelines.scenes import open_scene
from pipelines.segment import CAMERA_MODES
from pipelines.synth import SynthConfig, generate_scenes

CLIP_SIZE = (320, 240)
CLIP_SEEDS = [6, 8, 9, 10, *range(11, 23)]
REFERENCE = "bundled weights"
# The camera of each kind of synthetic clip: (kind, SynthConfig changes).
CLIP_CAMERAS = (("still", {"num_frames": 30}),
                ("shaking", {"num_frames": 30, "camera_jitter": 2.0}),
                ("panning", {"num_frames": 60, "camera_pan": 4.0}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default="cross_scene_v1")
    parser.add_argument("--weights", nargs="*", default=[], help="more checkpoints to score")
    parser.add_argument("--clip-seeds", nargs="+", type=int, default=CLIP_SEEDS,
                        help=f"crossnet synth seeds of the synthetic clips (not {SYNTH_SEED}, "
                             "the training scenes' seed)")
    add_record_argument(parser)
    args = parser.parse_args()
    if SYNTH_SEED in args.clip_seeds:
        parser.error(f"--clip-seeds: {SYNTH_SEED} makes a training scene of the model card's "
                     "recipe, not a held-out clip")
    env = environment()
    started = time.perf_counter()
    split = load_split(args.split)
    scenes = split_scenes(data_root(args.data), split)
    checkpoints = {REFERENCE: bundled_weights(),
                   **{Path(path).parent.name: Path(path) for path in args.weights}}
    names = [*split.validation, *split.test]
    nan = float("nan")

    rows = [["camera px/frame", *(camera_speed(open_scene(scenes[n]))[0] for n in names),
             nan, nan]]
    by_setting: dict[str, list[tuple[float, float]]] = {}
    clip_rows = []
    clip_scores: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as work:
        clips = make_clips(Path(work), args.clip_seeds)
        for name, path in checkpoints.items():
            for setting in CAMERA_MODES:
                f, test_f, val_f = score_run(path, split, scenes, camera_mode=setting)
                by_setting.setdefault(setting, []).append((test_f, val_f))
                rows.append([f"{name}, {setting}", *(f[n] for n in names), val_f, test_f])
                clip_f = {n: s["F"] for n, s in
                          scene_scores(path, clips, camera_mode=setting).items()}
                clip_scores[name, setting] = clip_f
                clip_rows.append([f"{name}, {setting}", *clip_means(clip_f), val_f,
                                  *(clip_f[c.name] for c in clips)])
                print(f"{name}, {setting}: validation F {val_f:.3f}, test F {test_f:.3f}, "
                      f"clips (still, shaking, panning) {clip_rows[-1][1:4]}", flush=True)
        for report_ in evaluate(clips, ["mog2", "knn"], progress=False):
            clip_f = {s.scene: s.scores["F"] for s in report_.scenes}
            clip_rows.append([report_.method.upper(), *clip_means(clip_f), float("nan"),
                              *(clip_f[c.name] for c in clips)])
    for row in baseline_rows(split, scenes):  # [label, test scenes..., test mean, nan, nan]
        rows.append([row[0], *[nan] * len(split.validation), *row[1:len(split.test) + 1], nan,
                     row[len(split.test) + 1]])

    clip_header = ["checkpoint, camera at test",
                   *(f"{kind} clips mean F" for kind, _ in CLIP_CAMERAS), "val F",
                   *(c.name for c in clips)]
    header = ["checkpoint, camera at test", *(f"{n} (val)" for n in split.validation),
              *split.test, "val F", "test mean F"]
    body = (
        f"Split `{split.name}`: CDnet-2014 F on each validation scene (what chooses a default) "
        f"and each test scene (never trained on, never used for a choice), through the "
        f"streaming `segment` path (each checkpoint's own threshold and flow backend, flip "
        f"averaging on), with each `--camera-motion` mode at test time: `none` (flow and "
        f"background as they are), `affine` (the camera's motion removed from the 3D-HOP), "
        f"`affine+background` (also the running background moved with the camera). First "
        f"row: each scene's median camera speed "
        f"(`crossnet.camera_motion` on DIS-fast stride-1 flow, every third frame of the first "
        f"90; 0 where the fit does not explain the frames better than a still camera). "
        f"Checkpoints: "
        + ", ".join(f"{name} (`{path}`)" for name, path in checkpoints.items())
        + ". MOG2/KNN: OpenCV defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\nMean over checkpoints: {seed_means(by_setting)}.\n\n"
        f"Synthetic clips (`crossnet synth` at {CLIP_SIZE[0]}x{CLIP_SIZE[1]}, seeds "
        f"{', '.join(map(str, args.clip_seeds))}; never trained on): a still camera (30 frames), "
        f"a shaking one (`--jitter 2`, 30 frames), a panning one (`--pan 4`, 60 frames); "
        f"CDnet-2014 F per clip, the same settings, MOG2/KNN on the same frames; validation F "
        f"repeated from above.\n\n"
        f"{markdown_table(clip_header, clip_rows)}\n\n"
        f"{difference_table(clip_scores)}"
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Camera-motion compensation at test time", body, record=not args.no_record, env=env)


def make_clips(folder: Path, seeds: list[int]) -> list[Path]:
    """One ``crossnet synth`` clip per camera kind and seed under ``folder``, each folder named
    ``<kind>_seed<S>`` (which is also its scene name in the scores)."""
    clips = []
    for kind, changes in CLIP_CAMERAS:
        for seed in seeds:
            made = generate_scenes(folder / "made", num_scenes=1, seed=seed, progress=False,
                                   config=SynthConfig(size=CLIP_SIZE, **changes))[0]
            clips.append(Path(made).rename(folder / f"{kind}_seed{seed}"))
    return clips


def paired_difference(f: dict[str, float], reference: dict[str, float], kind: str
                      ) -> tuple[float, float, float, int]:
    """Over the clips of one camera kind where both F are defined (CDnet F is NaN on a clip
    where a method marks nothing and nothing is foreground): the mean of ``f - reference``
    clip by clip, the standard deviation of those differences, the standard error of their
    mean (NaN where there are too few clips) and the number of clips."""
    differences = [value - reference[name] for name, value in f.items()
                   if name.startswith(f"{kind}_") and name in reference
                   and math.isfinite(value) and math.isfinite(reference[name])]
    if len(differences) < 2:
        mean = differences[0] if differences else math.nan
        return mean, math.nan, math.nan, len(differences)
    spread = statistics.stdev(differences)
    return (statistics.fmean(differences), spread, spread / math.sqrt(len(differences)),
            len(differences))


def difference_table(clip_scores: dict[tuple[str, str], dict[str, float]]) -> str:
    """The markdown paragraph comparing every other checkpoint with :data:`REFERENCE`, clip by
    clip in the same camera mode; empty when only the reference was scored."""
    rows = []
    for (name, setting), f in clip_scores.items():
        if name == REFERENCE:
            continue
        rows.append([f"{name}, {setting}",
                     *(value for kind, _ in CLIP_CAMERAS
                       for value in paired_difference(f, clip_scores[REFERENCE, setting], kind))])
    if not rows:
        return ""
    header = ["checkpoint, camera at test",
              *(f"{kind} {what}" for kind, _ in CLIP_CAMERAS
                for what in ("mean diff", "sd", "se", "clips"))]
    return (f"Each checkpoint minus the {REFERENCE} on the same clip and camera mode: mean "
            f"difference per camera kind, standard deviation of the per-clip differences, "
            f"standard error of the mean, and the number of clips where both F are "
            f"defined.\n\n{markdown_table(header, rows)}\n\n")


def clip_means(f: dict[str, float]) -> list[float]:
    """Mean F over the clips of each camera kind, in :data:`CLIP_CAMERAS` order."""
    return [nan_mean(value for name, value in f.items() if name.startswith(f"{kind}_"))
            for kind, _ in CLIP_CAMERAS]


if __name__ == "__main__":
    main()
