"""Running background estimates of a video: an exponential moving average or a sliding median.

The appearance encoder of HOFAM may take, next to frame t, an estimate of the scene without its
moving objects. Both estimators here work online, with constant memory, in training and in
streaming inference alike; :data:`ESTIMATORS` names them and :func:`make_background` builds one.

``"ema"`` (:class:`RunningBackground`), the simplest:

    b_0 = f_0,    b_n = (1 - rate) * b_{n-1} + rate * f_n,

kept in float32 (rounding to uint8 at every step would stall the average: with rate 0.05 a
change smaller than 10 grey levels would never move a uint8 estimate). After a step change of
the scene from a to c at frame 1, ``b_n - c = (1 - rate)^n * (a - c)``: with the default rate
0.05 the estimate forgets half of an old scene in 14 frames and 95% in 59 frames. Its weakness
is the first frames: an object present in frame 0 stays in the estimate as a ghost for dozens
of frames, whether it moves away or not.

``"median"`` (:class:`RunningMedian`): the per-pixel median of the last :data:`MEDIAN_WINDOW`
(9) frames sampled every ``step`` frames (default :data:`MEDIAN_STEP`, 6, so the window spans 54
frames). A pixel covered by moving objects in fewer than half of the samples shows the scene
behind them, so ghosts go as soon as the object has moved on for half a window, and the
estimate never blends an object into the scene.

Measured (``benchmarks/RESULTS.md``): as plain background subtraction ("Background
estimators": |frame - background| > 30 on the 29 real scenes with ground truth in
../shared/data) the median is better, mean F 0.461 against 0.433 for the EMA, and 21 scenes
of 29 gain. As HOFAM's input it is not: the ablation row trained with it scores validation F
0.673 and test F 0.475 against 0.719 and 0.484 with the EMA ("HOFAM ablation"). So the EMA
stays the default; the median is an option of :class:`crossnet.hofam.HofamConfig`.

The background paired with frame t is the estimate over frames 0..t-1, never including frame t
itself (a foreground object standing still for a moment would otherwise leak into its own
background); frame 0 is paired with itself. :meth:`RunningBackground.advance` does exactly this,
so a streaming loop and :func:`running_backgrounds` (what the training datasets use) agree.

A moving camera. When the camera pans, every pixel of the frame differs from the estimate and
the background input says "all foreground". :meth:`RunningBackground.advance` may take the
camera's flow from frame t to frame t - 1 (:func:`crossnet.camera_motion.camera_flows`, zero
for a still camera): the estimate is first moved into frame t's pixel grid
(:func:`align_estimate`), and the parts of frame t that the estimate has not seen yet (entering
at the frame's edge) start from frame t itself, as frame 0 does. Only the EMA can be moved this
way; the median's samples would each need their own accumulated motion.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from crossnet.camera_motion import warp

DEFAULT_RATE = 0.05
MEDIAN_WINDOW = 9
MEDIAN_STEP = 6
ESTIMATORS = ("ema", "median")

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


def align_estimate(estimate: ArrayLike, motion: ArrayLike, frame: ArrayLike) -> ArrayLike:
    """The estimate of frame t - 1's scene moved into frame t's pixel grid.

    Args:
        estimate: float32, numpy (H, W, 3) or torch (3, H, W).
        motion: (2, H, W) the camera's flow from frame t to frame t - 1, pixels (array or
            tensor).
        frame: frame t, the layout of ``estimate``; fills the pixels whose position in frame
            t - 1 lies outside it.

    Returns:
        float32, the kind and layout of ``estimate``: pixel x holds the estimate at
        ``x + motion(x)`` (bilinear).
    """
    is_torch = isinstance(estimate, torch.Tensor)
    if is_torch:
        image, current = estimate, frame
    else:  # (H, W, 3) -> (3, H, W) views
        image = torch.from_numpy(np.ascontiguousarray(estimate)).permute(2, 0, 1)
        current = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    flow = torch.as_tensor(motion).to(device=image.device, dtype=torch.float32)
    height, width = image.shape[-2:]
    if tuple(flow.shape) != (2, height, width):
        raise ValueError(f"camera motion of shape {tuple(flow.shape)} for a {height}x{width} "
                         "background")
    moved = warp(image[None].float(), flow[None])[0]
    xs = torch.arange(width, device=flow.device) + flow[0]
    ys = torch.arange(height, device=flow.device)[:, None] + flow[1]
    outside = (xs < 0) | (xs > width - 1) | (ys < 0) | (ys > height - 1)
    moved = torch.where(outside, current.to(moved), moved)
    return moved if is_torch else moved.permute(1, 2, 0).contiguous().numpy()


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

    def advance(self, frame: ArrayLike, motion: ArrayLike | None = None) -> ArrayLike:
        """The background to pair with ``frame``, then fold ``frame`` in.

        Args:
            frame: the next frame.
            motion: the camera's flow from ``frame`` to the frame before it, (2, H, W) pixels,
                or None for a still camera: the estimate is moved along first
                (:func:`align_estimate`).

        Returns:
            A float32 copy of the estimate over the frames before ``frame``, or of ``frame``
            itself when it is the first.
        """
        if self._estimate is None:
            self.update(frame)
        elif motion is not None:
            self._estimate = align_estimate(self._estimate, motion, frame)
        before = self._estimate
        before = before.clone() if isinstance(before, torch.Tensor) else before.copy()
        self.update(frame)
        return before


# A median-of-9 sorting network (19 compare-exchanges of whole images; Paeth, "Median
# finding on a 3x3 grid", Graphics Gems, 1990): elementwise minimum/maximum over the 9 samples,
# 30x faster than np.median or torch.median over a stacked axis (0.5 against 14-20 ms for
# 9 frames of 320x240x3 on the development CPU), so updating the median costs nothing next to
# the flow.
_MEDIAN9_EXCHANGES = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8),
                      (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4),
                      (4, 2))


def _median(samples: list[ArrayLike]) -> ArrayLike:
    """The elementwise median of same-shaped arrays (numpy or torch), as float32.

    For an even count it is the mean of the two middle values, as :func:`numpy.median`.
    """
    is_torch = isinstance(samples[0], torch.Tensor)
    if len(samples) == MEDIAN_WINDOW:
        low, high = (torch.minimum, torch.maximum) if is_torch else (np.minimum, np.maximum)
        work = list(samples)
        for i, j in _MEDIAN9_EXCHANGES:
            work[i], work[j] = low(work[i], work[j]), high(work[i], work[j])
        middle = work[MEDIAN_WINDOW // 2]
        return middle.to(torch.float32) if is_torch else middle.astype(np.float32)
    # Fewer samples (the first frames of a video): sort them in their own dtype, and only the
    # two middle images in float32, to keep the memory of this rare path small.
    if is_torch:
        ordered = torch.sort(torch.stack(samples), dim=0).values
    else:
        ordered = np.sort(np.stack(samples), axis=0)
    count = len(samples)
    low, high = ordered[(count - 1) // 2], ordered[count // 2]
    if is_torch:
        return (low.to(torch.float32) + high.to(torch.float32)) / 2
    return (low.astype(np.float32) + high.astype(np.float32)) / 2


class RunningMedian:
    """The sliding-median background of a stream of frames (see the module docstring).

    Same interface and frame layouts as :class:`RunningBackground`. Keeps the last
    :data:`MEDIAN_WINDOW` sampled frames: frames 0, step, 2*step, ...; the estimate after
    folding frame t in is the median over the samples among frames 0..t. Before the window fills,
    the median is over the samples so far (frame 0 alone at first).

    Args:
        step: keep every step-th frame, >= 1.
    """

    def __init__(self, step: int = MEDIAN_STEP) -> None:
        if int(step) != step or step < 1:
            raise ValueError(f"step must be an integer >= 1, got {step}")
        self.step = int(step)
        self.reset()

    @property
    def estimate(self) -> ArrayLike | None:
        """The current float32 estimate over the frames seen so far; None before the first."""
        return self._estimate

    def reset(self) -> None:
        """Forget every frame (e.g. at a cut or a new video)."""
        self._samples: deque[ArrayLike] = deque(maxlen=MEDIAN_WINDOW)
        self._seen = 0
        self._estimate: ArrayLike | None = None

    def update(self, frame: ArrayLike) -> ArrayLike:
        """Fold ``frame`` in and return the new float32 estimate.

        Raises:
            ValueError: the frame's shape differs from the earlier frames'.
        """
        if self._samples and tuple(frame.shape) != tuple(self._samples[0].shape):
            raise ValueError(f"frame shape {tuple(frame.shape)} differs from the earlier frames' "
                             f"{tuple(self._samples[0].shape)}")
        if self._seen % self.step == 0:
            if isinstance(frame, torch.Tensor):
                sample = frame.detach().clone()
            else:
                sample = np.array(frame, copy=True)
            self._samples.append(sample)
            self._estimate = _median(list(self._samples))
        self._seen += 1
        return self._estimate

    def advance(self, frame: ArrayLike, motion: ArrayLike | None = None) -> ArrayLike:
        """The background to pair with ``frame`` (a float32 copy of the estimate over the frames
        before it, or of ``frame`` itself when it is the first), then fold ``frame`` in.

        Raises:
            ValueError: a camera ``motion``: the median cannot be moved with the camera.
        """
        if motion is not None:
            raise ValueError("the median background cannot follow a moving camera; use the "
                             "'ema' estimator")
        before = frame if self._estimate is None else self._estimate
        if isinstance(before, torch.Tensor):
            before = before.detach().to(torch.float32).clone()
        else:
            before = np.array(before, dtype=np.float32)
        self.update(frame)
        return before


def make_background(estimator: str = "ema", *, rate: float = DEFAULT_RATE
                    ) -> RunningBackground | RunningMedian:
    """A new running background of the named kind (one of :data:`ESTIMATORS`).

    Args:
        estimator: ``"ema"`` or ``"median"``.
        rate: the EMA's rate (ignored by the median).

    Raises:
        ValueError: an unknown estimator name.
    """
    if estimator == "ema":
        return RunningBackground(rate)
    if estimator == "median":
        return RunningMedian()
    raise ValueError(f"background estimator must be one of {', '.join(ESTIMATORS)}, "
                     f"got {estimator!r}")


def running_backgrounds(frames: Iterable[ArrayLike], *, rate: float = DEFAULT_RATE,
                        estimator: str = "ema",
                        motions: Iterable[ArrayLike | None] | None = None
                        ) -> Iterator[ArrayLike]:
    """The uint8 background of every frame of a video, in order (see the module docstring).

    Args:
        frames: the video's frames, numpy (H, W, 3) or torch (3, H, W), values in [0, 255].
        rate: EMA rate, in (0, 1].
        estimator: one of :data:`ESTIMATORS`.
        motions: per frame, the camera's flow to the frame before it (see
            :meth:`RunningBackground.advance`), or None for a still camera throughout.

    Yields:
        For frame t, the estimate over frames 0..t-1 (frame 0: itself), rounded to uint8, with
        the frames' kind and layout.
    """
    running = make_background(estimator, rate=rate)
    if motions is None:
        for frame in frames:
            yield to_uint8(running.advance(frame))
        return
    for frame, motion in zip(frames, motions, strict=True):
        yield to_uint8(running.advance(frame, motion))
