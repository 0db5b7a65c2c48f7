"""Training and validation items read from the HDF5 caches (layout in :mod:`flow.cache`).

An item is one frame that has ground truth (``has_mask``), as a dict of CPU tensors:

============= ======= ============= =========================================================
key           dtype   shape         meaning
============= ======= ============= =========================================================
frame         uint8   (3, h, w)     the frame, RGB
hop           float32 (S, 2, h, w)  its 3D-HOP stack, pixels at the stored size (flow from
                                    frame t to frame max(t - k_s, 0); see :mod:`flow`)
labels        uint8   (h, w)        CDnet labels (:mod:`crossnet.metrics`); 85 = not scored
background    uint8   (3, h, w)     running background before frame t (only with
                                    ``use_background``; see :mod:`crossnet.background`)
scene         str                   the cache file's stem (one video = one scene)
index         int                   the frame's index t in its cache
============= ======= ============= =========================================================

The default collate function batches these into (B, ...) tensors, a list of scene names and a
tensor of indices. :class:`crossnet.composite.CompositeDataset` yields the same keys, so the two
can be mixed in one :class:`torch.utils.data.ConcatDataset`.

Cropping and padding. With ``crop_size=(h, w)`` every item is an h x w window of its frame at a
random offset. Where the frame is smaller than the window along an axis, the frame lies at a
random place inside the window and the rest is padding: labels 85 (outside ROI, so the loss and
the metrics ignore it), flow 0 (no motion), frame and background replicate their edge pixels
(a black border would be an easy, meaningless edge for the appearance encoder). With
``crop_size=None`` items are whole frames (validation; batch frames of one size, or batch size
1).

Reproducibility. The crop offset of item ``index`` comes from
``np.random.default_rng((seed, epoch, index))``, so it depends on neither the worker that loads
the item nor the order of loading. Call :meth:`CacheFrameDataset.set_epoch` before each epoch's
DataLoader iterator is created; workers get a copy of the dataset when the iterator starts, so
with ``persistent_workers=True`` they would keep the epoch they started with (every epoch would
then see the same crops).

Processes. :class:`flow.cache.CacheReader` opens its HDF5 handle lazily, once per process, so a
dataset built in the main process is safe to use in forked or spawned DataLoader workers.
Backgrounds are computed per video on first use, by reading all its frames up to the last one
with a mask, and kept as uint8 for the masked frames only (3 bytes per pixel per masked frame).
Each worker would compute its own copy; :meth:`CacheFrameDataset.prepare_backgrounds` computes
them all in the calling process, and forked workers then share those pages.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from crossnet.background import DEFAULT_RATE, running_backgrounds
from crossnet.camera_motion import camera_flows, check_camera_motion, remove_camera_motion
from crossnet.metrics import OUTSIDE_ROI
from flow.cache import CacheReader
from flow.hop import earlier_frame

logger = logging.getLogger(__name__)

DEFAULT_CROP_SIZE = (160, 160)


def check_crop_size(crop_size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validate a crop size: None or two positive integers (h, w). Returns it as a tuple."""
    if crop_size is None:
        return None
    size = tuple(int(n) for n in crop_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"crop_size must be None or (h, w), two positive integers, got "
                         f"{crop_size!r}")
    return size


def random_crop_offset(rng: np.random.Generator, frame_size: tuple[int, int],
                       crop_size: tuple[int, int]) -> tuple[int, int]:
    """A random (top, left) of a crop window, uniform over the valid placements.

    Along an axis where the frame is at least as long as the window, the window lies inside
    the frame (offset in [0, H - h]); where the frame is shorter, the offset is negative (in
    [H - h, 0]): the frame lies inside the window at a random place.

    Args:
        rng: the random source.
        frame_size: (H, W) of the frame.
        crop_size: (h, w) of the window.
    """
    offsets = []
    for full, crop in zip(frame_size, crop_size):
        low, high = min(0, full - crop), max(0, full - crop)
        offsets.append(int(rng.integers(low, high + 1)))
    return offsets[0], offsets[1]


