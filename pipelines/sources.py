"""Frame sources: one iterator interface over every input a user has.

A source yields :class:`Frame` items (frame number, RGB frame, optional ground-truth mask)
and describes itself with ``name``, ``path``, ``fps``, ``num_frames`` and ``frame_size``.
Iterating a source again reopens it, so one source object serves several passes.

Frame numbers: for image files, the trailing integer of the file name (``in000042.png`` ->
42), which is how CDnet, SBI and UCSD pair frames with ``gtNNNNNN.png`` masks; for videos
and streams, the 1-based index of the decoded frame.

Every source takes ``size=(width, height)``, the processing size: frames are resized with
``cv2.INTER_AREA`` when shrinking (it averages, so no aliasing) and ``cv2.INTER_LINEAR``
when enlarging; label masks with ``cv2.INTER_NEAREST`` so no new label values appear.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from pipelines.errors import InputError
from pipelines.imageio import is_image_file, read_image_rgb

logger = logging.getLogger(__name__)

MIN_FRAMES = 2
"""Fewest frames a source needs for segmentation or a 3D-HOP: one frame has no motion."""

TRUNCATED_SHARE = 0.9
"""A video that decodes fewer than this share of the frames its container announces is reported
as truncated or damaged (and still used: the frames that decode are whole)."""

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DIGITS = re.compile(r"\d+")
# JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC), which carry the image size.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class Frame:
    """One frame of a source.

    Attributes:
        number: the frame's own number: the trailing integer of its file name, or for a
            video or stream the 1-based index of the decoded frame.
        rgb: the frame, shape (H, W, 3), uint8, RGB order.
        mask: ground-truth labels, shape (H, W), uint8 with CDnet values (0 background,
            50 shadow, 85 outside ROI, 170 unknown, 255 foreground), or None without GT.
    """

    number: int
    rgb: np.ndarray
    mask: np.ndarray | None


@runtime_checkable
class Source(Protocol):
    """What every frame source provides.

    Attributes:
        name: a short name for outputs and logs (file stem, folder name, scene name).
        path: the file, folder, camera index or URL the frames come from.
        fps: frames per second when the container says so, else None.
        num_frames: the number of frames when known or estimated (a container's frame
            count can be off by a few), else None (live streams).
        frame_size: (width, height) of the yielded frames, after resizing.
        native_size: (width, height) of the frames as decoded, before resizing.
    """

    name: str
    path: str
    fps: float | None
    num_frames: int | None
    frame_size: tuple[int, int]
    native_size: tuple[int, int]

    def __iter__(self) -> Iterator[Frame]: ...


def trailing_integer(name: str | os.PathLike) -> int | None:
    """The last run of digits in a file's stem, or None when it has none.

    ``Candela_m1.10_000042.png`` -> 42, ``frame_7.jpg`` -> 7, ``gt0001.png`` -> 1,
    ``b00247.bmp`` -> 247, ``background.png`` -> None.
    """
    runs = _DIGITS.findall(Path(name).stem)
    return int(runs[-1]) if runs else None


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validates a (width, height) processing size and returns it as a tuple of ints.

    Raises:
        InputError: ``size`` is not two positive integers.
    """
    if size is None:
        return None
    values = tuple(size)
    if len(values) != 2 or not all(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0
        for value in values
    ):
        raise InputError(f"size={size!r}: expected (width, height) as two positive integers")
    return int(values[0]), int(values[1])


