"""Flow accuracy: EPE and Fl-all of every flow backend on every flow scene with ground truth.

Scenes, found under the data folder (default ``<repo>/../shared/data``):

- Middlebury "other" training scenes: ``Middlebury/other-data/<scene>/frame10.png`` ->
  ``frame11.png`` with ``Middlebury/other-gt-flow/<scene>/flow10.flo`` (Dimetrodon, Hydrangea,
  Venus; real images, 584x388 and 420x380; unknown ground truth is not scored);
- ``mmflow_testdata/NNNNN_img1.ppm`` -> ``NNNNN_img2.ppm`` with ``NNNNN_flow.flo``
  (FlyingChairs naming; a 50x50 rendered crop);
- ``mmflow_testdata/NNNNNNN-img_0.png`` -> ``-img_1.png`` with ``-flow_01.flo``, and the reverse
  pair with ``-flow_10.flo`` (FlyingThings3D naming; a 50x50 rendered crop).

Rows: the classical backends (``dis-ultrafast``, ``dis-fast``, ``dis-medium``, ``farneback``),
the shipped RAFT-small weights (``flow/weights/raft_small.pt``) when the package has them, RAFT
with ``--weights`` when given (both through :func:`flow.backends.make_hop_backend`: both frames
encoded, then one estimate), and zero flow as the floor every method must beat. Scores follow
:mod:`flow.metrics`: EPE is the mean end-point error in pixels over pixels with known ground
truth, Fl-all the percentage of those with EPE > 3 px and > 5 % of the true motion. Time is the
median wall-clock ms per pair over ``--repeats`` runs after one warm-up run, image reading
excluded.

Usage (from the repository root)::

    python benchmarks/flow_accuracy.py
    python benchmarks/flow_accuracy.py --weights runs/flow_video/weights.pt --raft-model raft-small
    python benchmarks/flow_accuracy.py --bf16    # each RAFT row in fp32 and under bf16 autocast
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _report import (
    add_record_argument,
    data_root,
    environment,
    markdown_table,
    median_seconds,
    report,
)

from flow.backends import RAFT_BACKEND_NAMES, RaftHopBackend, make_hop_backend
from flow.classical import CLASSICAL_BACKEND_NAMES
from flow.io import read_flo
from flow.metrics import endpoint_error, fl_all
from flow.weights import bundled_weights_path
from pipelines.imageio import read_image_rgb

ZERO_FLOW = "zero flow"


@dataclass(frozen=True)
class FlowScene:
    """One image pair with ground-truth flow from ``first`` to ``second``."""

    name: str
    first: Path
    second: Path
    gt: Path


@dataclass
class LoadedScene:
    """A scene's images, (H, W, 3) uint8 RGB, and ground truth, (2, H, W) float32."""

    name: str
    first: np.ndarray
    second: np.ndarray
    gt: np.ndarray


def find_flow_scenes(root: Path) -> list[FlowScene]:
    """Every image pair with ground-truth flow under ``root``, in a fixed order.

    Raises:
        SystemExit: no scene was found.
    """
    scenes = []
    middlebury = root / "Middlebury"
    for gt in sorted((middlebury / "other-gt-flow").glob("*/flow10.flo")):
        images = middlebury / "other-data" / gt.parent.name
        scenes.append(FlowScene(gt.parent.name, images / "frame10.png", images / "frame11.png", gt))
    mmflow = root / "mmflow_testdata"
    for gt in sorted(mmflow.glob("*_flow.flo")):
        stem = gt.name.removesuffix("_flow.flo")
        scenes.append(FlowScene(f"chairs-{stem}", mmflow / f"{stem}_img1.ppm",
                                mmflow / f"{stem}_img2.ppm", gt))
    for gt in sorted(mmflow.glob("*-flow_01.flo")) + sorted(mmflow.glob("*-flow_10.flo")):
        stem, pair = gt.name.removesuffix(".flo").rsplit("-flow_", 1)
        first, second = pair[0], pair[1]
        scenes.append(FlowScene(f"things-{stem} {first}->{second}",
                                mmflow / f"{stem}-img_{first}.png",
                                mmflow / f"{stem}-img_{second}.png", gt))
    missing = [path for scene in scenes for path in (scene.first, scene.second) if not path.is_file()]
    if missing:
        raise SystemExit(f"benchmarks/flow_accuracy.py: images missing for ground truth: {missing}")
    if not scenes:
        raise SystemExit(
            f"{root}: no flow scene with ground truth (expected Middlebury/other-gt-flow or "
            "mmflow_testdata)"
        )
    return scenes


def load_scene(scene: FlowScene) -> LoadedScene:
    """Read a scene's images and ground truth.

    Raises:
        SystemExit: the images and the ground truth differ in size.
    """
    first, second = read_image_rgb(scene.first), read_image_rgb(scene.second)
    gt = read_flo(scene.gt)
    if first.shape != second.shape or first.shape[:2] != gt.shape[1:]:
        raise SystemExit(
            f"benchmarks/flow_accuracy.py: {scene.name}: image sizes {first.shape}, "
            f"{second.shape} and ground truth {gt.shape} do not match"
        )
    return LoadedScene(scene.name, first, second, gt)


