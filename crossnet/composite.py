"""Synthetic training items: objects cut out of one video, moving across another's frames.

Real scenes with ground truth are few; pasting the foreground objects of one scene onto the
frames of another multiplies the scene/object combinations the model sees. An item is made so:

1. A target: a background cache (uniformly), one of its frames t WITH ground truth (uniformly),
   and a crop window (as in :mod:`crossnet.data`; frames smaller than it are padded alike).
2. An object: in a masked frame of an object cache (both drawn uniformly; redrawn up to
   ``max_attempts`` times until one qualifies), a connected component (8-connected) of label
   255, drawn uniformly among those with at least ``min_object_pixels`` pixels and at most
   ``max_cut_fraction`` of their outer boundary on unscored ground (label 85, outside the ROI)
   or outside the image: such an object is cut off by the ROI or the frame edge and would be
   pasted with a straight cut. Label 170 does not count as cut: CDnet rings nearly every
   object with a band of 170 (boundary/motion blur). Only the 255 pixels are cut out; the
   object keeps its appearance in every frame (a rigid, unchanging sprite).
3. A straight motion: the object's centre at time t is uniform over the real (unpadded) part of
   the window, its velocity v has a uniform direction and a speed uniform in ``speed_range``
   pixels per frame. At time e it lies at its time-t position + (e - t) * v, sub-pixel (the
   sprite and its alpha are shifted bilinearly; at time t the shift is whole pixels, so frame t
   holds the object's exact pixels and a binary alpha).
4. Frames: for each stride k, frame e = max(t - k, 0) of the target with the object at its
   time-e position, and frame t with it at its time-t position; the object occludes the scene.
5. The 3D-HOP is RECOMPUTED on these composite frames with the flow backend given (e.g. DIS
   fast), so the motion cue has the errors and character of the flow seen at inference, not a
   perfect synthetic flow. It is computed on the whole frames and then cropped, like the cached
   flow of real frames (DIS builds its image pyramid from the image size: on a small crop it
   would have fewer levels and miss larger motions). Strides with e == t (only t = 0) get zero
   flow, as in :mod:`flow.hop`. Inside the object the flow is about (e - t) * v = -k * v.
6. Labels: the target frame's ground truth (cropped, 85 in padding) with the object's pixels at
   time t set to 255.
7. Background (``use_background``): the target's own running background at t (see
   :mod:`crossnet.data`), without the object. A real object moving so would leave a faint trail
   in an EMA background (its earlier frames enter the average); the target's earlier frames are
   not re-composited for this, so the background is as if the object had just arrived.
8. A panning camera (a share ``pan_fraction`` of the items, none by default): the target's
   frames are seen by a camera moving at a constant velocity drawn in ``pan_speed_range``
   pixels per frame, uniform direction (:mod:`crossnet.camera_pan`). The object is pasted over
   these views with its own motion in the image; frame t and its labels are unchanged; the
   3D-HOP is recomputed on the views (step 5), and the background is the EMA the panning
   camera would have given (:func:`crossnet.camera_pan.panned_background`), or, with
   ``align_background``, the target's own (an estimate moved with the camera shows the scene
   in frame t's grid, as the still camera's does).

Items are dicts with the keys of :mod:`crossnet.data` (``scene`` is the target's cache stem,
``index`` the target frame t), so both datasets mix in one ConcatDataset. Every random choice
of item ``index`` comes from ``np.random.default_rng((seed, epoch, index))``: the same seed,
epoch and index give the same item in any worker (the flow backend must be deterministic, as
OpenCV DIS is). :meth:`CompositeDataset.plan` returns the choices without rendering.

The backend is called inside DataLoader workers: use a CPU backend there (the classical ones);
a CUDA backend cannot run in forked workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from crossnet.background import DEFAULT_RATE
from crossnet.camera_motion import check_camera_motion, remove_camera_motion
from crossnet.camera_pan import PAN_SPEED_RANGE, pan_view, panned_background
from crossnet.data import (
    DEFAULT_CROP_SIZE,
    VideoBackgrounds,
    check_crop_size,
    crop_item_arrays,
    open_caches,
    random_crop_offset,
    to_item,
)
from crossnet.metrics import MOTION, OUTSIDE_ROI
from flow.hop import HopBackend, check_strides, earlier_frame


@dataclass(frozen=True, eq=False)
class ObjectCutout:
    """One foreground object cut out of a frame.

    Attributes:
        pixels: (h, w, 3) uint8 RGB, the object's bounding box in its frame.
        alpha: (h, w) bool, True on the object's pixels (the component of label 255).
        box: (top, left, h, w) of the bounding box in the source frame.
    """

    pixels: np.ndarray
    alpha: np.ndarray
    box: tuple[int, int, int, int]


def find_objects(labels: np.ndarray, *, min_object_pixels: int = 30,
                 max_cut_fraction: float = 0.1) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The pasteable foreground objects of a ground-truth mask.

    Args:
        labels: (H, W) uint8 CDnet labels.
        min_object_pixels: smaller components are left out.
        max_cut_fraction: components with a larger fraction of their outer boundary (the
            8-connected ring of pixels just outside) on label 85 or outside the image are left
            out.

    Returns:
        For each object, in component order: (top, left, height, width, alpha) with alpha the
        (height, width) bool mask of the object inside its bounding box.
    """
    foreground = (labels == MOTION).astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    # One pixel of padding on all sides: ring pixels beyond the image count as cut.
    unscored = np.pad(labels == OUTSIDE_ROI, 1, constant_values=True)
    kernel = np.ones((3, 3), np.uint8)
    objects = []
    for component in range(1, count):
        left, top, width, height, area = (int(n) for n in stats[component])
        if area < min_object_pixels:
            continue
        # The ring: dilate the component inside a box one pixel larger on every side.
        alpha = components[top:top + height, left:left + width] == component
        padded = np.pad(alpha, 1).astype(np.uint8)
        ring = (cv2.dilate(padded, kernel) > 0) & (padded == 0)
        region = unscored[top:top + height + 2, left:left + width + 2]
        if np.count_nonzero(ring & region) > max_cut_fraction * np.count_nonzero(ring):
            continue
        objects.append((top, left, height, width, alpha))
    return objects