def resize_rgb(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resizes a frame to ``size`` = (width, height); None or the same size returns it as is.

    Args:
        rgb: the frame, shape (H, W, 3) or (H, W).

    Returns:
        The frame, shape (height, width, 3) (or (height, width)), same dtype.
    """
    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    shrinking = size[0] <= rgb.shape[1] and size[1] <= rgb.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interpolation)


def resize_labels(labels: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resizes a label mask to ``size`` = (width, height) with nearest neighbour.

    Args:
        labels: the mask, shape (H, W), uint8 (or bool).

    Returns:
        The mask, shape (height, width), same dtype and no label values that were not in it.
    """
    if size is None or (labels.shape[1], labels.shape[0]) == size:
        return labels
    if labels.dtype == bool:
        resized = cv2.resize(labels.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        return resized.astype(bool)
    return cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """Converts a frame decoded by cv2.VideoCapture (BGR, BGRA or gray) to (H, W, 3) RGB."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by name.

    Hidden files (``.DS_Store``, ``._frame1.png``), folders and non-image files are skipped.
    """
    return [
        file
        for file in sorted(Path(folder).iterdir())
        if not file.name.startswith(".") and is_image_file(file) and file.is_file()
    ]


def number_files(files: Iterable[Path]) -> list[tuple[int, Path]]:
    """Pairs each file with the trailing integer of its name, sorted by that number.

    Returns:
        (number, file) pairs, numbers strictly increasing.

    Raises:
        InputError: a file has no integer in its name, or two files share a number.
    """
    numbered: dict[int, Path] = {}
    for file in files:
        number = trailing_integer(file.name)
        if number is None:
            raise InputError(
                f"{file}: image file without a frame number in its name (frames are ordered "
                "and paired by the trailing integer, e.g. in000042.png)"
            )
        if number in numbered:
            raise InputError(
                f"{file.parent}: {numbered[number].name} and {file.name} both have frame "
                f"number {number}"
            )
        numbered[number] = file
    return sorted(numbered.items())


def numbered_image_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """The image files directly in ``folder`` with their numbers, sorted by number.

    Returns:
        (number, file) pairs, numbers strictly increasing; empty when there are no images.

    Raises:
        InputError: an image has no integer in its name, or two images share a number.
    """
    return number_files(list_image_files(folder))


def _refuse_a_scene_without_ground_truth(folder: Path) -> None:
    """InputError when ``folder`` holds what a scene folder does (``in/`` or ``input/`` and an
    ROI image) but no ``groundtruth/``: read as a frame folder, it would fail on the ROI
    image's missing frame number, a message that names the wrong problem."""
    frames = next((name for name in ("in", "input") if (folder / name).is_dir()), None)
    if frames is None:
        return
    roi = next((file for file in list_image_files(folder) if file.stem.lower() == "roi"), None)
    if roi is not None:
        raise InputError(f"{folder}: has {frames}/ and {roi.name} as a scene folder does, but no "
                         f"groundtruth/ folder; add it, or give {folder / frames} to use the "
                         "frames without masks")


def _declared_size(file: Path) -> tuple[int, int] | None:
    """(width, height) that a PNG, JPEG or BMP file declares in its header, read without
    decoding the image (a few hundred bytes); None for other formats and for a header this
    does not understand (the frame is checked when it is decoded)."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(26)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return width, height
            # BMP: a BITMAPINFOHEADER or later (the 12-byte OS/2 one has 16-bit sizes).
            if head.startswith(b"BM") and len(head) == 26 and head[14] >= 40:
                width, height = struct.unpack("<ii", head[18:26])  # bottom-up: height < 0
                return width, abs(height)
            if head.startswith(b"\xff\xd8"):
                handle.seek(2)
                while handle.read(1) == b"\xff":
                    marker = handle.read(1)
                    while marker == b"\xff":  # fill bytes may pad before a marker
                        marker = handle.read(1)
                    if not marker:
                        return None
                    if marker[0] in _JPEG_FRAME_MARKERS:
                        height, width = struct.unpack(">xxxHH", handle.read(7))
                        return width, height
                    length = struct.unpack(">H", handle.read(2))[0]  # counts its own 2 bytes
                    if length < 2:
                        return None
                    handle.seek(length - 2, os.SEEK_CUR)
    except (OSError, struct.error):
        pass
    return None


def _decoded_frames(capture: cv2.VideoCapture, size: tuple[int, int] | None, *, name: str,
                    mixed_sizes: bool = False) -> Iterator[tuple[int, Frame]]:
    """(count so far, frame) for each frame OpenCV decodes, numbered 1, 2, ...; releases the
    capture when done or abandoned.

    Each frame is resized as soon as it is decoded, so at most one frame of the native size is
    held at a time. Without ``size``, a frame whose size differs from the first one's (some
    streams change resolution mid-way) raises InputError naming ``name``, unless
    ``mixed_sizes``.
    """
    try:
        number = 0
        first_size = None
        while True:
            try:
                ok, frame = capture.read()
            except cv2.error as error:  # a decoder assertion on damaged data
                raise InputError(f"{name}: frame {number + 1} cannot be decoded (OpenCV: "
                                 f"{getattr(error, 'err', '') or error})") from None
            if not ok or frame is None:
                return
            number += 1
            native = (frame.shape[1], frame.shape[0])
            first_size = first_size or native
            if size is None and native != first_size and not mixed_sizes:
                raise InputError(
                    f"{name}: frame {number} is {native[0]}x{native[1]}, earlier frames "
                    f"{first_size[0]}x{first_size[1]} (pass a processing size to resize all "
                    "frames)"
                )
            rgb = resize_rgb(bgr_to_rgb(frame), size)
            del frame  # not kept alive while the generator waits: a 4K frame is 25 MB
            yield number, Frame(number, rgb, None)
    finally:
        capture.release()


def _fps_or_none(capture: cv2.VideoCapture) -> float | None:
    """The capture's frame rate; None where OpenCV reports 0 or NaN (unknown)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if np.isfinite(fps) and fps > 0 else None


class VideoSource:
    """Frames of a video file (mp4, avi, mkv, ...) decoded with OpenCV.

    Opening decodes the first frame to check the file and learn its size; each iteration
    reopens the file. Frames are numbered 1, 2, ... in decoding order. When decoding stops
    before the container's frame count, iteration ends with a logged warning (the frames
    decoded so far are good; damaged tails are common in real footage).

    Args:
        path: the video file.
        size: optional (width, height) processing size.
        mixed_sizes: without ``size``, yield frames whose size changes mid-way at their own
            size instead of refusing them (for a consumer that resizes every frame itself,
            as ``segment --size`` does; ``frame_size`` is then the first frame's).

    Raises:
        InputError: the file is missing, OpenCV cannot open it, or it decodes no frame.
    """

    def __init__(self, path: str | os.PathLike, *, size: tuple[int, int] | None = None,
                 mixed_sizes: bool = False):
        self._file = Path(path)
        self._size = check_size(size)
        self._mixed_sizes = mixed_sizes
        self.name: str = self._file.stem
        self.path: str = str(self._file)
        if not self._file.is_file():
            raise InputError(f"{self._file}: no such file")
        capture = self._open()
        try:
            self.fps: float | None = _fps_or_none(capture)
            count = capture.get(cv2.CAP_PROP_FRAME_COUNT)  # NaN or negative when unknown
            self.num_frames: int | None = int(count) if np.isfinite(count) and count > 0 else None
            ok, first = capture.read()
        except cv2.error as error:  # a decoder assertion on damaged data
            raise InputError(f"{self._file}: not a readable video (OpenCV: "
                             f"{getattr(error, 'err', '') or error})") from None
        finally:
            capture.release()
        if not ok or first is None:
            raise InputError(f"{self._file}: not a readable video (OpenCV decoded no frame)")
        self.native_size: tuple[int, int] = (first.shape[1], first.shape[0])
        self.frame_size: tuple[int, int] = self._size or self.native_size

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self._file))
        if not capture.isOpened():
            capture.release()
            raise InputError(f"{self._file}: not a readable video (OpenCV could not open it)")
        return capture

    def __iter__(self) -> Iterator[Frame]:
        number = 0
        for number, frame in _decoded_frames(self._open(), self._size, name=self.path,
                                             mixed_sizes=self._mixed_sizes):
            yield frame
        if number == 0:
            raise InputError(f"{self._file}: not a readable video (OpenCV decoded no frame)")
        if self.num_frames is not None and number < self.num_frames:
            # A frame or two short is common in real footage (containers count a damaged tail:
            # the staged highway video decodes 748 of 750); far fewer means lost video, which
            # an operator reading the log must be able to tell from that.
            lost = number < TRUNCATED_SHARE * self.num_frames
            logger.warning(
                "%s: decoding stopped after %d of the %d frames the container announces%s",
                self._file, number, self.num_frames,
                "; the file looks truncated or damaged, only those frames are used" if lost
                else "",
            )

    def __repr__(self) -> str:
        return f"VideoSource({self.path!r}, size={self._size})"


