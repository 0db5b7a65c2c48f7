"""Drawing a random :class:`~pipelines.synth_spec.SceneSpec` from a config and a seed.

The seed is expanded with :class:`numpy.random.SeedSequence` into independent streams for the
background, the objects, the camera, the lighting and the sensor noise, so that changing one
part of the config (say the camera jitter) leaves the other parts of the scene as they were.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from pipelines.synth_background import MAX_RIPPLE_AMPLITUDE, random_background
from pipelines.synth_config import SynthConfig
from pipelines.synth_objects import random_sprite, random_track
from pipelines.synth_spec import ObjectSpec, SceneSpec

MIN_OBJECT_PIXELS = 3.0
"""No object is drawn smaller than this extent, whatever ``min_object_size`` says."""

_OFFSET_DRIFT_SCALE = 60.0
PAN_PERIODS = (60.0, 120.0)
"""Range of the period, in frames, of a camera pan's sweep (:func:`pan_path`)."""


def random_scene_spec(config: SynthConfig, seed: int) -> SceneSpec:
    """A random scene following ``config``; the same (config, seed) always gives the same scene.

    Args:
        config: the generator settings.
        seed: a non-negative int.

    Returns:
        The scene, ready for :func:`pipelines.synth_render.render_spec`.

    Raises:
        ValueError: ``seed`` is not a non-negative int.
    """
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"synth_scene.random_scene_spec: seed must be an int >= 0, got {seed!r}")
    streams = np.random.SeedSequence(int(seed)).spawn(5)
    background_rng, objects_rng, camera_rng, light_rng = (
        np.random.default_rng(stream) for stream in streams[:4])
    width, height = config.size
    num_frames = config.num_frames
    # Drawn after the jitter, from the camera's own stream: a pan leaves every other random
    # choice of the scene, the jitter included, as it was without one.
    camera_offsets = camera_rng.uniform(-config.camera_jitter, config.camera_jitter,
                                        (num_frames, 2))
    pan = pan_path(camera_rng, num_frames=num_frames, peak_speed=config.camera_pan)
    camera_offsets += pan
    pan_reach = float(np.abs(pan).max()) if num_frames else 0.0
    margin = math.ceil(config.camera_jitter + pan_reach) + math.ceil(MAX_RIPPLE_AMPLITUDE) + 2
    background = random_background(background_rng, width=width, height=height, margin=margin,
                                   dynamic=config.dynamic_background)
    objects = tuple(_random_object(objects_rng, config) for _ in range(
        int(objects_rng.integers(config.min_objects, config.max_objects + 1))))
    gains = 1.0 + config.illumination_drift * _slow_wave(light_rng, num_frames=num_frames)
    offsets = (_OFFSET_DRIFT_SCALE * config.illumination_drift
               * _slow_wave(light_rng, num_frames=num_frames))
    return SceneSpec(size=(width, height), background=background, objects=objects,
                     camera_offsets=camera_offsets, gains=gains, offsets=offsets,
                     noise_sigma=float(config.noise_sigma),
                     noise_seed=int(streams[4].generate_state(1)[0]))


def pan_path(rng: np.random.Generator, *, num_frames: int, peak_speed: float) -> np.ndarray:
    """Camera offsets (x, y) of a slow pan that sweeps back and forth, shape (T, 2), float64.

    x follows ``A sin(2 pi t / P + phase)`` with a period P drawn from :data:`PAN_PERIODS`
    frames and A chosen so that the fastest moment moves ``peak_speed`` pixels per frame; y
    tilts along with a quarter of that amplitude and its own period and phase, as a camera on a
    patrol sweep does. With ``peak_speed`` 0 the path is all zeros (the random draws are made
    all the same, so the stream stays where it would be).
    """
    periods = rng.uniform(*PAN_PERIODS, 2)
    phases = rng.uniform(0, 2 * np.pi, 2)
    times = np.arange(num_frames, dtype=np.float64)
    amplitudes = peak_speed * periods / (2 * np.pi) * np.array([1.0, 0.25])
    return amplitudes * np.sin(2 * np.pi * times[:, None] / periods + phases)


def _random_object(rng: np.random.Generator, config: SynthConfig) -> ObjectSpec:
    """One object: extent log-uniform between the configured bounds, random sprite and track."""
    shorter_side = min(config.size)
    smallest = max(config.min_object_size * shorter_side, MIN_OBJECT_PIXELS)
    largest = max(config.max_object_size * shorter_side, smallest)
    # Log-uniform, so that small objects (the hard cases for segmentation) are as common as big.
    extent = float(np.exp(rng.uniform(np.log(smallest), np.log(largest))))
    texture, alpha = random_sprite(rng, extent=extent)
    affines = random_track(rng, frame_size=config.size,
                           sprite_size=(alpha.shape[1], alpha.shape[0]),
                           num_frames=config.num_frames, min_speed=config.min_speed,
                           max_speed=config.max_speed, max_scale_rate=config.max_scale_rate,
                           max_rotation_rate=config.max_rotation_rate)
    return ObjectSpec(texture=texture, alpha=alpha, affines=affines)


def _slow_wave(rng: np.random.Generator, *, num_frames: int) -> np.ndarray:
    """Sum of two slow sinusoids (periods of 60 to 400 frames), within [-1, 1], shape (T,)."""
    times = np.arange(num_frames, dtype=np.float64)
    periods = rng.uniform(60.0, 400.0, 2)
    phases = rng.uniform(0, 2 * np.pi, 2)
    wave = (np.sin(2 * np.pi * times / periods[0] + phases[0])
            + 0.5 * np.sin(2 * np.pi * times / periods[1] + phases[1]))
    return wave / 1.5
