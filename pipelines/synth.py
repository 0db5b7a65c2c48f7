"""Synthetic scenes with exact ground truth (masks and multi-stride flow), written to disk.

Layout of one scene folder ``<OUT>/scene_000/`` (CDnet-2014, so the scene loaders read it):

- ``input/in000001.png ...``: the frames, RGB, 1-based numbers.
- ``groundtruth/gt000001.png ...``: uint8 masks, 255 where an object covers the pixel, 0 else.
- ``ROI.bmp``: all 255 (every pixel is scored); ``temporalROI.txt``: ``1 T``.
- ``scene_000.mp4``: the frames as a video (OpenCV 'mp4v', the config's fps).
- ``flow.h5``: dataset ``flow``, float32, shape (T, S, 2, H, W), one frame per chunk,
  gzip + shuffle. ``flow[t, s]`` is the exact flow from frame t (file number t + 1) to frame
  ``max(t - strides[s], 0)``: the pixel x of frame t shows the scene point that frame t - k shows
  at ``x + flow[t, s, :, y, x]`` ((u, v) in pixels, the :mod:`flow` convention). Attributes:
  ``strides``, ``convention`` (that sentence), ``size`` (width, height), ``fps``, ``seed``.
- ``scene.json``: the generator config, the scene seed and the package version.

A scene is written into ``scene_000.tmp/`` and renamed when complete, so a folder without the
suffix is always a whole scene; an interrupted run leaves only a ``.tmp`` folder, which the next
run discards. Scene i of a run uses the seed ``SeedSequence(seed, spawn_key=(i,))`` derives.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import cv2
import h5py
import numpy as np

from crossnet import __version__
from pipelines.errors import InputError
from pipelines.memory import check_fits
from pipelines.outputs import prepare_output_folder
from pipelines.progress import progress_bar
from pipelines.synth_config import SynthConfig
from pipelines.synth_render import SynthFrame, render_spec
from pipelines.synth_scene import random_scene_spec

__all__ = ["FLOW_CONVENTION", "SynthConfig", "SynthFrame", "generate_scenes", "render_scene",
           "scene_seed", "write_scene"]

logger = logging.getLogger(__name__)

FLOW_CONVENTION = ("flow[t, s] holds, for each pixel x of frame t (file number t + 1), the "
                   "displacement (u, v) in pixels such that x + flow is where the same scene point "
                   "lies in frame max(t - strides[s], 0).")
"""The sentence stored in the ``convention`` attribute of ``flow.h5``."""

SCENE_FILE = "scene.json"


def render_scene(config: SynthConfig, seed: int) -> Iterator[SynthFrame]:
    """Streams the frames of the random scene that ``(config, seed)`` defines.

    Args:
        config: the generator settings.
        seed: a non-negative int; the same seed gives identical frames, masks and flow.

    Returns:
        An iterator of ``config.num_frames`` :class:`SynthFrame` in order; each holds rgb
        (H, W, 3) uint8, mask (H, W) uint8, flow (S, 2, H, W) float32 for ``config.strides``.

    Raises:
        ValueError: ``seed`` is not a non-negative int.
    """
    return render_spec(random_scene_spec(config, seed), strides=config.strides)


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene ``index`` of a run started with ``seed`` (a 32-bit int)."""
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0])


