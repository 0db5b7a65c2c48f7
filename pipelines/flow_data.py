"""Real frames for training the flow network, and the Middlebury pairs it is reported on.

- :func:`load_clips`: every video, frame folder and scene under the given folders (found as
  ``crossnet preprocess`` finds them, :func:`pipelines.preprocess.collect_sources`), decoded
  into memory as uint8 tensors, at most ``max_frames`` per source and at most ``max_side``
  pixels on the longer side (never smaller than the training crop). Frames of the flow
  benchmarks (any path with a ``Middlebury`` or ``mmflow_testdata`` folder) are left out with a
  warning: they are kept for measuring, and a network trained on them would be measured on its
  own training data.
- :func:`texture_pool`: frames of those clips, as textures for synthetic pairs.
- :class:`VideoPairSampler`: random crops of consecutive frames (stride 1 or 2), in a random
  order, for the self-supervised stage; deterministic in (seed, step).
- :func:`middlebury_pairs`: the Middlebury "other" pairs with ground truth, for reporting only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow.io import read_flo
from pipelines.errors import InputError, one_line
from pipelines.imageio import read_image_rgb
from pipelines.sources import resize_rgb

logger = logging.getLogger(__name__)

FLOW_BENCHMARK_FOLDERS = ("Middlebury", "mmflow_testdata")


@dataclass
class Clip:
    """Consecutive frames of one source.

    Attributes:
        name: the source's name.
        frames: (T, 3, H, W) uint8 RGB.
    """

    name: str
    frames: Tensor


def _is_flow_benchmark(path: str) -> bool:
    return any(part in FLOW_BENCHMARK_FOLDERS for part in Path(path).parts)


def _scaled_size(width: int, height: int, *, max_side: int, min_size: tuple[int, int]
                 ) -> tuple[int, int]:
    """(width, height) with the longer side at most ``max_side`` but covering ``min_size``."""
    scale = min(1.0, max_side / max(width, height))
    scale = max(scale, min_size[1] / width, min_size[0] / height)
    return max(min_size[1], round(width * scale)), max(min_size[0], round(height * scale))


def load_clips(data_dirs: Sequence[str | os.PathLike], *, max_frames: int, max_side: int,
               min_size: tuple[int, int], exclude: str | os.PathLike | None = None
               ) -> list[Clip]:
    """Decode every source under ``data_dirs`` into memory.

    Args:
        data_dirs: folders (or video files) searched recursively for videos, frame folders
            and scenes.
        max_frames: frames kept per source (the first ones).
        max_side: frames are shrunk so their longer side is at most this many pixels...
        min_size: ...but kept at least (height, width) (enlarged if needed), so a training
            crop fits.
        exclude: a folder never searched (the run folder, when it lies inside a data folder).

    A source under a folder that cannot be read (not a video, a corrupt or truncated file,
    frames of differing sizes) is skipped with a warning naming it, as ``crossnet train``
    skips a damaged cache: one bad file among hours of footage must not stop the run. A path
    given directly that cannot be read, or a folder where nothing is usable, is an error.

    Returns:
        One clip per source with at least 2 frames.

    Raises:
        InputError: a path is missing, or holds no video, frame folder or scene, or nothing
            usable was found.
    """
    from pipelines.preprocess import collect_sources

    if not data_dirs:
        raise InputError("no --data folder given")
    clips: list[Clip] = []
    for spec in data_dirs:
        path = Path(spec)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        failed: list[tuple[str, str]] = []
        sources = collect_sources([path], size=None, failed=failed, exclude=exclude)
        for where, reason in failed:
            if Path(where) == path:
                raise InputError(reason)
            logger.warning("%s; skipped", _naming(reason, where))
        kept = skipped = 0
        for source in sources:
            if _is_flow_benchmark(source.path):
                logger.warning("%s: flow-benchmark frames are for evaluation only; skipped",
                               source.path)
                continue
            try:
                frames = _decode(source, max_frames=max_frames, max_side=max_side,
                                 min_size=min_size)
            except InputError as error:
                if Path(source.path) == path:
                    raise
                logger.warning("%s; skipped", _naming(one_line(error), source.path))
                skipped += 1
                continue
            if len(frames) < 2:
                if Path(source.path) == path:
                    raise InputError(f"{path}: {len(frames)} frame(s); training pairs need at "
                                     "least 2")
                logger.warning("%s: %d frame(s), training pairs need at least 2; skipped",
                               source.path, len(frames))
                skipped += 1
                continue
            clips.append(Clip(source.name, torch.stack(frames)))
            kept += 1
        if not kept:
            unusable = f"; {len(failed) + skipped} unusable, see the warnings" if (
                failed or skipped) else ""
            raise InputError(f"{path}: no video or frame folder with at least 2 frames under it "
                             f"(flow-benchmark frames are not used for training{unusable})")
    return clips


def _naming(reason: str, where: str | os.PathLike) -> str:
    """``reason`` starting with the file it is about (most reasons already do)."""
    return reason if reason.startswith(str(where)) else f"{where}: {reason}"


def _decode(source, *, max_frames: int, max_side: int, min_size: tuple[int, int]
            ) -> list[Tensor]:
    """The first ``max_frames`` frames of ``source``, (3, H, W) uint8, resized once."""
    frames: list[Tensor] = []
    for frame in source:  # the sources refuse frames of differing sizes (InputError)
        if not frames:
            height, width = frame.rgb.shape[:2]
            size = _scaled_size(width, height, max_side=max_side, min_size=min_size)
        frames.append(torch.from_numpy(resize_rgb(frame.rgb, size)).permute(2, 0, 1))
        if len(frames) >= max_frames:
            break
    return frames


def texture_pool(clips: Sequence[Clip], *, per_clip: int = 16) -> list[Tensor]:
    """Up to ``per_clip`` evenly spaced frames of each clip, (3, H, W) uint8, as textures."""
    pool = []
    for clip in clips:
        count = len(clip.frames)
        for index in np.linspace(0, count - 1, min(per_clip, count)).round().astype(int):
            pool.append(clip.frames[int(index)])
    return pool


class VideoPairSampler:
    """Random training pairs from clips: a clip (each equally likely), a frame t, the frame
    t + 1 or t + 2, the same random crop of both, a random horizontal flip, and with
    probability 1/2 the two swapped (so motion has no preferred direction in time).

    Args:
        clips: the clips (each at least 2 frames, frames at least the crop size).
        crop_size: (height, width) of the crops.
    """

    def __init__(self, clips: Sequence[Clip], *, crop_size: tuple[int, int]) -> None:
        if not clips:
            raise InputError("no clip to draw training pairs from")
        self.clips = list(clips)
        self.crop_size = crop_size
        for clip in self.clips:
            if min(s - c for s, c in zip(clip.frames.shape[-2:], crop_size, strict=True)) < 0:
                raise InputError(f"{clip.name}: frames {tuple(clip.frames.shape[-2:])} are "
                                 f"smaller than the crop {crop_size}")

    def sample(self, generator: torch.Generator, batch_size: int) -> tuple[Tensor, Tensor]:
        """A batch of pairs: two (B, 3, H, W) float32 tensors in [0, 255]."""
        firsts, seconds = [], []
        crop_height, crop_width = self.crop_size
        for _ in range(batch_size):
            clip = self.clips[int(torch.randint(len(self.clips), (), generator=generator))]
            count, _, height, width = clip.frames.shape
            gap = min(int(torch.randint(1, 3, (), generator=generator)), count - 1)
            start = int(torch.randint(count - gap, (), generator=generator))
            top = int(torch.randint(height - crop_height + 1, (), generator=generator))
            left = int(torch.randint(width - crop_width + 1, (), generator=generator))
            window = (slice(top, top + crop_height), slice(left, left + crop_width))
            first = clip.frames[start][(slice(None), *window)].float()
            second = clip.frames[start + gap][(slice(None), *window)].float()
            if torch.rand((), generator=generator) < 0.5:
                first, second = first.flip(-1), second.flip(-1)
            if torch.rand((), generator=generator) < 0.5:
                first, second = second, first
            firsts.append(first)
            seconds.append(second)
        return torch.stack(firsts), torch.stack(seconds)


@dataclass
class FlowPair:
    """A pair with ground truth: images (1, 3, H, W) float32 in [0, 255], flow (1, 2, H, W)
    (unknown values marked as in the .flo file, >= 1e9)."""

    name: str
    image1: Tensor
    image2: Tensor
    flow: Tensor


def middlebury_pairs(root: str | os.PathLike) -> list[FlowPair]:
    """The Middlebury pairs with ground truth under ``root`` (the ``Middlebury`` folder or its
    parent): ``other-data/<scene>/frame10.png -> frame11.png`` with
    ``other-gt-flow/<scene>/flow10.flo``.

    Raises:
        InputError: no such folder, or no pair with ground truth in it.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if (root / "Middlebury").is_dir():
        root = root / "Middlebury"
    pairs = []
    for gt in sorted((root / "other-gt-flow").glob("*/flow10.flo")):
        images = root / "other-data" / gt.parent.name

        def load(name: str, folder: Path = images) -> Tensor:
            return torch.from_numpy(read_image_rgb(folder / name)).permute(2, 0, 1)[None].float()

        pairs.append(FlowPair(gt.parent.name, load("frame10.png"), load("frame11.png"),
                              torch.from_numpy(read_flo(gt))[None]))
    if not pairs:
        raise InputError(f"{root}: no Middlebury pair with ground truth (expected "
                         "other-gt-flow/<scene>/flow10.flo and other-data/<scene>/frame10.png)")
    return pairs
