"""Preprocessing throughput on a real video, every stage against the MOG2 baseline in one run.

Measured, in this order, on the first ``--frames`` frames of ``--video`` (default
``<repo>/../shared/data/videos/highway2_320x240.avi``, 320x240):

1. decoding alone (:class:`pipelines.sources.VideoSource`, BGR -> RGB included): the floor of
   any pipeline that reads this video;
2. the MOG2 and KNN baselines (:class:`pipelines.baselines.OpenCVSubtractor`) on the same
   frames, decoded once into memory beforehand, so decoding is excluded;
3. 3D-HOP building (:func:`flow.hop.build_hops` with :func:`flow.backends.make_hop_backend`)
   for every classical backend, strides ``--strides`` (default 1, 4, 8), frames in memory;
4. the whole stage, :func:`pipelines.preprocess.preprocess` (decode + 3D-HOP + HDF5 cache
   writing) for dis-fast and dis-ultrafast into a temporary folder, and the cache's size per
   frame next to the raw size (uint8 frames + float16 flow, what the cache stores before
   compression; 1 KB = 1000 bytes);
5. with CUDA only: RAFT-small pairs/s (random weights: the speed does not depend on them) on
   batches of consecutive-frame pairs, and its 3D-HOP build frames/s. ``--raft-device cpu``
   measures it on the CPU instead (slow; use a small ``--raft-frames``).

Each timing is the median of ``--repeats`` runs after a warm-up run. Ratios are frames/s divided
by MOG2's frames/s measured in the same run (x0.50: half as fast as MOG2).

Usage (from the repository root)::

    python benchmarks/preprocess_throughput.py
    python benchmarks/preprocess_throughput.py --video clip.mp4 --frames 100 --no-record
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from _report import (
    DEFAULT_VIDEO,
    add_record_argument,
    environment,
    markdown_table,
    median_seconds,
    ratio,
    report,
)

import crossnet
from flow.backends import RaftHopBackend, make_hop_backend
from flow.cache import CacheInfo, CacheWriter, cache_path_for
from flow.classical import CLASSICAL_BACKEND_NAMES
from flow.hop import build_hops, check_strides
from pipelines.baselines import BASELINE_NAMES, OpenCVSubtractor
from pipelines.preprocess import preprocess
from pipelines.sources import VideoSource

PREPROCESS_BACKENDS = ("dis-fast", "dis-ultrafast")
CACHE_TARGET_KB = 300.0
KB = 1000.0


@dataclass
class Row:
    """One measured stage: its name, frames/s, and flow pairs/s where it estimates flow."""

    stage: str
    frames_per_second: float
    pairs_per_second: float | None = None
    note: str = ""


@dataclass
class CacheSize:
    """The size of one cache file, per frame, in KB."""

    backend: str
    total: float
    frames: float
    flow: float
    raw: float


def decode(video: Path, frames: int) -> list[np.ndarray]:
    """The first ``frames`` frames of ``video``, RGB (H, W, 3) uint8."""
    return [frame.rgb for frame in itertools.islice(VideoSource(video), frames)]


def as_tensors(frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """RGB frames -> (3, H, W) uint8 tensors, the way :func:`pipelines.preprocess` feeds them."""
    return [torch.from_numpy(frame).permute(2, 0, 1) for frame in frames]


def estimated_pairs(num_frames: int, strides: Sequence[int]) -> int:
    """Pairs a 3D-HOP build estimates: every stride of every frame but frame 0 (zero flow)."""
    return max(num_frames - 1, 0) * len(strides)


def time_baseline(name: str, frames: Sequence[np.ndarray], *, repeats: int) -> float:
    """Seconds for a fresh ``name`` subtractor to process ``frames``, median of ``repeats``."""

    def run() -> None:
        subtract = OpenCVSubtractor(name)
        for frame in frames:
            subtract(frame)

    return median_seconds(run, repeats=repeats)


def time_hop_build(backend, tensors: Sequence[torch.Tensor], strides: Sequence[int], *,
                   batch_frames: int, repeats: int) -> float:
    """Seconds to build every frame's 3D-HOP, median of ``repeats`` after a short warm-up."""

    def run(frames: Sequence[torch.Tensor]) -> None:
        for _ in build_hops(frames, backend, strides, batch_frames=batch_frames):
            pass

    run(tensors[: 2 * batch_frames])
    return median_seconds(lambda: run(tensors), repeats=repeats, warmup=0)


