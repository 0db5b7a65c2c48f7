"""Rendering a :class:`~pipelines.synth_spec.SceneSpec` into frames, masks and exact flow.

Per frame t: the background texture is resampled through the camera offset and the ripple
(one ``cv2.remap``); each object's premultiplied RGBA sprite is warped with ``cv2.warpAffine``
by its affine map for frame t and composited back to front; the top layer at each pixel (the
last object whose warped alpha exceeds 0.5, else the background) selects which layer's analytic
flow (:mod:`pipelines.synth_flow`) the pixel gets. Illumination drift and sensor noise are
applied last, so :attr:`SynthFrame.clean_rgb` is what the flow describes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.synth_flow import affine_flow, background_flow
from pipelines.synth_spec import COVERAGE_THRESHOLD, ObjectSpec, SceneSpec


@dataclass(frozen=True, eq=False)
class SynthFrame:
    """One rendered frame with its exact ground truth.

    Attributes:
        number: 1-based frame number (the CDnet file number).
        rgb: the observed frame, shape (H, W, 3), uint8 RGB (drift and noise applied).
        mask: CDnet labels, shape (H, W), uint8: 255 where an object covers the pixel, else 0.
        flow: exact flow from this frame to frame t - k for each stride k (the first frame
            when t - k < 0), shape (S, 2, H, W), float32, (u, v) in pixels.
        clean_rgb: the rendered frame before illumination drift and noise, shape (H, W, 3),
            float32 in [0, 255].
        instance_ids: the top layer at each pixel, shape (H, W), uint16: 0 for the background,
            i + 1 for object i of the scene spec.
    """

    number: int
    rgb: np.ndarray
    mask: np.ndarray
    flow: np.ndarray
    clean_rgb: np.ndarray
    instance_ids: np.ndarray


def render_spec(spec: SceneSpec, *, strides: Sequence[int]) -> Iterator[SynthFrame]:
    """Streams the frames of a fully specified scene.

    Args:
        spec: the scene.
        strides: positive strides k; flow is computed from each frame t to frame max(t - k, 0).

    Yields:
        One :class:`SynthFrame` per frame, in order.

    Raises:
        ValueError: a stride is not a positive int.
    """
    strides = tuple(strides)
    if not strides or not all(isinstance(k, int | np.integer) and k > 0 for k in strides):
        raise ValueError(f"synth_render.render_spec: strides must be positive ints, got {strides!r}")
    width, height = spec.size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sprites = [_premultiplied_rgba(item) for item in spec.objects]
    noise_rng = np.random.default_rng(spec.noise_seed)
    for frame in range(spec.num_frames):
        clean = _render_background(spec, frame=frame, xs=xs, ys=ys)
        instance_ids = np.zeros((height, width), np.uint16)
        for index, (item, sprite) in enumerate(zip(spec.objects, sprites)):
            _composite_object(clean, instance_ids, sprite=sprite,
                              affine=_full_map(spec, item, frame), object_id=index + 1)
        flow = _frame_flow(spec, instance_ids, frame=frame, strides=strides, xs=xs, ys=ys)
        observed = clean * np.float32(spec.gains[frame]) + np.float32(spec.offsets[frame])
        if spec.noise_sigma > 0:
            observed += np.float32(spec.noise_sigma) * noise_rng.standard_normal(
                observed.shape, dtype=np.float32)
        rgb = np.clip(np.rint(observed), 0, 255).astype(np.uint8)
        mask = np.where(instance_ids > 0, 255, 0).astype(np.uint8)
        yield SynthFrame(number=frame + 1, rgb=rgb, mask=mask, flow=flow, clean_rgb=clean,
                         instance_ids=instance_ids)


def _full_map(spec: SceneSpec, item: ObjectSpec, frame: int) -> np.ndarray:
    """Object's local -> image map at ``frame`` with the camera offset folded in, (2, 3)."""
    affine = item.affines[frame].astype(np.float64, copy=True)
    affine[:, 2] += spec.camera_offsets[frame]
    return affine


def _render_background(spec: SceneSpec, *, frame: int, xs: np.ndarray,
                       ys: np.ndarray) -> np.ndarray:
    """Background at ``frame``: texture sampled at local (u - d_t(v), v), shape (H, W, 3)."""
    background = spec.background
    camera = spec.camera_offsets[frame]
    local_x = xs + (background.origin[0] - camera[0])
    local_y = ys + (background.origin[1] - camera[1])
    if background.ripple is not None:
        local_x = local_x - background.ripple.displacement(local_y[:, :1], frame)
    return cv2.remap(background.texture, local_x.astype(np.float32), local_y.astype(np.float32),
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _premultiplied_rgba(item: ObjectSpec) -> np.ndarray:
    """Sprite as (h, w, 4) float32 with colour premultiplied by alpha.

    Premultiplying before warping keeps the colour outside the shape from bleeding into the
    interpolated edge pixels.
    """
    alpha = item.alpha.astype(np.float32)
    return np.dstack([item.texture.astype(np.float32) * alpha[..., None], alpha])


def _composite_object(canvas: np.ndarray, instance_ids: np.ndarray, *, sprite: np.ndarray,
                      affine: np.ndarray, object_id: int) -> None:
    """Warps one sprite by ``affine`` and composites it over ``canvas`` in place.

    Only the object's bounding box in the frame is warped, which keeps small objects cheap.
    """
    height, width = canvas.shape[:2]
    sprite_height, sprite_width = sprite.shape[:2]
    corners = np.array([[-0.5, -0.5, 1.0], [sprite_width - 0.5, -0.5, 1.0],
                        [-0.5, sprite_height - 0.5, 1.0],
                        [sprite_width - 0.5, sprite_height - 0.5, 1.0]])
    image_corners = corners @ affine.T
    x0 = max(int(np.floor(image_corners[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(image_corners[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(image_corners[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(image_corners[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return
    window_map = affine.copy()
    window_map[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(sprite, window_map, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0, 0.0))
    alpha = warped[..., 3]
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - alpha[..., None]
    region += warped[..., :3]
    instance_ids[y0:y1, x0:x1][alpha > COVERAGE_THRESHOLD] = object_id


def _frame_flow(spec: SceneSpec, instance_ids: np.ndarray, *, frame: int,
                strides: tuple[int, ...], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Flow of every pixel's top layer from ``frame`` to ``max(frame - k, 0)``, (S, 2, H, W)."""
    height, width = instance_ids.shape
    flow = np.empty((len(strides), 2, height, width), np.float32)
    present = [(index, np.nonzero(instance_ids == index + 1))
               for index in range(len(spec.objects))]
    present = [(index, pixels) for index, pixels in present if pixels[0].size]
    background = spec.background
    for slot, stride in enumerate(strides):
        then = max(frame - stride, 0)
        # Background flow depends on the row only, so compute one column and broadcast.
        u, v = background_flow(ripple=background.ripple, origin=background.origin,
                               camera_now=spec.camera_offsets[frame],
                               camera_then=spec.camera_offsets[then], frame_now=frame,
                               frame_then=then, xs=xs[:, :1], ys=ys[:, :1])
        flow[slot, 0] = u
        flow[slot, 1] = v
        for index, (rows, cols) in present:
            item = spec.objects[index]
            u, v = affine_flow(map_now=_full_map(spec, item, frame),
                               map_then=_full_map(spec, item, then), xs=cols.astype(np.float64),
                               ys=rows.astype(np.float64))
            flow[slot, 0, rows, cols] = u
            flow[slot, 1, rows, cols] = v
    return flow
