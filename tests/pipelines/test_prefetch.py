"""pipelines.prefetch: items in order, producer errors re-raised, early close stops the thread."""

import threading
import time

import pytest

from pipelines.prefetch import prefetch


def _threads_named(name):
    return [thread for thread in threading.enumerate() if thread.name == name]


@pytest.mark.parametrize("depth", [1, 3, 100])
def test_items_arrive_in_order_and_unchanged(depth):
    items = [object() for _ in range(50)]
    assert list(prefetch(items, depth=depth)) == items


def test_the_producer_runs_ahead_in_another_thread_by_at_most_depth():
    produced = []
    consumer = threading.get_ident()

    def numbers():
        for n in range(10):
            produced.append((n, threading.get_ident()))
            yield n

    stream = prefetch(numbers(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # ample time for the producer to fill the queue
    # Item 0 was taken, items 1 and 2 wait in the queue, item 3 is held by the blocked put.
    assert len(produced) == 4
    assert all(thread != consumer for _, thread in produced)
    assert list(stream) == list(range(1, 10))


def test_an_error_in_the_producer_is_raised_in_the_consumer_after_the_items_before_it():
    def failing():
        yield 1
        yield 2
        raise OSError("disk on fire")

    stream = prefetch(failing(), depth=4)
    assert next(stream) == 1
    assert next(stream) == 2
    with pytest.raises(OSError, match="disk on fire"):
        next(stream)


def test_closing_early_stops_the_producer_and_closes_its_iterator():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    stream = prefetch(endless(), depth=2, name="prefetch-test-close")
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert closed.wait(5), "the underlying generator was not closed"
    deadline = time.monotonic() + 5
    while _threads_named("prefetch-test-close") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _threads_named("prefetch-test-close")


def test_an_error_in_the_consumer_stops_the_producer():
    def endless():
        n = 0
        while True:
            yield n
            n += 1

    with pytest.raises(KeyError):
        for item in prefetch(endless(), depth=2, name="prefetch-test-raise"):
            if item == 3:
                raise KeyError(item)
    deadline = time.monotonic() + 5
    while _threads_named("prefetch-test-raise") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _threads_named("prefetch-test-raise")


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        list(prefetch([1], depth=0))
