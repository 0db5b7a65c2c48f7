"""The HDF5 cache: one file per video holding its frames, 3D-HOP flow stacks and masks.

Layout contract, ``format_version = 1``
=======================================

T is the number of frames, S the number of strides, (H, W) the stored size.

Datasets (every one resizable along T, ``maxshape=None`` on that axis):

============== ======= ================= ===================== ==============================
name           dtype   shape             chunks                meaning
============== ======= ================= ===================== ==============================
frames         uint8   (T, H, W, 3)      (1, H, W, 3)          the frames, RGB
flow           float16 (T, S, 2, H, W)   (1, S, 2, H, W)       the 3D-HOP stack of each frame
masks          uint8   (T, H, W)         (1, H, W)             CDnet labels; 0 where absent
has_mask       bool    (T,)              (4096,)               whether masks[t] is ground truth
frame_numbers  int64   (T,)              (4096,)               each frame's number in its source
frames_written int64   () (scalar)       contiguous            frames committed (see below)
============== ======= ================= ===================== ==============================

One frame per chunk, so reading frame t decompresses exactly one chunk of each dataset.
Compression (lossless): gzip level 4 on every per-frame dataset, plus the byte ``shuffle``
filter on ``flow``; the measurement behind the choice is in the comment above
``FRAME_COMPRESSION`` (lossless filters cannot bring DIS flow near 300 KB per frame at
320x240; the measured default is about 720 KB).
``has_mask`` is stored the h5py way (an HDF5 enum of FALSE = 0, TRUE = 1).

Flow convention: ``flow[t, s]`` holds (u, v) in pixels at the stored size, the flow from frame
t (first image) to frame ``t - strides[s]`` (second image), or to frame 0 when t < k (see
:mod:`flow` and :mod:`flow.hop`): pixel x of frame t lies at x + flow(x) in the earlier frame.
Values are whatever the backend produced, rounded to float16; the cache itself loses nothing
beyond that rounding. Frame t is the t-th frame written, and its number in the source (the
trailing integer of its file name, or its index in a video) is ``frame_numbers[t]``; frame
numbers are strictly increasing.

Masks may exist for some frames only. ``masks[t]`` is meaningful only where ``has_mask[t]`` is
true; elsewhere it holds zeros, which must not be read as "background" (0 is also CDnet's
background label, hence the separate flag).

Attributes of the root group:

=================== ================ ==========================================================
name                type             meaning
=================== ================ ==========================================================
format_version      int64            1 for this layout; readers reject any other value
complete            uint8            1 once every frame is written (set by ``finish``), else 0
strides             int64 (S,)       the strides k_s, positive, strictly increasing
flow_backend        str              name of the flow method (e.g. ``"dis-fast"``)
weights_sha256      str              sha256 (hex) of the backend's weights file, "" if none
size                int64 (2,)       stored size (W, H)
source_path         str              the video / folder the frames came from, absolute
                                     (files written before 2026-11-25: as typed)
source_size         int64            its size in bytes (sum of files for a folder)
source_mtime        float64          its modification time, POSIX seconds
source_sha256       str              sha256 (hex) of its bytes, "" for a stream (optional,
                                     see below)
fps                 float64          frame rate of the source, 0.0 when it has none
package_version     str              version of the code that created the file
created             str              creation time, ISO 8601 in UTC
expected_frames     int64            frames the writer expected, -1 when unknown
flow_convention     str              one line restating the flow convention, for other tools
flow_settings       str              how the backend made the flow beyond its name and weights,
                                     ``key=value`` words (optional, see below)
=================== ================ ==========================================================

``flow_settings`` is "" for the classical backends; a RAFT backend writes its refinement steps,
warm starts and arithmetic, e.g. ``"updates=12 warm_updates=none precision=bf16"``. Files
written before the attribute existed lack it and read as "" for classical flow and as
``"updates=12 warm_updates=none"`` for RAFT (every such file was made with those; its
precision is unknown). Readers that predate it ignore it, so ``format_version`` stays 1.

``source_sha256`` (:func:`pipelines.sources.source_sha256`) is not compared like the other
source fields: it lets a source whose bytes are unchanged but whose mtime is not (a copied or
re-provisioned data folder, a ``touch``) still match its cache
(:func:`pipelines.preprocess.recognise_source`). The source is hashed when a cache is started
(all of it, even under ``--max-frames``), and again in every later run for as long as its
time differs from the recorded one (the cache is not rewritten to record the new time); never
while the times agree. Files written before the attribute existed read as "" and match on
the mtime alone.

Writing, atomicity and resuming
===============================

A cache for ``<out>/<name>.h5`` is written as ``<out>/<name>.h5.partial``. Only
:meth:`CacheWriter.finish` sets ``complete = 1`` and then ``os.replace``s the partial file onto
the final name (atomic on one file system), so a file under the final name is always complete.

Each :meth:`CacheWriter.append` resizes the per-frame datasets, writes the frame, flushes the
file, then writes ``frames_written = t + 1`` and flushes again. ``frames_written`` is a dataset,
not an attribute, because the file is written in HDF5's SWMR (single writer, multiple reader)
mode, which forbids changing attributes once it has started but allows writing raw data. SWMR
is used for crash resilience: the library writes metadata in an order that keeps the file
readable by a SWMR reader at every moment, so a writer killed at any point (SIGKILL included)
leaves a partial file whose first ``frames_written`` frames are intact (the tests SIGKILL a
writer mid-run and check this). Data after that count may be partly written and is discarded
on resume; a resumed file keeps its original ``created`` time. What this does not cover is the loss of the
operating system's page cache (a power cut): the writer does not ``fsync``.

:meth:`CacheWriter.open` resumes a partial file whose identity (source path, size and mtime,
strides, backend, weights sha256, flow settings other than precision, stored size) matches the
requested :class:`CacheInfo`:

- a partial file closed cleanly (an exception left the writer) opens for writing; its datasets
  are cut back to ``frames_written``;
- a partial file whose writer was killed still carries HDF5's "open for writing" flag, which
  refuses ordinary opens; it is opened as a SWMR reader instead, its first ``frames_written``
  frames are copied chunk by chunk (compressed bytes, no re-encoding) into a fresh file, and
  that file takes its place;
- a partial file that cannot be read either way, or whose identity differs, is deleted with a
  warning and the cache starts over.

A live writer holds a shared ``flock`` on its partial file (POSIX only), which the kernel
drops when the process dies. :meth:`CacheWriter.open` in another process raises
:class:`CacheBusyError` instead of touching a file that is still being written; HDF5's own
file lock cannot serve here, as SWMR writing releases it.

Files are written with ``libver=("v110", "v110")``: SWMR needs the HDF5 1.10 file format, and
capping the format there keeps the files readable by any HDF5 >= 1.10 (``"latest"`` under an
HDF5 2.x library would write a format that 1.x libraries cannot read).

Reading
=======

:class:`CacheReader` checks the file when constructed (completion flag, format version,
datasets' shapes against ``frames_written``) and raises ``ValueError`` naming the file for an
incomplete, truncated or corrupt file or another format. It then holds no open HDF5 handle
until data is first read, and opens one per process: an h5py handle inherited through
``fork`` is not safe to use, so a reader created in the main process and used in DataLoader
workers opens its own handle in each worker (and pickles without its handle for ``spawn``).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from flow.hop import check_strides

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
CACHE_SUFFIX = ".h5"

# HDF5 1.10 file format: the oldest that supports SWMR, and readable by every HDF5 >= 1.10.
_LIBVER = ("v110", "v110")

# Measured on highway2_320x240.avi (120 frames, DIS fast flow, strides 1, 4, 8; a 2-core CPU):
# KB per frame for frames + flow (masks of zeros add < 0.1), write time per frame including
# the two flushes of each append, random-access read time per frame (frame + flow):
#   none          1229 KB,  1.5 ms,  1.1 ms | lzf            1076 KB, 12 ms, 3.7 ms
#   lzf+shuffle    841 KB, 11 ms,    4.3 ms | gzip1           940 KB, 26 ms, 6.5 ms
#   gzip1+shuffle  741 KB, 20 ms,    5.4 ms | gzip4+shuffle   718 KB, 24 ms, 5.2 ms
#   gzip6+shuffle  712 KB, 36 ms,    6.3 ms | gzip9+shuffle   712 KB, 52 ms, 4.9 ms
# shuffle (float16 high bytes apart from low bytes) saves a quarter of the flow; gzip levels
# above 4 save under 1% for 1.5x to 2x the write time; level 1 costs 3% more space; lzf+shuffle
# writes twice as fast but is 17% larger. Storage is the scarcer resource for caches of many
# videos, so gzip 4 + shuffle. shuffle does nothing to uint8 data: frames and masks use plain
# gzip. No lossless stock filter gets near 300 KB per frame: the float16 DIS flow carries about
# 9.4 bits per value even after a left-neighbour predictor (entropy of the differences), so
# the flow alone needs more than 540 KB per frame; only coarser flow values (a quantisation
# before the cache) make it smaller.
FRAME_COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 4}
FLOW_COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}

_FLOW_CONVENTION = (
    "flow[t, s] = (u, v) in pixels at the stored size, from frame t to frame "
    "max(t - strides[s], 0): pixel x of frame t lies at x + flow(x) in that frame"
)
_PER_FRAME_DATASETS = ("frames", "flow", "masks", "has_mask", "frame_numbers")
_VECTOR_CHUNK = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CacheInfo:
    """What a cache file was made from and how: its root attributes (see the module docstring).

    Attributes:
        strides: the 3D-HOP strides k_s, positive and strictly increasing.
        backend: name of the flow method.
        weights_sha256: sha256 (64 lowercase hex digits) of the backend's weights, "" if none.
        size: stored frame size (W, H).
        source_path: the video or folder the frames came from.
        source_size: the source's size in bytes.
        source_mtime: the source's modification time, POSIX seconds.
        fps: frame rate of the source, 0.0 when it has none.
        package_version: version of the code that writes the cache.
        created: creation time, ISO 8601 UTC; "" lets :meth:`CacheWriter.open` stamp it.
        flow_settings: how the backend made the flow beyond ``backend`` and
            ``weights_sha256`` (the ``flow_settings`` attribute; ``backend.settings``).
        source_sha256: sha256 (64 lowercase hex digits) of the source's bytes, "" if not
            known; not an identity field (see the module docstring).
    """

    strides: tuple[int, ...]
    backend: str
    weights_sha256: str
    size: tuple[int, int]
    source_path: str
    source_size: int
    source_mtime: float
    fps: float
    package_version: str
    created: str = ""
    flow_settings: str = ""
    source_sha256: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", check_strides(self.strides))
        size = tuple(int(n) for n in self.size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (W, H), two positive integers, got {self.size!r}")
        object.__setattr__(self, "size", size)
        if not self.backend:
            raise ValueError("backend must be a non-empty name, got ''")
        if self.weights_sha256 and not _SHA256.fullmatch(self.weights_sha256):
            raise ValueError(
                f"weights_sha256 must be 64 lowercase hex digits or '', got {self.weights_sha256!r}"
            )
        if self.source_sha256 and not _SHA256.fullmatch(self.source_sha256):
            raise ValueError(
                f"source_sha256 must be 64 lowercase hex digits or '', got {self.source_sha256!r}"
            )
        if int(self.source_size) < 0:
            raise ValueError(f"source_size must be >= 0, got {self.source_size}")
        if not float(self.fps) >= 0.0:
            raise ValueError(f"fps must be >= 0 (0 for none), got {self.fps}")
        object.__setattr__(self, "source_size", int(self.source_size))
        object.__setattr__(self, "source_mtime", float(self.source_mtime))
        object.__setattr__(self, "fps", float(self.fps))
        settings_words(self.flow_settings)  # ValueError for a malformed text

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def same_content_as(self, other: CacheInfo) -> bool:
        """Whether a cache described by ``other`` holds what one described by ``self`` would.

        Compares the source (path, size, mtime), strides, backend, weights, flow settings
        other than ``precision``, and stored size; not fps, package version or creation time.
        This decides whether a partial file resumes and whether a complete one is reused.
        Precision is recorded, not compared: bfloat16 and float32 RAFT flow agree within the
        tolerance ``tests/flow/test_backends.py`` states, and the precision follows the
        machine (:func:`flow.backends.bf16_pays`), so a cache made on one machine serves
        another.
        """
        return self.difference(other) is None

    def same_source_path(self, other: CacheInfo) -> bool:
        """Whether both name one source file (compared as the file it names, as in
        :meth:`same_content_as`), whatever its version or the flow settings."""
        return _identity(self)[0] == _identity(other)[0]

    def difference(self, other: CacheInfo) -> str | None:
        """The first identity field (see :meth:`same_content_as`) in which a cache described by
        ``self`` differs from ``other``, the one asked for now, as ``"strides: (1, 4, 8) in
        the cache, (1, 2) now"``; None when they hold the same."""
        for index, (cached, wanted) in enumerate(zip(_identity(self), _identity(other),
                                                      strict=True)):
            if cached != wanted:
                shown = _identity(self, as_recorded=True), _identity(other, as_recorded=True)
                return (f"{_IDENTITY_FIELDS[index]}: {_shown(shown[0][index])} in the cache, "
                        f"{_shown(shown[1][index])} now")
        return None


