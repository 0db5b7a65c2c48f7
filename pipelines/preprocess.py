"""`crossnet preprocess`: videos, frame folders and scenes -> one HDF5 cache per video.

Each cache holds the frames, their 3D-HOP flow stacks and any ground-truth masks (layout in
:mod:`flow.cache`). A scene's ROI is folded into its masks: pixels outside ``ROI.bmp`` are stored
as 85, CDnet's own "outside ROI" label, so the cache alone says what is scored. Complete caches are skipped; an interrupted cache resumes where it stopped;
a video that fails is reported and the others still finish. Under ``torchrun`` each rank takes
every WORLD_SIZE-th video (one file per video, so no two ranks write the same file).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

import crossnet
from crossnet.metrics import OUTSIDE_ROI
from flow.cache import (
    CacheBusyError,
    CacheInfo,
    CacheReader,
    CacheWriter,
    cache_path_for,
    is_complete,
    numbered_name,
    partial_path_for,
    recorded_info,
)
from flow.colour import flow_to_colour
from flow.hop import build_hops, check_strides
from pipelines.errors import InputError, failure_line, one_line
from pipelines.imageio import write_png_atomic
from pipelines.memory import check_fits, flow_bytes, format_size
from pipelines.outputs import prepare_output_folder
from pipelines.progress import progress_bar
from pipelines.scenes import find_scenes, is_scene
from pipelines.sources import (
    MIN_FRAMES,
    FrameFolderSource,
    Source,
    StreamSource,
    VideoSource,
    is_stream_spec,
    list_image_files,
    source_identity,
    source_sha256,
)

logger = logging.getLogger(__name__)

Outcome = Literal["wrote", "skipped", "failed"]
"""What became of one input of a :func:`preprocess` batch."""

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)


@dataclass
class PreprocessSummary:
    """What a preprocess run did: caches written, caches already complete, inputs that failed."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, one-line reason)


STREAM_NOT_CACHED = ("a camera or live stream: preprocess caches video files, frame folders "
                     "and scenes (crossnet segment reads streams)")


def collect_sources(inputs: Iterable[str | os.PathLike], *, size: tuple[int, int] | None,
                    failed: list[tuple[str, str]],
                    exclude: str | os.PathLike | None = None) -> list[Source]:
    """Every video, frame folder and scene under ``inputs``, in a stable order.

    A file is a video; a folder is a scene (or several, for the HOFAM demo layout), a folder of
    frames (images and no video), or else a folder searched recursively for videos, scenes and
    frame folders (images next to videos are left out, with a warning). An input given twice
    (or found under two inputs) is kept once; a camera index or stream URL is a failed input
    (:data:`STREAM_NOT_CACHED`). Inputs that cannot be opened are appended to ``failed`` and
    left out. ``exclude`` (the output folder) is never searched: its preview pictures are not a
    folder of frames.
    """
    sources: list[Source] = []
    seen: set[tuple[Path, str]] = set()
    skip = Path(exclude).resolve() if exclude is not None else None
    for spec in inputs:
        if is_stream_spec(spec):  # before Path() folds the URL's "//"
            failed.append((str(spec), f"{spec}: {STREAM_NOT_CACHED}"))
            continue
        try:
            found = _sources_under(Path(spec), size=size, top=True, failed=failed, skip=skip)
        except (InputError, OSError) as error:
            failed.append((str(spec), one_line(error)))
            continue
        for item in found:
            if isinstance(item, tuple):
                failed.append(item)
                continue
            key = (Path(item.path).resolve(), item.name)
            if key in seen:  # the same input named twice (or found under two inputs)
                logger.warning("%s: already included by an earlier input; cached once",
                               item.path)
                continue
            seen.add(key)
            sources.append(item)
    return sources


def _sources_under(path: Path, *, size, top: bool, failed: list[tuple[str, str]],
                   skip: Path | None = None) -> list:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if top or path.suffix.lower() in VIDEO_SUFFIXES:
            return [_guarded(lambda: VideoSource(path, size=size), path)]
        return []
    if is_scene(path):
        before = len(failed)
        scenes = find_scenes([path], size=size, failed=failed)
        # A malformed scene is a failed input, not an empty folder.
        return scenes if scenes or len(failed) > before else []
    images = list_image_files(path)
    if images:
        videos = [child.name for child in sorted(path.iterdir())
                  if child.suffix.lower() in VIDEO_SUFFIXES and not child.name.startswith(".")
                  and child.is_file()]
        if not videos:
            return [_guarded(lambda: FrameFolderSource(path, size=size), path)]
        # Videos next to images: a cover picture or thumbnail must not turn the videos'
        # folder into a frame folder and hide them. (Only videos beside the images count: a
        # frame folder may well hold subfolders, e.g. its masks.)
        shown = ", ".join(image.name for image in images[:3]) + (", ..." if len(images) > 3
                                                                  else "")
        logger.warning("%s: holds videos and %d image file(s) (%s); the videos are read, the "
                       "images are not (a folder of frames holds frames only)", path,
                       len(images), shown)
    found = []
    before = len(failed)
    for child in sorted(path.iterdir()):
        if not child.name.startswith(".") and child.resolve() != skip:
            try:
                found.extend(_sources_under(child, size=size, top=False, failed=failed,
                                            skip=skip))
            except OSError as error:  # an unreadable subfolder fails alone
                failed.append((str(child), one_line(error)))
    if top and not found and len(failed) == before:
        raise InputError(f"{path}: no video, frame folder or scene under it")
    return found


