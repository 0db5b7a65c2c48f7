"""Exact optical flow of synthetic layers, computed analytically from their motion.

Flow convention (the project's, see :mod:`flow`): for a pixel x of the FIRST image (frame t),
``x + flow(x)`` is where the same scene point lies in the SECOND image (frame s = t - k).
For a layer whose full local -> image map at frame t is ``M_t``, the point seen at x is the local
point ``M_t^{-1}(x)``, which frame s shows at ``M_s(M_t^{-1}(x))``; so
``flow(x) = M_s(M_t^{-1}(x)) - x``. That is affine in x, so it is exact at every pixel with no
sampling involved.
"""

from __future__ import annotations

import numpy as np

from pipelines.synth_spec import Ripple


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of an invertible affine map.

    Args:
        affine: ``[A | b]`` of shape (2, 3).

    Returns:
        ``[A^-1 | -A^-1 b]`` of shape (2, 3), float64.
    """
    linear_inverse = np.linalg.inv(affine[:, :2].astype(np.float64))
    return np.concatenate([linear_inverse, -linear_inverse @ affine[:, 2:]], axis=1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The map ``p -> outer(inner(p))``; both arguments and the result have shape (2, 3)."""
    linear = outer[:, :2] @ inner[:, :2]
    return np.concatenate([linear, outer[:, :2] @ inner[:, 2:] + outer[:, 2:]], axis=1)


def affine_flow(*, map_now: np.ndarray, map_then: np.ndarray, xs: np.ndarray,
                ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flow of an affinely moving layer from frame t to frame s at the given pixels.

    Args:
        map_now: the layer's full local -> image map at frame t, shape (2, 3).
        map_then: its map at frame s, shape (2, 3).
        xs: pixel x coordinates, any shape.
        ys: pixel y coordinates, same shape.

    Returns:
        (u, v): ``M_s(M_t^{-1}(x)) - x`` split into x and y parts, each shaped like ``xs``,
        float64.
    """
    relative = compose_affine(map_then, invert_affine(map_now))
    u = (relative[0, 0] - 1.0) * xs + relative[0, 1] * ys + relative[0, 2]
    v = relative[1, 0] * xs + (relative[1, 1] - 1.0) * ys + relative[1, 2]
    return u, v


def background_flow(*, ripple: Ripple | None, origin: tuple[float, float],
                    camera_now: np.ndarray, camera_then: np.ndarray, frame_now: int,
                    frame_then: int, xs: np.ndarray,
                    ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flow of the background layer (camera translation plus optional ripple) from t to s.

    The camera moves the whole background by ``c_s - c_t``. Inside a ripple band a pixel at
    local (u, v) shows the texture point that frame t displaced by d_t(v); frame s displaces
    that point by d_s(v) instead, so it moves by ``d_s(v) - d_t(v)`` horizontally (see
    :class:`~pipelines.synth_spec.Ripple`). The local row is ``v = y + origin_y - c_t,y``.

    Args:
        ripple: the rippling band, or None for a rigid background.
        origin: the background's origin (x, y) (see :class:`~pipelines.synth_spec.BackgroundSpec`).
        camera_now: camera offset c_t, shape (2,).
        camera_then: camera offset c_s, shape (2,).
        frame_now: t.
        frame_then: s.
        xs: pixel x coordinates, any shape.
        ys: pixel y coordinates, same shape.

    Returns:
        (u, v) flow components shaped like ``xs``, float64.
    """
    shift = np.asarray(camera_then, np.float64) - np.asarray(camera_now, np.float64)
    u = np.full(np.shape(xs), shift[0])
    v = np.full(np.shape(xs), shift[1])
    if ripple is not None:
        rows = np.asarray(ys, np.float64) + origin[1] - camera_now[1]
        u += ripple.displacement(rows, frame_then) - ripple.displacement(rows, frame_now)
    return u, v
