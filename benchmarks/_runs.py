"""Training runs of the benchmark scripts that compare recipes: train once, reuse, score.

Imported as ``_runs`` (a script's own folder is first on ``sys.path``, as for ``_report``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from _report import data_root, nan_mean
from _split import FLOW, fit_caches, split_scenes

from crossnet.split import Split, load_split
from flow.backends import make_hop_backend
from flow.classical import CLASSICAL_BACKEND_NAMES
from pipelines.cli import main as cli
from pipelines.errors import InputError
from pipelines.evaluate import ModelMethod, evaluate
from pipelines.segment import load_segmentation_model
from pipelines.train import TrainConfig, cache_flow, find_caches, train, with_new_defaults

STRIDES = (1, 4, 8)

EPOCHS = 14
"""The model card's number of epochs (``--epochs``' default)."""

SYNTH_SIZE = "128x96"
"""The model card's synthetic training scenes' size (``crossnet synth --size``)."""

SYNTH_SCENES = 6
"""The model card's number of synthetic training scenes (``crossnet synth --scenes``)."""

SYNTH_SEED = 7
"""The model card's synthetic training scenes' seed (``crossnet synth --seed``). Scene 0 of a
``crossnet synth`` run with this seed is a training scene (at the training size, with any
number of frames), so no held-out clip may be made with it (``synthetic_clip.py``)."""

RECORDED_BASE = {"camera_pan": 0.0}
"""Where today's training defaults differ from those the recorded comparisons were made with,
the older values: every run of these scripts starts from them, so their records reproduce and
their runs are reused. ``recipe_options.py``'s ``camera-pan`` variant is the current default."""


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    width, height = (int(part) for part in text.lower().split("x"))
    return width, height


def add_recipe_arguments(parser: argparse.ArgumentParser, *, shared_with: str) -> None:
    """The options of a script that trains the model card's recipe: where the data, the split
    and the reused work folder are (``shared_with`` names the script whose runs it reuses),
    the seeds, and the recipe's epochs, samples per epoch and batch size."""
    parser.add_argument("--data", help="real scenes (default <repo>/../shared/data)")
    parser.add_argument("--split", default="cross_scene_v1")
    parser.add_argument("--work", default="/tmp/crossnet_ablation",
                        help=f"folder for caches and runs (reused; shared with {shared_with})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--samples-per-epoch", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--synth-size", default=SYNTH_SIZE,
                        help=f"size of the synthetic training scenes, WIDTHxHEIGHT (default "
                             f"{SYNTH_SIZE}, the model card's)")
    parser.add_argument("--flow", default=FLOW, choices=CLASSICAL_BACKEND_NAMES,
                        help=f"flow backend of the training caches and of the model (default "
                             f"{FLOW}, the model card's)")
    parser.add_argument("--synth-scenes", type=int, default=SYNTH_SCENES,
                        help=f"number of synthetic training scenes (default {SYNTH_SCENES}, the "
                             "model card's; scenes 0-5 are the same scenes whatever the number)")


def recipe_words(args: argparse.Namespace) -> str:
    """The recipe options of :func:`add_recipe_arguments` in the words of a record, e.g. "14
    epochs x 1024 samples, batch 12, composites 30 %, the split's training scenes plus 6
    synthetic scenes at 128x96" (30 % composites is :class:`pipelines.train.TrainConfig`'s
    default; a variant that changes it says so in its own words)."""
    return (f"{args.epochs} epochs x {args.samples_per_epoch} samples, batch {args.batch_size}, "
            f"composites 30 %, the split's training scenes plus {args.synth_scenes} synthetic "
            f"scenes at {args.synth_size}, 3D-HOP from {args.flow}")