def _guarded(open_source, path: Path):
    """Open a source; an unreadable one becomes a (path, reason) failure instead."""
    try:
        return open_source()
    except (InputError, OSError) as error:
        return (str(path), one_line(error))


def unique_cache_names(sources: Sequence[Source]) -> list[str]:
    """Cache names from source names; a name already given gets ``_2``, ``_3``... in input
    order (:func:`flow.cache.numbered_name`), so ``a/clip``, ``b/clip``, ``c/clip_2`` get
    ``clip``, ``clip_2``, ``clip_2_2``. ``segment --cache`` finds each one's own the same way
    (:func:`pipelines.segment_cache.source_cache_path`)."""
    taken: set[str] = set()
    names = []
    for source in sources:
        index = 1
        while numbered_name(source.name, index) in taken:
            index += 1
        names.append(numbered_name(source.name, index))
        taken.add(names[-1])
    return names


def shard_for_rank(items: Sequence, *, rank: int | None = None,
                   world_size: int | None = None) -> list:
    """The items this process handles under torchrun: every WORLD_SIZE-th, from RANK."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return list(items[rank::world_size])


def preprocess_source(source: Source, cache_path: Path, *, backend, strides: Sequence[int],
                      max_frames: int | None = None, batch_frames: int = 8,
                      overwrite: bool = False, progress: bool = True) -> bool:
    """Write the cache of one source. Returns False when a complete cache was already there.

    Raises:
        InputError: the source cannot be read, has fewer than 2 frames, would not fit in
            memory, or a complete cache made with other settings is in the way (without
            ``overwrite``).
    """
    strides = check_strides(strides)
    if source.num_frames is not None and source.num_frames < MIN_FRAMES:
        raise InputError(f"{source.path}: {source.num_frames} frame(s); the 3D-HOP needs at "
                         f"least {MIN_FRAMES} (motion between frames)")
    check_fits(flow_bytes(source.frame_size, strides=strides, batch_frames=batch_frames,
                          backend=backend.name,
                          native_size=getattr(source, "native_size", None)),
               what=f"{source.path} at {format_size(source.frame_size)}",
               hint="choose a smaller --size or --batch-frames",
               device=getattr(backend, "device", "cpu"))
    info = cache_info(source, backend=backend, strides=strides, size=source.frame_size)
    expected = source.num_frames
    if max_frames is not None and expected is not None:
        expected = min(expected, max_frames)
    if is_complete(cache_path):
        if not overwrite:
            with CacheReader(cache_path) as reader:
                info = recognise_source(reader.info, info, source, cache_path)
                difference = cache_difference(reader.info, info)
                if difference is None and not _holds_the_frames(reader, expected):
                    difference = (f"frames expected: {reader.expected_frames} in the cache, "
                                  f"{expected} now (--max-frames)")
            if difference is None:
                return False
            raise InputError(f"{cache_path}: exists, made from other settings or another "
                             f"version of the source ({difference}); pass --overwrite to "
                             "rebuild it")
    elif cache_path.exists():
        # Only a complete cache is ever renamed to this name, so this one was damaged since
        # (a truncated copy, a full disk): it is rebuilt, and replaced only once complete.
        logger.warning("%s: not a complete, readable cache (truncated or corrupt); rebuilding it",
                       cache_path)
    info = info_to_write(cache_path, info, source)
    with CacheWriter.open(cache_path, info=info, expected_frames=expected) as writer:
        start = writer.frames_written
        pending: dict[int, object] = {}

        def frames() -> Iterator[torch.Tensor]:
            for index, frame in enumerate(itertools.islice(iter(source), max_frames)):
                if index >= start:
                    pending[index] = frame
                yield torch.from_numpy(np.ascontiguousarray(frame.rgb)).permute(2, 0, 1)

        bar = progress_bar(total=expected, initial=start, desc=source.name, unit="frame",
                           leave=False, disable=not progress)
        with bar:
            for index, stack in build_hops(frames(), backend, strides, batch_frames=batch_frames,
                                           start=start):
                frame = pending.pop(index)
                writer.append(frame.number, frame.rgb, stack.numpy(),
                              with_roi(frame.mask, getattr(source, "roi", None)))
                bar.update()
        if writer.frames_written < MIN_FRAMES:
            writer.close()
            writer.partial_path.unlink(missing_ok=True)
            raise InputError(f"{source.path}: {writer.frames_written} frame(s) decoded; the "
                             f"3D-HOP needs at least {MIN_FRAMES} (motion between frames)")
        writer.finish()  # os.replace: an old cache under --overwrite is swapped atomically
    return True


def _holds_the_frames(reader: CacheReader, expected: int | None) -> bool:
    """Whether a complete cache holds the frames a run expecting ``expected`` would write: the
    same count expected, or a source that ran out before both counts (a video whose header
    promises more frames than it decodes), or a count unknown to either."""
    if reader.expected_frames is None or expected is None:
        return True
    held = len(reader)
    ran_out = held < reader.expected_frames
    return expected == reader.expected_frames or (ran_out and expected >= held)


def cache_info(source: Source, *, backend, strides: Sequence[int],
               size: tuple[int, int]) -> CacheInfo:
    """What the cache of ``source`` made by ``backend`` at ``size`` records: the source by its
    absolute path (caches compare paths as the files they name, so ``clip.mp4`` typed in its
    folder and ``/data/clip.mp4`` typed elsewhere are one cache), its bytes and mtime, the
    strides and how the flow was made."""
    source_size, source_mtime = source_identity(source)
    path = source.path if isinstance(source, StreamSource) else Path(source.path).resolve()
    return CacheInfo(strides=tuple(strides), backend=backend.name,
                     weights_sha256=getattr(backend, "weights_sha256", ""),
                     flow_settings=getattr(backend, "settings", ""), size=size,
                     source_path=str(path), source_size=source_size,
                     source_mtime=source_mtime, fps=source.fps or 0.0,
                     package_version=crossnet.__version__)


def recognise_source(recorded: CacheInfo, info: CacheInfo, source: Source,
                     cache_path: Path) -> CacheInfo:
    """``info`` (what a cache of ``source`` would record now), taking the mtime the cache
    ``cache_path`` recorded (``recorded``) when only that differs and the source's bytes are
    the ones it was made from: a copied, re-provisioned or touched source still matches.

    The source is hashed (:func:`pipelines.sources.source_sha256`) only in that case, and
    only when the cache recorded a hash; the result carries the hash, so a second call hashes
    nothing. Anything else returns ``info`` unchanged, for the caller's usual comparison.
    """
    if (not recorded.source_sha256 or recorded.source_mtime == info.source_mtime
            or recorded.difference(dataclasses.replace(info,
                                                       source_mtime=recorded.source_mtime))):
        return info
    digest = info.source_sha256 or source_sha256(source)
    info = dataclasses.replace(info, source_sha256=digest)
    if digest != recorded.source_sha256:
        return info
    logger.info("%s: %s has another modification time but the bytes the cache was made from",
                cache_path, info.source_path)
    return dataclasses.replace(info, source_mtime=recorded.source_mtime)


def cache_difference(recorded: CacheInfo, info: CacheInfo) -> str | None:
    """:meth:`flow.cache.CacheInfo.difference` of a cache's ``recorded`` info and ``info`` as
    :func:`recognise_source` left it, saying why a new mtime was not enough to reuse it."""
    difference = recorded.difference(info)
    if difference is not None and difference.startswith("source_mtime:"):
        if not recorded.source_sha256:
            difference += "; the cache predates recording the source's sha256"
        elif info.source_sha256 and info.source_sha256 != recorded.source_sha256:
            difference += "; the source's bytes differ too"
    return difference


def info_to_write(cache_path: Path, info: CacheInfo, source: Source) -> CacheInfo:
    """What a writer of ``cache_path`` records for ``source``: ``info`` recognised against a
    partial file there (:func:`recognise_source`), which then resumes with what it recorded;
    otherwise ``info`` with the source's sha256, for a new file."""
    partial = partial_path_for(cache_path)
    recorded = recorded_info(partial) if partial.exists() else None
    if recorded is not None:
        info = recognise_source(recorded, info, source, partial)
        if recorded.same_content_as(info) and recorded.source_sha256:
            return dataclasses.replace(info, source_sha256=recorded.source_sha256)
    if not info.source_sha256:
        logger.info("%s: hashing %s to record its sha256", cache_path, info.source_path)
        info = dataclasses.replace(info, source_sha256=source_sha256(source))
    return info


