"""HOFAM forward: eager against ``torch.compile`` (and, on CUDA, CUDA graphs), one run.

The bundled model (or ``--weights``) on random inputs at ``--size`` (default 320x240; frame,
running background and 3D-HOP as ``segment`` feeds them, never zeros), at ``--batch-size``
frames per call, in float32 and under bf16 autocast:

- ``eager``: the model as ``segment`` runs it today (channels_last inside, see
  :mod:`crossnet.hofam`);
- ``compile``: ``torch.compile(model)`` (inductor, default mode);
- ``compile, CUDA graphs`` (CUDA only): ``torch.compile(model, mode="reduce-overhead")``, which
  records the kernels of a call once and replays them, removing launch gaps.

Each row: seconds until the first compiled call returned (the price every run of ``segment``
would pay, less with inductor's on-disk cache warm), the median ms per frame over
``--repeats`` calls after warm-up, the speed-up over eager in the same run, and the largest
difference of the logits from eager's in the same precision (the tolerance a compiled path would
have to keep).

Then ``segment`` end to end on the first ``--frames`` frames of ``--video`` (default
``<repo>/../shared/data/videos/highway2_320x240.avi``) at ``--size``, with its defaults (the
bundled weights, their flow backend, flip averaging, camera-motion handling, ``--batch-size``
frames per batch), with and without ``compile_model`` (:func:`pipelines.segment.segment_frames`,
``crossnet segment --compile``): ``--rounds`` rounds side by side in rotated order
(:func:`_report.paired_speedups`, after one untimed run of each that also compiles), frames/s
from each round's times, and the share of mask pixels that agree.

Usage (from the repository root)::

    python benchmarks/compile.py
    python benchmarks/compile.py --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _report import (
    DEFAULT_VIDEO,
    add_record_argument,
    environment,
    markdown_table,
    median_seconds,
    paired_speedups,
    report,
    synchronize,
)

from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend, resolve_device
from pipelines.cli import parse_size
from pipelines.segment import DEFAULT_CAMERA_MOTION, load_segmentation_model, segment_frames
from pipelines.sources import VideoSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--weights", help="HOFAM checkpoint (default: the bundled one)")
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cold-cache", action="store_true",
                        help="compile into a new, empty inductor cache (TORCHINDUCTOR_CACHE_DIR "
                             "in a temporary folder): the first-call times a first run pays")
    add_record_argument(parser)
    args = parser.parse_args()
    if args.cold_cache:
        # Read by inductor when it first compiles, which is after this.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_cold_")
    width, height = parse_size(args.size)
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be positive")
    device = resolve_device(args.device)
    env = environment()
    started = time.perf_counter()

    segmentation = load_segmentation_model(args.weights or bundled_weights(), device=device,
                                           flip_average=False, camera_motion="none")
    model, config = segmentation.model, segmentation.config
    generator = torch.Generator().manual_seed(0)
    batch = args.batch_size
    images = torch.rand(batch, 3, height, width, generator=generator).to(device)
    hop = (4.0 * torch.randn(batch, len(config.strides), 2, height, width,
                             generator=generator)).to(device)
    background = (torch.rand(batch, 3, height, width, generator=generator).to(device)
                  if config.use_background else None)

    # Static shapes, as `segment --compile` compiles.
    variants = {"eager": model, "compile": torch.compile(model, dynamic=False)}
    if device.type == "cuda":
        variants["compile, CUDA graphs"] = torch.compile(model, dynamic=False,
                                                         mode="reduce-overhead")
    rows = []
    for precision in ("fp32", "bf16"):
        reference, eager_ms = None, None
        for label, function in variants.items():
            def call(function=function, bf16=precision == "bf16"):
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                            enabled=bf16):
                    out = function(images, hop, background)
                    # CUDA graphs reuse their output buffers: keep a copy, not the buffer.
                    return out.float().clone()

            first = time.perf_counter()
            out = call()
            synchronize(device)
            first_seconds = time.perf_counter() - first
            ms = 1e3 * median_seconds(call, repeats=args.repeats, warmup=3,
                                      device=device) / batch
            if reference is None:
                reference, eager_ms = out, ms
            difference = (out - reference).abs().max().item()
            rows.append([label, precision, batch, first_seconds, ms, 1000.0 / ms,
                         eager_ms / ms, f"{difference:.1e}"])

    end_to_end = segment_rows(args, device, (width, height))

    cache_words = ("into a new, empty inductor cache" if args.cold_cache
                   else "inductor's on-disk cache as this machine had it")
    header = ["variant", "precision", "batch", "first call s", "ms / frame", "frames/s",
              "speed-up over eager", "max |logit - eager's|"]
    body = (f"Device `{device}`, {width}x{height}, HOFAM forward only (one pass, no flip "
            f"averaging), inputs in memory, median of {args.repeats} calls after 3 warm-up "
            f"calls. `first call s` includes compiling ({cache_words}).\n\n{markdown_table(header, rows)}\n\n"
            f"`segment` end to end (streaming, masks not written), the first {args.frames} "
            f"frames of `{Path(args.video).name}`, defaults (flip averaging, camera motion "
            f"`{DEFAULT_CAMERA_MOTION}`), batch {args.batch_size}, {args.rounds} rounds side by "
            f"side:\n\n{end_to_end}\n\nRun time {time.perf_counter() - started:.0f} s.")
    report("HOFAM forward: eager against torch.compile", body, record=not args.no_record,
           env=env)


def segment_rows(args, device: torch.device, size: tuple[int, int]) -> str:
    """``segment`` with and without ``compile_model``, side by side: a markdown table."""
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"{video}: no such video")
    segmentation = load_segmentation_model(args.weights or bundled_weights(), device=device,
                                           camera_motion=DEFAULT_CAMERA_MOTION)
    backend = make_hop_backend(segmentation.flow_backend, device=str(device))
    masks: dict[bool, list[np.ndarray]] = {}

    def run(compile_model: bool) -> None:
        frames = itertools.islice(segment_frames(
            VideoSource(video), segmentation, backend=backend, size=size,
            batch_frames=args.batch_size, device=device, compile_model=compile_model),
            args.frames)
        masks[compile_model] = [mask for _, mask in frames]
        synchronize(device)

    labels = {"segment, eager (default)": False, "segment --compile": True}
    first = {}
    for label, compile_model in labels.items():
        start = time.perf_counter()
        run(compile_model)  # untimed: compiles, and fills the caches
        first[label] = time.perf_counter() - start
    times: dict[str, list[float]] = {label: [] for label in labels}

    def timed(label: str):
        def call() -> None:
            start = time.perf_counter()
            run(labels[label])
            times[label].append(time.perf_counter() - start)
        return call

    speedups = paired_speedups({label: timed(label) for label in labels}, rounds=args.rounds)
    agreement = float(np.mean([np.mean(a == b) for a, b in
                               zip(masks[False], masks[True], strict=True)]))
    count = len(masks[False])
    rows = [[label, first[label], count / statistics.median(times[label][1:]),
             statistics.median(speedups[label]), min(speedups[label]), max(speedups[label]),
             1.0 if not labels[label] else agreement]
            for label in labels]
    return markdown_table(["variant", "first run s (compiles)", "frames/s (median round)",
                           "speed-up (median)", "min", "max", "mask pixels agreeing"], rows)


if __name__ == "__main__":
    main()