class FrameFolderSource:
    """Image files in one folder, ordered by the trailing integer of their names.

    Args:
        folder: a folder of frames (``frame_1.jpg``, ``in000001.png``, ``b00247.bmp``...).
        size: optional (width, height) processing size. Without it every frame must have
            the size of the first one; with it frames of any size are resized.
        mixed_sizes: without ``size``, yield frames of differing sizes at their own sizes
            instead of refusing them (for a consumer that resizes every frame itself, as
            ``segment --size`` does; ``frame_size`` is then the first frame's and
            ``max_frame_size`` the largest).

    Raises:
        InputError: the folder is missing or holds no image, an image name has no number,
            or (during iteration, without ``size`` or ``mixed_sizes``) a frame's size
            differs from the first.
    """

    def __init__(self, folder: str | os.PathLike, *, size: tuple[int, int] | None = None,
                 mixed_sizes: bool = False):
        self._folder = Path(folder)
        self._size = check_size(size)
        self._mixed_sizes = mixed_sizes
        if not self._folder.is_dir():
            raise InputError(f"{self._folder}: no such folder")
        _refuse_a_scene_without_ground_truth(self._folder)
        self._files = numbered_image_files(self._folder)
        if not self._files:
            raise InputError(f"{self._folder}: no image files in this folder")
        first = read_image_rgb(self._files[0][1])
        self.native_size: tuple[int, int] = (first.shape[1], first.shape[0])
        self.name: str = self._folder.resolve().name
        self.path: str = str(self._folder)
        self.fps: float | None = None
        self.num_frames: int | None = len(self._files)
        self.frame_size: tuple[int, int] = self._size or self.native_size

    @functools.cached_property
    def max_frame_size(self) -> tuple[int, int]:
        """(width, height) of the largest frame iteration yields (the most pixels), for memory
        estimates: ``frame_size``, except with ``mixed_sizes`` (and no ``size``), where frames
        keep their own sizes and ``frame_size`` is only the first one's: then the largest
        size the frame files declare in their headers (PNG, JPEG and BMP; read once, on first
        use, without decoding; files of other formats count with the first frame's size).
        """
        if self._size is not None or not self._mixed_sizes:
            return self.frame_size
        declared = (_declared_size(file) for _, file in self._files[1:])
        return max([self.native_size, *filter(None, declared)],
                   key=lambda size: size[0] * size[1])

    @property
    def frame_numbers(self) -> tuple[int, ...]:
        """The numbers of the frames, in order."""
        return tuple(number for number, _ in self._files)

    @property
    def frame_files(self) -> tuple[Path, ...]:
        """The image files of the frames, in order."""
        return tuple(file for _, file in self._files)

    def __iter__(self) -> Iterator[Frame]:
        for number, file in self._files:
            rgb = read_image_rgb(file)
            if (self._size is None and not self._mixed_sizes
                    and (rgb.shape[1], rgb.shape[0]) != self.native_size):
                raise InputError(
                    f"{file}: frame size {rgb.shape[1]}x{rgb.shape[0]} differs from "
                    f"{self.native_size[0]}x{self.native_size[1]} of "
                    f"{self._files[0][1].name} (pass a processing size to resize all frames)"
                )
            yield Frame(number, resize_rgb(rgb, self._size), None)

    def __repr__(self) -> str:
        return f"FrameFolderSource({self.path!r}, size={self._size})"