def paste_object(image: np.ndarray, cutout: ObjectCutout, *, x: float, y: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Composite ``cutout`` over ``image`` with its box's corner at (x, y), sub-pixel.

    Args:
        image: (H, W, 3) uint8 RGB.
        cutout: the object.
        x, y: where the box's top-left pixel lands; fractional positions interpolate the sprite
            and its alpha bilinearly; whole-pixel positions copy them exactly.

    Returns:
        The composite (H, W, 3) uint8 and the object's coverage (H, W) float32 in [0, 1].
    """
    height, width = image.shape[:2]
    translation = np.array([[1.0, 0.0, x], [0.0, 1.0, y]], dtype=np.float64)
    # Premultiplied alpha: shifting colour * alpha and alpha separately and compositing
    # premultiplied keeps the object's colours at its soft (sub-pixel) edges, where shifting
    # the plain sprite would blend in the zeros around it.
    premultiplied = cv2.warpAffine((cutout.pixels * cutout.alpha[..., None]).astype(np.float32),
                                   translation, (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(cutout.alpha.astype(np.float32), translation, (width, height),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    coverage = alpha[..., None]
    composite = premultiplied + (1.0 - coverage) * image.astype(np.float32)
    return np.clip(np.rint(composite), 0, 255).astype(np.uint8), alpha


@dataclass(frozen=True, eq=False)
class CompositePlan:
    """Every random choice of one composite item (see the module docstring).

    Attributes:
        target_cache: index of the background cache.
        target_frame: the target frame t (it has ground truth).
        crop_top, crop_left: the crop window's corner in the target frame.
        crop_size: (h, w) of the window.
        object_cache: index of the object cache.
        object_frame: the frame the object was cut from.
        cutout: the object.
        position: (x, y) of the object's box corner at time t, window coordinates, whole pixels.
        velocity: (vx, vy) in pixels per frame.
        camera_velocity: (cx, cy), the panning camera's motion in pixels per frame; (0, 0)
            for a still camera.
    """

    target_cache: int
    target_frame: int
    crop_top: int
    crop_left: int
    crop_size: tuple[int, int]
    object_cache: int
    object_frame: int
    cutout: ObjectCutout
    position: tuple[int, int]
    velocity: tuple[float, float]
    camera_velocity: tuple[float, float] = (0.0, 0.0)

    @property
    def panning(self) -> bool:
        return self.camera_velocity != (0.0, 0.0)

    def camera_offset(self, frame: int) -> tuple[float, float]:
        """Where the panning camera looks at ``frame``, relative to frame t (pixels)."""
        elapsed = frame - self.target_frame
        return (elapsed * self.camera_velocity[0], elapsed * self.camera_velocity[1])

    def position_at(self, frame: int) -> tuple[float, float]:
        """(x, y) of the object's box corner at ``frame``, window coordinates."""
        elapsed = frame - self.target_frame
        return (self.position[0] + elapsed * self.velocity[0],
                self.position[1] + elapsed * self.velocity[1])


class CompositeDataset(Dataset):
    """Objects of some caches moving over the frames of others (see the module docstring).

    Args:
        object_caches: caches to cut objects from (frames with masks).
        background_caches: caches whose masked frames are the targets; their strides need not
            match ``strides`` (their flow is not read).
        backend: the flow method that recomputes the 3D-HOP (``encode``/``estimate``, see
            :class:`flow.hop.HopBackend`).
        strides: the 3D-HOP strides, as in the real caches the model trains on.
        crop_size: (h, w), or None for the target's whole frame.
        length: number of items.
        seed: seeds every choice with the epoch and the item index.
        use_background: add the ``background`` key.
        background_rate: EMA rate of the running background.
        background_estimator: how the running background is made (``"ema"`` or ``"median"``).
        camera_motion: ``"none"`` or ``"affine"``: subtract the camera's motion from the
            whole composite's 3D-HOP before cropping (:mod:`crossnet.camera_motion`).
        align_background: move the targets' running backgrounds with the camera
            (:class:`crossnet.data.VideoBackgrounds`).
        speed_range: (low, high) object speed, pixels per frame.
        pan_fraction: share of items filmed by a panning camera (step 8 of the module
            docstring); 0 draws nothing for it, so items are those of older code.
        pan_speed_range: (low, high) camera speed of those items, pixels per frame.
        min_object_pixels, max_cut_fraction: which objects qualify (see :func:`find_objects`).
        max_attempts: object draws per item before giving up.

    Raises:
        ValueError: bad arguments, or caches that :func:`crossnet.data.open_caches` rejects.
    """

    def __init__(self, object_caches: Sequence[str | os.PathLike[str]],
                 background_caches: Sequence[str | os.PathLike[str]], *, backend: HopBackend,
                 strides: Sequence[int], crop_size: Sequence[int] | None = DEFAULT_CROP_SIZE,
                 length: int, seed: int = 0, use_background: bool = False,
                 background_rate: float = DEFAULT_RATE, background_estimator: str = "ema",
                 camera_motion: str = "none", align_background: bool = False,
                 speed_range: tuple[float, float] = (0.5, 3.0), pan_fraction: float = 0.0,
                 pan_speed_range: tuple[float, float] = PAN_SPEED_RANGE,
                 min_object_pixels: int = 30,
                 max_cut_fraction: float = 0.1, max_attempts: int = 50) -> None:
        self.strides = check_strides(strides)
        self.crop_size = check_crop_size(crop_size)
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.speed_range = _check_speed_range(speed_range, "speed_range")
        self.pan_speed_range = _check_speed_range(pan_speed_range, "pan_speed_range")
        if not 0.0 <= pan_fraction <= 1.0:
            raise ValueError(f"pan_fraction must be in [0, 1], got {pan_fraction}")
        if pan_fraction > 0 and use_background and background_estimator != "ema":
            raise ValueError("a panning camera's background is made for the EMA estimator "
                             f"only, not {background_estimator!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.backend = backend
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self.use_background = use_background
        self.camera_motion = check_camera_motion(camera_motion)
        self.pan_fraction = float(pan_fraction)
        self.min_object_pixels = int(min_object_pixels)
        self.max_cut_fraction = float(max_cut_fraction)
        self.max_attempts = int(max_attempts)
        self._objects, _ = open_caches(object_caches, what="object caches", same_strides=False)
        self._targets, _ = open_caches(background_caches, what="background caches",
                                       same_strides=False)
        self._object_frames = [np.flatnonzero(reader.has_mask) for reader in self._objects]
        self._target_frames = [np.flatnonzero(reader.has_mask) for reader in self._targets]
        self._backgrounds = VideoBackgrounds(self._targets, rate=background_rate,
                                             estimator=background_estimator,
                                             align=align_background and use_background)
        self.scenes = [reader.path.stem for reader in self._targets]

    def set_epoch(self, epoch: int) -> None:
        """Draw the items of ``epoch`` from now on (call before each epoch's iterator)."""
        self.epoch = int(epoch)

    def prepare_backgrounds(self) -> None:
        """Compute the targets' backgrounds now, e.g. before DataLoader workers fork."""
        if self.use_background:
            self._backgrounds.prepare()

    def __len__(self) -> int:
        return self.length

    def _draw_object(self, rng: np.random.Generator, index: int
                     ) -> tuple[int, int, ObjectCutout]:
        for _ in range(self.max_attempts):
            cache = int(rng.integers(len(self._objects)))
            frame = int(rng.choice(self._object_frames[cache]))
            reader = self._objects[cache]
            objects = find_objects(reader.mask(frame), min_object_pixels=self.min_object_pixels,
                                   max_cut_fraction=self.max_cut_fraction)
            if not objects:
                continue
            top, left, height, width, alpha = objects[int(rng.integers(len(objects)))]
            pixels = reader.frame(frame)[top:top + height, left:left + width]
            return cache, frame, ObjectCutout(pixels=np.ascontiguousarray(pixels), alpha=alpha,
                                              box=(top, left, height, width))
        names = ", ".join(str(reader.path) for reader in self._objects)
        raise ValueError(f"item {index}: no pasteable object (>= {self.min_object_pixels} px of "
                         f"label 255, cut <= {self.max_cut_fraction}) in {self.max_attempts} "
                         f"random masked frames of {names}")

    def plan(self, index: int) -> CompositePlan:
        """The random choices of item ``index`` in the current epoch."""
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"item {index} out of range for {self.length} items")
        rng = np.random.default_rng((self.seed, self.epoch, index))
        target = int(rng.integers(len(self._targets)))
        t = int(rng.choice(self._target_frames[target]))
        width, height = self._targets[target].info.size
        crop = self.crop_size or (height, width)
        top, left = random_crop_offset(rng, (height, width), crop)
        object_cache, object_frame, cutout = self._draw_object(rng, index)
        # The object's centre at time t: uniform over the real frame inside the window.
        x_low, x_high = max(0, -left), min(crop[1], width - left)
        y_low, y_high = max(0, -top), min(crop[0], height - top)
        centre_x, centre_y = rng.uniform(x_low, x_high), rng.uniform(y_low, y_high)
        box_height, box_width = cutout.alpha.shape
        position = (round(centre_x - box_width / 2), round(centre_y - box_height / 2))
        velocity = _random_velocity(rng, self.speed_range)
        camera = (0.0, 0.0)
        # Drawn last, and only when asked for: without panning, items are those of older code.
        if self.pan_fraction > 0 and rng.random() < self.pan_fraction:
            camera = _random_velocity(rng, self.pan_speed_range)
        return CompositePlan(target_cache=target, target_frame=t, crop_top=top, crop_left=left,
                             crop_size=crop, object_cache=object_cache,
                             object_frame=object_frame, cutout=cutout, position=position,
                             velocity=velocity, camera_velocity=camera)

    def render(self, plan: CompositePlan) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The composite frames of a plan, whole frames (not cropped).

        Returns:
            For frame t and each earlier frame max(t - k, 0): ``(image, coverage)``, the
            composite (H, W, 3) uint8 RGB and the object's coverage (H, W) float32 in [0, 1].
        """
        reader = self._targets[plan.target_cache]
        t = plan.target_frame
        rendered = {}
        for time in sorted({t, *(earlier_frame(t, k) for k in self.strides)}, reverse=True):
            x, y = plan.position_at(time)
            view = pan_view(reader.frame(time), plan.camera_offset(time))
            rendered[time] = paste_object(view, plan.cutout,
                                          x=x + plan.crop_left, y=y + plan.crop_top)
        return rendered

    def background(self, plan: CompositePlan) -> np.ndarray:
        """The running background of a plan's frame t, (3, H, W) uint8, whole frame."""
        if not plan.panning or self._backgrounds.align:
            return self._backgrounds.get(plan.target_cache, plan.target_frame)
        reader = self._targets[plan.target_cache]
        background = panned_background(reader.frame, plan.target_frame, plan.camera_velocity,
                                       rate=self._backgrounds.rate)
        return np.ascontiguousarray(background.transpose(2, 0, 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        plan = self.plan(index)
        reader = self._targets[plan.target_cache]
        t = plan.target_frame
        earlier = [earlier_frame(t, k) for k in self.strides]
        # Composited and flowed at the full frame, then cropped: the flow then sees the same
        # image extent (and so DIS the same pyramid depth) as the cached flow of real frames.
        rendered = self.render(plan)
        times = list(rendered)
        composites = {time: image for time, (image, _) in rendered.items()}
        object_pixels = rendered[t][1] > 0.5
        stacked = torch.from_numpy(np.stack([composites[time] for time in times]))
        encodings = dict(zip(times, self.backend.encode(stacked.permute(0, 3, 1, 2))))
        pairs = [e for e in earlier if e != t]
        height, width = object_pixels.shape
        hop = np.zeros((len(self.strides), 2, height, width), np.float32)
        if pairs:
            flows = self.backend.estimate([encodings[t]] * len(pairs),
                                          [encodings[e] for e in pairs]).numpy()
            rows = iter(flows)
            for s, e in enumerate(earlier):
                if e != t:
                    hop[s] = next(rows)
        if self.camera_motion != "none":
            hop = remove_camera_motion(
                hop, self.strides, self.camera_motion,
                frame=composites[t].transpose(2, 0, 1),
                earlier=np.stack([composites[e].transpose(2, 0, 1) for e in earlier]))
        labels = reader.mask(t).copy()
        labels[object_pixels] = MOTION
        arrays = {"frame": np.ascontiguousarray(composites[t].transpose(2, 0, 1)), "hop": hop,
                  "labels": labels}
        if self.use_background:
            arrays["background"] = self.background(plan)
        arrays = crop_item_arrays(arrays, top=plan.crop_top, left=plan.crop_left,
                                  crop_size=plan.crop_size)
        return to_item(arrays, scene=self.scenes[plan.target_cache], index=t)


def _check_speed_range(speeds: Sequence[float], name: str) -> tuple[float, float]:
    low, high = (float(s) for s in speeds)
    if not 0.0 <= low <= high:
        raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {speeds}")
    return low, high


def _random_velocity(rng: np.random.Generator, speeds: tuple[float, float]
                     ) -> tuple[float, float]:
    """A speed uniform in ``speeds`` in a uniform direction, as (vx, vy)."""
    speed = rng.uniform(*speeds)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return speed * math.cos(angle), speed * math.sin(angle)
