"""Self-training: the bundled recipe retrained with pseudo-labelled unlabeled video added.

The bundled weights (the teacher) label the unlabeled videos that the split names
(``crossnet/splits/cross_scene_v1_pseudo.json``: scenes ``pseudo_<video name>``, videos from
``<data>/videos``) with ``crossnet pseudo-label`` (forward and reversed runs averaged, confident
pixels only, the first 300 frames), ``crossnet preprocess`` caches them, and the model card's
recipe (whole 320x240 frames, 320x240 synthetic scenes, no dynamic filters) is trained on the
split's real training scenes, the synthetic scenes and the pseudo-labelled ones, once per seed.
Every run is scored on the split's TEST scenes (never trained on, never used for a choice) and
its VALIDATION scenes (what chooses) through the streaming ``segment`` path, with the teacher
and MOG2/KNN on the same test scenes in the same run.

Caches, pseudo-labelled scenes and finished runs are kept under ``--work`` and reused (the real
and synthetic caches are ``recipe_options.py``'s).

Usage (from the repository root; about 20 minutes per training run on a 2-core CPU)::

    python benchmarks/pseudo_labels.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from _report import (
    add_record_argument,
    data_root,
    environment,
    markdown_table,
    report,
)
from _runs import (
    RECORDED_BASE,
    STRIDES,
    add_recipe_arguments,
    baseline_rows,
    parse_size,
    recipe_words,
    run_folder,
    run_row,
    score_run,
    seed_means,
    synthetic_caches,
    train_and_score,
)
from _split import fit_caches, split_scenes

from crossnet.hofam import HofamConfig
from crossnet.split import Split, load_split
from crossnet.weights import bundled_weights
from flow.backends import file_sha256
from pipelines.cli import main as cli
from pipelines.pseudo_label import PREFIX
from pipelines.train import TrainConfig

MAX_FRAMES = 300
CONFIDENCE = 0.7
CROP = "320x240"


def pseudo_scenes(split: Split) -> list[str]:
    """The split's pseudo-labelled training scenes (named ``pseudo_<video name>``)."""
    return [name for name in split.train if name.startswith(PREFIX)]


def labelled_caches(videos: list[Path], work: Path, teacher: Path, tag: str, flow: str
                    ) -> Path:
    """The pseudo-labelled scenes of ``videos`` by ``teacher`` and their caches under ``work``
    (folders named by ``tag``, the start of the teacher's sha256), made once and reused. The
    teacher runs with ``--camera-motion none``, as the recorded runs were labelled."""
    scenes, caches = work / f"pseudo_{tag}", work / f"caches_pseudo_{tag}_{flow}"
    if cli(["pseudo-label", *map(str, videos), "--out", str(scenes), "--weights", str(teacher),
            "--max-frames", str(MAX_FRAMES), "--confidence", str(CONFIDENCE),
            "--camera-motion", "none", "--no-progress"]) != 0:
        raise SystemExit("crossnet pseudo-label failed")
    labelled = [scenes / f"{PREFIX}{video.stem}" for video in videos]
    if cli(["preprocess", *map(str, labelled), "--out", str(caches), "--strides",
            ",".join(map(str, STRIDES)), "--flow", flow, "--no-progress"]) != 0:
        raise SystemExit("crossnet preprocess failed")
    return caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser, shared_with="recipe_options.py")
    parser.set_defaults(split="cross_scene_v1_pseudo",
                        synth_size=CROP)
    parser.add_argument("--teacher", help="the labelling checkpoint (default: the bundled "
                                          "weights)")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()

    root = data_root(args.data)
    split = load_split(args.split)
    pseudo = pseudo_scenes(split)
    if not pseudo:
        raise SystemExit(f"{args.split}: names no {PREFIX}* training scene")
    videos = {path.stem: path for path in sorted((root / "videos").iterdir())}
    missing = [name for name in pseudo if name[len(PREFIX):] not in videos]
    if missing:
        raise SystemExit(f"no video under {root / 'videos'} for {', '.join(missing)}")
    real = dataclasses.replace(split, train=tuple(n for n in split.train if n not in pseudo))
    scenes = split_scenes(root, real)
    work = Path(args.work)
    teacher = Path(args.teacher) if args.teacher else bundled_weights()
    tag = file_sha256(teacher)[:8]
    data = [fit_caches(STRIDES, real, scenes, work, args.flow),
            synthetic_caches(work, args.synth_size, args.synth_scenes, args.flow),
            labelled_caches([videos[name[len(PREFIX):]] for name in pseudo], work, teacher,
                            tag, args.flow)]

    width, height = parse_size(CROP)
    recipe = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                         batch_size=args.batch_size, crop_size=(height, width),
                         model=HofamConfig(dynamic_filter=False), **RECORDED_BASE)
    rows, by_group = [], {}
    f, test_f, val_f = score_run(teacher, split, scenes)
    by_group.setdefault("teacher", []).append((test_f, val_f))
    rows.append(run_row(f"teacher ({teacher.name})", split, f, test_f, val_f, float("nan")))
    for seed in args.seeds:
        config = dataclasses.replace(recipe, seed=seed)
        row, _ = train_and_score(
            f"with pseudo-labels, seed {seed}", "with pseudo-labels",
            run_folder(args, work, CROP, seed, f"_dynfilter-off_pseudo{tag}"), data, split,
            scenes, config, by_group)
        rows.append(row)
    rows.extend(baseline_rows(split, scenes))

    header = ["run", *split.test, "test mean F", "val F", "train s"]
    body = (
        f"Split `{split.name}`: CDnet-2014 F on each test scene (never trained on, never used "
        f"for a choice) and mean F over the validation scenes ({', '.join(split.validation)}), "
        f"through the streaming `segment` path (each run's own threshold and best-validation "
        f"checkpoint). Teacher: `{teacher}` (sha256 `{tag}...`), labelling "
        f"{', '.join(pseudo)} (`crossnet pseudo-label --max-frames {MAX_FRAMES} --confidence "
        f"{CONFIDENCE} --camera-motion none`). Every run: the model card's recipe at crop "
        f"{CROP}, no dynamic filters, {recipe_words(args)} (the training scenes include the "
        f"pseudo-labelled ones), on this CPU; only the seed differs. MOG2/KNN: OpenCV "
        f"defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\nMeans: {seed_means(by_group)}. "
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Self-training on pseudo-labelled video", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