def write_scene(out_dir: str | os.PathLike, config: SynthConfig, seed: int, *,
                overwrite: bool = False, progress: bool = False,
                provenance: Mapping[str, object] | None = None) -> Path:
    """Renders one scene into ``out_dir`` in the layout of the module docstring.

    Args:
        out_dir: the scene folder to create, e.g. ``OUT/scene_000``.
        config: the generator settings.
        seed: the scene seed (non-negative int).
        overwrite: replace an existing complete scene instead of skipping it.
        progress: show a tqdm bar over the frames.
        provenance: extra JSON-ready facts recorded in ``scene.json`` (e.g. the run seed).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        InputError: ``out_dir`` exists but is not a complete scene (and ``overwrite`` is off).
        ValueError: ``seed`` is invalid.
        OSError: OpenCV could not write a PNG or open the video writer, or a write failed;
            the partial scene stays in ``<out_dir>.tmp``, which the next run discards.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        if (out_dir / SCENE_FILE).is_file():
            difference = _recorded_difference(out_dir / SCENE_FILE, config, seed)
            if difference is not None:
                raise InputError(f"{out_dir}: holds a scene made with other settings "
                                 f"({difference}); pass --overwrite to regenerate it")
            logger.info("%s: complete scene exists, skipped", out_dir)
            return out_dir
        raise InputError(f"{out_dir}: exists but is not a complete synthetic scene (no "
                         f"{SCENE_FILE}); remove it or pass --overwrite")
    spec = random_scene_spec(config, seed)
    temporary = out_dir.with_name(out_dir.name + ".tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    (temporary / "input").mkdir(parents=True)
    (temporary / "groundtruth").mkdir()
    width, height = config.size
    _imwrite(temporary / "ROI.bmp", np.full((height, width), 255, np.uint8))
    (temporary / "temporalROI.txt").write_text(f"1 {config.num_frames}\n")
    video_path = temporary / f"{out_dir.name}.mp4"
    video = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), config.fps,
                            (width, height))
    if not video.isOpened():
        raise OSError(f"{video_path}: OpenCV could not open an 'mp4v' video writer")
    try:
        with h5py.File(temporary / "flow.h5", "w") as file:
            flow = _create_flow_dataset(file, config=config, seed=seed)
            frames = render_spec(spec, strides=config.strides)
            for frame in progress_bar(frames, total=config.num_frames, desc=out_dir.name,
                                      unit="frame", disable=not progress):
                bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
                _imwrite(temporary / "input" / f"in{frame.number:06d}.png", bgr)
                _imwrite(temporary / "groundtruth" / f"gt{frame.number:06d}.png", frame.mask)
                flow[frame.number - 1] = frame.flow
                video.write(bgr)
    finally:
        video.release()
    record = {"generator": "pipelines.synth", "version": __version__, "seed": int(seed),
              "num_objects": len(spec.objects), "config": config.to_dict(),
              "provenance": dict(provenance or {})}
    (temporary / SCENE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(temporary, out_dir)
    return out_dir


def _recorded_difference(scene_file: Path, config: SynthConfig, seed: int) -> str | None:
    """How the scene recorded in ``scene_file`` differs from ``(config, seed)``, or None."""
    try:
        record = json.loads(scene_file.read_text())
        recorded = record["config"]
        recorded_seed = record["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{SCENE_FILE} unreadable"
    if recorded_seed != seed:
        return f"seed {recorded_seed} there, {seed} now"
    wanted = config.to_dict()
    for key, value in wanted.items():
        if recorded.get(key) != value:
            return f"{key} {recorded.get(key)!r} there, {value!r} now"
    return None


def generate_scenes(out_dir: str | os.PathLike, *, num_scenes: int, config: SynthConfig,
                    seed: int, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Writes ``num_scenes`` scenes ``scene_000``, ``scene_001``, ... into ``out_dir``.

    Complete scenes already there are kept (unless ``overwrite``), so an interrupted run can
    simply be started again.

    Args:
        out_dir: the output folder (created if missing).
        num_scenes: how many scenes, >= 1.
        config: the generator settings, shared by all scenes.
        seed: the run seed, a non-negative int; scene i uses :func:`scene_seed` (seed, i).
        overwrite: regenerate scenes that already exist.
        progress: show a progress bar over the frames of each scene.

    Returns:
        The scene folders, in order.

    Raises:
        ValueError: ``num_scenes`` < 1 or ``seed`` is not a non-negative int.
        InputError: ``out_dir`` is a file or not writable, a scene folder there is not a
            complete scene or was made with other settings, or the size would not fit in
            memory.
    """
    if not _is_count(num_scenes) or num_scenes < 1:
        raise ValueError(f"synth.generate_scenes: num_scenes must be an int >= 1, "
                         f"got {num_scenes!r}")
    if not _is_count(seed) or seed < 0:
        raise ValueError(f"synth.generate_scenes: seed must be an int >= 0, got {seed!r}")
    pixels = config.size[0] * config.size[1]
    check_fits((100 + 24 * len(config.strides)) * pixels,  # measured 178 B/px for 3 strides
               what=f"a synthetic scene of {config.size[0]}x{config.size[1]}",
               hint="choose a smaller --size")
    out_dir = prepare_output_folder(out_dir)
    digits = max(3, len(str(num_scenes - 1)))
    paths = []
    for index in range(num_scenes):
        paths.append(write_scene(out_dir / f"scene_{index:0{digits}d}", config,
                                 scene_seed(seed, index), overwrite=overwrite, progress=progress,
                                 provenance={"run_seed": int(seed), "scene_index": index}))
    return paths


def _create_flow_dataset(file: h5py.File, *, config: SynthConfig, seed: int) -> h5py.Dataset:
    """The ``flow`` dataset of ``flow.h5`` with its attributes (see the module docstring)."""
    width, height = config.size
    strides = len(config.strides)
    dataset = file.create_dataset("flow", shape=(config.num_frames, strides, 2, height, width),
                                  dtype=np.float32, chunks=(1, strides, 2, height, width),
                                  compression="gzip", compression_opts=4, shuffle=True)
    dataset.attrs["strides"] = np.asarray(config.strides, np.int64)
    dataset.attrs["convention"] = FLOW_CONVENTION
    dataset.attrs["size"] = np.asarray(config.size, np.int64)
    file.attrs.update({"strides": np.asarray(config.strides, np.int64),
                       "convention": FLOW_CONVENTION, "size": np.asarray(config.size, np.int64),
                       "fps": float(config.fps), "seed": int(seed), "version": __version__})
    return dataset


def _imwrite(path: Path, image: np.ndarray) -> None:
    """``cv2.imwrite`` that raises instead of returning False."""
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: OpenCV could not write the image (disk full or not writable?)")


def _is_count(value: object) -> bool:
    """An integer (numpy ones included) that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
