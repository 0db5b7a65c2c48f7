"""How far HOFAM and RAFT-small run from the floor that their arithmetic and bytes set, one run.

For each network at ``--size`` (default 320x240), on ``--device``:

- FLOPs per frame (HOFAM: one forward pass with the bundled model's strides; RAFT-small: per
  consecutive-frame pair, each call encoding its ``batch + 1`` frames and estimating ``batch``
  pairs with 12 updates, as ``flow_throughput.py`` times it), counted by
  :class:`torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products only.
  Element-wise work, normalisation, ``grid_sample`` lookups and upsampling are not counted, so
  the compute floor is a lower bound;
- the fewest bytes per frame: its inputs read once and its output written once, in the dtype the
  network receives them (HOFAM: frame, running background and 3D-HOP as float32, logits out;
  RAFT: one new uint8 frame per pair, the float32 flow out), plus the weights read once per
  batch;
- two ceilings measured in the same run on this device: a large matrix product (float32, and
  bfloat16 for the rows run under bf16 autocast) and a large copy (bytes read plus written);
- the floor: ``max(FLOPs / matmul rate, bytes / copy rate)``, and the time measured (median of
  ``--repeats`` after a warm-up, inputs drawn at random, never zeros) at each batch size;
  ``measured / floor`` is the gap, and the achieved rate over the matmul ceiling says how much of
  the arithmetic units the network keeps busy. TF32 is switched off for the run (cuDNN uses it
  for float32 convolutions by default), so that fp32 rows and the fp32 ceiling mean the same
  arithmetic; RAFT's times include copying frames in and flow out, as ``segment`` does.

The convolutions of both networks are small (HOFAM: 51 k parameters; RAFT's update block works on
a 40x30 grid at 320x240), so neither is expected near a large matrix product's rate: the table
says how far, which is what a faster kernel could at most win.

Usage (from the repository root)::

    python benchmarks/floor.py
    python benchmarks/floor.py --device cuda --batch-sizes 1 8 64 256
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _report import (
    add_record_argument,
    environment,
    markdown_table,
    median_seconds,
    report,
)
from torch.utils.flop_counter import FlopCounterMode

from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend, resolve_device
from pipelines.cli import parse_size
from pipelines.segment import load_segmentation_model

NUM_FLOW_UPDATES = 12


def matmul_rate(device: torch.device, dtype: torch.dtype, *, repeats: int) -> float:
    """FLOP/s of a square matrix product large enough to leave the caches (random operands)."""
    size = 2048 if device.type == "cpu" else 8192
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    seconds = median_seconds(lambda: a @ b, device=device, repeats=repeats)
    return 2.0 * size ** 3 / seconds


def copy_rate(device: torch.device, *, repeats: int) -> float:
    """Bytes/s of a large copy, bytes read plus bytes written."""
    count = (256 if device.type == "cpu" else 1024) * 2 ** 20 // 4
    source = torch.rand(count, device=device)
    target = torch.empty_like(source)
    seconds = median_seconds(lambda: target.copy_(source), device=device, repeats=repeats)
    return 2.0 * source.numel() * source.element_size() / seconds


def counted_flops(function: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return counter.get_total_flops()


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def row(network: str, batch: int, precision: str, flops: float, data_bytes: float,
        seconds: float, rates: dict[str, float], bandwidth: float) -> list[object]:
    """One table row; ``flops``, ``data_bytes`` and ``seconds`` per frame (or pair)."""
    compute = flops / rates[precision]
    memory = data_bytes / bandwidth
    floor = max(compute, memory)
    return [network, batch, precision, flops / 1e9, data_bytes / 1e6, 1e3 * compute,
            1e3 * memory, "compute" if compute >= memory else "memory", 1e3 * seconds,
            seconds / floor, flops / seconds / 1e9, 100.0 * flops / seconds / rates[precision]]


def hofam_rows(args, device, rates, bandwidth) -> list[list[object]]:
    segmentation = load_segmentation_model(args.weights or bundled_weights(), device=device,
                                           flip_average=False, camera_motion="none")
    model, config = segmentation.model, segmentation.config
    height, width = args.size[1], args.size[0]
    strides = len(config.strides)
    per_frame = 4 * height * width * (3 + 2 * strides + 1 + (3 if config.use_background else 0))
    rows = []
    for batch in args.batch_sizes:
        generator = torch.Generator().manual_seed(batch)
        images = torch.rand(batch, 3, height, width, generator=generator).to(device)
        hop = (4.0 * torch.randn(batch, strides, 2, height, width, generator=generator)).to(device)
        background = (torch.rand(batch, 3, height, width, generator=generator).to(device)
                      if config.use_background else None)
        for precision in args.precisions:
            def forward(bf16=precision == "bf16", images=images, hop=hop,
                        background=background):
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                            enabled=bf16):
                    return model(images, hop, background)

            flops = counted_flops(forward) / batch
            data = per_frame + weight_bytes(model) / batch
            seconds = median_seconds(forward, device=device, repeats=args.repeats) / batch
            rows.append(row("HOFAM (bundled)", batch, precision, flops, data, seconds, rates,
                            bandwidth))
    return rows


def raft_rows(args, device, rates, bandwidth) -> list[list[object]]:
    height, width = args.size[1], args.size[0]
    rows = []
    for precision in args.precisions:
        backend = make_hop_backend("raft-small", device=str(device),
                                   num_flow_updates=NUM_FLOW_UPDATES)
        backend.bf16 = precision == "bf16"
        for batch in args.batch_sizes:
            generator = torch.Generator().manual_seed(batch)
            frames = torch.randint(0, 256, (batch + 1, 3, height, width), dtype=torch.uint8,
                                   generator=generator)

            def pairs(frames=frames, backend=backend):
                encoded = backend.encode(frames)
                return backend.estimate(encoded[:-1], encoded[1:])

            flops = counted_flops(pairs) / batch
            data = height * width * (3 + 2 * 4) + weight_bytes(backend.model) / batch
            seconds = median_seconds(pairs, device=device, repeats=args.repeats) / batch
            rows.append(row(f"RAFT-small ({NUM_FLOW_UPDATES} updates, per pair)", batch,
                            precision, flops, data, seconds, rates, bandwidth))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                        default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", help="HOFAM checkpoint (default: the bundled one)")
    parser.add_argument("--networks", nargs="+", choices=["hofam", "raft-small"],
                        default=["hofam", "raft-small"])
    add_record_argument(parser)
    args = parser.parse_args()
    args.size = parse_size(args.size)
    if min(args.batch_sizes) < 1 or args.repeats < 1:
        parser.error("--batch-sizes and --repeats must be positive")
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    # fp32 rows in true float32: cuDNN would otherwise run the convolutions in TF32 by default
    # and beat a float32 matrix-product ceiling.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    env = environment()
    started = time.perf_counter()

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rates = {name: matmul_rate(device, dtypes[name], repeats=args.repeats)
             for name in args.precisions}
    bandwidth = copy_rate(device, repeats=args.repeats)
    rows = []
    if "hofam" in args.networks:
        rows += hofam_rows(args, device, rates, bandwidth)
    if "raft-small" in args.networks:
        rows += raft_rows(args, device, rates, bandwidth)

    ceilings = ", ".join(f"{name} matrix product {rate / 1e9:.1f} GFLOP/s"
                         for name, rate in rates.items())
    header = ["network", "batch", "precision", "GFLOP / frame", "MB / frame",
              "compute floor ms", "memory floor ms", "bound", "measured ms / frame",
              "measured / floor", "achieved GFLOP/s", "% of matmul ceiling"]
    body = (
        f"Device `{device}`, {args.size[0]}x{args.size[1]}. Ceilings measured in this run: "
        f"{ceilings}, copy {bandwidth / 1e9:.1f} GB/s (read + written); TF32 off, so fp32 "
        f"means float32 arithmetic. FLOPs: convolutions and "
        f"matrix products counted by `torch.utils.flop_counter` (element-wise work, "
        f"normalisation and `grid_sample` lookups not counted, so the compute floor is a lower "
        f"bound). Bytes: the inputs read once and the output written once per frame (HOFAM: "
        f"frame, background and 3D-HOP in float32 in, logits out; RAFT: a new uint8 frame in "
        f"and the float32 flow out per pair), the weights once per batch. Floor = max(compute, "
        f"memory); measured = median of {args.repeats} runs after a warm-up on random inputs, "
        f"per frame (per pair for RAFT).\n\n{markdown_table(header, rows)}\n\n"
        f"Run time {time.perf_counter() - started:.0f} s.")
    report("Compute and memory floor of HOFAM and RAFT-small", body, record=not args.no_record,
           env=env)


if __name__ == "__main__":
    main()
