"""Optical-flow throughput: pairs/s of every flow backend at several image sizes, in one run.

Measured on consecutive-frame pairs (stride 1) of real frames: the first ``--pairs`` + 1 frames
of ``--video`` (default ``<repo>/../shared/data/videos/highway2_320x240.avi``), resized to each
of ``--sizes`` (default 160x120, 320x240, 640x480) by :class:`pipelines.sources.VideoSource`
and decoded into memory beforehand, so decoding is excluded:

1. every classical backend (:data:`flow.classical.CLASSICAL_BACKEND_NAMES`: DIS ultrafast,
   fast and medium, Farneback) from :func:`flow.backends.make_hop_backend`, through the
   ``encode`` / ``estimate`` calls the 3D-HOP builder makes: all pairs in one ``estimate``
   call, ``encode`` included (a copy to numpy, negligible next to the flow);
2. RAFT-small, and RAFT-large with ``--raft-large``: :func:`flow.raft.raft_small` /
   :func:`flow.raft.raft_large` with random initial weights (the speed does not depend on the
   weights; none are loaded) in :class:`flow.backends.RaftHopBackend`, 12 flow updates,
   ``--raft-batch`` pairs per ``estimate`` call, each batch encoding its batch + 1 frames once.
   On the CPU only the first ``--raft-pairs`` (default 16) pairs, and no size above 320x240
   unless ``--raft-all-sizes`` (the table says which were skipped); on CUDA every pair;
3. CUDA only, at 320x240: RAFT pairs/s at 1, 8, 32 and 64 pairs per ``estimate`` call (the same
   64 pairs each time), and fp32 next to the bf16 autocast ``RaftHopBackend`` uses on CUDA.

Each timing is the median of ``--repeats`` runs after a warm-up (two on CUDA); on CUDA the
device is synchronised before the clock stops. ``vs DIS-medium`` is pairs/s over dis-medium's
pairs/s at the same size in the same run (x2.00: twice as fast): DIS-medium is the OpenCV
reference the learned flow is compared against (flow/weights/MODEL_CARD.md, the issue's target).

Usage (from the repository root)::

    python benchmarks/flow_throughput.py
    python benchmarks/flow_throughput.py --sizes 320x240 --pairs 24 --raft-large --no-record
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from _report import (
    DEFAULT_VIDEO,
    add_record_argument,
    environment,
    markdown_table,
    median_seconds,
    ratio,
    report,
    synchronize,
)

from flow.backends import RaftHopBackend, make_hop_backend, resolve_device
from flow.classical import CLASSICAL_BACKEND_NAMES
from pipelines.cli import parse_size
from pipelines.errors import InputError
from pipelines.sources import VideoSource

DEFAULT_SIZES = "160x120,320x240,640x480"
REFERENCE_BACKEND = "dis-medium"
NUM_FLOW_UPDATES = 12
# RAFT on the CPU: raft-small, 12 updates, batch 8, took about 0.2 s per pair at 320x240 and
# 1.1 s at 640x480 on a 2-core EPYC (2026-11-24, --no-record runs), so 640x480 would add over a
# minute to a default run; larger sizes are skipped there unless --raft-all-sizes.
RAFT_CPU_MAX_PIXELS = 320 * 240
RAFT_CPU_PAIRS = 16
SWEEP_SIZE = (320, 240)
SWEEP_BATCHES = (1, 8, 32, 64)


@dataclass
class Row:
    """One measured (or skipped) backend at one size; ``pairs_per_second`` None when skipped."""

    backend: str
    size: tuple[int, int]
    pairs_per_second: float | None
    device: str
    note: str


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"160x120,320x240"`` -> ``((160, 120), (320, 240))``, duplicates dropped, order kept."""
    try:
        sizes = [parse_size(part.strip()) for part in text.split(",")]
    except click.BadParameter as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error.message}") from error
    return tuple(dict.fromkeys(sizes))


def load_frames(video: Path, size: tuple[int, int], count: int) -> torch.Tensor:
    """The first ``count`` frames of ``video`` at ``size``: (count, 3, H, W) uint8 RGB, CPU.

    Raises:
        SystemExit: the video cannot be read or has fewer than ``count`` frames.
    """
    try:
        source = VideoSource(video, size=size)
    except InputError as error:
        raise SystemExit(f"benchmarks/flow_throughput.py: {error}") from None
    frames = [torch.from_numpy(frame.rgb).permute(2, 0, 1)
              for frame in itertools.islice(source, count)]
    if len(frames) < count:
        raise SystemExit(f"{video}: {len(frames)} frames decoded, {count} needed "
                         "(pass fewer --pairs)")
    return torch.stack(frames).contiguous()


