"""A fully specified synthetic scene: layers, their per-frame affine maps, camera and lighting.

A :class:`SceneSpec` holds no randomness: :func:`pipelines.synth_render.render_spec` turns it
into frames, masks and exact flow. Random scenes are drawn by :func:`pipelines.synth.random_scene_spec`;
tests build specs by hand (one object at a known velocity gives a known flow).

Coordinates: pixel centres sit at integer positions, x to the right, y down (OpenCV's
convention for ``cv2.warpAffine``). An affine map is a (2, 3) matrix ``[A | b]`` sending a
layer-local point p to the image point ``A @ p + b``. Every layer's map is given without the
camera; the renderer adds the camera offset ``c_t`` of frame t to all layers, so the full map of
layer L at frame t is ``M_{L,t}(p) = A p + b + c_t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COVERAGE_THRESHOLD = 0.5
"""An object covers a pixel (mask 255, its flow) where its warped alpha exceeds this."""


@dataclass(frozen=True, eq=False)
class Ripple:
    """A horizontal band of background texture that sways sideways, row by row.

    At frame t the texture row v (background-local coordinates) is displaced horizontally by
    ``d_t(v) = amplitude * envelope(v) * sin(angular_frequency * t + phase_per_row * v + phase)``
    where ``envelope(v) = sin(pi * (v - top) / (bottom - top))**2`` inside [top, bottom] and 0
    outside: the displacement goes to zero smoothly at the band edges, so it is continuous and
    the texture stays in one piece. The displayed value at local (u, v) is the static texture at
    (u - d_t(v), v); hence a texture point seen at u in frame t lies at u - d_t(v) + d_s(v) in
    frame s.

    Attributes:
        top: first local row of the band.
        bottom: last local row of the band (> top).
        amplitude: peak displacement in pixels.
        angular_frequency: radians per frame.
        phase_per_row: radians per pixel row (the ripple's vertical wavelength).
        phase: constant phase in radians.
    """

    top: float
    bottom: float
    amplitude: float
    angular_frequency: float
    phase_per_row: float
    phase: float = 0.0

    def __post_init__(self) -> None:
        if not self.bottom > self.top:
            raise ValueError(f"Ripple: need bottom > top, got top={self.top}, "
                             f"bottom={self.bottom}")

    def displacement(self, rows: np.ndarray, frame: float) -> np.ndarray:
        """The horizontal displacement d_t(v) of texture rows at one frame.

        Args:
            rows: local row coordinates v, any shape.
            frame: the frame index t (0-based).

        Returns:
            Displacements in pixels, same shape as ``rows``, float64.
        """
        rows = np.asarray(rows, np.float64)
        relative = np.clip((rows - self.top) / (self.bottom - self.top), 0.0, 1.0)
        envelope = np.sin(np.pi * relative) ** 2
        wave = np.sin(self.angular_frequency * frame + self.phase_per_row * rows + self.phase)
        return self.amplitude * envelope * wave


@dataclass(frozen=True, eq=False)
class BackgroundSpec:
    """The static background texture, larger than the frame so that the camera can move.

    Attributes:
        texture: shape (Hb, Wb, 3), float32 RGB in [0, 255]; its pixel grid is the background's
            local coordinate system.
        origin: (x, y), the local point shown at image pixel (0, 0) when the camera offset is
            zero, i.e. the background's map is ``p -> p - origin + c_t``.
        ripple: an optional rippling band (dynamic background), or None.
    """

    texture: np.ndarray
    origin: tuple[float, float]
    ripple: Ripple | None = None

    def __post_init__(self) -> None:
        if self.texture.ndim != 3 or self.texture.shape[2] != 3:
            raise ValueError(f"BackgroundSpec: texture must have shape (H, W, 3), "
                             f"got {self.texture.shape}")


@dataclass(frozen=True, eq=False)
class ObjectSpec:
    """One moving foreground object: a sprite and its affine map for every frame.

    Attributes:
        texture: sprite colours, shape (h, w, 3), float32 RGB in [0, 255].
        alpha: sprite coverage, shape (h, w), float32 in [0, 1]; the object covers a pixel where
            its warped alpha exceeds 0.5. Keep a zero border so warped edges are clean.
        affines: local -> image maps without the camera, shape (T, 2, 3), float64.
    """

    texture: np.ndarray
    alpha: np.ndarray
    affines: np.ndarray

    def __post_init__(self) -> None:
        if self.texture.ndim != 3 or self.texture.shape[2] != 3:
            raise ValueError(f"ObjectSpec: texture must have shape (h, w, 3), "
                             f"got {self.texture.shape}")
        if self.alpha.shape != self.texture.shape[:2]:
            raise ValueError(f"ObjectSpec: alpha shape {self.alpha.shape} does not match texture "
                             f"shape {self.texture.shape}")
        if self.affines.ndim != 3 or self.affines.shape[1:] != (2, 3):
            raise ValueError(f"ObjectSpec: affines must have shape (T, 2, 3), "
                             f"got {self.affines.shape}")
        if np.any(np.abs(np.linalg.det(self.affines[:, :, :2])) < 1e-9):
            raise ValueError("ObjectSpec: every affine map must be invertible")


@dataclass(frozen=True, eq=False)
class SceneSpec:
    """Everything needed to render a scene deterministically.

    Attributes:
        size: frame size (width, height).
        background: the background layer.
        objects: the moving objects, back to front (later ones occlude earlier ones).
        camera_offsets: per-frame camera translation c_t added to every layer, shape (T, 2),
            (x, y) in pixels.
        gains: per-frame global illumination gain, shape (T,).
        offsets: per-frame global illumination offset in grey levels, shape (T,).
        noise_sigma: standard deviation of the Gaussian sensor noise in grey levels.
        noise_seed: seed of the sensor-noise generator.
    """

    size: tuple[int, int]
    background: BackgroundSpec
    objects: tuple[ObjectSpec, ...]
    camera_offsets: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    noise_sigma: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        num_frames = self.num_frames
        if self.camera_offsets.shape != (num_frames, 2) or num_frames < 1:
            raise ValueError(f"SceneSpec: camera_offsets must have shape (T, 2) with T >= 1, "
                             f"got {self.camera_offsets.shape}")
        if self.gains.shape != (num_frames,) or self.offsets.shape != (num_frames,):
            raise ValueError(f"SceneSpec: gains {self.gains.shape} and offsets "
                             f"{self.offsets.shape} must have shape ({num_frames},)")
        for index, item in enumerate(self.objects):
            if item.affines.shape[0] != num_frames:
                raise ValueError(f"SceneSpec: object {index} has {item.affines.shape[0]} affine "
                                 f"maps for {num_frames} frames")
        if self.noise_sigma < 0:
            raise ValueError(f"SceneSpec: noise_sigma must be >= 0, got {self.noise_sigma}")

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.camera_offsets.shape[0])
