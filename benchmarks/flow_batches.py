"""Synthetic flow-training batches: seconds per batch in line and with worker processes.

``crossnet train-flow --stage synthetic`` draws every step's batch from
:func:`flow.synthetic_pairs.generate_batch`; with ``--workers N`` the coming batches are made
in N processes (:mod:`pipelines.flow_batches`) while the network trains. This script times
making ``--batches`` batches of ``--batch-size`` pairs at ``--size`` (default: the model card's
GPU recipe, 10 pairs of 496x368, procedural textures) in line (one thread) and with each of
``--workers``, in one run, after a warm-up batch. It measures the data side alone: what a GPU
step would have to wait for.

Usage (from the repository root; about a minute on a 2-core CPU)::

    python benchmarks/flow_batches.py
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _report import add_record_argument, environment, markdown_table, report
from _runs import parse_size

from flow.synthetic_pairs import SyntheticPairConfig, generate_batch
from pipelines.flow_batches import synthetic_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="496x368", help="pair size WIDTHxHEIGHT")
    parser.add_argument("--batch-size", type=int, default=10, help="pairs per batch")
    parser.add_argument("--batches", type=int, default=8, help="batches timed per setting")
    parser.add_argument("--workers", nargs="+", type=int, default=[2],
                        help="worker counts to time besides in line")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    width, height = parse_size(args.size)
    config = SyntheticPairConfig(size=(height, width))
    torch.set_num_threads(1)
    generate_batch(config, keys=(0, 0), batch_size=1)  # warm-up: imports, allocations

    rows = []
    reference = None
    for workers in [0, *args.workers]:
        keys = [(1, workers, step) for step in range(args.batches)]
        started = time.perf_counter()
        for _ in synthetic_batches(config, keys, batch_size=args.batch_size, workers=workers):
            pass
        seconds = (time.perf_counter() - started) / args.batches
        reference = reference or seconds
        rows.append(["in line" if workers == 0 else f"{workers} workers", seconds,
                     reference / seconds])
        print(f"{rows[-1][0]}: {seconds:.2f} s per batch", flush=True)
    body = (
        f"{args.batches} batches of {args.batch_size} synthetic pairs of {args.size} "
        f"(procedural textures, `flow.synthetic_pairs`), made in line with one torch thread "
        f"and by forked worker processes (`pipelines.flow_batches`, one thread each, process "
        f"start-up included), on this machine ({os.cpu_count()} cores).\n\n"
        f"{markdown_table(['setting', 's per batch', 'speed-up'], rows)}"
    )
    report("Synthetic flow-training batches", body, record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
