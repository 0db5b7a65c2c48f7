"""Reading frames and label masks from image files, and writing PNGs atomically.

OpenCV decodes to BGR(A) in whatever bit depth the file holds; everything here hands back
8-bit RGB frames or 8-bit single-channel label masks, so callers never see channel order or
bit depth. Unreadable files raise :class:`~pipelines.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pipelines.errors import InputError
from pipelines.outputs import write_bytes_atomic

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
"""File suffixes (lower case) treated as images when listing frame folders."""


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an image by its suffix (case-insensitive), e.g. ``b00247.BMP``."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _imread_unchanged(path: str | os.PathLike) -> np.ndarray:
    """Decodes ``path`` with all channels and its own bit depth, or raises InputError."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # e.g. a damaged header that announces a gigantic image
        reason = getattr(error, "err", "") or str(error).strip()
        raise InputError(f"{path}: not a readable image (OpenCV: {reason})") from None
    if image is None or image.size == 0:
        raise InputError(f"{path}: not a readable image (OpenCV could not decode it)")
    return image


def _to_uint8(image: np.ndarray, *, path: str | os.PathLike) -> np.ndarray:
    """Scales a decoded image to uint8: 16-bit values map 0..65535 -> 0..255 (rounded)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # 65535 / 257 = 255 exactly, so full scale maps to full scale.
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise InputError(f"{path}: unsupported pixel type {image.dtype} (expected 8 or 16 bit)")


def _channels_last(image: np.ndarray, *, path: str | os.PathLike) -> np.ndarray:
    """Returns ``image`` as (H, W, C) with C in {1, 3, 4}, or raises InputError."""
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        return image
    raise InputError(f"{path}: unsupported image shape {image.shape}")


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Reads any common image file as an 8-bit RGB frame.

    Grayscale is replicated to three channels, 16-bit is scaled to 8 bit, an alpha channel is
    dropped (not composited: video frames have no meaningful transparency).

    Args:
        path: a PNG, JPEG, BMP, TIFF, ... file.

    Returns:
        The frame, shape (H, W, 3), uint8, RGB order.

    Raises:
        InputError: the file is missing, cannot be decoded, or has an unsupported layout.
    """
    image = _channels_last(_to_uint8(_imread_unchanged(path), path=path), path=path)
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_mask(path: str | os.PathLike) -> np.ndarray:
    """Reads a ground-truth or ROI mask as one 8-bit channel, keeping its label values.

    CDnet-style masks hold labels (0, 50, 85, 170, 255) rather than intensities, so a colour
    mask whose channels are all equal (SBI stores its GT that way) keeps the values of one
    channel exactly; only a mask with genuinely different channels is converted to gray.
    A 16-bit mask is scaled to 8 bit only when it uses values above 255; a 16-bit file that
    already stores 8-bit labels keeps them.

    Args:
        path: the mask image file.

    Returns:
        The labels, shape (H, W), uint8.

    Raises:
        InputError: the file is missing, cannot be decoded, or has an unsupported layout.
    """
    image = _imread_unchanged(path)
    if image.dtype == np.uint16 and int(image.max()) <= 255:
        image = image.astype(np.uint8)
    image = _channels_last(_to_uint8(image, path=path), path=path)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0])
    first = image[:, :, 0]
    if np.array_equal(first, image[:, :, 1]) and np.array_equal(first, image[:, :, 2]):
        return np.ascontiguousarray(first)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def write_png_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` as a PNG so that ``path`` never holds a partial file.

    The image is encoded in memory, written to a temporary file in the same folder, then
    renamed over ``path`` with :func:`os.replace` (atomic on one file system), so a reader
    or an interrupted run sees either the old file or the complete new one.

    Args:
        path: destination file; its folder must exist.
        array: a mask (H, W) or an RGB frame (H, W, 3), uint8 or uint16. RGB order is
            converted to the BGR order OpenCV writes, so :func:`read_image_rgb` round-trips.

    Raises:
        ValueError: ``array`` has an unsupported shape or dtype, or PNG encoding failed.
        OSError: the file could not be written (``path`` keeps its old content, if any).
    """
    path = Path(path)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: PNG needs uint8 or uint16 data, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim != 2:
        raise ValueError(f"{path}: expected shape (H, W) or (H, W, 3), got {array.shape}")
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode an array of shape {array.shape}")
    write_bytes_atomic(path, encoded.tobytes())
