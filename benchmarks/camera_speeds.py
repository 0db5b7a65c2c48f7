"""How fast the camera moves in every real scene of the written split: train, validation, test.

The model card says which training scenes are filmed by a moving camera; this is where that
comes from. Per scene: the median camera speed that :mod:`crossnet.camera_motion` finds (DIS-fast
stride-1 flow, every third frame of the first 90; 0 where the fit does not explain the frame
pair better than a still camera), the share of those frames where the fit is kept, and the
share where it also passes the block check that ``segment`` applies (``_camera.camera_speed``,
the same measurement as the "camera px/frame" column of ``cross_scene.py``). A scene counts as
filmed by a moving camera above ``_camera.MOVING_CAMERA`` px/frame. No model runs.

Usage (from the repository root)::

    python benchmarks/camera_speeds.py
    python benchmarks/camera_speeds.py --split cross_scene_v1 --no-record
"""

from __future__ import annotations

import argparse
import time

from _camera import MOVING_CAMERA, camera_speed
from _report import add_record_argument, data_root, environment, markdown_table, report
from _split import split_scenes

from crossnet.split import load_split
from pipelines.scenes import find_scenes

PARTS = ("train", "validation", "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default="cross_scene_v1")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()

    split = load_split(args.split)
    root = data_root(args.data)
    split_scenes(root, split, parts=PARTS)  # every scene named by the split is there
    # Scene objects, not folders: the HOFAM demo folder holds three scenes.
    scenes = {scene.name: scene for scene in find_scenes([root])}
    rows, moving = [], {part: [] for part in PARTS}
    for part in PARTS:
        for name in getattr(split, part):
            speed, kept, checked = camera_speed(scenes[name])
            rows.append([name, part, speed, kept, checked,
                         "moving" if speed > MOVING_CAMERA else "still"])
            if speed > MOVING_CAMERA:
                moving[part].append(name)
            print(f"{part:10s} {name:28s} {speed:7.3f} px/frame", flush=True)

    table = markdown_table(["scene", "part", "camera px/frame", "fit kept", "fit kept by segment",
                            "camera"], rows)
    counts = "; ".join(
        f"{part}: {len(moving[part])} of {len(getattr(split, part))} moving"
        + (f" ({', '.join(moving[part])})" if moving[part] else "") for part in PARTS)
    body = "\n\n".join([
        (f"Split `{split.name}`, its real scenes (the synthetic `train_patterns` scenes have "
         "their own, known camera). `camera px/frame`: the median camera speed "
         "`crossnet.camera_motion` finds (DIS-fast stride-1 flow, every third frame of the "
         "first 90; 0 where the fit does not explain the frame pair better than a still "
         "camera); `fit kept`: the share of those frames where it does; `fit kept by segment`: "
         "the share where the fit also passes the block check `segment` applies. `camera`: "
         "moving above "
         f"{MOVING_CAMERA:g} px/frame."),
        table,
        f"{counts}.",
        f"Run time {time.perf_counter() - started:.0f} s.",
    ])
    report("Camera speed of the split's real scenes", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
