"""3D-HOP: multi-stride flow stacks, built in one streaming pass over a video.

For frame t and strides k_1 < ... < k_S, the stack holds the flow from frame t to frame t - k_s
(see the convention in :mod:`flow`). Frames with t < k use the earliest frame, frame 0, so the
stack of frame 0 is all zeros (the flow from a frame to itself; not estimated).

Every frame is *encoded* once (RAFT: feature and context maps; classical backends: the grayscale
image) and that encoding is reused by every pair the frame takes part in: as the first image of
its own S pairs and as the second image of later frames' pairs. Only the last ``max(strides)``
encodings and frame 0's are kept, so memory is constant for any length of video. Pairs of a
chunk of ``batch_frames`` frames go to the backend in one call, which is what lets a GPU batch
them.

With a :class:`WarmHopBackend` whose ``warm_updates`` is set, each chunk goes to the backend
stride by stride instead, and every longer stride starts from its shorter strides' flows,
composed (:mod:`flow.warm_start`); the flows of the last ``max(strides)`` frames at the strides
those chains use are kept as well.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import torch

from flow.warm_start import compose, stride_chain


class HopBackend(Protocol):
    """What the 3D-HOP builder needs from a flow method.

    ``encode`` turns a batch of frames, (B, 3, H, W) uint8 RGB on the CPU, into B per-frame
    encodings (opaque to the builder). ``estimate`` takes two equally long sequences of
    encodings and returns the flow from each first to its second frame, (P, 2, H, W) float32
    on the CPU.
    """

    name: str

    def encode(self, frames: torch.Tensor) -> list[Any]: ...

    def estimate(self, first: Sequence[Any], second: Sequence[Any]) -> torch.Tensor: ...


class WarmHopBackend(HopBackend, Protocol):
    """A backend that can start a pair from a given flow (:class:`flow.backends.RaftHopBackend`).

    ``warm_updates``: None for no warm starts (the builder then treats it as a
    :class:`HopBackend`), else the refinement steps of a warm-started pair. ``estimate`` takes
    ``init``, (P, 2, H, W) starting flows in pixels, and ``updates``, the steps to run.
    """

    warm_updates: int | None

    def estimate(self, first: Sequence[Any], second: Sequence[Any], *,
                 init: torch.Tensor | None = None, updates: int | None = None
                 ) -> torch.Tensor: ...


def check_strides(strides: Sequence[int]) -> tuple[int, ...]:
    """Validate strides: positive, strictly increasing integers. Returns them as a tuple."""
    strides = tuple(int(k) for k in strides)
    if not strides or any(k < 1 for k in strides) or list(strides) != sorted(set(strides)):
        raise ValueError(f"strides must be positive and strictly increasing, got {strides}")
    return strides


def earlier_frame(index: int, stride: int) -> int:
    """The frame that frame ``index`` is paired with for ``stride``: t - k, or 0 when t < k."""
    return max(index - stride, 0)


def build_hops(frames: Iterable[torch.Tensor], backend: HopBackend, strides: Sequence[int], *,
               batch_frames: int = 8, start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(t, stack)`` for every frame t >= ``start``, in order.

    Args:
        frames: the video's frames in order, each (3, H, W) uint8 RGB (all the same size).
        backend: the flow method (see :class:`HopBackend`).
        strides: the strides k, positive and strictly increasing.
        batch_frames: frames per chunk; the chunk's S * batch_frames pairs go to the backend in
            one call.
        start: first frame to yield a stack for (to resume an interrupted run). Earlier frames
            are still read, and encoded only when a later pair needs them.

    Yields:
        ``(t, stack)`` with ``stack`` of shape (S, 2, H, W) float32: the flow from frame t to
        frame max(t - k_s, 0) for each stride.

    A backend with ``warm_updates`` set (see above) gets the pairs of each chunk stride by
    stride, the longer strides with warm starts (:mod:`flow.warm_start`).

    Raises:
        ValueError: bad strides or batch size, frames of differing shapes, or (with warm
            starts) a stride that is not a sum of shorter ones.
    """
    strides = check_strides(strides)
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    longest = strides[-1]
    encodings: dict[int, Any] = {}  # frame index -> encoding, bounded by the pruning below
    warm_updates = getattr(backend, "warm_updates", None)
    if warm_updates is not None and len(strides) > 1:
        # Raises for a stride that shorter ones cannot make up, before any frame is read.
        chains = {k: stride_chain(k, strides[:s]) for s, k in enumerate(strides) if s > 0}
        process = functools.partial(_process_chunk_warm, chains=chains, flows={},
                                    updates=warm_updates)
    else:
        process = _process_chunk
    chunk: list[tuple[int, torch.Tensor]] = []
    shape = None
    for index, frame in enumerate(frames):
        if shape is None:
            shape = tuple(frame.shape)
        if tuple(frame.shape) != shape or len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"frame {index} has shape {tuple(frame.shape)}; expected (3, H, W) "
                             f"like frame 0 {shape}")
        # A frame before `start` is needed only as the second image of a frame >= start.
        if index >= start - longest:
            chunk.append((index, frame))
        if len(chunk) == batch_frames:
            yield from process(chunk, encodings, backend, strides, start)
            chunk = []
    if chunk:
        yield from process(chunk, encodings, backend, strides, start)


