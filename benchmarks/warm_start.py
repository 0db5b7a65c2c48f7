"""Warm-started long strides in the 3D-HOP: speed and accuracy against the cold reference.

With ``warm_updates`` (:class:`flow.backends.RaftHopBackend`), the 3D-HOP builder estimates the
stride-1 pairs as usual (``num_flow_updates`` steps from zero flow) and starts every longer
stride from the shorter strides' flows composed (:mod:`flow.warm_start`), running only
``warm_updates`` steps for it. This script builds the 3D-HOP (strides 1, 4, 8) of synthetic
clips with exact multi-stride flow (``crossnet synth``, 320x240 by default, seeds 6, 8, 9;
never the training scenes' 7) with RAFT-small (the bundled weights, or ``--weights``) in each
setting, in one run:

- cold, 12 updates for every pair (the reference: what ``--flow raft-small`` does today);
- warm, ``--warm`` updates (default 8 and 4) for strides 4 and 8;
- cold, the same smaller numbers of updates for every pair (does the start matter, or only the
  number of steps?);
- DIS-fast and DIS-medium (the classical reference the learned flow is compared with).

For each: frames/s of the whole 3D-HOP build (frames decoded beforehand; the RAFT encoders run
once per frame in every setting), the mean end-point error against the exact flow per stride
(every pixel of every frame whose pair is not the frame with itself), and the mean distance
from the cold reference per stride (0 for the reference).

Usage (from the repository root; about two and a half minutes on a 2-core CPU)::

    python benchmarks/warm_start.py
    python benchmarks/warm_start.py --size 160x120 --frames 12 --no-record
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from _report import add_record_argument, environment, markdown_table, report
from _runs import SYNTH_SEED, parse_size

from flow.backends import make_hop_backend
from flow.hop import build_hops
from flow.metrics import endpoint_error
from pipelines.scenes import open_scene
from pipelines.synth import SynthConfig, generate_scenes

STRIDES = (1, 4, 8)
REFERENCE = "raft-small, cold, 12 updates"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="RAFT-small weights (default: the bundled ones)")
    parser.add_argument("--size", default="320x240", help="clip size WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=20, help="frames per clip")
    parser.add_argument("--seeds", nargs="+", type=int, default=[6, 8, 9],
                        help=f"crossnet synth seeds of the clips (not {SYNTH_SEED})")
    parser.add_argument("--warm", nargs="+", type=int, default=[8, 4],
                        help="updates for the warm-started strides")
    parser.add_argument("--device", default="cpu", help="where RAFT runs: cpu or cuda[:N]")
    add_record_argument(parser)
    args = parser.parse_args()
    if SYNTH_SEED in args.seeds:
        parser.error(f"--seeds: {SYNTH_SEED} makes a training scene of the model card's recipe")
    env = environment()
    started = time.perf_counter()
    size = parse_size(args.size)

    def raft(**options):
        return make_hop_backend("raft-small", weights=args.weights, device=args.device,
                                **options)

    settings = {REFERENCE: lambda: raft()}
    for updates in args.warm:
        settings[f"raft-small, warm, {updates} updates"] = (
            lambda updates=updates: raft(warm_updates=updates))
    for updates in args.warm:
        settings[f"raft-small, cold, {updates} updates"] = (
            lambda updates=updates: raft(num_flow_updates=updates))
    settings["dis-fast"] = lambda: make_hop_backend("dis-fast")
    settings["dis-medium"] = lambda: make_hop_backend("dis-medium")

    with tempfile.TemporaryDirectory() as work:
        clips = [load_clip(generate_scenes(Path(work) / f"seed{seed}", num_scenes=1, seed=seed,
                                           progress=False,
                                           config=SynthConfig(size=size, num_frames=args.frames,
                                                              strides=STRIDES))[0])
                 for seed in args.seeds]
    results = {}
    for label, make in settings.items():
        backend = make()
        hops, seconds = [], 0.0
        for frames, _ in clips:
            list(build_hops(frames[:3], backend, STRIDES))  # warm-up: allocations, threads
            begin = time.perf_counter()
            hops.append(dict(build_hops(frames, backend, STRIDES)))
            seconds += time.perf_counter() - begin
        results[label] = (hops, sum(len(f) for f, _ in clips) / seconds)
        print(f"{label}: {results[label][1]:.2f} frames/s", flush=True)

    reference = results[REFERENCE][0]
    rows = []
    for label, (hops, fps) in results.items():
        epe = [mean_error(hops, [truth for _, truth in clips], s) for s in range(len(STRIDES))]
        gap = [mean_error(hops, reference, s) for s in range(len(STRIDES))]
        rows.append([label, fps, fps / results[REFERENCE][1], *epe, *gap])
    header = ["setting", "3D-HOP frames/s", "vs reference",
              *(f"EPE stride {k}" for k in STRIDES),
              *(f"from reference, stride {k}" for k in STRIDES)]
    weights = args.weights or "the bundled RAFT-small weights"
    body = (
        f"3D-HOP (strides {', '.join(map(str, STRIDES))}) of {len(clips)} `crossnet synth` "
        f"clips ({args.size}, {args.frames} frames, seeds {', '.join(map(str, args.seeds))}) "
        f"with exact flow, on `{args.device}`, {weights}. `warm`: stride 1 from zero flow with "
        f"12 updates, strides 4 and 8 started from the composed shorter-stride flows "
        f"(`flow.warm_start`) with the stated updates; `cold`: every pair from zero flow. "
        f"frames/s: the whole build, frames in memory (`vs reference`: over the cold "
        f"12-update build). EPE: mean end-point error against the exact flow over every pixel "
        f"of every frame with a real pair at that stride (px); `from reference`: the same "
        f"distance to the reference's flow.\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"Whole run: {time.perf_counter() - started:.0f} s."
    )
    report("Warm-started long strides in the 3D-HOP", body, record=not args.no_record,
           env=env)


def load_clip(folder: Path) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
    """A synth clip's frames, (3, H, W) uint8 each, and its exact 3D-HOP by frame index."""
    frames = [torch.from_numpy(np.ascontiguousarray(frame.rgb.transpose(2, 0, 1)))
              for frame in open_scene(folder)]
    with h5py.File(Path(folder) / "flow.h5", "r") as file:
        truth = torch.from_numpy(file["flow"][:])
    return frames, {t: truth[t] for t in range(len(frames))}


def mean_error(hops: list[dict[int, torch.Tensor]], truths: list[dict[int, torch.Tensor]],
               s: int) -> float:
    """Mean end-point distance (:func:`flow.metrics.endpoint_error`) between stride
    ``STRIDES[s]``'s fields of ``hops`` and of ``truths``, over every pixel of the frames
    whose pair is a real one (t > 0) of every clip."""
    pairs = [(hop[t][s], truth[t][s]) for hop, truth in zip(hops, truths, strict=True)
             for t in hop if t > 0]
    if not pairs:
        return float("nan")
    return endpoint_error(torch.stack([field for field, _ in pairs]),
                          torch.stack([known for _, known in pairs]))


if __name__ == "__main__":
    main()