def with_roi(mask: np.ndarray | None, roi: np.ndarray | None) -> np.ndarray | None:
    """Ground-truth labels with the pixels outside ``roi`` set to 85 (CDnet's outside-ROI label).

    Args:
        mask: (H, W) uint8 CDnet labels, or None (no ground truth: stays None).
        roi: (H, W) bool, True where scored, or None (everything scored).
    """
    if mask is None or roi is None:
        return mask
    if roi.shape != mask.shape:
        raise ValueError(f"ROI shape {roi.shape} differs from the mask shape {mask.shape}")
    return np.where(roi, mask, OUTSIDE_ROI).astype(np.uint8)


def write_preview(cache_path: Path, preview_path: Path) -> None:
    """A PNG of the middle frame of a cache: the frame, then its flow colour-coded per stride."""
    with CacheReader(cache_path) as reader:
        t = len(reader) // 2
        frame, stacks = reader.frame(t), reader.flow(t)
        strides = reader.info.strides
    panels = [frame]
    for stride, flow in zip(strides, stacks):
        panel = flow_to_colour(flow.astype(np.float32))
        cv2.putText(panel, f"k={stride}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        panels.append(panel)
    write_png_atomic(preview_path, np.concatenate(panels, axis=1))


def preprocess(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *, backend,
               strides: Sequence[int] = (1, 4, 8), size: tuple[int, int] | None = None,
               max_frames: int | None = None, batch_frames: int = 8, preview: bool = False,
               overwrite: bool = False, progress: bool = True,
               on_result: Callable[[Outcome, str], None] | None = None
               ) -> PreprocessSummary:
    """Preprocess every input into ``out_dir``; failures are collected, not raised.

    Args:
        inputs: video files, frame folders, scene folders, or folders holding any of these.
        out_dir: where the caches go (created if needed), one ``<name>.h5`` per video.
        backend: a 3D-HOP backend from :func:`flow.backends.make_hop_backend`.
        strides: the 3D-HOP strides.
        size: optional (width, height) stored size; default: each source's own size.
        max_frames: stop each video after this many frames.
        batch_frames: frames whose flow pairs go to the backend in one batch.
        preview: also write ``<name>_preview.png`` per video.
        overwrite: rebuild caches that exist, even if complete.
        progress: show progress bars.
        on_result: called as each input is done, with ``"wrote"`` or ``"skipped"`` and the
            cache's path, or ``"failed"`` and the one-line reason, so that a caller reports as
            the batch goes (an interrupted batch has said what it finished).

    Returns:
        The summary of this process's share of the inputs.
    """
    strides = check_strides(strides)
    if max_frames is not None and max_frames < MIN_FRAMES:
        raise ValueError(f"max_frames must be >= {MIN_FRAMES}, got {max_frames}")
    out_dir = prepare_output_folder(out_dir)
    if size is not None:
        # Once, before any input is opened: opening a scene already resizes its ROI to ``size``.
        check_fits(flow_bytes(size, strides=strides, batch_frames=batch_frames,
                              backend=backend.name),
                   what=f"preprocessing at {format_size(size)}",
                   hint="choose a smaller --size or --batch-frames",
                   device=getattr(backend, "device", "cpu"))
    summary = PreprocessSummary()
    sources = collect_sources(inputs, size=size, failed=summary.failed, exclude=out_dir)
    report = on_result or (lambda kind, text: None)
    for _, reason in summary.failed:  # inputs that could not be opened
        report("failed", reason)
    named = shard_for_rank(list(zip(sources, unique_cache_names(sources))))
    for source, name in progress_bar(named, desc="videos", unit="video",
                                     disable=not progress or not named):
        cache_path = cache_path_for(out_dir, name)
        preview_path = out_dir / f"{name}_preview.png"
        try:
            written = preprocess_source(source, cache_path, backend=backend, strides=strides,
                                        max_frames=max_frames, batch_frames=batch_frames,
                                        overwrite=overwrite, progress=progress)
            if preview and (written or not preview_path.exists()):
                write_preview(cache_path, preview_path)
        except Exception as error:  # noqa: BLE001 - one failed video must not stop the batch
            summary.failed.append((str(source.path), _failure_line(error, source.path)))
            report("failed", summary.failed[-1][1])
            continue
        (summary.written if written else summary.skipped).append(cache_path)
        report("wrote" if written else "skipped", str(cache_path))
    return summary


def _failure_line(error: Exception, path: str) -> str:
    """One line for a failed input that names it; unexpected errors keep their type."""
    return failure_line(error, path, (InputError, ValueError, OSError, CacheBusyError))
