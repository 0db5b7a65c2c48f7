"""Training on crops or on whole frames: the bundled model's recipe at two crop sizes, two seeds.

Trains HOFAM with the recipe of ``crossnet/weights/MODEL_CARD.md`` (14 epochs x 1024 samples,
batch 12, composites 30 %, the split's training scenes plus 6 synthetic scenes) once per crop
size and seed, and scores every run on the split's TEST scenes (never trained on, never used
for a choice) and on its VALIDATION scenes (what chooses checkpoints, thresholds and defaults),
through the streaming ``segment`` path. MOG2 and KNN run on the same test scenes in the same
run. The crop sizes compared by default: 128x128 (the recipe of the weights shipped before) and
320x240, a whole frame at the usual CDnet size (smaller frames are padded; the padding is left
out of the loss and the metrics).

Caches (training and validation scenes, DIS-fast unless ``--flow``, strides 1,4,8) and finished
runs are kept under ``--work`` and reused on a rerun, like ``ablation.py``.

Usage (from the repository root; about 50 minutes on a 2-core CPU)::

    python benchmarks/training_crop.py
"""

from __future__ import annotations

import argparse
import time

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
    seed_means,
    train_and_score,
)

from pipelines.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser, shared_with="ablation.py")
    parser.add_argument("--crops", nargs="+", default=["128x128", "320x240"],
                        help="training crops, WIDTHxHEIGHT")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()

    split, scenes, work, data = recipe_data(args)
    baselines = baseline_rows(split, scenes)
    rows, by_crop = [], {}
    for crop in args.crops:
        width, height = parse_size(crop)
        for seed in args.seeds:
            config = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                                 batch_size=args.batch_size, crop_size=(height, width),
                                 seed=seed, **RECORDED_BASE)
            row, _ = train_and_score(f"crop {crop}, seed {seed}", f"crop {crop}",
                                     run_folder(args, work, crop, seed), data, split,
                                     scenes, config, by_crop)
            rows.append(row)
    rows.extend(baselines)

    header = ["run", *split.test, "test mean F", "val F", "train s"]
    means = seed_means(by_crop)
    body = (
        f"Split `{split.name}`: CDnet-2014 F on each of its {len(split.test)} test scenes "
        f"(never trained on, never used for a choice) and mean F over its validation scenes "
        f"({', '.join(split.validation)}; they choose checkpoints, thresholds and defaults), "
        f"through the streaming `segment` path ({args.flow} 3D-HOP online, each run's own "
        f"threshold and best-validation checkpoint). Every run: the model card's recipe, "
        f"{recipe_words(args)}, AdamW one-cycle lr 2e-3, on this CPU; only the "
        f"crop and the seed differ. MOG2/KNN: OpenCV defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"Mean over seeds: {means}. Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Training on crops or on whole frames", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
