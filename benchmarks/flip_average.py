"""Test-time flip averaging on and off, for the bundled weights and other checkpoints.

Scores each checkpoint twice through the streaming ``segment`` path, with one HOFAM pass per
frame and with the logits of the frame and of its mirror image averaged
(:mod:`crossnet.flip_average`), on the split's TEST scenes (never trained on, never used for a
choice) and its VALIDATION scenes (what chooses), with MOG2 and KNN on the same test scenes in
the same run. Checkpoints: the bundled weights, and ``--weights`` (default: the 128x128 runs of
``training_crop.py`` under ``--work``, where they exist).

Usage (from the repository root; about a minute per checkpoint and setting on a 2-core CPU)::

    python benchmarks/flip_average.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_record_argument, data_root, environment, markdown_table, report
from _runs import baseline_rows, run_row, score_run, seed_means
from _split import split_scenes

from crossnet.split import load_split
from crossnet.weights import bundled_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default="cross_scene_v1")
    parser.add_argument("--work", default="/tmp/crossnet_ablation")
    parser.add_argument("--weights", nargs="*", help="more checkpoints to score")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()
    split = load_split(args.split)
    scenes = split_scenes(data_root(args.data), split)
    if args.weights is None:
        runs = Path(args.work) / "crop_runs"
        others = [runs / f"crop128x128_seed{seed}" / "best.pt" for seed in (0, 1)]
        others = [path for path in others if path.is_file()]
    else:
        others = [Path(p) for p in args.weights]
    checkpoints = {"bundled weights": bundled_weights(),
                   **{path.parent.name: path for path in others}}

    rows, by_setting = [], {}
    for name, path in checkpoints.items():
        for flip in (False, True):
            setting = "flip average" if flip else "one pass"
            f, test_f, val_f = score_run(path, split, scenes, flip_average=flip)
            by_setting.setdefault(setting, []).append((test_f, val_f))
            rows.append(run_row(f"{name}, {setting}", split, f, test_f, val_f, float("nan")))
    rows.extend(baseline_rows(split, scenes))

    header = ["checkpoint, inference", *split.test, "test mean F", "val F", "-"]
    body = (
        f"Split `{split.name}`: CDnet-2014 F on each test scene (never trained on, never used "
        f"for a choice) and mean F over the validation scenes ({', '.join(split.validation)}), "
        f"through the streaming `segment` path (each checkpoint's own threshold and flow "
        f"backend), with one HOFAM pass per frame and with flip averaging "
        f"(`crossnet.flip_average`). Checkpoints: "
        + ", ".join(f"{name} (`{path}`)" for name, path in checkpoints.items())
        + ". MOG2/KNN: OpenCV defaults, same test frames, same run.\n\n"
        f"{markdown_table(header, rows)}\n\nMean over checkpoints: {seed_means(by_setting)}. "
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Flip averaging at test time", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
