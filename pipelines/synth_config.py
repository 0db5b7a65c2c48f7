"""The settings of the synthetic scene generator, one frozen dataclass saved with every scene."""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SIDE = 8
"""Smallest frame width and height the generator accepts."""


@dataclass(frozen=True)
class SynthConfig:
    """What a synthetic scene looks like; a seed then fixes every random choice within it.

    Attributes:
        size: frame size (width, height) in pixels.
        num_frames: frames per scene, T >= 1.
        strides: the strides k of the ground-truth flow from frame t to frame t - k, strictly
            increasing positive integers.
        min_objects: fewest moving objects per scene (each is visible during part of the scene).
        max_objects: most moving objects per scene.
        min_object_size: smallest object extent (its longest side) as a fraction of the
            frame's shorter side; objects are never smaller than 3 pixels.
        max_object_size: largest object extent, same unit; 1/3 gives objects of about a third
            of the frame.
        min_speed: slowest object speed in pixels per frame.
        max_speed: fastest object speed in pixels per frame.
        max_scale_rate: largest relative change of an object's scale per frame (0 disables).
        max_rotation_rate: largest rotation of an object per frame in radians (0 disables).
        noise_sigma: standard deviation of the Gaussian sensor noise in grey levels (0 disables).
        illumination_drift: amplitude of the slow global gain drift (0.05 = +-5 %; an offset
            drift of up to 60 times this in grey levels comes with it; 0 disables both).
        dynamic_background: add a horizontal band of rippling background texture.
        camera_jitter: largest per-frame camera translation in pixels along each axis,
            drawn independently per frame (0 = static camera).
        camera_pan: peak speed in pixels per frame of a slow back-and-forth camera pan,
            mostly horizontal with a little tilt (0 = no pan); see
            :func:`pipelines.synth_scene.pan_path`. Jitter adds on top.
        fps: frame rate recorded in the scene and used for its .mp4.
    """

    size: tuple[int, int] = (320, 240)
    num_frames: int = 100
    strides: tuple[int, ...] = (1, 4, 8)
    min_objects: int = 2
    max_objects: int = 8
    min_object_size: float = 0.02
    max_object_size: float = 1 / 3
    min_speed: float = 0.3
    max_speed: float = 3.0
    max_scale_rate: float = 0.004
    max_rotation_rate: float = 0.01
    noise_sigma: float = 2.0
    illumination_drift: float = 0.05
    dynamic_background: bool = True
    camera_jitter: float = 0.0
    camera_pan: float = 0.0
    fps: float = 25.0

    def __post_init__(self) -> None:
        if (not isinstance(self.size, (tuple, list)) or len(self.size) != 2
                or not all(_is_int(value) and value > 0 for value in self.size)):
            raise ValueError(f"SynthConfig: size must be (width, height) positive ints, "
                             f"got {self.size!r}")
        if min(self.size) < MIN_SIDE:
            # Below 4 pixels of height the object placement has no room (measured: every seed
            # fails); 8 leaves objects of the 3-pixel minimum room to move.
            raise ValueError(f"SynthConfig: size must be at least {MIN_SIDE}x{MIN_SIDE}, "
                             f"got {self.size[0]}x{self.size[1]}")
        if not _is_int(self.num_frames) or self.num_frames < 1:
            raise ValueError(f"SynthConfig: num_frames must be an int >= 1, got {self.num_frames!r}")
        strides = tuple(self.strides) if isinstance(self.strides, (tuple, list)) else ()
        if (not strides or not all(_is_int(k) and k > 0 for k in strides)
                or any(a >= b for a, b in itertools.pairwise(strides))):
            raise ValueError(f"SynthConfig: strides must be strictly increasing positive ints, "
                             f"got {self.strides!r}")
        if not (_is_int(self.min_objects) and _is_int(self.max_objects)
                and 0 <= self.min_objects <= self.max_objects):
            raise ValueError(f"SynthConfig: need ints 0 <= min_objects <= max_objects, got "
                             f"{self.min_objects!r}, {self.max_objects!r}")
        if not 0 < self.min_object_size <= self.max_object_size <= 1:
            raise ValueError(f"SynthConfig: need 0 < min_object_size <= max_object_size <= 1, got "
                             f"{self.min_object_size!r}, {self.max_object_size!r}")
        if not 0 <= self.min_speed <= self.max_speed:
            raise ValueError(f"SynthConfig: need 0 <= min_speed <= max_speed, got "
                             f"{self.min_speed!r}, {self.max_speed!r}")
        for name in ("max_scale_rate", "max_rotation_rate", "noise_sigma", "camera_jitter",
                     "camera_pan"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SynthConfig: {name} must be finite and >= 0, got {value!r}")
        if not 0 <= self.illumination_drift < 0.5:
            raise ValueError(f"SynthConfig: illumination_drift must be in [0, 0.5), got "
                             f"{self.illumination_drift!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"SynthConfig: fps must be > 0, got {self.fps!r}")
        # Store tuples even when lists were passed (e.g. read back from JSON).
        object.__setattr__(self, "size", tuple(int(value) for value in self.size))
        object.__setattr__(self, "strides", tuple(int(k) for k in strides))
        for name in ("num_frames", "min_objects", "max_objects"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self.size[0]

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self.size[1]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        """Rebuilds a config from :meth:`to_dict` output (as read back from ``scene.json``)."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in values.items()})


def _is_int(value: object) -> bool:
    """An integer (numpy ones included) that is not a bool: ``True`` frames would be a mistake."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
