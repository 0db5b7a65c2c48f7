"""Camera-motion compensation: the bundled model's recipe with and without it, two seeds.

Several scenes of the split are filmed by a moving camera (UCSD cyclists and hockey follow
their subject, surfers pans, others shake). This script measures, per test scene, the camera
motion :func:`crossnet.camera_motion.camera_flows` finds in the stride-1 flow (the median
camera speed, pixels per frame, and the share of frames where the fit was kept, over every
third frame of the first 90), then trains HOFAM with the recipe of
``crossnet/weights/MODEL_CARD.md`` once per variant and seed:

- ``none``: no compensation (the bundled recipe);
- ``affine``: the camera's motion subtracted from the 3D-HOP;
- ``affine+align``: that, and the running background moved with the camera
  (:attr:`crossnet.hofam.HofamConfig.align_background`);

and scores every run on the split's TEST scenes (never trained on, never used for a choice)
and its VALIDATION scenes (what chooses), through the streaming ``segment`` path, with MOG2
and KNN on the same test scenes in the same run. The ``none`` runs are also scored with
``affine+align`` switched on at test time only (rows "none, affine+align at test").

Caches and finished runs are kept under ``--work`` and reused (shared with
``training_crop.py``: its runs at the same crop and seed are this script's ``none`` rows).

Usage (from the repository root; about 10 minutes per training run on a 2-core CPU with the
default 128x128 crops, about 20 with ``--crop 320x240``)::

    python benchmarks/camera_motion.py
"""

from __future__ import annotations

import argparse
import time

from _camera import camera_speed
from _report import (
    add_record_argument,
    environment,
    markdown_table,
    report,
)
from _runs import (
    RECORDED_BASE,
    add_recipe_arguments,
    baseline_rows,
    parse_size,
    recipe_data,
    recipe_words,
    run_folder,
    run_row,
    score_run,
    seed_means,
    train_and_score,
)

from crossnet.hofam import HofamConfig
from pipelines.scenes import open_scene
from pipelines.train import TrainConfig

# Input options of each variant (HofamConfig fields), and its run folders' suffix. The
# suffixes differ from those of earlier runs, trained before the fit was checked against the
# frames ("_camera-affine", session 6) or before the check asked for agreement across the
# frame's blocks ("_camera-checked", "_camera-align", before 2026-11-25), so those are never
# reused.
VARIANTS = {"none": ({}, ""),
            "affine": ({"camera_motion": "affine"}, "_camera-blocks"),
            "affine+align": ({"camera_motion": "affine", "align_background": True},
                             "_camera-blocks-align")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser, shared_with="training_crop.py")
    parser.add_argument("--crop", default="128x128", help="training crop, WIDTHxHEIGHT")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()

    split, scenes, work, data = recipe_data(args)
    width, height = parse_size(args.crop)

    speeds, _, kept = zip(*(camera_speed(open_scene(scenes[name])) for name in split.test))
    baselines = baseline_rows(split, scenes)
    nan = float("nan")
    rows = [["camera px/frame", *speeds, nan, nan, nan],
            ["camera fit kept (segment's check)", *kept, nan, nan, nan]]
    by_variant: dict[str, list[tuple[float, float]]] = {}
    for variant in args.variants:
        inputs, suffix = VARIANTS[variant]
        for seed in args.seeds:
            config = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                                 batch_size=args.batch_size, crop_size=(height, width),
                                 seed=seed, model=HofamConfig(**inputs), **RECORDED_BASE)
            row, best = train_and_score(
                f"{variant}, seed {seed}", variant,
                run_folder(args, work, args.crop, seed, suffix), data, split, scenes, config,
                by_variant)
            rows.append(row)
            if variant == "none":
                label = "none, affine+align at test"
                f, test_f, val_f = score_run(best, split, scenes, camera_mode="affine+background")
                by_variant.setdefault(label, []).append((test_f, val_f))
                rows.append(run_row(f"{label}, seed {seed}", split, f, test_f, val_f, nan))
    rows.extend(baselines)

    header = ["run", *split.test, "test mean F", "val F", "train s"]
    means = seed_means(by_variant)
    body = (
        f"Split `{split.name}`. First rows: the median camera speed of each test scene "
        f"(`crossnet.camera_motion.camera_flows` on DIS-fast stride-1 flow, every third frame "
        f"of the first 90: the affine fit where it explains the frame pair better than a still "
        f"camera, else 0), pixels per frame at the scene's size, and the share of those frames "
        f"where the fit was kept. Then CDnet-2014 F on each "
        f"test scene (never trained on, never used for a choice) and mean F over the "
        f"validation scenes ({', '.join(split.validation)}), through the streaming `segment` "
        f"path (each run's own threshold and best-validation checkpoint). Every run: the model "
        f"card's recipe at crop {args.crop}, {recipe_words(args)}, on this CPU; only the "
        f"variant and the seed differ. MOG2/KNN: OpenCV defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\nMean over seeds: {means}. "
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Camera-motion compensation", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