def crop_or_pad(array: np.ndarray, *, top: int, left: int, height: int, width: int,
                fill: float | None) -> np.ndarray:
    """The window [top, top + height) x [left, left + width) of the last two axes of ``array``.

    Parts of the window outside the array are padding: the constant ``fill``, or the array's
    edge values when ``fill`` is None.

    Args:
        array: (..., H, W).
        top, left: the window's corner; may be negative or make the window overhang.
        height, width: the window's size.
        fill: the padding value, or None to replicate edges.

    Returns:
        (..., height, width), a new contiguous array of ``array``'s dtype.
    """
    full_height, full_width = array.shape[-2:]
    pad_top, pad_left = max(0, -top), max(0, -left)
    pad_bottom = max(0, top + height - full_height)
    pad_right = max(0, left + width - full_width)
    if pad_top or pad_left or pad_bottom or pad_right:
        widths = [(0, 0)] * (array.ndim - 2) + [(pad_top, pad_bottom), (pad_left, pad_right)]
        if fill is None:
            array = np.pad(array, widths, mode="edge")
        else:
            array = np.pad(array, widths, mode="constant", constant_values=fill)
        top, left = top + pad_top, left + pad_left
    return np.ascontiguousarray(array[..., top:top + height, left:left + width])


def crop_item_arrays(arrays: dict[str, np.ndarray], *, top: int, left: int,
                     crop_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Crop the arrays of one item with one window and the item's padding rules.

    Args:
        arrays: any of ``frame`` (3, H, W), ``background`` (3, H, W), ``hop`` (S, 2, H, W),
            ``labels`` (H, W); other keys are not allowed.
        top, left: the window's corner (see :func:`random_crop_offset`).
        crop_size: (h, w).
    """
    fills = {"frame": None, "background": None, "hop": 0.0, "labels": OUTSIDE_ROI}
    unknown = set(arrays) - set(fills)
    if unknown:
        raise ValueError(f"no padding rule for {sorted(unknown)}")
    height, width = crop_size
    return {name: crop_or_pad(array, top=top, left=left, height=height, width=width,
                              fill=fills[name])
            for name, array in arrays.items()}


def open_caches(paths: Sequence[str | os.PathLike[str]], *, what: str,
                same_strides: bool = True) -> tuple[list[CacheReader], tuple[int, ...]]:
    """Open caches for training: one set of strides, unique names, at least one mask each.

    Caches without any ground-truth mask are left out with a warning.

    Args:
        paths: the cache files.
        what: how the caller names them in messages (e.g. "training caches").
        same_strides: require every cache to have the first one's strides.

    Returns:
        The readers of the caches kept (in the order given) and the first cache's strides
        (everyone's, with ``same_strides``).

    Raises:
        ValueError: no paths, a cache whose strides differ from the first one's (with
            ``same_strides``; naming both files), two caches with one file stem, or no cache
            with a mask.
        FileNotFoundError: a path with no file.
    """
    if not paths:
        raise ValueError(f"no {what} given")
    readers: list[CacheReader] = []
    strides: tuple[int, ...] | None = None
    first_path = None
    stems: dict[str, Path] = {}
    for path in paths:
        reader = CacheReader(path)
        if strides is None:
            strides, first_path = reader.info.strides, reader.path
        elif same_strides and reader.info.strides != strides:
            raise ValueError(f"{reader.path}: strides {reader.info.strides} differ from "
                             f"{strides} of {first_path}; all {what} must share their strides")
        stem = reader.path.stem
        if stem in stems:
            raise ValueError(f"{reader.path}: same scene name {stem!r} as {stems[stem]}; "
                             f"rename one of the {what}")
        stems[stem] = reader.path
        if not reader.has_mask.any():
            logger.warning("%s: no frame has a ground-truth mask; left out of the %s",
                           reader.path, what)
            continue
        readers.append(reader)
    if not readers:
        raise ValueError(f"none of the {len(paths)} {what} has a ground-truth mask")
    return readers, strides


class VideoBackgrounds:
    """The uint8 running backgrounds of chosen frames of each cache, computed on first use.

    Args:
        readers: the caches.
        rate: EMA rate (see :mod:`crossnet.background`).
        estimator: one of :data:`crossnet.background.ESTIMATORS`.
        align: move the estimate with the camera (the camera flow of each cache's stride-1
            field, :func:`crossnet.camera_motion.camera_flows`); the caches need stride 1.
    """

    def __init__(self, readers: Sequence[CacheReader], *, rate: float = DEFAULT_RATE,
                 estimator: str = "ema", align: bool = False) -> None:
        self._readers = list(readers)
        self.rate = rate
        self.estimator = estimator
        self.align = align
        if align:
            for reader in self._readers:
                if 1 not in reader.info.strides:
                    raise ValueError(f"{reader.path}: aligning the background with the camera "
                                     f"needs stride 1, the cache has {reader.info.strides}")
        self._tables: dict[int, dict[int, np.ndarray]] = {}

    def _compute(self, cache: int) -> dict[int, np.ndarray]:
        reader = self._readers[cache]
        wanted = np.flatnonzero(reader.has_mask)
        last = int(wanted[-1])
        keep = set(wanted.tolist())
        frames = (reader.frame(t) for t in range(last + 1))
        motions = self._motions(reader, last) if self.align else None
        backgrounds = running_backgrounds(frames, rate=self.rate, estimator=self.estimator,
                                          motions=motions)
        return {t: np.ascontiguousarray(background.transpose(2, 0, 1))
                for t, background in enumerate(backgrounds) if t in keep}

    @staticmethod
    def _motions(reader: CacheReader, last: int) -> Iterator[torch.Tensor | None]:
        """The camera's flow from each frame 0..last to the one before (None for frame 0).

        Reads the frames itself (again), so that no list of a whole video's frames is kept."""
        stride = reader.info.strides.index(1)
        previous = reader.frame(0).transpose(2, 0, 1)
        yield None
        for t in range(1, last + 1):
            frame = reader.frame(t).transpose(2, 0, 1)
            flow = reader.flow(t)[stride:stride + 1]
            yield camera_flows(flow, (1,), frame, previous[None])[0]
            previous = frame

    def get(self, cache: int, t: int) -> np.ndarray:
        """The background of frame t of cache ``cache``: (3, H, W) uint8, a copy.

        Raises:
            KeyError: frame t has no mask (backgrounds are kept for masked frames only).
        """
        table = self._tables.get(cache)
        if table is None:
            table = self._tables[cache] = self._compute(cache)
        return table[t].copy()  # items may be changed in place; the table must not be

    def prepare(self) -> None:
        """Compute every cache's backgrounds now (see the module docstring: worker sharing)."""
        for cache in range(len(self._readers)):
            if cache not in self._tables:
                self._tables[cache] = self._compute(cache)


def to_item(arrays: dict[str, np.ndarray], *, scene: str, index: int) -> dict[str, Any]:
    """Arrays of one item (cropped) -> the item dict of tensors (see the module docstring)."""
    item: dict[str, Any] = {"frame": torch.from_numpy(arrays["frame"]),
                            "hop": torch.from_numpy(arrays["hop"].astype(np.float32, copy=False)),
                            "labels": torch.from_numpy(arrays["labels"])}
    if "background" in arrays:
        item["background"] = torch.from_numpy(arrays["background"])
    item["scene"] = scene
    item["index"] = int(index)
    return item


class CacheFrameDataset(Dataset):
    """The frames with ground truth of a set of caches (see the module docstring).

    Args:
        cache_paths: the cache files; all must share their strides. Caches without any mask
            are left out with a warning.
        crop_size: (h, w) of the random crop, or None for whole frames.
        use_background: add the ``background`` key.
        background_rate: EMA rate of the running background.
        background_estimator: how the running background is made (``"ema"`` or ``"median"``).
        camera_motion: ``"none"`` or ``"affine"``: subtract the camera's motion from each
            whole frame's 3D-HOP before cropping (:mod:`crossnet.camera_motion`).
        align_background: move the running background with the camera (see
            :class:`VideoBackgrounds`).
        seed: seeds the crop offsets with the epoch and the item index.

    Raises:
        ValueError: see :func:`open_caches`; a bad crop size.
    """

    def __init__(self, cache_paths: Sequence[str | os.PathLike[str]], *,
                 crop_size: Sequence[int] | None = DEFAULT_CROP_SIZE,
                 use_background: bool = False, background_rate: float = DEFAULT_RATE,
                 background_estimator: str = "ema", camera_motion: str = "none",
                 align_background: bool = False, seed: int = 0) -> None:
        self.crop_size = check_crop_size(crop_size)
        self.use_background = use_background
        self.camera_motion = check_camera_motion(camera_motion)
        self.seed = int(seed)
        self.epoch = 0
        self._readers, self.strides = open_caches(cache_paths, what="training caches")
        self._backgrounds = VideoBackgrounds(self._readers, rate=background_rate,
                                             estimator=background_estimator,
                                             align=align_background and use_background)
        self._items = [(cache, int(t)) for cache, reader in enumerate(self._readers)
                       for t in np.flatnonzero(reader.has_mask)]
        self.scenes = [reader.path.stem for reader in self._readers]

    @property
    def item_scenes(self) -> list[str]:
        """The scene name of every item, in item order."""
        return [self.scenes[cache] for cache, _ in self._items]

    def set_epoch(self, epoch: int) -> None:
        """Use the crops of ``epoch`` from now on (see the module docstring)."""
        self.epoch = int(epoch)

    def prepare_backgrounds(self) -> None:
        """Compute every video's backgrounds now, e.g. before DataLoader workers fork."""
        if self.use_background:
            self._backgrounds.prepare()

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self._items):
            raise IndexError(f"item {index} out of range for {len(self._items)} items")
        cache, t = self._items[index]
        reader = self._readers[cache]
        frame = np.ascontiguousarray(reader.frame(t).transpose(2, 0, 1))
        hop = reader.flow(t)
        if self.camera_motion != "none":
            earlier = np.stack([reader.frame(earlier_frame(t, k)).transpose(2, 0, 1)
                                for k in self.strides])
            hop = remove_camera_motion(hop, self.strides, self.camera_motion, frame=frame,
                                       earlier=earlier)
        arrays = {"frame": frame, "hop": hop, "labels": reader.mask(t)}
        if self.use_background:
            arrays["background"] = self._backgrounds.get(cache, t)
        if self.crop_size is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            top, left = random_crop_offset(rng, arrays["labels"].shape, self.crop_size)
            arrays = crop_item_arrays(arrays, top=top, left=left, crop_size=self.crop_size)
        return to_item(arrays, scene=self.scenes[cache], index=t)


def scene_balanced_weights(dataset: Any) -> torch.Tensor:
    """Sampling weights that make every scene equally likely, whatever its number of frames.

    For :class:`torch.utils.data.WeightedRandomSampler`: an item of a scene with n items gets
    ``1 / (num_scenes * n)``, so the weights of each scene sum to ``1 / num_scenes`` and the
    total is 1.

    Args:
        dataset: anything with ``item_scenes``, the scene name of each item (e.g.
            :class:`CacheFrameDataset`).

    Returns:
        (N,) float64.
    """
    scenes = list(dataset.item_scenes)
    if not scenes:
        raise ValueError("the dataset has no items")
    names, inverse, counts = np.unique(np.asarray(scenes, dtype=str), return_inverse=True,
                                       return_counts=True)
    weights = 1.0 / (len(names) * counts[inverse])
    return torch.from_numpy(weights.astype(np.float64))