class StreamSource:
    """A live camera (index such as ``"0"``) or a network stream (rtsp://, http(s)://...).

    Frames are numbered 1, 2, ... from the start of each iteration, which reconnects. The
    number of frames is unknown; iteration ends when the stream stops delivering frames.

    Args:
        spec: a camera index as a string of digits, or a stream URL.
        size: optional (width, height) processing size.

    Raises:
        InputError: OpenCV cannot open the camera or stream, or it delivers no frame.
    """

    def __init__(self, spec: str, *, size: tuple[int, int] | None = None):
        self._spec = str(spec)
        self._size = check_size(size)
        self.name: str = f"camera{self._spec}" if self._spec.isdigit() else _stream_name(spec)
        self.path: str = self._spec
        self.num_frames: int | None = None
        capture = self._open()
        try:
            self.fps: float | None = _fps_or_none(capture)
            width, height = (capture.get(cv2.CAP_PROP_FRAME_WIDTH),
                             capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            width = int(width) if np.isfinite(width) else 0
            height = int(height) if np.isfinite(height) else 0
            if width <= 0 or height <= 0:
                ok, first = capture.read()
                if not ok or first is None:
                    raise InputError(f"{self._spec}: the stream opened but delivered no frame")
                width, height = first.shape[1], first.shape[0]
        finally:
            capture.release()
        self.native_size: tuple[int, int] = (width, height)
        self.frame_size: tuple[int, int] = self._size or self.native_size

    def _open(self) -> cv2.VideoCapture:
        target: int | str = int(self._spec) if self._spec.isdigit() else self._spec
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            kind = "camera" if isinstance(target, int) else "stream"
            raise InputError(f"{self._spec}: could not open the {kind} with OpenCV")
        return capture

    def __iter__(self) -> Iterator[Frame]:
        number = 0
        for number, frame in _decoded_frames(self._open(), self._size, name=self.path):
            yield frame
        logger.info("%s: stream ended after %d frames", self._spec, number)

    def __repr__(self) -> str:
        return f"StreamSource({self.path!r}, size={self._size})"


def _stream_name(url: str) -> str:
    """A file-name-safe name for a stream URL: its last path part, else its host."""
    without_scheme = _URL_SCHEME.sub("", url).split("?")[0].rstrip("/")
    last = without_scheme.rsplit("/", 1)[-1] or "stream"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(last).stem or last)


