"""Flow pictures: the Middlebury colour coding (Baker et al., IJCV 2011, Fig. 4 / Sec. 4.1).

Direction picks the hue, magnitude the saturation. The colour wheel has 55 entries going
round the hue circle in six segments whose lengths follow the perceptual spacing of the
Middlebury code: red->yellow 15, yellow->green 6, green->cyan 4, cyan->blue 11,
blue->magenta 13, magenta->red 6. Entry 0 is pure red; within a segment from colour A to
colour B, entry i of n has the rising channel at ``floor(255 * i / n)`` (or the falling one at
``255 - floor(255 * i / n)``).

For a flow vector (u, v), image coordinates (v points down):

- position on the wheel: ``((atan2(-v, -u) / pi + 1) / 2 * 55) mod 55``, linearly interpolated
  between neighbouring entries. +u (right) is red, +v (down) is yellow-orange, -u (left) is
  cyan-blue and -v (up) is violet. The Middlebury reference code scales by 54 instead of 55,
  which leaves a seam at the -u direction; scaling by 55 closes the wheel.
- saturation: ``r = ||(u, v)|| / max_magnitude``; the colour is ``1 - r * (1 - wheel)``, so zero
  flow is white and ``r = 1`` is the pure wheel colour. Beyond ``max_magnitude`` the colour
  stays at full saturation (the reference code darkens it by 0.75 instead; clamping keeps the
  hue readable).
- unknown flow (not finite, or a component ``>= 1e9``) is black.
"""

from __future__ import annotations

import numpy as np

from flow.io import invalid_flow_mask

# (segment length, start colour, end colour) in RGB; the segments chain round the hue circle.
_SEGMENTS = (
    (15, (255, 0, 0), (255, 255, 0)),
    (6, (255, 255, 0), (0, 255, 0)),
    (4, (0, 255, 0), (0, 255, 255)),
    (11, (0, 255, 255), (0, 0, 255)),
    (13, (0, 0, 255), (255, 0, 255)),
    (6, (255, 0, 255), (255, 0, 0)),
)


def colour_wheel() -> np.ndarray:
    """The Middlebury colour wheel.

    Returns:
        RGB colours with shape (55, 3), float64 in [0, 255], entry 0 red.
    """
    entries = []
    for length, start, end in _SEGMENTS:
        steps = np.floor(255.0 * np.arange(length) / length)
        segment = np.empty((length, 3))
        for channel in range(3):
            if start[channel] == end[channel]:
                segment[:, channel] = start[channel]
            elif end[channel] > start[channel]:
                segment[:, channel] = steps
            else:
                segment[:, channel] = 255.0 - steps
        entries.append(segment)
    return np.concatenate(entries)


def flow_to_colour(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field with the Middlebury wheel.

    Args:
        flow: flow with shape (2, H, W), (u, v) in pixels.
        max_magnitude: the magnitude shown at full saturation; None uses the largest magnitude of
            the known flow in ``flow`` (a field of zero flow is then all white).

    Returns:
        RGB image with shape (H, W, 3), uint8.

    Raises:
        ValueError: if ``flow`` does not have shape (2, H, W), or ``max_magnitude`` is not a
            positive finite number.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow_to_colour: flow must have shape (2, H, W), got {flow.shape}")
    unknown = invalid_flow_mask(flow)
    u = np.where(unknown, 0.0, flow[0].astype(np.float64))
    v = np.where(unknown, 0.0, flow[1].astype(np.float64))
    magnitude = np.hypot(u, v)
    if max_magnitude is None:
        largest = float(magnitude.max()) if magnitude.size else 0.0
        max_magnitude = largest if largest > 0.0 else 1.0
    elif not (np.isfinite(max_magnitude) and max_magnitude > 0.0):
        raise ValueError(
            f"flow_to_colour: max_magnitude must be a positive finite number, got {max_magnitude!r}"
        )
    wheel = colour_wheel() / 255.0
    num_colours = wheel.shape[0]
    # Adding 0.0 turns -0.0 into +0.0, so that pure +u flow lands exactly on entry 0 whatever
    # the sign of its zero v component.
    position = ((np.arctan2(-v + 0.0, -u + 0.0) / np.pi + 1.0) / 2.0 * num_colours) % num_colours
    lower = np.floor(position).astype(np.int64) % num_colours
    upper = (lower + 1) % num_colours
    fraction = (position - np.floor(position))[..., None]
    hue = (1.0 - fraction) * wheel[lower] + fraction * wheel[upper]
    saturation = np.minimum(magnitude / max_magnitude, 1.0)[..., None]
    colour = 1.0 - saturation * (1.0 - hue)
    colour[unknown] = 0.0
    return np.rint(255.0 * colour).astype(np.uint8)