def _shown(value) -> str:
    if isinstance(value, tuple) and all(isinstance(item, tuple) for item in value):
        return repr(" ".join(f"{key}={item}" for key, item in value))  # flow settings
    return repr(value)


def settings_words(text: str) -> dict[str, str]:
    """``"updates=12 precision=bf16"`` -> ``{"updates": "12", "precision": "bf16"}``.

    Raises:
        ValueError: a word that is not ``key=value``, or a key given twice.
    """
    words: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"flow settings must be key=value words, got {word!r} in {text!r}")
        if key in words:
            raise ValueError(f"flow settings name {key!r} twice in {text!r}")
        words[key] = value
    return words


_IDENTITY_FIELDS = ("source_path", "source_size", "source_mtime", "strides", "flow_backend",
                    "weights_sha256", "flow_settings", "size")


def _identity(info: CacheInfo, *, as_recorded: bool = False) -> tuple:
    """The fields that decide what a cache holds. The source path is compared as the file it
    names, so one file reached by a relative path, a symbolic link or ``..`` is one source (a
    path that names nothing here, e.g. a stream's URL, compares as written);
    ``as_recorded``: every field as written, for messages."""
    settings = settings_words(info.flow_settings)
    settings.pop("precision", None)
    path = info.source_path
    if not as_recorded and os.path.exists(path):
        path = os.path.realpath(path)
    return (path, info.source_size, info.source_mtime, info.strides, info.backend,
            info.weights_sha256, tuple(sorted(settings.items())), info.size)