def run_folder(args: argparse.Namespace, work: Path, crop: str, seed: int,
               suffix: str = "") -> Path:
    """The folder of one training run under ``work/crop_runs``: named by crop, seed and the
    variant's ``suffix``, then by whatever of :func:`add_recipe_arguments`' options differs
    from the recipe (``_eN`` for N epochs other than :data:`EPOCHS`, ``_synthWxH`` for
    synthetic scenes of another size, ``_nsynthN`` for another number of them, ``_flowNAME``
    for another flow backend), so that no run ever lands in the folder of a run made with
    other settings."""
    name = f"crop{crop}_seed{seed}{suffix}"
    if args.epochs != EPOCHS:
        name += f"_e{args.epochs}"
    if args.synth_size != SYNTH_SIZE:
        name += f"_synth{args.synth_size}"
    if args.synth_scenes != SYNTH_SCENES:
        name += f"_nsynth{args.synth_scenes}"
    if args.flow != FLOW:
        name += f"_flow{args.flow}"
    return work / "crop_runs" / name


def recipe_data(args: argparse.Namespace) -> tuple[Split, dict[str, Path], Path, list[Path]]:
    """For :func:`add_recipe_arguments`' options: the split, its scenes (name -> folder), the
    work folder and the recipe's training data (the split's fitting caches, strides
    :data:`STRIDES`, and the synthetic scenes' caches), made once and reused."""
    root = data_root(args.data)
    split = load_split(args.split)
    scenes = split_scenes(root, split)
    work = Path(args.work)
    return split, scenes, work, [fit_caches(STRIDES, split, scenes, work, args.flow),
                                 synthetic_caches(work, args.synth_size, args.synth_scenes,
                                                  args.flow)]


def synthetic_caches(work: Path, size: str = SYNTH_SIZE, count: int = SYNTH_SCENES,
                     flow: str = FLOW) -> Path:
    """The model card's synthetic scenes (50 frames, seed :data:`SYNTH_SEED`; 6 scenes of
    128x96 unless ``count`` and ``size`` say otherwise) under ``work/synth`` and their
    caches under ``work/caches_synth``, made once (``..._WxH`` at other sizes, ``..._nN`` for
    N scenes other than 6; the caches' folder ``..._<flow>`` for a flow backend other than
    :data:`FLOW`)."""
    if count < 1:
        raise SystemExit(f"--synth-scenes must be at least 1, got {count}")
    tag = ("" if size == SYNTH_SIZE else f"_{size}") + ("" if count == SYNTH_SCENES
                                                        else f"_n{count}")
    scenes = work / f"synth{tag}"
    caches = work / (f"caches_synth{tag}" + ("" if flow == FLOW else f"_{flow}"))
    if not caches.exists():
        parse_size(size)  # a malformed size fails here, before anything is written
        # synth keeps the finished scenes of an earlier (perhaps interrupted) run.
        if cli(["synth", str(scenes), "--scenes", str(count), "--frames", "50", "--size", size,
                "--seed", str(SYNTH_SEED), "--no-progress"]) != 0:
            raise SystemExit("crossnet synth failed")
        if cli(["preprocess", str(scenes), "--out", str(caches), "--strides", "1,4,8",
                "--flow", flow, "--no-progress"]) != 0:
            raise SystemExit("crossnet preprocess failed")
    return caches


def trained(run: Path, data: list[Path], split: Split, config: TrainConfig
            ) -> tuple[Path, float]:
    """Train ``run`` unless it finished before; its best checkpoint and training seconds.

    A finished run is reused only if it was trained with exactly ``config`` (settings added
    since the run take their defaults, as when its checkpoint is loaded or resumed; the
    composites' flow, when ``config`` leaves it to training, is the one of ``data``'s caches).
    """
    done = run / "done"
    recorded = run / "config.json"
    if recorded.exists():
        previous = with_new_defaults(json.loads(recorded.read_text())["train_config"])
        if config.composite_flow is None:
            try:
                flow = cache_flow(find_caches(data))
            except (InputError, ValueError) as error:
                raise SystemExit(f"{run}: {error}") from None
            config = dataclasses.replace(config, composite_flow=flow)
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


