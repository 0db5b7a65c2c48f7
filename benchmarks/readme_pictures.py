"""The README's pictures of real results: frame | ground truth | crossnet | MOG2, per test scene.

For each scene given (default: four test scenes of the bundled split ``cross_scene_v1``, none
trained on), runs crossnet (bundled weights, the commands' default camera handling) and MOG2 online
over the scene, takes the middle scored frame and writes ``docs/images/<scene>.png``: the frame, its
ground truth, then each method's prediction with false positives green and false negatives red (see
:mod:`pipelines.error_pictures`), each panel labelled with the method's F on the whole scene.

Usage (from the repository root)::

    python benchmarks/readme_pictures.py
    python benchmarks/readme_pictures.py --scenes CAVIAR1 birds --out /tmp/pictures
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from _report import REPO_ROOT, data_root

from crossnet.split import load_split
from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend
from pipelines.error_pictures import SEPARATOR
from pipelines.evaluate import ModelMethod, evaluate
from pipelines.imageio import write_png_atomic
from pipelines.scenes import find_scenes
from pipelines.segment import DEFAULT_CAMERA_MOTION, load_segmentation_model

DEFAULT_SCENES = ("CAVIAR1", "HighwayI", "birds", "traffic")


def label(panel: np.ndarray, text: str) -> np.ndarray:
    """``panel`` with ``text`` on a dark band above it."""
    band = np.zeros((18, panel.shape[1], 3), np.uint8)
    cv2.putText(band, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default="cross_scene_v1")
    parser.add_argument("--scenes", nargs="*", default=list(DEFAULT_SCENES))
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "images"))
    args = parser.parse_args()
    split = load_split(args.split)
    unseen = [name for name in args.scenes if name not in split.test]
    if unseen:
        raise SystemExit(f"not test scenes of {split.name} (pictures show unseen scenes only): "
                         f"{', '.join(unseen)}")
    scenes = {scene.name: Path(scene.path) for scene in find_scenes([data_root(args.data)])}
    # As `crossnet segment` and `crossnet evaluate` run it by default.
    segmentation = load_segmentation_model(bundled_weights(),
                                           camera_motion=DEFAULT_CAMERA_MOTION)
    model = ModelMethod(segmentation=segmentation,
                        backend=make_hop_backend(segmentation.flow_backend))
    reports = evaluate([scenes[name] for name in args.scenes], ["crossnet", "mog2"],
                       model=model, progress=False, pictures_per_scene=3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for ours, theirs in zip(reports[0].scenes, reports[1].scenes):
        numbers = sorted(ours.pictures)
        number = numbers[len(numbers) // 2]
        width = (ours.pictures[number].shape[1] - 2 * SEPARATOR) // 3
        step = width + SEPARATOR
        frame, truth, crossnet_panel = (ours.pictures[number][:, i * step:i * step + width]
                                        for i in range(3))
        mog2_panel = theirs.pictures[number][:, 2 * step:2 * step + width]
        panels = [label(frame, f"{ours.scene} #{number}"), label(truth, "ground truth"),
                  label(crossnet_panel, f"crossnet F {ours.scores['F']:.2f}"),
                  label(mog2_panel, f"MOG2 F {theirs.scores['F']:.2f}")]
        gap = np.full((panels[0].shape[0], SEPARATOR, 3), 255, np.uint8)
        row = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
        path = out / f"{ours.scene}.png"
        write_png_atomic(path, row)
        print(f"wrote {path} (frame {number}; F crossnet {ours.scores['F']:.3f}, "
              f"MOG2 {theirs.scores['F']:.3f})")


if __name__ == "__main__":
    main()