# What a RAFT cache written before the flow_settings attribute was made with: no command could
# change the number of updates or add warm starts then.
_LEGACY_RAFT_SETTINGS = "updates=12 warm_updates=none"


def numbered_name(source_name: str, index: int) -> str:
    """The ``index``-th cache name of sources named ``source_name``: the name itself, then
    ``<name>_2``, ``<name>_3``... (what tells two same-named videos' caches apart)."""
    return source_name if index == 1 else f"{source_name}_{index}"


def recorded_info(path: str | os.PathLike[str]) -> CacheInfo | None:
    """What the cache file ``path`` (complete or partial) says it was made from, or None when it
    cannot be read as a cache. Never raises. A partial file whose writer was killed, or is
    still writing, carries HDF5's "open for writing" flag and is read as a SWMR reader."""
    for swmr in (False, True):
        try:
            with h5py.File(path, "r", swmr=swmr) as file:
                return _read_info(file, Path(path))
        except Exception:  # noqa: BLE001, S112 - any failure means "no usable record"
            continue
    return None


def cache_path_for(out_dir: str | os.PathLike[str], source_name: str) -> Path:
    """The cache file of a source: ``<out_dir>/<source_name>.h5``."""
    if not source_name or "/" in source_name or "\\" in source_name or source_name in (".", ".."):
        raise ValueError(f"source_name must be a plain file name, got {source_name!r}")
    return Path(out_dir) / f"{source_name}{CACHE_SUFFIX}"


