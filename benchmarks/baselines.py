"""MOG2 vs KNN on every real scene with ground truth, side by side in one run.

Runs :func:`pipelines.evaluate.evaluate` with both baselines over every benchmark scene found
under the data folder (default ``<repo>/../shared/data``: SBI2015, UCSD, Wallflower and the
HOFAM demo frames) and records per-scene F and frames/s, the mean over all scenes (each scene
weighing the same) and the mean per dataset. Scores follow CDnet-2014 rules (see
:mod:`crossnet.metrics`); frames/s counts reading the frames plus the method, not
scoring. Both methods run with OpenCV's defaults, so nothing here is tuned on any scene.

Usage (from the repository root)::

    python benchmarks/baselines.py
    python benchmarks/baselines.py --data /path/to/scenes --no-record
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

from _report import add_record_argument, data_root, environment, markdown_table, nan_mean, report

from pipelines.baselines import BASELINE_NAMES
from pipelines.evaluate import MethodReport, evaluate
from pipelines.scenes import find_scenes


def dataset_of(scene_path: Path, root: Path) -> str:
    """The top-level folder of a scene under the data folder (its dataset)."""
    try:
        return scene_path.resolve().relative_to(root.resolve()).parts[0]
    except (ValueError, IndexError):
        return scene_path.parent.name


def _fps(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def build_body(reports: Sequence[MethodReport], datasets: list[str],
               sizes: list[tuple[int, int]], *, elapsed: float) -> str:
    """The means table (all scenes, then per dataset) and the per-scene table, markdown."""
    methods = [report.method for report in reports]
    header = (["scene", "dataset", "size", "frames scored"] + [f"{m.upper()} F" for m in methods]
              + [f"{m.upper()} fps" for m in methods])
    rows = []
    for index, result in enumerate(reports[0].scenes):
        results = [report.scenes[index] for report in reports]
        width, height = sizes[index]
        rows.append([result.scene, datasets[index], f"{width}x{height}",
                     int(result.scores["frames"])]
                    + [r.scores["F"] for r in results] + [_fps(r.fps) for r in results])
    groups = {"all scenes": list(range(len(datasets)))}
    for dataset in dict.fromkeys(datasets):
        groups[dataset] = [i for i, name in enumerate(datasets) if name == dataset]
    mean_rows = []
    for group, members in groups.items():
        f_means = [nan_mean([report.scenes[i].scores["F"] for i in members]) for report in reports]
        fps_means = [nan_mean([report.scenes[i].fps for i in members]) for report in reports]
        better = "-"
        if len(reports) == 2 and not any(math.isnan(value) for value in f_means):
            better = methods[0] if f_means[0] >= f_means[1] else methods[1]
        mean_rows.append([f"mean, {group}", len(members)] + f_means
                         + [_fps(value) for value in fps_means] + [better])
    per_scene = markdown_table(header, rows)
    means = markdown_table(
        ["scenes", "count"] + header[4:] + ["higher mean F"], mean_rows
    )
    wins = sum(
        1 for index in range(len(datasets))
        if reports[0].scenes[index].scores["F"] > reports[1].scenes[index].scores["F"]
    ) if len(reports) == 2 else 0
    wins_text = (f"{methods[0].upper()} has the higher F on {wins} of {len(datasets)} scenes. "
                 if len(reports) == 2 else "")
    return (
        "CDnet-2014 F per scene (one confusion matrix summed over the scored frames: those with "
        "ground truth inside the temporal ROI, pixels inside the ROI); fps is frames per second of "
        "reading the frames plus the method (not scoring). Means weigh every scene the same (not CDnet's per-category mean). "
        f"{wins_text}The whole run took {elapsed:.0f} s.\n\n"
        f"{means}\n\n{per_scene}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder of scenes (default: <repo>/../shared/data)")
    add_record_argument(parser)
    args = parser.parse_args(argv)

    env = environment()
    root = data_root(args.data)
    scenes = find_scenes([root])
    datasets = [dataset_of(Path(scene.path), root) for scene in scenes]
    sizes = [scene.frame_size for scene in scenes]
    start = time.perf_counter()
    reports = evaluate([root], list(BASELINE_NAMES), progress=False)
    elapsed = time.perf_counter() - start
    if len(reports[0].scenes) != len(datasets):
        raise SystemExit(
            f"benchmarks/baselines.py: evaluate scored {len(reports[0].scenes)} scenes, "
            f"find_scenes found {len(datasets)}"
        )
    body = build_body(reports, datasets, sizes, elapsed=elapsed)
    report("Baselines: MOG2 vs KNN on every real scene (CDnet-2014 F)", body,
           record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