def time_pairs(backend, frames: torch.Tensor, *, pairs: int, batch: int, repeats: int,
               warmup: int, device: torch.device) -> float:
    """Median seconds to estimate the flow of the first ``pairs`` consecutive-frame pairs.

    Args:
        backend: a :class:`flow.hop.HopBackend`.
        frames: (N, 3, H, W) uint8 RGB on the CPU, N > ``pairs``.
        pairs: pairs (t, t + 1) to estimate, t = 0 .. pairs - 1.
        batch: pairs per ``estimate`` call; each call encodes its batch + 1 frames.
        repeats: timed runs; the median is returned.
        warmup: untimed runs before them.
        device: where the backend computes (synchronised before each run ends).
    """

    def run() -> None:
        for start in range(0, pairs, batch):
            stop = min(start + batch, pairs)
            encoded = backend.encode(frames[start:stop + 1])
            backend.estimate(encoded[:-1], encoded[1:])
        synchronize(device)

    return median_seconds(run, repeats=repeats, warmup=warmup)


def raft_backend(build: Callable[[], torch.nn.Module], name: str,
                 device: torch.device) -> RaftHopBackend:
    """A RAFT backend with random initial weights (seeded, so every run builds the same one)."""
    torch.manual_seed(0)
    return RaftHopBackend(build(), num_flow_updates=NUM_FLOW_UPDATES, device=device, name=name)


def precision_of(backend: RaftHopBackend) -> str:
    return "bf16 autocast" if backend.bf16 else "fp32"


