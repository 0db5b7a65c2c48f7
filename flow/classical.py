"""Classical flow backends (OpenCV DIS and Farneback) behind the project's flow-backend interface.

A flow backend is any callable object with

- ``name: str``, recorded with its outputs (e.g. in the HDF5 cache attributes);
- ``__call__(first, second) -> torch.Tensor``: ``first`` and ``second`` are RGB images with
  shape (B, 3, H, W) or (3, H, W), uint8 or floating point in [0, 255]; the result is float32
  flow with shape (B, 2, H, W) or (2, H, W) from ``first`` to ``second`` (the convention of
  :mod:`flow`: pixel x of ``first`` lies at x + flow(x) in ``second``), on the input's device.

The learned network's wrapper follows the same :class:`FlowBackend` protocol, so the 3D-HOP
stage and the benchmarks take either. The classical backends also offer
``compute_flow(first_rgb, second_rgb)`` on numpy (H, W, 3) uint8 images.

OpenCV runs on the CPU: tensors on another device are copied to the host and the flow copied
back. Both algorithms work on grayscale; the RGB -> gray conversion is OpenCV's (ITU-R BT.601
weights). OpenCV parallelises inside each call with its own thread pool; this module leaves
``cv2.setNumThreads`` alone, so the caller (e.g. a data-loader worker) decides. Each call builds
its own OpenCV flow object, so one backend object may be shared between Python threads.

Accuracy measured on the Middlebury "other" training scenes with ground truth (mean EPE in px
over the pixels with known flow; OpenCV 5.0, default parameters; time per pair on a 2-core CPU;
checked loosely by ``tests/flow/test_classical.py``):

============== ========== ========= ======= ==============
backend        Dimetrodon Hydrangea Venus   time (584x388)
============== ========== ========= ======= ==============
dis-ultrafast  0.361      0.539     0.723   3 ms
dis-fast       0.286      0.421     0.564   4 ms
dis-medium     0.156      0.253     0.384   18 ms
farneback      0.744      0.542     1.290   60 ms
============== ========== ========= ======= ==============
"""

from __future__ import annotations

import abc
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

DISPreset = Literal["ultrafast", "fast", "medium"]

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

CLASSICAL_BACKEND_NAMES = ("dis-ultrafast", "dis-fast", "dis-medium", "farneback")


@runtime_checkable
class FlowBackend(Protocol):
    """What every flow backend, classical or learned, offers."""

    name: str

    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Flow from ``first`` to ``second``.

        Args:
            first: RGB images with shape (B, 3, H, W) or (3, H, W), uint8 or float in [0, 255].
            second: same shape as ``first``.

        Returns:
            float32 flow with shape (B, 2, H, W) or (2, H, W), on the device of ``first``.
        """
        ...


def _check_rgb_pair(name: str, first: np.ndarray, second: np.ndarray) -> None:
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(
            f"{name}: images must be RGB uint8 with shape (H, W, 3), got {first.shape} of "
            f"{first.dtype}"
        )
    if first.shape != second.shape or first.dtype != second.dtype:
        raise ValueError(
            f"{name}: images differ: {first.shape} of {first.dtype} vs {second.shape} of "
            f"{second.dtype}"
        )


def _to_uint8_images(name: str, images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) uint8 or float [0, 255] tensor -> (B, H, W, 3) uint8 numpy on the host."""
    images = images.detach()
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise ValueError(f"{name}: images must be uint8 or floating point, got {images.dtype}")
        images = images.round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(images.to("cpu").permute(0, 2, 3, 1).numpy())


