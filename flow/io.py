"""Flow files: Middlebury ``.flo`` and KITTI 16-bit PNG, read and written.

Every reader returns flow as float32 of shape (2, H, W) holding (u, v) in pixels, in the
project's convention (see :mod:`flow`): pixel x of the first image lies at x + flow(x) in the
second image. Both formats store flow in that same convention.

Middlebury ``.flo`` (little endian, no padding):

- bytes 0-3: the float32 ``202021.25`` (the ASCII text ``PIEH``), a sanity check;
- bytes 4-7: width W as int32; bytes 8-11: height H as int32;
- then H * W * 2 float32, row-major, u and v interleaved per pixel: u(0,0) v(0,0) u(0,1) ...

Flow components of magnitude ``>= 1e9`` mean "unknown" (the Middlebury ground truth marks
occluded and unmatched pixels that way); :func:`invalid_flow_mask` finds them.

KITTI flow PNG: 3 channels of uint16. Channel 1 (red) holds ``u * 64 + 2**15``, channel 2
(green) ``v * 64 + 2**15``, channel 3 (blue) is 1 where the flow is valid and 0 elsewhere. The
representable range is therefore [-512, 512) px with a step of 1/64 px. OpenCV orders channels
BGR, so in an array returned by ``cv2.imread`` the valid flag is channel 0 and u is channel 2.

Writers never leave a half-written file at the target path: the bytes go to a temporary file in
the same folder, which then replaces the target in one ``os.replace`` (atomic on POSIX and
Windows when both names are on the same file system).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import cv2
import numpy as np
import torch

FLO_MAGIC = 202021.25
UNKNOWN_FLOW_THRESHOLD = 1e9

_FLO_HEADER_BYTES = 12
_KITTI_SCALE = 64.0
_KITTI_OFFSET = 2.0**15


def invalid_flow_mask(
    flow: np.ndarray | torch.Tensor, threshold: float = UNKNOWN_FLOW_THRESHOLD
) -> np.ndarray | torch.Tensor:
    """Pixels whose flow is unknown: a component with magnitude ``>= threshold``, or not finite.

    Args:
        flow: flow field with shape (..., 2, H, W), numpy or torch.
        threshold: magnitude from which a component counts as the Middlebury "unknown" marker.

    Returns:
        bool mask with shape (..., H, W), True where the flow is unknown; the same array type as
        ``flow``.

    Raises:
        ValueError: if ``flow`` does not have 2 channels on axis -3.
    """
    if flow.ndim < 3 or flow.shape[-3] != 2:
        raise ValueError(
            f"invalid_flow_mask: expected flow of shape (..., 2, H, W), got {tuple(flow.shape)}"
        )
    if isinstance(flow, torch.Tensor):
        unknown = ~torch.isfinite(flow) | (flow.abs() >= threshold)
        return unknown.any(dim=-3)
    flow = np.asarray(flow)
    unknown = ~np.isfinite(flow) | (np.abs(flow) >= threshold)
    return unknown.any(axis=-3)


def _check_flow_array(flow: np.ndarray, path: Path) -> np.ndarray:
    """``flow`` as a float32 (2, H, W) array, or a ValueError naming ``path``."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[0] != 2 or flow.shape[1] == 0 or flow.shape[2] == 0:
        raise ValueError(f"{path}: flow to write must have shape (2, H, W), got {flow.shape}")
    return flow.astype(np.float32, copy=False)