def hop_estimator(backend) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """An RGB pair -> (2, H, W) flow function through a 3D-HOP backend's encode / estimate."""

    def estimate(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        frames = torch.from_numpy(np.stack([first, second])).permute(0, 3, 1, 2).contiguous()
        encoded = backend.encode(frames)
        return backend.estimate([encoded[0]], [encoded[1]])[0].numpy()

    return estimate


def zero_estimator(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Zero flow: the score of saying nothing moved."""
    return np.zeros((2, *first.shape[:2]), dtype=np.float32)


@dataclass
class Score:
    epe: float
    fl: float
    ms: float


def score_backend(estimate: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  scenes: list[LoadedScene], *, repeats: int) -> list[Score]:
    """EPE, Fl-all and median ms per pair of one estimator on each scene."""
    scores = []
    for scene in scenes:
        flow = estimate(scene.first, scene.second)
        seconds = median_seconds(lambda s=scene: estimate(s.first, s.second), repeats=repeats)
        scores.append(Score(endpoint_error(flow, scene.gt), fl_all(flow, scene.gt),
                            1000.0 * seconds))
    return scores


def build_tables(rows: dict[str, list[Score]], scenes: list[LoadedScene]) -> str:
    """The accuracy table (EPE / Fl-all per scene, means) and the time table, markdown."""
    names = [scene.name for scene in scenes]
    accuracy_rows, time_rows = [], []
    for backend, scores in rows.items():
        mean_epe = statistics.fmean(score.epe for score in scores)
        mean_fl = statistics.fmean(score.fl for score in scores)
        mean_ms = statistics.fmean(score.ms for score in scores)
        accuracy_rows.append([backend] + [f"{s.epe:.3f} / {s.fl:.2f}" for s in scores]
                             + [mean_epe, mean_fl, mean_ms])
        time_rows.append([backend] + [score.ms for score in scores])
    accuracy = markdown_table(
        ["backend"] + names + ["mean EPE", "mean Fl-all %", "mean ms/pair"], accuracy_rows
    )
    sizes = [f"{scene.name} ({scene.first.shape[1]}x{scene.first.shape[0]})" for scene in scenes]
    timing = markdown_table(["backend"] + sizes, time_rows, digits=2)
    valid = ", ".join(
        f"{scene.name} {100.0 * np.mean(np.all(np.abs(scene.gt) < 1e9, axis=0)):.1f}%"
        for scene in scenes
    )
    return (
        "Cells: EPE (px, mean over pixels with known ground truth) / Fl-all (% of those pixels "
        "with EPE > 3 px and > 5 % of |gt|). Means are over the scenes, each scene weighing the "
        "same; the two `things-` columns are one FlyingThings3D crop, forward and backward. "
        f"Pixels with known ground truth: {valid}.\n\n"
        f"{accuracy}\n\n"
        "Milliseconds per pair (median after a warm-up; image reading excluded; the classical "
        "backends include the RGB -> gray conversion):\n\n"
        f"{timing}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="data folder (default: <repo>/../shared/data)")
    parser.add_argument("--weights", help="a RAFT checkpoint (torchvision or princeton-vl "
                        "layout); adds a RAFT row")
    parser.add_argument("--raft-model", choices=RAFT_BACKEND_NAMES, default="raft-small",
                        help="which RAFT the --weights belong to (default: raft-small)")
    parser.add_argument("--device", default="auto", help="RAFT device: auto, cpu or cuda[:N]")
    parser.add_argument("--num-flow-updates", type=int, default=12,
                        help="RAFT refinement steps (default: 12)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed runs per pair; the median is reported (default: 10)")
    parser.add_argument("--bf16", action="store_true",
                        help="also score every RAFT row under bfloat16 autocast, same weights")
    add_record_argument(parser)
    args = parser.parse_args(argv)

    env = environment()
    scenes = [load_scene(scene) for scene in find_flow_scenes(data_root(args.data))]
    estimators: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        name: hop_estimator(make_hop_backend(name)) for name in CLASSICAL_BACKEND_NAMES
    }
    shipped = bundled_weights_path("raft-small")
    raft = []
    if shipped.is_file():
        raft.append((f"raft-small (shipped, {args.num_flow_updates} updates",
                     make_hop_backend("raft-small", device=args.device,
                                      num_flow_updates=args.num_flow_updates)))
    if args.weights is not None:
        name = Path(args.weights).name
        raft.append((f"{args.raft_model} ({name}, {args.num_flow_updates} updates",
                     make_hop_backend(args.raft_model, weights=args.weights,
                                      device=args.device,
                                      num_flow_updates=args.num_flow_updates)))
    for label, backend in raft:
        if not args.bf16:  # the backend's default precision, named
            precision = "bf16" if backend.bf16 else "fp32"
            estimators[f"{label}, {precision})"] = hop_estimator(backend)
            continue
        for bf16 in (False, True):
            variant = RaftHopBackend(backend.model, num_flow_updates=backend.num_flow_updates,
                                     device=backend.device, name=backend.name, bf16=bf16)
            estimators[label + (", bf16)" if bf16 else ", fp32)")] = hop_estimator(variant)
    estimators[ZERO_FLOW] = zero_estimator
    rows = {name: score_backend(estimate, scenes, repeats=args.repeats)
            for name, estimate in estimators.items()}
    if any(math.isnan(score.epe) for scores in rows.values() for score in scores):
        raise SystemExit("benchmarks/flow_accuracy.py: a scene has no pixel with known flow")
    title = "Flow accuracy: EPE / Fl-all per backend and scene"
    report(title, build_tables(rows, scenes), record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