class _OpenCVFlow(abc.ABC):
    """Shared image plumbing; subclasses implement ``_gray_flow`` on one grayscale uint8 pair."""

    name: str

    def compute_flow(self, first_rgb: np.ndarray, second_rgb: np.ndarray) -> np.ndarray:
        """Flow from ``first_rgb`` to ``second_rgb``.

        Args:
            first_rgb: RGB image with shape (H, W, 3), uint8.
            second_rgb: RGB image with the same shape and dtype.

        Returns:
            flow with shape (2, H, W), float32, (u, v) in pixels.

        Raises:
            ValueError: if the images are not RGB uint8 of one shape.
        """
        _check_rgb_pair(self.name, first_rgb, second_rgb)
        first_gray = cv2.cvtColor(first_rgb, cv2.COLOR_RGB2GRAY)
        second_gray = cv2.cvtColor(second_rgb, cv2.COLOR_RGB2GRAY)
        flow = self._gray_flow(first_gray, second_gray)
        return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)

    @abc.abstractmethod
    def _gray_flow(self, first_gray: np.ndarray, second_gray: np.ndarray) -> np.ndarray:
        """(H, W) uint8 pair -> (H, W, 2) float32 flow."""

    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Flow from ``first`` to ``second``.

        Args:
            first: RGB images with shape (B, 3, H, W) or (3, H, W), uint8 or float in [0, 255]
                (floats are rounded and clamped to uint8).
            second: same shape as ``first``.

        Returns:
            float32 flow with shape (B, 2, H, W) or (2, H, W), on the device of ``first``.

        Raises:
            ValueError: if the shapes differ or are not (B, 3, H, W) / (3, H, W).
        """
        if tuple(first.shape) != tuple(second.shape):
            raise ValueError(
                f"{self.name}: first and second shapes differ: {tuple(first.shape)} vs "
                f"{tuple(second.shape)}"
            )
        if first.ndim not in (3, 4) or first.shape[-3] != 3:
            raise ValueError(
                f"{self.name}: images must have shape (B, 3, H, W) or (3, H, W), got "
                f"{tuple(first.shape)}"
            )
        unbatched = first.ndim == 3
        if unbatched:
            first, second = first.unsqueeze(0), second.unsqueeze(0)
        first_images = _to_uint8_images(self.name, first)
        second_images = _to_uint8_images(self.name, second)
        flows = np.stack(
            [self.compute_flow(a, b) for a, b in zip(first_images, second_images, strict=True)]
        )
        flow = torch.from_numpy(flows).to(first.device)
        return flow[0] if unbatched else flow

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# OpenCV 5.0's DIS asserts on frames with both sides under 12 pixels and crashes the process
# (segmentation fault) or asserts on some low, wide ones: 80x24, 320x28, 160x12 with the
# ultrafast and fast presets. Tried with three presets (widths 8-4096, heights 8-4096): every
# frame at least 32 pixels high worked, and so did every frame at most 32 pixels wide (tall,
# narrow ones included) with a side of 12 or more. Those two cases are what DIS is given.
DIS_SAFE_SIDE = 32
DIS_MIN_SIDE = 12


def dis_refuses(width: int, height: int) -> bool:
    """Whether a frame of ``width`` x ``height`` is outside the sizes DIS is known to handle."""
    if max(width, height) < DIS_MIN_SIDE:
        return True
    return height < DIS_SAFE_SIDE and width > DIS_SAFE_SIDE


class DISFlow(_OpenCVFlow):
    """Dense Inverse Search flow (Kroeger et al., ECCV 2016) with an OpenCV preset.

    Args:
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"`` (OpenCV's
            ``DISOPTICAL_FLOW_PRESET_*``: more patches and variational refinement iterations,
            slower and more accurate, in that order).

    Raises:
        ValueError: if ``preset`` is not one of the three.
    """

    def __init__(self, preset: DISPreset = "medium") -> None:
        if preset not in _DIS_PRESETS:
            raise ValueError(
                f"DISFlow: unknown preset {preset!r}; valid presets: {sorted(_DIS_PRESETS)}"
            )
        self.preset = preset
        self.name = f"dis-{preset}"

    def _gray_flow(self, first_gray: np.ndarray, second_gray: np.ndarray) -> np.ndarray:
        height, width = first_gray.shape
        if dis_refuses(width, height):
            # OpenCV would stop with an assertion, or crash, deep inside DIS; say what to
            # change instead.
            raise ValueError(f"{self.name}: frames of {width}x{height} pixels; DIS needs them "
                             f"at least {DIS_SAFE_SIDE} high, or else at most {DIS_SAFE_SIDE} "
                             f"wide with a side of at least {DIS_MIN_SIDE}; use larger frames "
                             "or --size")
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
        return dis.calc(first_gray, second_gray, None)


class FarnebackFlow(_OpenCVFlow):
    """Farneback polynomial-expansion flow (SCIA 2003), ``cv2.calcOpticalFlowFarneback``.

    The defaults were chosen by mean EPE over the three Middlebury "other" scenes with ground
    truth (Dimetrodon, Hydrangea, Venus), searching levels 3-6, windows 9-31, iterations 3-10,
    ``poly_n``/``poly_sigma`` 5/1.1, 5/1.2, 7/1.5 and box/Gaussian windows. The common textbook
    setting (window 15, 3 iterations) scores 0.904 px; window 25 with 5 iterations 0.859 px,
    within 0.002 px of the best found (window 31, 10 iterations) at about half its cost.
    ``poly_n=7`` and the Gaussian window were worse on every scene. The pyramid depth made no
    difference there (motions up to 10 px); 5 levels keep room for larger motions.

    Args:
        pyramid_scale: image scale between pyramid levels, < 1.
        levels: number of pyramid levels including the full-resolution one.
        window_size: averaging window side in pixels; larger is more robust and blurrier.
        iterations: iterations at each pyramid level.
        poly_n: neighbourhood side for the polynomial expansion (5 or 7).
        poly_sigma: Gaussian sigma of that neighbourhood (1.1 for ``poly_n=5``, 1.5 for 7).
        gaussian_window: average with a Gaussian window instead of a box filter.
    """

    name = "farneback"

    def __init__(
        self,
        *,
        pyramid_scale: float = 0.5,
        levels: int = 5,
        window_size: int = 25,
        iterations: int = 5,
        poly_n: int = 5,
        poly_sigma: float = 1.1,
        gaussian_window: bool = False,
    ) -> None:
        if not 0.0 < pyramid_scale < 1.0:
            raise ValueError(
                f"FarnebackFlow: pyramid_scale must lie in (0, 1), got {pyramid_scale}"
            )
        if levels < 1 or window_size < 1 or iterations < 1:
            raise ValueError(
                f"FarnebackFlow: levels, window_size and iterations must be >= 1, got {levels}, "
                f"{window_size}, {iterations}"
            )
        if poly_n not in (5, 7):
            raise ValueError(f"FarnebackFlow: poly_n must be 5 or 7, got {poly_n}")
        self.pyramid_scale = pyramid_scale
        self.levels = levels
        self.window_size = window_size
        self.iterations = iterations
        self.poly_n = poly_n
        self.poly_sigma = poly_sigma
        self.gaussian_window = gaussian_window

    def _gray_flow(self, first_gray: np.ndarray, second_gray: np.ndarray) -> np.ndarray:
        flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if self.gaussian_window else 0
        return cv2.calcOpticalFlowFarneback(
            first_gray,
            second_gray,
            None,
            self.pyramid_scale,
            self.levels,
            self.window_size,
            self.iterations,
            self.poly_n,
            self.poly_sigma,
            flags,
        )


def make_classical_backend(name: str) -> DISFlow | FarnebackFlow:
    """Build a classical backend from its name.

    Args:
        name: one of ``"dis-ultrafast"``, ``"dis-fast"``, ``"dis-medium"``, ``"farneback"``.

    Returns:
        the backend, with default parameters; its ``name`` equals ``name``.

    Raises:
        ValueError: for any other name, listing the valid ones.
    """
    if name == "farneback":
        return FarnebackFlow()
    if name in CLASSICAL_BACKEND_NAMES:
        return DISFlow(name.removeprefix("dis-"))
    raise ValueError(
        f"unknown classical flow backend {name!r}; valid names: "
        f"{', '.join(CLASSICAL_BACKEND_NAMES)}"
    )
