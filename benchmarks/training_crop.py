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
import json
import time
from pathlib import Path

from _report import (
    REPO_ROOT,
    add_record_argument,
    data_root,
    environment,
    markdown_table,
    nan_mean,
    report,
)
from _split import fit_caches, split_scenes

from crossnet.split import load_split
from flow.backends import make_hop_backend
from pipelines.cli import main as cli
from pipelines.evaluate import ModelMethod, evaluate
from pipelines.segment import load_segmentation_model
from pipelines.train import TrainConfig, train

STRIDES = (1, 4, 8)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    width, height = (int(part) for part in text.lower().split("x"))
    return width, height


def synthetic_caches(work: Path) -> Path:
    """The model card's 6 synthetic scenes (128x96, 50 frames, seed 7), cached once."""
    scenes, caches = work / "synth", work / "caches_synth"
    if not caches.exists():
        if cli(["synth", str(scenes), "--scenes", "6", "--frames", "50", "--size", "128x96",
                "--seed", "7", "--no-progress"]) != 0:
            raise SystemExit("crossnet synth failed")
        if cli(["preprocess", str(scenes), "--out", str(caches), "--strides", "1,4,8",
                "--flow", "dis-fast", "--no-progress"]) != 0:
            raise SystemExit("crossnet preprocess failed")
    return caches


def trained(run: Path, data: list[Path], split, config: TrainConfig) -> tuple[Path, float]:
    """Train ``run`` unless it finished before; its best checkpoint and training seconds.

    A finished run is reused only if it was trained with exactly ``config``.
    """
    done = run / "done"
    recorded = run / "config.json"
    if recorded.exists():
        previous = json.loads(recorded.read_text())["train_config"]
        wanted = json.loads(json.dumps(config.to_dict()))  # tuples as JSON lists
        differing = sorted(k for k, v in wanted.items() if previous.get(k) != v)
        if differing:
            raise SystemExit(f"{run}: trained with other settings ({', '.join(differing)}); "
                             "delete it or pick another --work")
    if not done.exists():
        started = time.perf_counter()
        train(data, split, run, config, device="cpu", resume=(run / "last.pt").exists(),
              progress=False)
        done.write_text(f"{time.perf_counter() - started:.0f}\n")
    return run / "best.pt", float(done.read_text())


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
    scored = list(split.test) + list(split.validation)
    scored_paths = [scenes[name] for name in scored]

    baselines = {r.method: {s.scene: s.scores["F"] for s in r.scenes}
                 for r in evaluate([scenes[n] for n in split.test], ["mog2", "knn"],
                                   progress=False)}
    rows, by_crop = [], {}
    for crop in args.crops:
        width, height = parse_size(crop)
        for seed in args.seeds:
            config = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                                 batch_size=args.batch_size, crop_size=(height, width),
                                 seed=seed)
            best, seconds = trained(work / "crop_runs" / f"crop{crop}_seed{seed}", data, split,
                                    config)
            segmentation = load_segmentation_model(best)
            model = ModelMethod(segmentation=segmentation,
                                backend=make_hop_backend(segmentation.flow_backend))
            result = evaluate(scored_paths, ["crossnet"], model=model, progress=False)[0]
            f = {s.scene: s.scores["F"] for s in result.scenes}
            test_f = nan_mean(f[n] for n in split.test)
            val_f = nan_mean(f[n] for n in split.validation)
            by_crop.setdefault(crop, []).append((test_f, val_f))
            rows.append([f"crop {crop}, seed {seed}", *[f[n] for n in split.test], test_f,
                         val_f, seconds])
            print(f"{rows[-1][0]}: test F {test_f:.3f}, validation F {val_f:.3f}", flush=True)
    for method in ("mog2", "knn"):
        values = [baselines[method][n] for n in split.test]
        rows.append([method.upper(), *values, nan_mean(values), float("nan"), float("nan")])

    header = ["run", *split.test, "test mean F", "val F", "train s"]
    means = "; ".join(
        f"crop {crop}: test F {nan_mean(t for t, _ in runs):.3f}, validation F "
        f"{nan_mean(v for _, v in runs):.3f}" for crop, runs in by_crop.items())
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