def partial_path_for(path: str | os.PathLike[str]) -> Path:
    """The temporary name a cache is written under: ``<path>.partial``."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_info(attrs: h5py.AttributeManager, info: CacheInfo, expected_frames: int) -> None:
    attrs["format_version"] = np.int64(FORMAT_VERSION)
    attrs["complete"] = np.uint8(0)
    attrs["strides"] = np.asarray(info.strides, dtype=np.int64)
    attrs["flow_backend"] = info.backend
    attrs["weights_sha256"] = info.weights_sha256
    attrs["size"] = np.asarray(info.size, dtype=np.int64)
    attrs["source_path"] = info.source_path
    attrs["source_size"] = np.int64(info.source_size)
    attrs["source_mtime"] = np.float64(info.source_mtime)
    attrs["fps"] = np.float64(info.fps)
    attrs["package_version"] = info.package_version
    attrs["created"] = info.created
    attrs["expected_frames"] = np.int64(expected_frames)
    attrs["flow_convention"] = _FLOW_CONVENTION
    attrs["flow_settings"] = info.flow_settings
    attrs["source_sha256"] = info.source_sha256


def _flow_settings(attrs: h5py.AttributeManager) -> str:
    if "flow_settings" in attrs:
        return str(attrs["flow_settings"])
    return _LEGACY_RAFT_SETTINGS if str(attrs["flow_backend"]).startswith("raft") else ""


def _read_info(file: h5py.File, path: Path) -> CacheInfo:
    """Check the format version and parse the attributes; ValueError naming ``path`` if bad."""
    attrs = file.attrs
    if "format_version" not in attrs:
        raise ValueError(f"{path}: not a crossnet cache (no 'format_version' attribute)")
    version = int(attrs["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: cache format_version {version}, this code reads {FORMAT_VERSION}"
        )
    try:
        return CacheInfo(
            strides=tuple(int(k) for k in attrs["strides"]),
            backend=str(attrs["flow_backend"]),
            weights_sha256=str(attrs["weights_sha256"]),
            size=tuple(int(n) for n in attrs["size"]),
            source_path=str(attrs["source_path"]),
            source_size=int(attrs["source_size"]),
            source_mtime=float(attrs["source_mtime"]),
            fps=float(attrs["fps"]),
            package_version=str(attrs["package_version"]),
            created=str(attrs["created"]),
            flow_settings=_flow_settings(attrs),
            source_sha256=str(attrs.get("source_sha256", "")),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: bad cache attributes ({error})") from error


def _frames_written(file: h5py.File, path: Path) -> int:
    """The committed frame count, checked against every per-frame dataset's length."""
    missing = [name for name in (*_PER_FRAME_DATASETS, "frames_written") if name not in file]
    if missing:
        raise ValueError(f"{path}: cache lacks datasets {missing}")
    count = int(file["frames_written"][()])
    lengths = {name: file[name].shape[0] for name in _PER_FRAME_DATASETS}
    if count < 0 or any(length < count for length in lengths.values()):
        raise ValueError(f"{path}: frames_written = {count} but dataset lengths are {lengths}")
    return count


