"""Ensembles of one recipe's seeds (``crossnet ensemble``) against each seed alone, one run.

Trains (or reuses, shared with ``recipe_options.py``) the runs of one recipe variant for every
``--seeds`` seed at ``--crop``, writes the ensembles of the first k seeds for each ``--sizes``
k with :func:`pipelines.ensemble.make_ensemble` (threshold: the mean of the members' own), and
scores every seed alone and every ensemble, side by side:

- F on the split's VALIDATION scenes (what chooses) and TEST scenes (never used for a choice),
  through the streaming ``segment`` path with flip averaging, as ``segment`` runs;
- F on the ``make demo`` clip and the end-to-end test's clip (``synthetic_clip.py``'s named
  clips), with MOG2 on the same frames: the gates a bundled file has to pass;
- ``segment`` frames/s on the first ``--frames`` frames of the highway clip at 320x240 (the
  default path: flip averaging, one thread), since every member is one more model pass. Only
  meaningful on an otherwise idle machine: a training run beside it competes for the same
  cores.

Usage (from the repository root; about 20 minutes per training run that is not there yet, and
about 3 minutes of scoring per member of every row)::

    python benchmarks/ensembles.py                      # seeds 0-3, ensembles of 2 and 4
    python benchmarks/ensembles.py --seeds 0 1 --sizes 2 --no-record
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
import time
from pathlib import Path

from _report import DEFAULT_VIDEO, add_record_argument, environment, markdown_table, report
from _runs import (
    FLOW,
    RECORDED_BASE,
    SYNTH_SCENES,
    add_recipe_arguments,
    parse_size,
    recipe_data,
    recipe_words,
    run_folder,
    score_run,
    trained,
)
from recipe_options import VARIANTS
from synthetic_clip import NAMED_CLIPS, SIZE, clip_scores, make_clips

from flow.backends import make_hop_backend
from pipelines.ensemble import make_ensemble
from pipelines.evaluate import evaluate
from pipelines.segment import load_segmentation_model, segment_frames
from pipelines.sources import VideoSource
from pipelines.train import TrainConfig


def frames_per_second(weights: Path, frames: int) -> float:
    """``segment_frames`` on the first ``frames`` frames of the highway clip at 320x240, after
    a 10-frame warm-up."""
    segmentation = load_segmentation_model(weights)
    backend = make_hop_backend(segmentation.flow_backend)

    def run(count: int) -> None:
        for _ in itertools.islice(segment_frames(VideoSource(DEFAULT_VIDEO), segmentation,
                                                 backend=backend, size=(320, 240)), count):
            pass

    run(10)
    started = time.perf_counter()
    run(frames)
    return frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser, shared_with="recipe_options.py")
    parser.add_argument("--crop", default="320x240", help="training crop, WIDTHxHEIGHT")
    parser.add_argument("--variant", default="dynamic-filter-off", choices=list(VARIANTS),
                        help="the recipe_options.py variant whose seeds are combined (default: "
                             "the bundled weights' recipe)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 4],
                        help="ensembles of the first k seeds, for each k")
    parser.add_argument("--frames", type=int, default=100, help="frames timed per checkpoint")
    parser.set_defaults(seeds=[0, 1, 2, 3], synth_size="320x240")  # the bundled recipe's
    add_record_argument(parser)
    args = parser.parse_args()
    if any(not 2 <= k <= len(args.seeds) for k in args.sizes):
        raise SystemExit(f"--sizes must be between 2 and the number of --seeds "
                         f"({len(args.seeds)})")
    env = environment()
    started = time.perf_counter()

    split, scenes, work, data = recipe_data(args)
    width, height = parse_size(args.crop)
    changes, suffix, described = VARIANTS[args.variant]
    recipe = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                         batch_size=args.batch_size, crop_size=(height, width), **RECORDED_BASE)
    members = {}
    for seed in args.seeds:
        config = dataclasses.replace(recipe, seed=seed, **changes)
        members[seed], _ = trained(run_folder(args, work, args.crop, seed, suffix), data, split,
                                   config)
    checkpoints = {f"seed {seed} alone": path for seed, path in members.items()}
    folder = work / "ensembles"
    for k in args.sizes:
        seeds = args.seeds[:k]
        count = "" if args.synth_scenes == SYNTH_SCENES else f"_nsynth{args.synth_scenes}"
        count += "" if args.flow == FLOW else f"_flow{args.flow}"
        name = (f"crop{args.crop}{suffix}_synth{args.synth_size}{count}_seeds"
                + "-".join(map(str, seeds)) + ".pt")
        checkpoints[f"ensemble of seeds {', '.join(map(str, seeds))}"] = make_ensemble(
            [members[s] for s in seeds], folder / name, overwrite=True)

    rows = []
    with tempfile.TemporaryDirectory() as clips_folder:
        clips = make_clips(Path(clips_folder), NAMED_CLIPS)
        for label, path in checkpoints.items():
            _, test_f, val_f = score_run(path, split, scenes)
            clip_f = [scores["F"] for scores in clip_scores(path, clips)]
            fps = frames_per_second(path, args.frames)
            print(f"{label}: validation F {val_f:.3f}, test F {test_f:.3f}, clips "
                  f"{', '.join(f'{f:.3f}' for f in clip_f)}, {fps:.1f} frames/s", flush=True)
            rows.append([label, val_f, test_f, *clip_f, fps])
        mog2 = [s.scores["F"] for s in evaluate(clips, ["mog2"], progress=False)[0].scenes]
    nan = float("nan")
    rows.append(["MOG2", nan, nan, *mog2, nan])

    header = ["checkpoint", "val F", "test mean F", *(label for label, _, _ in NAMED_CLIPS),
              "segment frames/s"]
    body = (
        f"Split `{split.name}`. Runs of the recipe at crop {args.crop}, {recipe_words(args)}, "
        f"variant `{args.variant}` ({described}), seeds {', '.join(map(str, args.seeds))}; "
        f"ensembles by `crossnet ensemble` (the mean of the members' logits, threshold the mean of theirs), under "
        f"`{folder}`. F through the streaming `segment` path with flip averaging: mean over "
        f"the validation scenes ({', '.join(split.validation)}) and the test scenes; the "
        f"`make demo` clip and the end-to-end test's clip ({SIZE[0]}x{SIZE[1]}, `crossnet "
        f"synth`), MOG2 on the same frames. frames/s: `segment_frames` on the first "
        f"{args.frames} frames of `{DEFAULT_VIDEO.name}` at 320x240 (flip averaging, one "
        f"thread), one timed run each, this CPU.\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Ensembles of one recipe's seeds", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
