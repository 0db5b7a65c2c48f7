"""Camera-motion compensation: the bundled model's recipe with and without it, two seeds.

Several scenes of the split are filmed by a moving camera (UCSD cyclists and hockey follow
their subject, surfers pans, others shake). This script measures, per test scene, how much of
the stride-1 flow an affine camera model explains (the median camera speed, pixels per frame,
over every third frame of the first 90), then trains HOFAM with the recipe of
``crossnet/weights/MODEL_CARD.md`` once per camera-motion mode (``none``, ``affine``; see
:mod:`crossnet.camera_motion`) and seed, and scores every run on the split's TEST scenes
(never trained on, never used for a choice) and its VALIDATION scenes (what chooses), through
the streaming ``segment`` path, with MOG2 and KNN on the same test scenes in the same run.

Caches and finished runs are kept under ``--work`` and reused (shared with
``training_crop.py``: its runs at the same crop and seed are this script's ``none`` rows).

Usage (from the repository root; about 35 minutes on a 2-core CPU with the default 128x128
crops, about 70 with ``--crop 320x240``)::

    python benchmarks/camera_motion.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _report import (
    REPO_ROOT,
    add_record_argument,
    data_root,
    environment,
    markdown_table,
    report,
)
from _runs import (
    STRIDES,
    baseline_rows,
    parse_size,
    run_row,
    score_run,
    seed_means,
    synthetic_caches,
    trained,
)
from _split import fit_caches, split_scenes

from crossnet.camera_motion import CAMERA_MOTIONS, fit_camera_flow
from crossnet.hofam import HofamConfig
from crossnet.split import load_split
from flow.classical import make_classical_backend
from pipelines.scenes import Scene, find_scenes
from pipelines.train import TrainConfig


def camera_speed(scene: Scene, frames: int = 90, every: int = 3) -> float:
    """Median length of the fitted camera flow (stride 1, DIS-fast), pixels per frame."""
    dis = make_classical_backend("dis-fast")
    previous, speeds = None, []
    for index, frame in enumerate(scene):
        if index > frames:
            break
        if previous is not None and index % every == 0:
            flow = torch.from_numpy(dis.compute_flow(frame.rgb, previous))  # t -> t - 1
            speeds.append(float(fit_camera_flow(flow).norm(dim=0).median()))
        previous = frame.rgb
    return float(np.median(speeds)) if speeds else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default=str(REPO_ROOT / "splits" / "cross_scene_v1.json"))
    parser.add_argument("--work", default="/tmp/crossnet_ablation",
                        help="folder for caches and runs (reused; shared with training_crop.py)")
    parser.add_argument("--crop", default="128x128", help="training crop, WIDTHxHEIGHT")
    parser.add_argument("--modes", nargs="+", default=list(CAMERA_MOTIONS),
                        choices=CAMERA_MOTIONS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--samples-per-epoch", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=12)
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()

    root = data_root(args.data)
    split = load_split(args.split)
    scenes = split_scenes(root, split)
    work = Path(args.work)
    data = [fit_caches(STRIDES, split, scenes, work), synthetic_caches(work)]
    width, height = parse_size(args.crop)

    found = {scene.name: scene for scene in find_scenes([root])}
    speeds = [camera_speed(found[name]) for name in split.test]
    baselines = baseline_rows(split, scenes)
    rows, by_mode = [["camera px/frame", *speeds, float("nan"), float("nan"), float("nan")]], {}
    for mode in args.modes:
        for seed in args.seeds:
            config = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                                 batch_size=args.batch_size, crop_size=(height, width),
                                 seed=seed, model=HofamConfig(camera_motion=mode))
            suffix = "" if mode == "none" else f"_camera-{mode}"
            best, seconds = trained(work / "crop_runs" / f"crop{args.crop}_seed{seed}{suffix}",
                                    data, split, config)
            f, test_f, val_f = score_run(best, split, scenes)
            by_mode.setdefault(f"camera {mode}", []).append((test_f, val_f))
            rows.append(run_row(f"camera {mode}, seed {seed}", split, f, test_f, val_f, seconds))
    rows.extend(baselines)

    header = ["run", *split.test, "test mean F", "val F", "train s"]
    means = seed_means(by_mode)
    body = (
        f"Split `{split.name}`. First row: the median camera speed of each test scene (the "
        f"affine fit of `crossnet.camera_motion` to DIS-fast stride-1 flow, every third frame "
        f"of the first 90), pixels per frame at the scene's size. Then CDnet-2014 F on each "
        f"test scene (never trained on, never used for a choice) and mean F over the "
        f"validation scenes ({', '.join(split.validation)}), through the streaming `segment` "
        f"path (each run's own threshold and best-validation checkpoint). Every run: the model "
        f"card's recipe at crop {args.crop}, {args.epochs} epochs x {args.samples_per_epoch} "
        f"samples, batch {args.batch_size}, composites 30 %, the split's training scenes plus "
        f"6 synthetic scenes, on this CPU; only the camera-motion mode and the seed differ. "
        f"MOG2/KNN: OpenCV defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\nMean over seeds: {means}. "
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Camera-motion compensation", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
