"""Synthetic training batches for ``train-flow``, made ahead in worker processes.

A synthetic batch depends only on its keys (the run's seed and the step), so worker processes
can make the batches of the coming steps while the network trains on the current one, and the
run is the same with any number of workers. On a GPU this is what keeps it busy: at RAFT's own
scale one CPU core needs 1.5 s for a batch of 10 pairs of 496x368
(``benchmarks/flow_batches.py`` on the development machine's AMD EPYC, one thread, procedural
textures), far longer than a GPU step.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import torch

from flow.synthetic_pairs import SyntheticPairConfig, generate_batch

# What the workers make batches from, set before they are forked (so a large texture pool is
# shared copy-on-write instead of being sent with every task).
_WORKER_STATE: dict[str, Any] = {}


def _worker_start(parent: int) -> None:
    """Set up a worker process; ``parent``: the pid of the process that made the pool."""
    torch.set_num_threads(1)  # one core per worker; the parent keeps its own threads
    # A worker waits for tasks from its parent forever; if the parent is killed (SIGKILL, the
    # out-of-memory killer) no shutdown reaches it, and an orphan would hold its memory and
    # keep the run folder's lock alive. It ends itself once it has been orphaned.
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True,
                     name="orphan-watch").start()


def _exit_when_orphaned(parent: int, every: float = 0.5) -> None:
    """End this process once its parent is no longer ``parent`` (it died; the orphan was
    handed to another). The parent is passed in, not read here: one that died before the
    worker started would be missed."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _worker_batch(keys: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return generate_batch(_WORKER_STATE["config"], keys=keys,
                          batch_size=_WORKER_STATE["batch_size"],
                          texture_pool=_WORKER_STATE["pool"])


def synthetic_batches(config: SyntheticPairConfig, keys: Sequence[tuple[int, ...]], *,
                      batch_size: int, texture_pool: Sequence[torch.Tensor] | None = None,
                      workers: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """The batches :func:`flow.synthetic_pairs.generate_batch` makes for each of ``keys``, in
    order; with ``workers`` > 0, made ahead (two per worker) in that many forked processes,
    which end when the iterator is exhausted or closed (``close()``).

    Raises:
        ValueError: a negative number of workers.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        for key in keys:
            yield generate_batch(config, keys=key, batch_size=batch_size,
                                 texture_pool=texture_pool)
        return
    _WORKER_STATE.update(config=config, batch_size=batch_size, pool=texture_pool)
    context = multiprocessing.get_context("fork")
    remaining = iter(keys)
    pending: deque[Future] = deque()
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                               initargs=(os.getpid(),))
    try:
        for key in remaining:
            pending.append(pool.submit(_worker_batch, tuple(key)))
            if len(pending) == 2 * workers:
                break
        while pending:
            batch = pending.popleft().result()
            key = next(remaining, None)
            if key is not None:
                pending.append(pool.submit(_worker_batch, tuple(key)))
            yield batch
    finally:
        # Closed early (training stopped or failed): drop the batches not yet started and
        # join the workers, so that no process outlives the run.
        pool.shutdown(wait=True, cancel_futures=True)