def _process_chunk(chunk, encodings, backend, strides, start):
    new = backend.encode(torch.stack([frame for _, frame in chunk]))
    for (index, _), encoding in zip(chunk, new):
        encodings[index] = encoding
    wanted = [index for index, _ in chunk if index >= start]
    pairs = [(t, earlier_frame(t, k)) for t in wanted for k in strides]
    estimated = [(t, e) for t, e in pairs if t != e]  # a frame paired with itself has zero flow
    flows = {}
    if estimated:
        result = backend.estimate([encodings[t] for t, _ in estimated],
                                  [encodings[e] for _, e in estimated])
        flows = {pair: result[i] for i, pair in enumerate(estimated)}
    height, width = chunk[0][1].shape[-2:]
    for t in wanted:
        stack = torch.stack([
            flows[(t, e)] if (t, e) in flows else torch.zeros(2, height, width)
            for e in (earlier_frame(t, k) for k in strides)
        ])
        yield t, stack
    # Later frames t > newest pair with frames >= t - max(strides) (or 0, which this rule keeps
    # exactly while some later t < max(strides) still needs it): drop everything older.
    oldest_needed = chunk[-1][0] + 1 - strides[-1]
    for index in [i for i in encodings if i < oldest_needed]:
        del encodings[index]


def _process_chunk_warm(chunk, encodings, backend, strides, start, *, chains, flows, updates):
    """:func:`_process_chunk` with warm starts: stride by stride, each longer stride ``k``'s
    pairs start from the flows of ``chains[k]`` (:func:`flow.warm_start.stride_chain`)
    composed, and run ``updates`` refinement steps. ``flows`` keeps (frame, stride) -> flow
    across chunks for the strides the chains use.

    A pair's warm start uses only flows between its own two frames, so after a resume the
    frames from ``start - max(strides)`` on have every flow an uninterrupted run gave them:
    their pairs that stay within that window are estimated (not yielded), the same way. (The
    same arithmetic, that is: a GPU may round a batch of another size differently in the last
    bits, as for the cold path.)
    """
    new = backend.encode(torch.stack([frame for _, frame in chunk]))
    for (index, _), encoding in zip(chunk, new):
        encodings[index] = encoding
    floor = max(start - strides[-1], 0)
    height, width = chunk[0][1].shape[-2:]
    zero = torch.zeros(2, height, width)
    steps = {step for chain in chains.values() for step in chain}
    current: dict[tuple[int, int], torch.Tensor] = {}  # this chunk's flows, every stride

    def flow_of(t: int, k: int, known: dict) -> torch.Tensor:
        return zero if t == earlier_frame(t, k) else known[(t, k)]

    for k in strides:
        # Frames t >= start pair only with frames >= floor; earlier ones are computed only
        # where a later pair's chain can reach them.
        pairs = [(t, earlier_frame(t, k)) for t, _ in chunk]
        pairs = [(t, e) for t, e in pairs if t != e and e >= floor]
        if not pairs:
            continue
        first = [encodings[t] for t, _ in pairs]
        second = [encodings[e] for _, e in pairs]
        if k not in chains:
            result = backend.estimate(first, second)
        else:
            positions = [t for t, _ in pairs]
            init = None
            for step in chains[k]:
                field = torch.stack([flow_of(p, step, flows) for p in positions])
                init = field if init is None else compose(init, field)
                positions = [earlier_frame(p, step) for p in positions]
            result = backend.estimate(first, second, init=init, updates=updates)
        for i, (t, _) in enumerate(pairs):
            current[(t, k)] = result[i]
            if k in steps:
                flows[(t, k)] = result[i]
    for t, _ in chunk:
        if t >= start:
            yield t, torch.stack([flow_of(t, k, current) for k in strides])
    oldest_needed = chunk[-1][0] + 1 - strides[-1]
    for index in [i for i in encodings if i < oldest_needed]:
        del encodings[index]
    for key in [key for key in flows if key[0] < oldest_needed]:
        del flows[key]