def cache_size(path: Path, backend: str) -> CacheSize:
    """KB per frame of a cache file: the whole file, its frames and flow datasets, and raw."""
    with h5py.File(path, "r") as file:
        frames, flow = file["frames"], file["flow"]
        count = frames.shape[0]
        raw = frames.dtype.itemsize * np.prod(frames.shape[1:]) + flow.dtype.itemsize * np.prod(
            flow.shape[1:]
        )
        return CacheSize(
            backend=backend,
            total=path.stat().st_size / count / KB,
            frames=frames.id.get_storage_size() / count / KB,
            flow=flow.id.get_storage_size() / count / KB,
            raw=float(raw) / KB,
        )


def time_cache_write(frames: Sequence[np.ndarray], stacks: Sequence[np.ndarray],
                     strides: Sequence[int], *, backend: str, repeats: int) -> float:
    """Seconds to write ``frames`` and their 3D-HOP ``stacks`` to a new cache, median of runs.

    Everything :func:`pipelines.preprocess.preprocess_source` does with the cache:
    :meth:`flow.cache.CacheWriter.open`, one ``append`` per frame (float16 rounding, gzip,
    two flushes), ``finish``.
    """
    height, width = frames[0].shape[:2]
    info = CacheInfo(strides=strides, backend=backend, weights_sha256="", size=(width, height),
                     source_path="benchmark", source_size=0, source_mtime=0.0, fps=0.0,
                     package_version=crossnet.__version__)

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="crossnet-bench-") as folder:
            path = cache_path_for(folder, "benchmark")
            with CacheWriter.open(path, info=info, expected_frames=len(frames)) as writer:
                for number, (rgb, stack) in enumerate(zip(frames, stacks), start=1):
                    writer.append(number, rgb, stack)
                writer.finish()

    return median_seconds(run, repeats=repeats)


def time_preprocess(name: str, video: Path, strides: Sequence[int], *, frames: int,
                    batch_frames: int, repeats: int) -> tuple[float, CacheSize]:
    """Median seconds of a whole ``preprocess`` run of ``frames`` frames, and the cache's size.

    Raises:
        SystemExit: preprocess reported a failure (its message is quoted).
    """
    backend = make_hop_backend(name)

    def run(max_frames: int) -> CacheSize:
        with tempfile.TemporaryDirectory(prefix="crossnet-bench-") as folder:
            summary = preprocess([video], folder, backend=backend, strides=strides,
                                 max_frames=max_frames, batch_frames=batch_frames,
                                 progress=False)
            if summary.failed or len(summary.written) != 1:
                raise SystemExit(
                    f"benchmarks/preprocess_throughput.py: preprocess with {name} failed: "
                    f"{summary.failed or summary}"
                )
            return cache_size(summary.written[0], name)

    run(min(frames, 2 * batch_frames))
    times, sizes = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        size = run(frames)
        times.append(time.perf_counter() - start)
        sizes.append(size)
    return statistics.median(times), sizes[-1]


