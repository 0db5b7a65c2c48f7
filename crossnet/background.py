"""A running background estimate: an exponential moving average (EMA) of a video's frames.

The appearance encoder of HOFAM may take, next to frame t, an estimate of the scene without its
moving objects. The estimate here is the simplest one that works online, with constant memory,
in training and in streaming inference alike:

    b_0 = f_0,    b_n = (1 - rate) * b_{n-1} + rate * f_n,

kept in float32 (rounding to uint8 at every step would stall the average: with rate 0.05 a
change smaller than 10 grey levels would never move a uint8 estimate). After a step change of
the scene from a to c at frame 1, ``b_n - c = (1 - rate)^n * (a - c)``: with the default rate
0.05 the estimate forgets half of an old scene in 14 frames and 95% in 59 frames.

The background paired with frame t is the estimate over frames 0..t-1, never including frame t
itself (a foreground object standing still for a moment would otherwise leak into its own
background); frame 0 is paired with itself. :meth:`RunningBackground.advance` does exactly this,
so a streaming loop and :func:`running_backgrounds` (what the training datasets use) agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

DEFAULT_RATE = 0.05

ArrayLike = np.ndarray | torch.Tensor


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    return rate


def ema_update(background: ArrayLike, frame: ArrayLike, rate: float) -> ArrayLike:
    """One EMA step: ``(1 - rate) * background + rate * frame``.

    Args:
        background: the current estimate, floating point, any shape.
        frame: the new frame, same shape (any dtype; converted to the background's dtype).
        rate: weight of the new frame, in (0, 1].

    Returns:
        The new estimate, same type, shape and dtype as ``background``.

    Raises:
        ValueError: a rate outside (0, 1], a non-floating background, or differing shapes.
    """
    rate = _check_rate(rate)
    if tuple(background.shape) != tuple(frame.shape):
        raise ValueError(f"background shape {tuple(background.shape)} differs from frame shape "
                         f"{tuple(frame.shape)}")
    if isinstance(background, torch.Tensor):
        if not background.is_floating_point():
            raise ValueError(f"background must be floating point, got {background.dtype}")
        return torch.lerp(background, torch.as_tensor(frame).to(background), rate)
    if not np.issubdtype(background.dtype, np.floating):
        raise ValueError(f"background must be floating point, got {background.dtype}")
    return background + rate * (np.asarray(frame, dtype=background.dtype) - background)


def to_uint8(estimate: ArrayLike) -> ArrayLike:
    """A float estimate rounded and clamped to uint8 (numpy or torch, same layout)."""
    if isinstance(estimate, torch.Tensor):
        return estimate.round().clamp(0, 255).to(torch.uint8)
    return np.clip(np.rint(estimate), 0, 255).astype(np.uint8)


class RunningBackground:
    """The EMA background of a stream of frames, updated one frame at a time.

    Frames are numpy (H, W, 3) or torch (3, H, W) (any dtype, values in [0, 255]); the estimate
    has the same kind and layout as the frames, in float32. All frames of one stream must have
    one shape.

    Args:
        rate: weight of each new frame, in (0, 1]; see the module docstring.

    Example, streaming inference (the background of frame t excludes frame t)::

        running = RunningBackground(rate=0.05)
        for frame in frames:
            background = running.advance(frame)   # over the frames before this one
            mask = model(frame, background)
    """

    def __init__(self, rate: float = DEFAULT_RATE) -> None:
        self.rate = _check_rate(rate)
        self._estimate: ArrayLike | None = None

    @property
    def estimate(self) -> ArrayLike | None:
        """The current float32 estimate over the frames seen so far; None before the first."""
        return self._estimate

    def reset(self) -> None:
        """Forget every frame (e.g. at a cut or a new video)."""
        self._estimate = None

    def update(self, frame: ArrayLike) -> ArrayLike:
        """Fold ``frame`` into the estimate and return the new estimate (float32).

        The first frame initialises the estimate to itself.

        Raises:
            ValueError: the frame's shape differs from the earlier frames'.
        """
        if self._estimate is None:
            if isinstance(frame, torch.Tensor):
                self._estimate = frame.detach().to(torch.float32).clone()
            else:
                self._estimate = np.array(frame, dtype=np.float32)
        else:
            self._estimate = ema_update(self._estimate, frame, self.rate)
        return self._estimate

    def advance(self, frame: ArrayLike) -> ArrayLike:
        """The background to pair with ``frame``, then fold ``frame`` in.

        Returns:
            A float32 copy of the estimate over the frames before ``frame``, or of ``frame``
            itself when it is the first.
        """
        if self._estimate is None:
            self.update(frame)
        before = self._estimate
        before = before.clone() if isinstance(before, torch.Tensor) else before.copy()
        self.update(frame)
        return before


def running_backgrounds(frames: Iterable[ArrayLike], *, rate: float = DEFAULT_RATE
                        ) -> Iterator[ArrayLike]:
    """The uint8 background of every frame of a video, in order (see the module docstring).

    Args:
        frames: the video's frames, numpy (H, W, 3) or torch (3, H, W), values in [0, 255].
        rate: EMA rate, in (0, 1].

    Yields:
        For frame t, the estimate over frames 0..t-1 (frame 0: itself), rounded to uint8, with
        the frames' kind and layout.
    """
    running = RunningBackground(rate)
    for frame in frames:
        yield to_uint8(running.advance(frame))
