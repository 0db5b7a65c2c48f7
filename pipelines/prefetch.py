"""Run an iterator in a background thread, a bounded number of items ahead of its consumer.

``segment`` uses it to overlap its stages: while HOFAM runs on one batch of frames (torch, in
the calling thread), the next frames are decoded and their 3D-HOP computed (OpenCV, in the
background thread). Both libraries release the GIL in their kernels, so on a 2-core CPU the two
stages really run at once; ``benchmarks/segment_throughput.py`` measures the gain.

The items are the producer's, unchanged and in order, so a consumer sees exactly what it would
see iterating directly. Errors raised by the producer are raised in the consumer at the point
where the failing item would have arrived. Closing the consumer (``break``, an exception,
Ctrl-C) stops the producer after the item it is working on and closes the underlying
iterator in the producer's own thread, so files and caches it holds are released there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
_POLL_SECONDS = 0.1  # how often a blocked producer checks whether the consumer has gone
_JOIN_SECONDS = 10.0  # how long a closing consumer waits for the producer's current item


class _Failure:
    """An exception raised by the producer, carried through the queue to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2, *, name: str = "prefetch") -> Iterator[T]:
    """Yield the items of ``items``, produced by a background thread at most ``depth`` ahead.

    Args:
        items: any iterable; it is iterated (and, if it has ``close``, closed) only by the
            background thread.
        depth: how many finished items may wait for the consumer (memory: ``depth`` items).
        name: the thread's name (shows in tracebacks and debuggers).

    Yields:
        The items, in order.

    Raises:
        ValueError: ``depth`` < 1.
        Whatever iterating ``items`` raised, in the consumer, after the items before it.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        """Hand one entry over; False once the consumer has gone."""
        while not stop.is_set():
            try:
                waiting.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            entry = waiting.get()
            if entry is _END:
                return
            if isinstance(entry, _Failure):
                raise entry.error
            yield entry
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue, then let it finish its current item.
        while worker.is_alive():
            try:
                waiting.get_nowait()
            except queue.Empty:
                worker.join(timeout=_JOIN_SECONDS)
                break