def _create_datasets(file: h5py.File, info: CacheInfo,
                     like: h5py.File | None = None) -> None:
    """Create the empty datasets; with ``like``, copy its datasets' filters instead of ours."""
    width, height = info.size
    num_strides = len(info.strides)
    per_frame = {
        "frames": ((height, width, 3), np.uint8, FRAME_COMPRESSION),
        "flow": ((num_strides, 2, height, width), np.float16, FLOW_COMPRESSION),
        "masks": ((height, width), np.uint8, FRAME_COMPRESSION),
    }
    for name, (frame_shape, dtype, filters) in per_frame.items():
        if like is not None:
            source = like[name]
            filters = {"compression": source.compression,
                       "compression_opts": source.compression_opts, "shuffle": source.shuffle}
        file.create_dataset(name, shape=(0, *frame_shape), maxshape=(None, *frame_shape),
                            chunks=(1, *frame_shape), dtype=dtype, **filters)
    file.create_dataset("has_mask", shape=(0,), maxshape=(None,), chunks=(_VECTOR_CHUNK,),
                        dtype=bool)
    file.create_dataset("frame_numbers", shape=(0,), maxshape=(None,), chunks=(_VECTOR_CHUNK,),
                        dtype=np.int64)
    file.create_dataset("frames_written", shape=(), dtype=np.int64, data=0)


def _truncate(file: h5py.File, count: int) -> None:
    for name in _PER_FRAME_DATASETS:
        file[name].resize(count, axis=0)
    file["frames_written"][()] = count


def _copy_committed(source_path: Path, target_path: Path) -> None:
    """Copy the committed frames of a killed writer's file into a new file at ``target_path``.

    ``source_path`` still carries the "open for writing" flag, so it is opened as a SWMR
    reader. Per-frame chunks are copied as stored (compressed) bytes.
    """
    with h5py.File(source_path, "r", swmr=True) as source, \
            h5py.File(target_path, "w", libver=_LIBVER) as target:
        info = _read_info(source, source_path)
        count = _frames_written(source, source_path)
        for key, value in source.attrs.items():
            target.attrs[key] = value
        _create_datasets(target, info, like=source)
        _truncate(target, count)
        for name in ("frames", "flow", "masks"):
            source_id, target_id = source[name].id, target[name].id
            zeros = (0,) * (source[name].ndim - 1)
            for index in range(count):
                filter_mask, chunk = source_id.read_direct_chunk((index, *zeros))
                target_id.write_direct_chunk((index, *zeros), chunk, filter_mask)
        for name in ("has_mask", "frame_numbers"):
            target[name][:] = source[name][:count]


def _open_partial(partial: Path, info: CacheInfo) -> h5py.File | None:
    """Open an existing partial file for resuming, or return None to start over."""
    try:
        file = h5py.File(partial, "r+", libver=_LIBVER)
    except OSError:
        # The writer was killed: HDF5's "open for writing" flag is still set.
        recovered = partial.with_name(partial.name + ".recovering")
        try:
            _copy_committed(partial, recovered)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            recovered.unlink(missing_ok=True)
            logger.warning("%s: unreadable partial cache (%s); starting over", partial, error)
            return None
        os.replace(recovered, partial)
        try:
            file = h5py.File(partial, "r+", libver=_LIBVER)
        except OSError as error:
            logger.warning("%s: recovered partial cache unreadable (%s); starting over", partial,
                           error)
            return None
    try:
        found = _read_info(file, partial)
        count = _frames_written(file, partial)
    except (ValueError, KeyError, OSError) as error:
        file.close()
        logger.warning("%s: unusable partial cache (%s); starting over", partial, error)
        return None
    if not found.same_content_as(info):
        file.close()
        logger.warning("%s: partial cache was made from other inputs or settings (%s, not %s); "
                       "starting over", partial, found, info)
        return None
    _truncate(file, count)
    # A writer killed between finish()'s flag and its rename leaves a flagged partial file.
    file.attrs["complete"] = np.uint8(0)
    return file


class CacheBusyError(RuntimeError):
    """Another live process is writing the same cache (it holds the partial file's lock)."""