def raft_rows(frames: Sequence[np.ndarray], strides: Sequence[int], *, device: str,
              batch_pairs: int, num_flow_updates: int, batch_frames: int,
              repeats: int) -> list[Row]:
    """RAFT-small (random weights) pairs/s on batches and its 3D-HOP build frames/s."""
    from flow.raft import raft_small

    torch.manual_seed(0)
    backend = RaftHopBackend(raft_small(), num_flow_updates=num_flow_updates, device=device,
                             name="raft-small")
    count = min(batch_pairs + 1, len(frames))
    batch = torch.from_numpy(np.stack(frames[:count])).permute(0, 3, 1, 2).contiguous()

    def pairs() -> None:
        # estimate() returns its flow on the CPU, which waits for the device to finish.
        encoded = backend.encode(batch)
        backend.estimate(encoded[:-1], encoded[1:])

    seconds = median_seconds(pairs, repeats=repeats)
    tensors = as_tensors(frames)
    hop_seconds = time_hop_build(backend, tensors, strides, batch_frames=batch_frames,
                                 repeats=repeats)
    height, width = frames[0].shape[:2]
    setting = f"{width}x{height}, {num_flow_updates} updates, {device}"
    return [
        Row(f"RAFT-small pairs, batch of {count - 1}", (count - 1) / seconds,
            (count - 1) / seconds, f"{setting}; frames/s column = pairs/s"),
        Row(f"3D-HOP raft-small (batch_frames {batch_frames})", len(tensors) / hop_seconds,
            estimated_pairs(len(tensors), strides) / hop_seconds, f"{setting}; frames in memory"),
    ]


def build_body(rows: list[Row], sizes: list[CacheSize], *, mog2_fps: float, video: Path,
               frame_count: int, frame_size: tuple[int, int], strides: Sequence[int],
               raft_note: str) -> str:
    table = markdown_table(
        ["stage", "frames/s", "ms/frame", "flow pairs/s", "vs MOG2", "note"],
        [[row.stage, row.frames_per_second, 1000.0 / row.frames_per_second,
          row.pairs_per_second, ratio(row.frames_per_second, mog2_fps), row.note]
         for row in rows],
        digits=1,
    )
    size_table = markdown_table(
        ["cache (backend)", "KB/frame", "frames KB/frame", "flow KB/frame", "raw KB/frame",
         "cache / raw", f"vs target {CACHE_TARGET_KB:.0f} KB"],
        [[size.backend, size.total, size.frames, size.flow, size.raw,
          f"{size.total / size.raw:.3f}", f"x{size.total / CACHE_TARGET_KB:.2f}"]
         for size in sizes],
        digits=1,
    )
    width, height = frame_size
    strides_text = ", ".join(str(k) for k in strides)
    return (
        f"Video `{video.name}`, first {frame_count} frames at {width}x{height}; 3D-HOP strides "
        f"({strides_text}), so {len(strides)} flow pairs per frame (frame 0's are zero, not "
        "estimated). Median of the repeats after a warm-up. `vs MOG2` is frames/s over MOG2's "
        "frames/s in this run.\n\n"
        f"{table}\n\n"
        "Cache size per frame (1 KB = 1000 bytes): the whole HDF5 file, and the stored "
        "(compressed) bytes of its `frames` and `flow` datasets; raw = uint8 frames + float16 "
        "flow uncompressed. The cache is lossless with respect to the float16 flow.\n\n"
        f"{size_table}\n\n"
        f"{raft_note}"
    )


def breakdown(fps: dict[str, float]) -> str:
    """One sentence splitting preprocess dis-fast's time per frame into its measured parts."""
    parts = {
        "decoding": fps["decode only (VideoSource)"],
        "3D-HOP dis-fast": fps["3D-HOP dis-fast"],
        "the cache write": fps["HDF5 cache write only"],
    }
    total = 1000.0 / fps["preprocess dis-fast"]
    shares = ", ".join(f"{name} {1000.0 / value:.1f} ms ({100.0 * 1000.0 / value / total:.0f} %)"
                       for name, value in parts.items())
    return (f"Where preprocess dis-fast's {total:.1f} ms per frame go, from the separate rows "
            f"above: {shares}; the rest is the pipeline's own overhead and measurement noise.")


