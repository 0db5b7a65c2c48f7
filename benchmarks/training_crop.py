"""Training on crops or on whole frames: the bundled model's recipe at two crop sizes, two seeds.

Trains HOFAM with the recipe of ``crossnet/weights/MODEL_CARD.md`` (14 epochs x 1024 samples,
batch 12, composites 30 %, the split's training scenes plus 6 synthetic scenes) once per crop
size and seed, and scores every run on the split's TEST scenes (never trained on, never used
for a choice) and on its VALIDATION scenes (what chooses checkpoints, thresholds and defaults),
through the streaming ``segment`` path. MOG2 and KNN run on the same test scenes in the same
run. The crop sizes compared by default: 128x128 (the recipe of the weights shipped before) and
320x240, a whole frame at the usual CDnet size (smaller frames are padded; the padding is left
out of the loss and the metrics).

Caches (training and validation scenes, DIS-fast, strides 1,4,8) and finished runs are kept
under ``--work`` and reused on a rerun, like ``ablation.py``.

Usage (from the repository root; about 50 minutes on a 2-core CPU)::

    python benchmarks/training_crop.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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

from crossnet.split import load_split
from pipelines.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default=str(REPO_ROOT / "splits" / "cross_scene_v1.json"))
    parser.add_argument("--work", default="/tmp/crossnet_ablation",
                        help="folder for caches and runs (reused; shared with ablation.py)")
    parser.add_argument("--crops", nargs="+", default=["128x128", "320x240"],
                        help="training crops, WIDTHxHEIGHT")
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
    baselines = baseline_rows(split, scenes)
    rows, by_crop = [], {}
    for crop in args.crops:
        width, height = parse_size(crop)
        for seed in args.seeds:
            config = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                                 batch_size=args.batch_size, crop_size=(height, width),
                                 seed=seed)
            best, seconds = trained(work / "crop_runs" / f"crop{crop}_seed{seed}", data, split,
                                    config)
            f, test_f, val_f = score_run(best, split, scenes)
            by_crop.setdefault(f"crop {crop}", []).append((test_f, val_f))
            rows.append(run_row(f"crop {crop}, seed {seed}", split, f, test_f, val_f, seconds))
    rows.extend(baselines)

    header = ["run", *split.test, "test mean F", "val F", "train s"]
    means = seed_means(by_crop)
    body = (
        f"Split `{split.name}`: CDnet-2014 F on each of its {len(split.test)} test scenes "
        f"(never trained on, never used for a choice) and mean F over its validation scenes "
        f"({', '.join(split.validation)}; they choose checkpoints, thresholds and defaults), "
        f"through the streaming `segment` path (DIS-fast 3D-HOP online, each run's own "
        f"threshold and best-validation checkpoint). Every run: the model card's recipe, "
        f"{args.epochs} epochs x {args.samples_per_epoch} samples, batch {args.batch_size}, "
        f"AdamW one-cycle lr 2e-3, composites 30 %, training scenes of the split plus 6 "
        f"synthetic scenes, on this CPU; only the crop and the seed differ. MOG2/KNN: OpenCV "
        f"defaults, same test frames, same run.\n\n{markdown_table(header, rows)}\n\n"
        f"Mean over seeds: {means}. Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Training on crops or on whole frames", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