def _write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The temporary is opened with ``"xb"`` under a unique name (not ``tempfile.mkstemp``, which
    creates mode 0600), so the file gets the usual umask permissions, as other outputs do.
    """
    temporary_name = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary_name, "xb") as stream:
            stream.write(data)
        os.replace(temporary_name, path)
    except BaseException as error:
        Path(temporary_name).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from error  # name the file
        raise


def read_flo(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Middlebury ``.flo`` file.

    Args:
        path: the file.

    Returns:
        flow with shape (2, H, W), float32, (u, v) in pixels. Unknown flow keeps its stored
        value (``>= 1e9``); see :func:`invalid_flow_mask`.

    Raises:
        ValueError: if the magic number is wrong, the header is short, the size is not positive,
            or the file holds fewer or more than H * W * 2 floats after the header.
        OSError: if the file cannot be opened.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < _FLO_HEADER_BYTES:
        raise ValueError(
            f"{path}: truncated .flo file: {len(data)} bytes, the header alone needs "
            f"{_FLO_HEADER_BYTES}"
        )
    magic = np.frombuffer(data, dtype="<f4", count=1, offset=0)[0]
    if magic != np.float32(FLO_MAGIC):
        raise ValueError(
            f"{path}: not a .flo file: magic number is {magic!r} (bytes {data[:4]!r}), "
            f"expected {FLO_MAGIC} (b'PIEH')"
        )
    width, height = (int(value) for value in np.frombuffer(data, dtype="<i4", count=2, offset=4))
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: invalid .flo size: width {width}, height {height}")
    expected_bytes = _FLO_HEADER_BYTES + 4 * 2 * width * height
    if len(data) < expected_bytes:
        raise ValueError(
            f"{path}: truncated .flo file: {len(data)} bytes, a {width}x{height} flow needs "
            f"{expected_bytes}"
        )
    if len(data) > expected_bytes:
        raise ValueError(
            f"{path}: .flo file has {len(data) - expected_bytes} bytes after the data of a "
            f"{width}x{height} flow (file size {len(data)}, expected {expected_bytes})"
        )
    interleaved = np.frombuffer(
        data, dtype="<f4", count=2 * width * height, offset=_FLO_HEADER_BYTES
    )
    return interleaved.reshape(height, width, 2).transpose(2, 0, 1).astype(np.float32)


def write_flo(path: str | os.PathLike[str], flow: np.ndarray) -> None:
    """Write a Middlebury ``.flo`` file, atomically.

    Args:
        path: the file to create or replace.
        flow: flow with shape (2, H, W), (u, v) in pixels; stored as float32 (unknown flow is
            written as given, e.g. ``1e9``).

    Raises:
        ValueError: if ``flow`` does not have shape (2, H, W) with H, W > 0.
    """
    path = Path(path)
    flow = _check_flow_array(flow, path)
    _, height, width = flow.shape
    header = (
        np.array([FLO_MAGIC], dtype="<f4").tobytes()
        + np.array([width, height], dtype="<i4").tobytes()
    )
    body = np.ascontiguousarray(flow.transpose(1, 2, 0), dtype="<f4").tobytes()
    _write_bytes_atomically(path, header + body)


def read_kitti_flow(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI flow PNG (3 channels of uint16).

    Args:
        path: the file.

    Returns:
        ``(flow, valid)``: flow with shape (2, H, W), float32, (u, v) in pixels, set to 0 where
        the flow is not valid; valid with shape (H, W), bool.

    Raises:
        ValueError: if the file cannot be decoded or is not a 3-channel 16-bit image.
        OSError: if the file cannot be opened.
    """
    path = Path(path)
    encoded = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if encoded.size else None
    if image is None:
        raise ValueError(f"{path}: OpenCV could not decode the file as an image")
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{path}: a KITTI flow PNG has 3 channels of uint16, got shape {image.shape} "
            f"of {image.dtype}"
        )
    blue, green, red = (image[:, :, channel] for channel in range(3))
    valid = blue > 0
    flow = np.stack([red, green]).astype(np.float32)
    flow = (flow - np.float32(_KITTI_OFFSET)) / np.float32(_KITTI_SCALE)
    flow[:, ~valid] = 0.0
    return flow, valid


def write_kitti_flow(
    path: str | os.PathLike[str], flow: np.ndarray, valid: np.ndarray | None = None
) -> None:
    """Write a KITTI flow PNG, atomically.

    Values are rounded to the nearest 1/64 px. Pixels that are not valid are written as all
    zeros, as in the KITTI ground-truth files.

    Args:
        path: the file to create or replace; it should end in ``.png``.
        flow: flow with shape (2, H, W), (u, v) in pixels.
        valid: bool mask with shape (H, W); None means every pixel whose flow is known (finite
            and below the Middlebury unknown marker, see :func:`invalid_flow_mask`).

    Raises:
        ValueError: if the shapes are wrong, or a valid pixel's flow is not finite or lies
            outside the representable range [-512, 512) px.
    """
    path = Path(path)
    flow = _check_flow_array(flow, path)
    if valid is None:
        valid = ~invalid_flow_mask(flow)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != flow.shape[1:]:
        raise ValueError(
            f"{path}: valid mask has shape {valid.shape}, flow has {flow.shape}; expected "
            f"(H, W) = {flow.shape[1:]}"
        )
    encoded = np.zeros(flow.shape, dtype=np.float64)
    encoded[:, valid] = np.rint(flow[:, valid].astype(np.float64) * _KITTI_SCALE + _KITTI_OFFSET)
    if valid.any():
        valid_values = encoded[:, valid]
        if (
            not np.all(np.isfinite(valid_values))
            or valid_values.min() < 0
            or valid_values.max() > 65535
        ):
            valid_flow = flow[:, valid]
            raise ValueError(
                f"{path}: KITTI PNG stores flow in [-512, 512) px; valid pixels range from "
                f"{np.nanmin(valid_flow)} to {np.nanmax(valid_flow)} "
                f"({np.count_nonzero(~np.isfinite(valid_flow))} non-finite values)"
            )
    image = np.stack([valid.astype(np.float64), encoded[1], encoded[0]], axis=-1).astype(np.uint16)
    success, buffer = cv2.imencode(".png", image)
    if not success:
        raise ValueError(f"{path}: OpenCV could not encode a {image.shape} uint16 PNG")
    _write_bytes_atomically(path, buffer.tobytes())