def _check_not_busy(path: Path) -> None:
    """Raise :class:`CacheBusyError` if a live process holds a lock on ``path``.

    The SWMR writer releases HDF5's own file lock (so that SWMR readers can open the file),
    which leaves a live writer and a killed one indistinguishable to HDF5: both leave the
    "open for writing" flag. The writer's shared ``flock`` (see :func:`_hold_shared_lock`),
    which the kernel drops when its process dies, tells them apart, so a second process never
    "recovers" a file that is still being written. A SWMR reader also holds a shared lock, so
    a file being read that way counts as busy too. Nothing is checked where ``fcntl`` does
    not exist (Windows).
    """
    if fcntl is None:
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CacheBusyError(f"{path}: being written by another process") from None
    finally:
        os.close(descriptor)  # closing the descriptor releases its flock


def _hold_shared_lock(path: Path) -> int | None:
    """Take a shared ``flock`` on ``path`` for a live writer; return its descriptor.

    Shared, not exclusive, so that SWMR readers (which take a shared lock) can still follow
    the file's progress; :func:`_check_not_busy` asks for an exclusive lock, which any shared
    lock blocks. Returns None where ``fcntl`` does not exist.
    """
    if fcntl is None:
        return None
    descriptor = os.open(path, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    return descriptor


def _unlock(descriptor: int | None) -> None:
    if descriptor is not None:
        os.close(descriptor)  # closing the descriptor releases its flock


# Room kept free beyond one frame's uncompressed bytes before a frame is written: HDF5's own
# metadata (chunk index, attributes) grows a little with every frame and is flushed with it.
SPACE_MARGIN = 1 << 20


def _check_space(path: Path, needed: int, what: str = "a frame") -> None:
    """Raise ``OSError(ENOSPC)`` naming ``path`` when its file system has less than ``needed``
    bytes free.

    Why before writing rather than on the failed write: when HDF5 itself hits a full disk
    mid-flush, its file is left half-written in memory; h5py then fails to close it ("Can't
    decrement id ref count") and the process dies with a segmentation fault at exit, taking
    the rest of a batch with it (found by an audit with a 3 MB tmpfs). Refused here, nothing
    of the frame is written, the file holds every frame committed so far, and it closes
    normally for a later resume. The same holds for creating, resuming and finishing the file,
    which write too.
    """
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device ({free / 2**20:.1f} MiB free, "
                      f"{needed / 2**20:.1f} MiB needed to write {what})", str(path))


def _as_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


class CacheWriter:
    """Appends frames to a cache file under its temporary name; :meth:`finish` publishes it.

    Create one with :meth:`CacheWriter.open`. Use as a context manager: leaving the block
    closes the file without completing it (whether or not an exception left it), so only an
    explicit :meth:`finish` produces a file under the final name; a later :meth:`open` with the
    same :class:`CacheInfo` resumes after the last committed frame.
    """

    def __init__(self, path: Path, file: h5py.File, info: CacheInfo) -> None:
        """Internal: use :meth:`open`. Takes an open, writable, checked partial file."""
        self._path = path
        self._file: h5py.File | None = file
        self._info = info
        self._count = int(file["frames_written"][()])
        last = file["frame_numbers"][self._count - 1] if self._count else None
        self._last_frame_number = None if last is None else int(last)
        self._datasets = {name: file[name] for name in (*_PER_FRAME_DATASETS, "frames_written")}
        file.swmr_mode = True
        self._lock = _hold_shared_lock(self.partial_path)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, info: CacheInfo,
             expected_frames: int | None = None) -> CacheWriter:
        """Start writing the cache ``path`` (as ``<path>.partial``), resuming when possible.

        Args:
            path: the final cache path, e.g. from :func:`cache_path_for`.
            info: what the cache is made from; a partial file resumes only if its identity
                matches (see :meth:`CacheInfo.same_content_as`). An empty ``info.created`` is
                stamped with the current time.
            expected_frames: how many frames the source has, if known (recorded only).

        Returns:
            The writer; :attr:`frames_written` says where to restart.

        Raises:
            CacheBusyError: another live process is writing the same partial file.
        """
        path = Path(path)
        if expected_frames is not None and expected_frames < 0:
            raise ValueError(f"expected_frames must be >= 0 or None, got {expected_frames}")
        partial = partial_path_for(path)
        _check_space(partial, SPACE_MARGIN, "the cache's header")
        file = None
        if partial.exists():
            _check_not_busy(partial)
            file = _open_partial(partial, info)
        if file is not None:
            info = _read_info(file, partial)
            if expected_frames is not None:
                file.attrs["expected_frames"] = np.int64(expected_frames)
            logger.info("%s: resuming after %d frames", partial, int(file["frames_written"][()]))
        else:
            partial.unlink(missing_ok=True)
            if not info.created:
                info = dataclasses.replace(info, created=_now_iso())
            file = h5py.File(partial, "w", libver=_LIBVER)
            _write_info(file.attrs, info, -1 if expected_frames is None else expected_frames)
            _create_datasets(file, info)
            file.flush()
        return cls(path, file, info)

    @property
    def path(self) -> Path:
        """The final cache path (the file appears there after :meth:`finish`)."""
        return self._path

    @property
    def partial_path(self) -> Path:
        """The temporary name the cache is written under."""
        return partial_path_for(self._path)

    @property
    def info(self) -> CacheInfo:
        """The file's attributes (a resumed file keeps its original creation time)."""
        return self._info

    @property
    def frames_written(self) -> int:
        """Frames committed so far; the next :meth:`append` writes frame ``frames_written``."""
        return self._count

    def _require_open(self) -> h5py.File:
        if self._file is None:
            raise ValueError(f"{self.partial_path}: the writer is closed")
        return self._file

    def append(self, frame_number: int, rgb: Any, flow: Any, mask: Any | None = None) -> None:
        """Append and commit one frame.

        Args:
            frame_number: the frame's number in its source; larger than the previous one.
            rgb: the frame, (H, W, 3) uint8 RGB (numpy array or CPU tensor).
            flow: its 3D-HOP stack, (S, 2, H, W) floating point, finite; stored as float16.
            mask: its ground truth, (H, W) uint8 CDnet labels, or None when it has none.

        Raises:
            ValueError: a shape, dtype or value that does not fit the cache, quoting it.
            OSError: too little free space for the frame (``ENOSPC``, see
                :func:`_check_space`); the file keeps every frame committed before it.
        """
        file = self._require_open()
        width, height = self._info.size
        num_strides = len(self._info.strides)
        frame_number = int(frame_number)
        if self._last_frame_number is not None and frame_number <= self._last_frame_number:
            raise ValueError(f"frame_number must increase: got {frame_number} after "
                             f"{self._last_frame_number}")
        rgb = _as_array("rgb", rgb, (height, width, 3))
        if rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
        flow = _as_array("flow", flow, (num_strides, 2, height, width))
        if not np.issubdtype(flow.dtype, np.floating):
            raise ValueError(f"flow must be floating point, got {flow.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # reported just below instead
            flow16 = flow.astype(np.float16)
        if not np.isfinite(flow16).all():
            raise ValueError(f"flow must be finite in float16 (|value| <= 65504); got values "
                             f"in [{np.nanmin(flow)}, {np.nanmax(flow)}] with NaN: "
                             f"{bool(np.isnan(flow).any())}")
        if mask is not None:
            mask = _as_array("mask", mask, (height, width))
            if mask.dtype != np.uint8:
                raise ValueError(f"mask must be uint8, got {mask.dtype}")

        _check_space(self.partial_path, rgb.nbytes + flow16.nbytes + height * width
                     + SPACE_MARGIN)
        index = self._count
        data = self._datasets
        for name in _PER_FRAME_DATASETS:
            data[name].resize(index + 1, axis=0)
        data["frames"][index] = rgb
        data["flow"][index] = flow16
        data["masks"][index] = mask if mask is not None else np.zeros((height, width), np.uint8)
        data["has_mask"][index] = mask is not None
        data["frame_numbers"][index] = frame_number
        # Commit: the frame's bytes reach the file before the count that makes them valid.
        # Committing every frame rather than every N costs nothing measurable: at 320x240 the
        # two flushes changed the write time by under 0.1 ms of about 24 ms per frame (the
        # chunks are written once either way; compression dominates).
        file.flush()
        data["frames_written"][()] = index + 1
        file.flush()
        self._count = index + 1
        self._last_frame_number = frame_number

    def close(self) -> None:
        """Close without completing; the partial file stays for a later resume."""
        if self._file is not None:
            self._file.close()
            self._file = None
            _unlock(self._lock)
            self._lock = None

    def finish(self) -> Path:
        """Mark the cache complete and move it to its final path (atomic). Returns that path."""
        self._require_open()
        self.close()
        partial = self.partial_path
        _check_space(partial, SPACE_MARGIN, "the cache's end")
        with h5py.File(partial, "r+", libver=_LIBVER) as file:
            count = _frames_written(file, partial)
            for name in _PER_FRAME_DATASETS:
                file[name].resize(count, axis=0)
            file.attrs["complete"] = np.uint8(1)
        os.replace(partial, self._path)
        logger.info("%s: complete, %d frames", self._path, self._count)
        return self._path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class CacheSample:
    """One frame of a cache.

    Attributes:
        frame: (H, W, 3) uint8 RGB.
        flow: (S, 2, H, W) float32, the 3D-HOP stack.
        mask: (H, W) uint8 CDnet labels, or None when the frame has no ground truth.
        frame_number: the frame's number in its source.
    """

    frame: np.ndarray
    flow: np.ndarray
    mask: np.ndarray | None
    frame_number: int


def _check_complete(file: h5py.File, path: Path) -> tuple[CacheInfo, int]:
    info = _read_info(file, path)
    if int(file.attrs.get("complete", 0)) != 1:
        raise ValueError(f"{path}: incomplete cache (no completion flag; the writer did not "
                         f"finish)")
    count = _frames_written(file, path)
    lengths = {name: file[name].shape[0] for name in _PER_FRAME_DATASETS}
    if any(length != count for length in lengths.values()):
        raise ValueError(f"{path}: frames_written = {count} but dataset lengths are {lengths}")
    width, height = info.size
    expected = {"frames": (height, width, 3), "flow": (len(info.strides), 2, height, width),
                "masks": (height, width)}
    for name, frame_shape in expected.items():
        if file[name].shape[1:] != frame_shape:
            raise ValueError(f"{path}: dataset {name} has frames of shape {file[name].shape[1:]}"
                             f", attributes say {frame_shape}")
    return info, count


class CacheReader:
    """Random access to a complete cache file.

    ``reader[t]`` (t in ``range(len(reader))``, negative indices count from the end) returns a
    :class:`CacheSample`. The HDF5 handle is opened on first data access, once per process, so
    a reader may be created before a DataLoader forks its workers (see the module docstring).

    Args:
        path: the cache file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an incomplete, truncated or corrupt file, or another format version; the
            message names the file and the problem.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        if not self._path.is_file():
            raise FileNotFoundError(f"{self._path}: no cache file there")
        try:
            with h5py.File(self._path, "r") as file:
                self._info, self._count = _check_complete(file, self._path)
                expected = int(file.attrs.get("expected_frames", -1))
                self._frame_numbers = file["frame_numbers"][:]
                self._has_mask = file["has_mask"][:]
        except OSError as error:
            raise ValueError(f"{self._path}: unreadable cache, truncated or corrupt "
                             f"({error})") from error
        self._frame_numbers.flags.writeable = False
        self._has_mask.flags.writeable = False
        self._expected = None if expected < 0 else expected
        self._file: h5py.File | None = None
        self._pid: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def info(self) -> CacheInfo:
        return self._info

    @property
    def expected_frames(self) -> int | None:
        """The frames its writer expected (the source's count, or fewer when told to stop
        early), None when unknown; the cache holds fewer when the source had fewer."""
        return self._expected

    @property
    def frame_numbers(self) -> np.ndarray:
        """(T,) int64, each frame's number in its source (read-only)."""
        return self._frame_numbers

    @property
    def has_mask(self) -> np.ndarray:
        """(T,) bool, whether each frame has a ground-truth mask (read-only)."""
        return self._has_mask

    def __len__(self) -> int:
        return self._count

    def _index(self, t: int) -> int:
        index = int(t)
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"{self._path}: frame {t} out of range for {self._count} frames")
        return index

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork is never used: its HDF5 state is a copy of the
            # parent's, taken at an arbitrary moment.
            self._file = h5py.File(self._path, "r")
            self._pid = os.getpid()
        return self._file

    def _read(self, name: str, index: int) -> np.ndarray:
        try:
            return self._handle()[name][index]
        except OSError as error:
            raise ValueError(f"{self._path}: {name} of frame {index} cannot be read, the file "
                             f"is corrupt ({error})") from error

    def frame(self, t: int) -> np.ndarray:
        """Frame t, (H, W, 3) uint8 RGB."""
        return self._read("frames", self._index(t))

    def flow(self, t: int) -> np.ndarray:
        """The 3D-HOP stack of frame t, (S, 2, H, W) float32."""
        return self._read("flow", self._index(t)).astype(np.float32)

    def mask(self, t: int) -> np.ndarray | None:
        """The ground truth of frame t, (H, W) uint8, or None when it has none."""
        index = self._index(t)
        return self._read("masks", index) if self._has_mask[index] else None

    def __getitem__(self, t: int) -> CacheSample:
        index = self._index(t)
        return CacheSample(frame=self.frame(index), flow=self.flow(index), mask=self.mask(index),
                           frame_number=int(self._frame_numbers[index]))

    def close(self) -> None:
        """Close this process's handle; the reader reopens on the next access."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def is_complete(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete, readable cache of this format. Never raises."""
    try:
        with h5py.File(path, "r") as file:
            _check_complete(file, Path(path))
    except Exception:  # noqa: BLE001 - any failure means "not a usable cache"
        return False
    return True