def score_run(best: Path, split: Split, scenes: dict[str, Path], *,
              inputs: dict[str, Any] | None = None, flip_average: bool = True,
              camera_mode: str | None = None) -> tuple[dict[str, float], float, float]:
    """F of a checkpoint on every test and validation scene through the streaming ``segment``
    path (its own threshold and flow backend), and the test and validation means.

    ``inputs`` changes input options of the checkpoint's model configuration at test time only
    (e.g. ``{"camera_motion": "affine"}`` for a model trained without it); ``flip_average``
    is ``segment``'s option of that name (on by default, as in ``segment``); ``camera_mode``
    its ``--camera-motion`` (None: the checkpoint's own, which recipe records compare).
    """
    paths = [scenes[name] for name in list(split.test) + list(split.validation)]
    f = {name: scores["F"] for name, scores in
         scene_scores(best, paths, inputs=inputs, flip_average=flip_average,
                      camera_mode=camera_mode).items()}
    return (f, nan_mean(f[n] for n in split.test), nan_mean(f[n] for n in split.validation))


def scene_scores(best: Path, paths: list[Path], *, inputs: dict[str, Any] | None = None,
                 flip_average: bool = True, camera_mode: str | None = None
                 ) -> dict[str, dict[str, float]]:
    """CDnet-2014 scores of a checkpoint on each scene folder (by scene name) through the
    streaming ``segment`` path; the options as in :func:`score_run`."""
    segmentation = load_segmentation_model(best, flip_average=flip_average,
                                           camera_motion=camera_mode)
    if inputs:
        config = dataclasses.replace(segmentation.config, **inputs)
        segmentation = dataclasses.replace(segmentation, config=config)
    model = ModelMethod(segmentation=segmentation,
                        backend=make_hop_backend(segmentation.flow_backend))
    result = evaluate(paths, ["crossnet"], model=model, progress=False)[0]
    return {s.scene: s.scores for s in result.scenes}


def train_and_score(label: str, group: str, run: Path, data: list[Path], split: Split,
                    scenes: dict[str, Path], config: TrainConfig,
                    groups: dict[str, list[tuple[float, float]]]) -> tuple[list, Path]:
    """One run of a recipe table: trained (or reused, :func:`trained`), scored
    (:func:`score_run`), its (test F, val F) added to ``groups[group]`` for
    :func:`seed_means`; its table row (:func:`run_row`) and best checkpoint."""
    best, seconds = trained(run, data, split, config)
    f, test_f, val_f = score_run(best, split, scenes)
    groups.setdefault(group, []).append((test_f, val_f))
    return run_row(label, split, f, test_f, val_f, seconds), best


def baseline_rows(split: Split, scenes: dict[str, Path]) -> list[list]:
    """MOG2 and KNN rows for a recipe table: F per test scene, test mean, no val F or time."""
    reports = evaluate([scenes[n] for n in split.test], ["mog2", "knn"], progress=False)
    rows = []
    for report in reports:
        f = {s.scene: s.scores["F"] for s in report.scenes}
        values = [f[n] for n in split.test]
        rows.append([report.method.upper(), *values, nan_mean(values), math.nan, math.nan])
    return rows


def run_row(label: str, split: Split, f: dict[str, float], test_f: float, val_f: float,
            seconds: float) -> list:
    """A recipe table's row for one run (F per test scene, means, training time), printed."""
    print(f"{label}: test F {test_f:.3f}, validation F {val_f:.3f}", flush=True)
    return [label, *[f[n] for n in split.test], test_f, val_f, seconds]


def seed_means(groups: dict[str, list[tuple[float, float]]]) -> str:
    """'<group>: test F ..., validation F ...' per group of (test F, val F) runs."""
    return "; ".join(
        f"{group}: test F {nan_mean(t for t, _ in runs):.3f}, validation F "
        f"{nan_mean(v for _, v in runs):.3f}" for group, runs in groups.items())