def sweep_rows(build: Callable[[], torch.nn.Module], name: str, video: Path, *,
               raft_batch: int, reference: float | None, repeats: int,
               device: torch.device) -> list[list[object]]:
    """CUDA: pairs/s at every batch of :data:`SWEEP_BATCHES` (bf16) and fp32 at ``raft_batch``."""
    pairs = max(SWEEP_BATCHES)
    frames = load_frames(video, SWEEP_SIZE, pairs + 1)
    bf16 = raft_backend(build, name, device)
    fp32 = RaftHopBackend(bf16.model, num_flow_updates=NUM_FLOW_UPDATES, device=device,
                          name=name, bf16=False)
    rows = []
    for backend, batch in [(bf16, size) for size in SWEEP_BATCHES] + [(fp32, raft_batch)]:
        seconds = time_pairs(backend, frames, pairs=pairs, batch=batch, repeats=repeats,
                             warmup=2, device=device)
        pairs_per_second = pairs / seconds
        rows.append([name, batch, precision_of(backend), pairs_per_second,
                     1000.0 / pairs_per_second, ratio(pairs_per_second, reference)])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO,
                        help="the video (default: <repo>/../shared/data/videos/"
                        "highway2_320x240.avi)")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES),
                        help=f"image sizes WIDTHxHEIGHT, comma-separated (default: "
                        f"{DEFAULT_SIZES})")
    parser.add_argument("--pairs", type=int, default=48,
                        help="consecutive-frame pairs per size (default: 48)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per measurement; the median is reported (default: 3)")
    parser.add_argument("--raft-device", default="auto",
                        help="device for RAFT: auto, cpu or cuda[:N] (default: cuda when "
                        "available, else cpu)")
    parser.add_argument("--raft-batch", type=int, default=8,
                        help="pairs per RAFT estimate call (default: 8)")
    parser.add_argument("--raft-pairs", type=int, default=None,
                        help=f"pairs timed for RAFT (default: {RAFT_CPU_PAIRS} on the CPU, "
                        "--pairs on CUDA)")
    parser.add_argument("--raft-all-sizes", action="store_true",
                        help="on the CPU, also time RAFT above 320x240 (slow)")
    parser.add_argument("--raft-large", action="store_true",
                        help="also time RAFT-large (default: RAFT-small only)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    for option in ("pairs", "repeats", "raft_batch", "raft_pairs"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    try:
        device = resolve_device(args.raft_device)
    except ValueError as error:
        parser.error(f"--raft-device: {error}")
    on_cuda = device.type == "cuda"
    raft_pairs = args.raft_pairs or (args.pairs if on_cuda else min(RAFT_CPU_PAIRS, args.pairs))
    if raft_pairs > args.pairs:
        parser.error(f"--raft-pairs ({raft_pairs}) must not exceed --pairs ({args.pairs})")
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: no such video (pass --video PATH)")

    from flow.raft import raft_large, raft_small

    networks = [("raft-small", raft_small)] + ([("raft-large", raft_large)]
                                               if args.raft_large else [])
    env = environment()
    raft_warmup = 2 if on_cuda else 1
    rows: list[Row] = []
    skipped: list[str] = []
    for size in args.sizes:
        frames = load_frames(args.video, size, args.pairs + 1)
        for name in CLASSICAL_BACKEND_NAMES:
            seconds = time_pairs(make_hop_backend(name), frames, pairs=args.pairs,
                                 batch=args.pairs, repeats=args.repeats, warmup=1,
                                 device=torch.device("cpu"))
            rows.append(Row(name, size, args.pairs / seconds, "cpu (OpenCV)",
                            f"{args.pairs} pairs in one estimate call"))
        too_big = size[0] * size[1] > RAFT_CPU_MAX_PIXELS
        for name, build in networks:
            if not on_cuda and too_big and not args.raft_all_sizes:
                rows.append(Row(name, size, None, str(device),
                                "skipped: RAFT on the CPU above 320x240 is slow; "
                                "--raft-all-sizes times it"))
                skipped.append(f"{name} {size_text(size)}")
                continue
            backend = raft_backend(build, name, device)
            seconds = time_pairs(backend, frames, pairs=raft_pairs,
                                 batch=args.raft_batch, repeats=args.repeats,
                                 warmup=raft_warmup, device=device)
            # The backend's own default (bf16 on CUDA and on CPUs with native bf16).
            rows.append(Row(name, size, raft_pairs / seconds, str(device),
                            f"random weights, {NUM_FLOW_UPDATES} updates, batch "
                            f"{args.raft_batch}, {raft_pairs} pairs, {precision_of(backend)}"))

    reference = {row.size: row.pairs_per_second for row in rows
                 if row.backend == REFERENCE_BACKEND}
    table = markdown_table(
        ["backend", "size", "pairs/s", "ms/pair", "vs DIS-medium (same size)", "device",
         "note"],
        [[row.backend, size_text(row.size), row.pairs_per_second,
          None if row.pairs_per_second is None else 1000.0 / row.pairs_per_second,
          ratio(row.pairs_per_second, reference[row.size]), row.device, row.note]
         for row in rows],
        digits=1,
    )
    backends = list(dict.fromkeys(row.backend for row in rows))
    by_key = {(row.backend, row.size): row.pairs_per_second for row in rows}
    side_by_side = markdown_table(
        ["pairs/s", *(size_text(size) for size in args.sizes)],
        [[name, *(by_key[name, size] for size in args.sizes)] for name in backends],
        digits=1,
    )
    parts = [
        (f"Video `{args.video.name}`, the first {args.pairs} consecutive-frame pairs (stride 1) "
         "resized to each size; frames in memory, so decoding is excluded. Median of "
         f"{args.repeats} runs after a warm-up. `vs DIS-medium` is pairs/s over dis-medium's at "
         "the same size in this run: DIS-medium is the OpenCV reference the learned flow is "
         "compared against (flow/weights/MODEL_CARD.md). Classical rows: one `estimate` call "
         "over all pairs, `encode` included."),
        ("RAFT rows: random initial weights; the speed does not depend on the weights (the "
         f"same layers run on the same shapes for {NUM_FLOW_UPDATES} updates whatever their "
         f"values), and none are loaded. {args.raft_batch} pairs per `estimate` call, each call "
         f"encoding its frames once; on {device} in the backend's default precision "
         "(bf16 autocast on CUDA and on CPUs with AVX512-BF16 or AMX, else fp32; the note "
         "column names it)"
         + (", synchronised before the clock stops." if on_cuda else ".")),
        table,
        "The same pairs/s, side by side:",
        side_by_side,
    ]
    if skipped:
        parts.append(f"Skipped on the CPU: {', '.join(skipped)}: above 320x240 RAFT takes "
                     "over a minute per size there; pass `--raft-all-sizes` to time it.")
    if on_cuda:
        sweep = []
        for name, build in networks:
            sweep += sweep_rows(build, name, args.video, raft_batch=args.raft_batch,
                                reference=reference.get(SWEEP_SIZE), repeats=args.repeats,
                                device=device)
        parts += [
            (f"RAFT on {device} at {size_text(SWEEP_SIZE)}, the same {max(SWEEP_BATCHES)} "
             "pairs at each batch (pairs per `estimate` call); bf16 autocast is what "
             "`RaftHopBackend` uses on CUDA, fp32 is the same model with it off."),
            markdown_table(["backend", "batch", "precision", "pairs/s", "ms/pair",
                            f"vs DIS-medium ({size_text(SWEEP_SIZE)})"], sweep, digits=1),
        ]
    else:
        parts.append("Batch sweep and bf16-vs-fp32 rows: CUDA only, not measured here.")
    report("Flow throughput: pairs/s per backend and size", "\n\n".join(parts),
           record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
