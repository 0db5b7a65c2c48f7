"""`crossnet segment --cache DIR`: reuse a source's HDF5 cache, or write it while segmenting.

The cache is the one `crossnet preprocess` writes (layout in :mod:`flow.cache`), named after the
source in DIR, at the processing size. Two sources of one name (``a/clip.avi``, ``b/clip.avi``) get
``clip.h5`` and ``clip_2.h5`` from one preprocess run, in input order; each finds its own here by
the source file the cache records (:func:`source_cache_path`). A complete cache made from the same
source with the same strides, flow backend, weights and size supplies the 3D-HOP of every frame, so
a second run skips the flow entirely. Otherwise the flow is computed and each frame is appended to
the cache as it is segmented; an interrupted run leaves a partial file that the next run resumes
(frames already in it are not written twice), and only a finished run turns it into a complete
cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from flow.cache import (
    CacheInfo,
    CacheReader,
    CacheWriter,
    cache_path_for,
    is_complete,
    numbered_name,
    partial_path_for,
    recorded_info,
)
from pipelines.errors import InputError
from pipelines.preprocess import (
    cache_difference,
    cache_info,
    info_to_write,
    recognise_source,
    with_roi,
)
from pipelines.sources import Frame, Source, StreamSource

logger = logging.getLogger(__name__)

STREAM_CACHE_REFUSED = ("{source}: --cache needs a video file or a folder: a camera's or a "
                        "stream's frames differ on every run, so their cache could never be "
                        "reused")


def source_cache_path(cache_dir: Path, name: str, info: CacheInfo) -> Path:
    """The cache file of the source ``info`` describes in ``cache_dir``.

    Sources of one name get ``<name>.h5``, ``<name>_2.h5``, ``<name>_3.h5``...
    (:func:`flow.cache.numbered_name`, as :func:`pipelines.preprocess.unique_cache_names`
    gives them). Every such name that holds a cache, complete or partial, is read for the
    source file it records: the first made from this file is returned whatever its settings
    (so a stale one is reported, a partial one resumed). Otherwise the first name that holds no
    readable cache of another source is returned, for writing: unused, or a damaged file,
    which is rebuilt as ``preprocess`` rebuilds one. A cache made from a file of the same size
    and time at another path (a moved data folder) is passed over with a warning.
    """
    free, index = None, 1
    while True:
        path = cache_path_for(cache_dir, numbered_name(name, index))
        files = [file for file in (path, partial_path_for(path)) if file.exists()]
        if not files:
            return path if free is None else free
        records = [recorded_info(file) for file in files]
        for record in records:
            if record is not None and record.same_source_path(info):
                return path
            if (record is not None and (record.source_size, record.source_mtime)
                    == (info.source_size, info.source_mtime)):
                logger.warning("%s: made from %s, a file of the same size and time as %s; "
                               "passed over (remove it if the data folder moved)", path,
                               record.source_path, info.source_path)
        if free is None and all(record is None for record in records):
            free = path
        index += 1


class SegmentCache:
    """One source's cache during a segment run: either read (complete) or being written."""

    def __init__(self, path: Path, *, reader: CacheReader | None = None,
                 writer: CacheWriter | None = None, roi: np.ndarray | None = None) -> None:
        self.path = path
        self._reader, self._writer, self._roi = reader, writer, roi

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, source: Source, *, backend,
             strides, size: tuple[int, int]) -> SegmentCache:
        """Open the source's cache in ``cache_dir`` (:func:`source_cache_path`: ``<source
        name>.h5`` unless that is another source's) for reading when it is complete and
        matches, else for writing (resuming a partial file that matches).

        Raises:
            InputError: a complete cache made with other settings (or from another version of
                the source) is in the way; a live stream or camera (``source.path`` names no
                file, so a cache of one recording would be read for the next).
        """
        if isinstance(source, StreamSource):
            raise InputError(STREAM_CACHE_REFUSED.format(source=source.path))
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        info = cache_info(source, backend=backend, strides=strides, size=size)
        path = source_cache_path(cache_dir, source.name, info)
        roi = getattr(source, "roi", None)
        if is_complete(path):
            reader = CacheReader(path)
            try:
                info = recognise_source(reader.info, info, source, path)
            except BaseException:
                reader.close()
                raise
            difference = cache_difference(reader.info, info)
            if difference is None:
                logger.info("%s: complete; the 3D-HOP is read from it, no flow runs", path)
                return cls(path, reader=reader)
            reader.close()
            raise InputError(f"{path}: a cache made from other settings or another version of "
                             f"the source ({difference}); remove it or use another --cache "
                             "folder")
        info = info_to_write(path, info, source)
        writer = CacheWriter.open(path, info=info, expected_frames=source.num_frames)
        logger.info("%s: written while segmenting", path)
        return cls(path, writer=writer, roi=roi)

    @property
    def reading(self) -> bool:
        """Whether the 3D-HOP comes from the cache (no flow to compute)."""
        return self._reader is not None

    def hops(self, frames: Iterator[torch.Tensor], *, first: int = 0, shift: int = 0
             ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(index, 3D-HOP stack)`` for each frame drawn from ``frames`` from the ``first`` on,
        read from the cache, where the frame numbered ``index`` here is ``index + shift`` in
        the source (the numbering of :func:`flow.hop.build_hops` with ``start=first``)."""
        assert self._reader is not None
        for index, _ in enumerate(frames):
            if index < first:
                continue
            if index + shift >= len(self._reader):
                raise InputError(f"{self.path}: holds {len(self._reader)} frames, the source "
                                 "has more; remove the cache to rebuild it")
            yield index, torch.from_numpy(self._reader.flow(index + shift).astype(np.float32))

    def record(self, index: int, frame: Frame, small: np.ndarray, stack: torch.Tensor) -> None:
        """Append the source's frame ``index`` (at the processing size) if it is the next one
        the cache lacks. Frames it holds already are skipped; a gap (a resumed segment run that
        starts past the end of a partial cache) stops the writing, and the cache stays partial.
        """
        if self._writer is None or index < self._writer.frames_written:
            return
        if index > self._writer.frames_written:
            logger.warning("%s: frames %d to %d are missing from the partial cache; it is not "
                           "extended by this run", self.path, self._writer.frames_written,
                           index - 1)
            self._writer.close()
            self._writer = None
            return
        mask = frame.mask
        if mask is not None and mask.shape != small.shape[:2]:
            mask = cv2.resize(mask, (small.shape[1], small.shape[0]),
                              interpolation=cv2.INTER_NEAREST)
        if self._roi is not None and self._roi.shape != small.shape[:2]:
            # Once per run: the ROI is the scene's, the processing size fixed.
            self._roi = cv2.resize(self._roi.astype(np.uint8), (small.shape[1], small.shape[0]),
                                   interpolation=cv2.INTER_NEAREST).astype(bool)
        self._writer.append(frame.number, small, stack.numpy(), with_roi(mask, self._roi))

    def finish(self) -> None:
        """Mark a written cache complete (atomic rename); nothing to do for a read one."""
        if self._writer is not None and self._writer.frames_written > 0:
            self._writer.finish()
            self._writer = None

    def close(self) -> None:
        """Release the file; a cache being written stays partial, to be resumed."""
        if self._reader is not None:
            self._reader.close()
        if self._writer is not None:
            self._writer.close()
