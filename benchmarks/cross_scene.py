"""The cross-scene benchmark: crossnet vs MOG2 vs KNN on the test split, side by side in one run.

Scores the segmentation model (default: the bundled weights) and both OpenCV baselines on every
test scene of the written split (default ``splits/cross_scene_v1.json``): scenes the model never
trained on and that never chose a setting. Each scene is scored by CDnet-2014 rules at its own
size (see :mod:`crossnet.metrics`), all three methods on the same frames; frames/s counts reading
the frames plus the method. The issue's targets are printed next to the result: mean F of at
least 0.80, and above MOG2 and KNN on every scene.

Usage (from the repository root)::

    python benchmarks/cross_scene.py
    python benchmarks/cross_scene.py --weights runs/x/best.pt --no-record
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
    nan_mean,
    report,
)
from _split import split_scenes

from crossnet.split import load_split
from crossnet.weights import bundled_weights
from flow.backends import file_sha256, make_hop_backend
from pipelines.evaluate import ModelMethod, evaluate
from pipelines.segment import load_segmentation_model

TARGET_MEAN_F = 0.80


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default=str(REPO_ROOT / "splits" / "cross_scene_v1.json"))
    parser.add_argument("--weights", help="segmentation checkpoint (default: the bundled one)")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()

    root = data_root(args.data)
    split = load_split(args.split)
    scenes = split_scenes(root, split, parts=("test",))
    weights = Path(args.weights) if args.weights else bundled_weights()
    segmentation = load_segmentation_model(weights)
    model = ModelMethod(segmentation=segmentation,
                        backend=make_hop_backend(segmentation.flow_backend))
    reports = evaluate([scenes[name] for name in split.test], ["crossnet", "mog2", "knn"],
                       model=model, progress=False)
    by_method = {r.method: {s.scene: s for s in r.scenes} for r in reports}

    rows, wins = [], {"mog2": 0, "knn": 0}
    for name in split.test:
        f = {method: by_method[method][name].scores["F"] for method in by_method}
        fps = {method: by_method[method][name].fps for method in by_method}
        for baseline in wins:
            wins[baseline] += f["crossnet"] > f[baseline]
        rows.append([name, f["crossnet"], f["mog2"], f["knn"], f["crossnet"] - max(
            f["mog2"], f["knn"]), fps["crossnet"], fps["mog2"], fps["knn"]])
    means = [nan_mean(row[i] for row in rows) for i in range(1, 8)]
    rows.append(["**mean**", *means])
    table = markdown_table(["test scene", "crossnet F", "MOG2 F", "KNN F",
                            "crossnet - best baseline", "crossnet fps", "MOG2 fps", "KNN fps"],
                           rows)
    count = len(split.test)
    met_mean = means[0] >= TARGET_MEAN_F
    met_every = wins["mog2"] == count and wins["knn"] == count
    body = "\n\n".join([
        (f"Split `{split.name}`, its {count} test scenes (never trained on, never used to choose "
        f"a setting), each at its own size. Weights: `{weights.name}` (sha256 "
        f"`{file_sha256(weights)[:16]}...`), flow backend `{segmentation.flow_backend}`, "
        f"threshold {segmentation.threshold:g} (picked on the validation scenes in training). "
        "All three methods score the same frames in this one run; fps counts reading frames "
        "plus the method, on this machine."),
        table,
        (f"crossnet beats MOG2 on {wins['mog2']}/{count} scenes and KNN on {wins['knn']}/{count}; "
        f"mean F {means[0]:.3f} vs MOG2 {means[1]:.3f} ({means[0] / means[1]:.2f}x) and KNN "
        f"{means[2]:.3f} ({means[0] / means[2]:.2f}x). Targets: mean F >= {TARGET_MEAN_F:.2f} "
        f"**{'met' if met_mean else 'missed'}**; above both baselines on every scene "
        f"**{'met' if met_every else 'missed'}**."),
        f"Run time {time.perf_counter() - started:.0f} s.",
    ])
    report("Cross-scene benchmark: crossnet vs MOG2 vs KNN on the test split", body,
           record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
