"""Training options of the recipe, side by side: the bundled recipe with one option changed.

Trains HOFAM with the recipe of ``crossnet/weights/MODEL_CARD.md`` once per variant and seed:

- ``none``: the recipe as these records have it (``_runs.RECORDED_BASE``: no camera pan);
- ``weight-average``: validate and save the moving average of the weights, decay 0.99
  (:mod:`crossnet.weight_average`; ``crossnet train --weight-average 0.99``);
- ``haze``: a fog-like veil of strength up to 0.6 over frame and background in augmentation
  (:class:`crossnet.augment.AugmentConfig` ``haze``; ``crossnet train --haze 0.6``);
- ``weight-average+haze``: both;
- ``camera-pan``: half of the composites seen by a camera panning at 1-12 pixels per frame
  (:mod:`crossnet.camera_pan`; ``crossnet train --camera-pan 0.5``, today's default);
- ``flip-validation``: choose the epoch and threshold on flip-averaged validation logits, as
  ``segment`` segments (``crossnet train --validation-flip-average``);
- ``camera-pan+flip-validation``: both;
- ``dynamic-filter-off``: CmDFF without its dynamic filters (:mod:`crossnet.cmdff`), the one
  part of HOFAM whose output at a pixel depends on the whole input (a mean over it);
- ``dynamic-filter-off+composites-0.5``: that (the bundled recipe) with half of the samples
  composites instead of 30 % (``crossnet train --composite-fraction 0.5``): more of real
  objects moving over other real scenes' backgrounds;
- ``dynamic-filter-off+composites-0.1``: the same with 10 % composites;
- ``dynamic-filter-off+camera-align``: the bundled recipe trained with the inputs ``segment``
  gives it by default (camera motion removed, background moved with the camera);
- ``dynamic-filter-off+deeper``: the bundled recipe with 3 residual blocks instead of 1 at 1/8
  and 1/16 resolution (``HofamConfig.blocks_per_stage`` (0, 1, 3, 3));
- ``dynamic-filter-off+zoom``: the bundled recipe with every sample zoomed by a factor drawn
  log-uniformly in [0.67, 1.5] (:func:`crossnet.augment.zoom`; ``crossnet train --zoom
  0.67,1.5``): frame, background, 3D-HOP (flow scaled with it) and labels, the padding of a
  shrunk sample left out of the loss;

and scores every run on the split's TEST scenes (never trained on, never used for a choice)
and its VALIDATION scenes (what chooses), through the streaming ``segment`` path, with MOG2
and KNN on the same test scenes in the same run.

Caches and finished runs are kept under ``--work`` and reused (shared with
``training_crop.py``: its runs at the same crop and seed are this script's ``none`` rows).

Usage (from the repository root; about 10 minutes per training run on a 2-core CPU with the
default 128x128 crops)::

    python benchmarks/recipe_options.py
    python benchmarks/recipe_options.py --variants none haze --seeds 0
    # the bundled recipe (about 17 minutes a run), with 24 synthetic scenes instead of 6
    python benchmarks/recipe_options.py --crop 320x240 --synth-size 320x240 \
        --variants dynamic-filter-off --synth-scenes 24 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from _report import add_record_argument, environment, markdown_table, report
from _runs import (
    RECORDED_BASE,
    add_recipe_arguments,
    baseline_rows,
    parse_size,
    recipe_data,
    recipe_words,
    run_folder,
    seed_means,
    train_and_score,
)

from crossnet.augment import AugmentConfig
from crossnet.hofam import HofamConfig
from pipelines.train import TrainConfig

# TrainConfig fields each variant changes, its run folders' suffix, and what it is in words.
VARIANTS = {
    "none": ({}, "", "the records' recipe, without camera pan"),
    "weight-average": ({"weight_average": 0.99}, "_wa0.99", "weight averaging, decay 0.99"),
    "haze": ({"augment": AugmentConfig(haze=0.6)}, "_haze0.6", "a veil up to 0.6"),
    "weight-average+haze": ({"weight_average": 0.99, "augment": AugmentConfig(haze=0.6)},
                            "_wa0.99_haze0.6", "both"),
    "camera-pan": ({"camera_pan": 0.5}, "_pan0.5",
                   "half of the composites seen by a panning camera (today's default)"),
    "flip-validation": ({"validation_flip_average": True}, "_flipval",
                        "epoch and threshold chosen on flip-averaged validation logits"),
    "camera-pan+flip-validation": ({"camera_pan": 0.5, "validation_flip_average": True},
                                   "_pan0.5_flipval", "camera pan and flip validation"),
    "dynamic-filter-off": ({"model": HofamConfig(dynamic_filter=False)}, "_dynfilter-off",
                           "CmDFF gates only, no dynamic filters from whole-input means"),
    "dynamic-filter-off+composites-0.5": (
        {"model": HofamConfig(dynamic_filter=False), "composite_fraction": 0.5},
        "_dynfilter-off_comp0.5", "the bundled recipe with half of the samples composites"),
    "dynamic-filter-off+camera-align": (
        {"model": HofamConfig(dynamic_filter=False, camera_motion="affine",
                              align_background=True)},
        "_dynfilter-off_camera-blocks-align",
        "the bundled recipe trained with segment's default inputs (camera motion removed, "
        + "background moved with the camera)"),
    "dynamic-filter-off+composites-0.1": (
        {"model": HofamConfig(dynamic_filter=False), "composite_fraction": 0.1},
        "_dynfilter-off_comp0.1", "the bundled recipe with 10 % of the samples composites"),
    "dynamic-filter-off+deeper": (
        {"model": HofamConfig(dynamic_filter=False, blocks_per_stage=(0, 1, 3, 3))},
        "_dynfilter-off_blocks0133",
        "the bundled recipe with 3 residual blocks instead of 1 at 1/8 and 1/16 resolution "
        + "(more context for little extra per-frame time)"),
    "dynamic-filter-off+wide": (
        {"model": HofamConfig(dynamic_filter=False, widths=(12, 24, 48, 96))},
        "_dynfilter-off_widths12-24-48-96",
        "the bundled recipe with widths (12, 24, 48, 96) instead of (8, 16, 32, 64): 2.1x "
        + "the parameters for about 1.1-1.2x the forward time at 320x240"),
    "dynamic-filter-off+zoom": (
        {"model": HofamConfig(dynamic_filter=False),
         "augment": AugmentConfig(scale_range=(0.67, 1.5))},
        "_dynfilter-off_zoom0.67-1.5",
        "the bundled recipe with each sample zoomed by a factor drawn log-uniformly in "
        + "[0.67, 1.5] (objects of other sizes than the training scenes')"),
}


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
    recipe = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                         batch_size=args.batch_size, crop_size=(height, width), **RECORDED_BASE)
    rows, by_variant = [], {}
    for variant in args.variants:
        changes, suffix, _ = VARIANTS[variant]
        for seed in args.seeds:
            config = dataclasses.replace(recipe, seed=seed, **changes)
            row, _ = train_and_score(
                f"{variant}, seed {seed}", variant,
                run_folder(args, work, args.crop, seed, suffix), data, split, scenes, config,
                by_variant)
            rows.append(row)
    rows.extend(baseline_rows(split, scenes))

    header = ["run", *split.test, "test mean F", "val F", "train s"]
    described = "; ".join(f"{v}: {VARIANTS[v][2]}" for v in args.variants)
    body = (
        f"Split `{split.name}`: CDnet-2014 F on each test scene (never trained on, never used "
        f"for a choice) and mean F over the validation scenes ({', '.join(split.validation)}), "
        f"through the streaming `segment` path (each run's own threshold and best-validation "
        f"checkpoint). Every run: the model card's recipe at crop {args.crop}, "
        f"{recipe_words(args)}, on this CPU; only the variant ({described}) and the seed "
        f"differ. MOG2/KNN: OpenCV defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\nMean over seeds: {seed_means(by_variant)}. "
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Recipe options: one training option changed at a time", body,
           record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
