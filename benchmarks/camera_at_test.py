"""Camera-motion compensation chosen at test time, for the bundled weights and other checkpoints.

``segment`` and ``evaluate`` take ``--camera-motion affine``: the camera's own motion, fitted to
each flow field (:mod:`crossnet.camera_motion`), is removed from the 3D-HOP before a model that
was trained without it. This script scores each checkpoint through the streaming ``segment``
path with each test-time setting:

- ``none``: the checkpoint's own inputs (the bundled weights': no compensation);
- ``affine``: ``--camera-motion affine``;
- ``affine+align``: that, and the running background moved with the camera (a model option,
  :attr:`crossnet.hofam.HofamConfig.align_background`, not a command-line one);

on the split's VALIDATION scenes (what chooses a default) and its TEST scenes (never used for a
choice), per scene, with each scene's median camera speed (``_camera``) and MOG2 and KNN on the
same test scenes in the same run.

Usage (from the repository root; about a minute per checkpoint and setting on a 2-core CPU)::

    python benchmarks/camera_at_test.py
    python benchmarks/camera_at_test.py --weights runs/x/best.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _camera import camera_speed
from _report import REPO_ROOT, add_record_argument, data_root, environment, markdown_table, report
from _runs import baseline_rows, score_run, seed_means
from _split import split_scenes

from crossnet.split import load_split
from crossnet.weights import bundled_weights
from pipelines.scenes import open_scene

SETTINGS = {"none": None,
            "affine": {"camera_motion": "affine"},
            "affine+align": {"camera_motion": "affine", "align_background": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default=str(REPO_ROOT / "splits" / "cross_scene_v1.json"))
    parser.add_argument("--weights", nargs="*", default=[], help="more checkpoints to score")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()
    split = load_split(args.split)
    scenes = split_scenes(data_root(args.data), split)
    checkpoints = {"bundled weights": bundled_weights(),
                   **{Path(path).parent.name: Path(path) for path in args.weights}}
    names = [*split.validation, *split.test]
    nan = float("nan")

    rows = [["camera px/frame", *(camera_speed(open_scene(scenes[n]))[0] for n in names),
             nan, nan]]
    by_setting: dict[str, list[tuple[float, float]]] = {}
    for name, path in checkpoints.items():
        for setting, inputs in SETTINGS.items():
            f, test_f, val_f = score_run(path, split, scenes, inputs=inputs)
            by_setting.setdefault(setting, []).append((test_f, val_f))
            print(f"{name}, {setting}: validation F {val_f:.3f}, test F {test_f:.3f}",
                  flush=True)
            rows.append([f"{name}, {setting}", *(f[n] for n in names), val_f, test_f])
    for row in baseline_rows(split, scenes):  # [label, test scenes..., test mean, nan, nan]
        rows.append([row[0], *[nan] * len(split.validation), *row[1:len(split.test) + 1], nan,
                     row[len(split.test) + 1]])

    header = ["checkpoint, camera at test", *(f"{n} (val)" for n in split.validation),
              *split.test, "val F", "test mean F"]
    body = (
        f"Split `{split.name}`: CDnet-2014 F on each validation scene (what chooses a default) "
        f"and each test scene (never trained on, never used for a choice), through the "
        f"streaming `segment` path (each checkpoint's own threshold and flow backend, flip "
        f"averaging on), with the camera-motion setting changed at test time only: `none` "
        f"(the checkpoint's own inputs), `affine` (`--camera-motion affine`: the camera's "
        f"motion removed from the 3D-HOP), `affine+align` (also the running background moved "
        f"with the camera). First row: each scene's median camera speed "
        f"(`crossnet.camera_motion` on DIS-fast stride-1 flow, every third frame of the first "
        f"90; 0 where the fit does not explain the frames better than a still camera). "
        f"Checkpoints: "
        + ", ".join(f"{name} (`{path}`)" for name, path in checkpoints.items())
        + ". MOG2/KNN: OpenCV defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\nMean over checkpoints: {seed_means(by_setting)}. "
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Camera-motion compensation at test time", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