def parse_strides(text: str) -> tuple[int, ...]:
    try:
        return check_strides([int(part) for part in text.split(",")])
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--strides {text!r}: {error}") from error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO,
                        help="the video (default: <repo>/../shared/data/videos/"
                        "highway2_320x240.avi)")
    parser.add_argument("--frames", type=int, default=200, help="frames to use (default: 200)")
    parser.add_argument("--strides", type=parse_strides, default=(1, 4, 8),
                        help="3D-HOP strides, comma-separated (default: 1,4,8)")
    parser.add_argument("--batch-frames", type=int, default=8,
                        help="frames per 3D-HOP chunk (default: 8, as preprocess)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per measurement; the median is reported (default: 3)")
    parser.add_argument("--raft-device", default="cuda",
                        help="device for the RAFT-small part (default: cuda; skipped without "
                        "CUDA unless 'cpu' is given)")
    parser.add_argument("--raft-frames", type=int, default=None,
                        help="frames for the RAFT 3D-HOP build (default: --frames)")
    parser.add_argument("--raft-batch", type=int, default=16,
                        help="pairs per RAFT batch (default: 16)")
    parser.add_argument("--num-flow-updates", type=int, default=12,
                        help="RAFT refinement steps (default: 12)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error(f"--frames must be >= 2, got {args.frames}")
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: no such video (pass --video PATH)")

    env = environment()
    frames = decode(args.video, args.frames)
    count = len(frames)
    height, width = frames[0].shape[:2]
    decode_seconds = median_seconds(lambda: decode(args.video, count), repeats=args.repeats)
    rows = [Row("decode only (VideoSource)", count / decode_seconds, note="the floor")]

    for name in BASELINE_NAMES:
        seconds = time_baseline(name, frames, repeats=args.repeats)
        rows.append(Row(name.upper(), count / seconds, note="frames in memory"))
    mog2_fps = rows[1].frames_per_second

    tensors = as_tensors(frames)
    pairs = estimated_pairs(count, args.strides)
    for name in CLASSICAL_BACKEND_NAMES:
        seconds = time_hop_build(make_hop_backend(name), tensors, args.strides,
                                 batch_frames=args.batch_frames, repeats=args.repeats)
        rows.append(Row(f"3D-HOP {name}", count / seconds, pairs / seconds, "frames in memory"))

    # The cache's write cost on its own, with the dis-fast stacks preprocess would write.
    stacks = [stack.numpy() for _, stack in build_hops(
        tensors, make_hop_backend("dis-fast"), args.strides, batch_frames=args.batch_frames)]
    seconds = time_cache_write(frames, stacks, args.strides, backend="dis-fast",
                               repeats=args.repeats)
    rows.append(Row("HDF5 cache write only", count / seconds,
                    note="CacheWriter with dis-fast stacks, frames in memory"))
    del stacks

    sizes = []
    for name in PREPROCESS_BACKENDS:
        seconds, size = time_preprocess(name, args.video, args.strides, frames=count,
                                        batch_frames=args.batch_frames, repeats=args.repeats)
        rows.append(Row(f"preprocess {name}", count / seconds, pairs / seconds,
                        "decode + 3D-HOP + HDF5 write"))
        sizes.append(size)

    raft_device = torch.device(args.raft_device)
    if raft_device.type == "cuda" and not torch.cuda.is_available():
        raft_note = ("RAFT-small: not measured, CUDA is not available on this machine (the "
                     "script measures it when it is; `--raft-device cpu` forces a CPU run).")
    else:
        raft_frames = frames[: args.raft_frames or count]
        rows.extend(raft_rows(raft_frames, args.strides, device=args.raft_device,
                              batch_pairs=args.raft_batch, num_flow_updates=args.num_flow_updates,
                              batch_frames=args.batch_frames, repeats=args.repeats))
        raft_note = ("RAFT-small rows: random weights (speed does not depend on them), bf16 "
                     "autocast where `RaftHopBackend` uses it (CUDA, and CPUs with AVX512-BF16 "
                     "or AMX), else fp32; pairs/s counts the encoding of "
                     f"each frame once; 3D-HOP over the first {len(raft_frames)} frames.")

    body = build_body(rows, sizes, mog2_fps=mog2_fps, video=args.video, frame_count=count,
                      frame_size=(width, height), strides=args.strides, raft_note=raft_note)
    body += "\n\n" + breakdown({row.stage: row.frames_per_second for row in rows})
    report("Preprocess throughput: decode, MOG2/KNN, 3D-HOP, preprocess, cache size", body,
           record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