def source_identity(source: Source) -> tuple[int, float]:
    """(size in bytes, latest mtime) of the files a source reads.

    What outputs record to tell later whether they were made from the same input (a cache
    resumes, a mask folder continues, only when it matches). A video is its file; a frame
    folder its frame files; a scene its frames, GT masks and ROI files (``input_files``), so
    a file added beside them (notes, another tool's output) changes nothing. Live streams have
    none: (0, 0.0).
    """
    files = _source_files(source)
    stats = [p.stat() for p in files]
    return sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=0.0)


def source_sha256(source: Source) -> str:
    """sha256 (hex) of the bytes of the files a source reads (those of :func:`source_identity`),
    each preceded by its length and, in a folder, its name relative to the folder; "" for a
    live stream.

    Caches record it, so that a copied or touched source (same bytes, a new mtime) is still
    recognised as the one a cache was made from (:func:`pipelines.preprocess.recognise_source`).
    Reads every byte once, as decoding the source does too (no benchmark in ``benchmarks/``
    times the hash alone).
    """
    if isinstance(source, StreamSource):
        return ""
    root = Path(source.path)
    digest = hashlib.sha256()
    for file in _source_files(source):
        # A frame's number is in its name, so a folder's names count; a video's does not.
        name = b"" if file == root else os.fsencode(os.path.relpath(file, root))
        digest.update(struct.pack("<QQ", len(name), file.stat().st_size) + name)
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _source_files(source: Source) -> list[Path]:
    """The files a source reads, in a fixed order; none for a live stream."""
    if isinstance(source, StreamSource):
        return []
    path = Path(source.path)
    if path.is_file():
        return [path]
    files = getattr(source, "input_files", None) or getattr(source, "frame_files", None)
    if files is None:  # a source type without a file list: everything under its folder
        files = sorted(p for p in path.rglob("*") if p.is_file())
    return [Path(p) for p in files]


def is_stream_spec(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a camera index (all digits) or a URL (``scheme://...``)."""
    text = str(spec) if isinstance(spec, str) else None
    return text is not None and (text.isdigit() or _URL_SCHEME.match(text) is not None)


def open_source(
    spec: str | os.PathLike | int, *, size: tuple[int, int] | None = None,
    mixed_sizes: bool = False
) -> Source:
    """Opens whatever the user pointed at as a frame source.

    Dispatch: a string of digits is a camera index and ``scheme://...`` a stream URL
    (:class:`StreamSource`); an existing file is a video (:class:`VideoSource`); an existing
    folder is a benchmark scene with ground truth when :func:`pipelines.scenes.is_scene`
    recognises it (:class:`pipelines.scenes.Scene`), else a folder of frames
    (:class:`FrameFolderSource`).

    Args:
        spec: camera index (an int or a string of digits), URL, video file, scene folder or
            frame folder.
        size: optional (width, height) processing size.
        mixed_sizes: a video or frame folder yields frames of differing sizes at their own
            sizes (see :class:`FrameFolderSource`); scenes and streams are unaffected.

    Returns:
        The source.

    Raises:
        InputError: the path does not exist, the folder is empty, or the input is unreadable.
    """
    # Imported here because scenes builds on this module (Frame, resizing, file numbering).
    from pipelines import scenes

    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)  # a camera index, as the command line gives it
    if is_stream_spec(spec):
        return StreamSource(str(spec), size=size)
    path = Path(spec)
    if path.is_file():
        return VideoSource(path, size=size, mixed_sizes=mixed_sizes)
    if path.is_dir():
        if scenes.is_scene(path):
            return scenes.open_scene(path, size=size)
        if not any(path.iterdir()):
            raise InputError(f"{path}: the folder is empty")
        if not list_image_files(path):
            raise InputError(
                f"{path}: no image files and not a benchmark scene folder (for a folder of "
                "scenes, give the scene folders one by one)"
            )
        return FrameFolderSource(path, size=size, mixed_sizes=mixed_sizes)
    raise InputError(f"{path}: no such file or folder")
