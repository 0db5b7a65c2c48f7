"""Tiny inputs and helpers shared by the reliability tests (bad input, interruptions, untrusted
files, overwriting, memory, numerics): small enough that every command runs in about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import torch

from crossnet.checkpoint import save_checkpoint
from crossnet.hofam import HofamConfig, build_hofam
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]
SIZE = (64, 48)  # (width, height) of the test frames


def moving_frames(count: int, size: tuple[int, int] = SIZE, seed: int = 0) -> list[np.ndarray]:
    """RGB frames of a textured background with a bright square moving 2 px per frame."""
    width, height = size
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32),
                                  (0, 0), 1.5).astype(np.uint8)
    frames = []
    for index in range(count):
        frame = background.copy()
        left = (4 + 2 * index) % max(width - 12, 1)
        frame[height // 3: height // 3 + 10, left: left + 10] = (250, 240, 30)
        frames.append(frame)
    return frames


def write_video(path: Path, count: int, size: tuple[int, int] = SIZE, fourcc: str = "mp4v",
                seed: int = 0) -> Path:
    """An mp4 (or, with MJPG, an avi) of :func:`moving_frames`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    for frame in moving_frames(count, size, seed):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_frames(folder: Path, count: int, size: tuple[int, int] = SIZE, *,
                 convert=None, name: str = "in{:06d}.png") -> Path:
    """Numbered image files of :func:`moving_frames`; ``convert(rgb) -> array`` to write
    another kind of image (grayscale, 16-bit, alpha) with cv2.imwrite (BGR order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(moving_frames(count, size), start=1):
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if convert is None else convert(frame)
        assert cv2.imwrite(str(folder / name.format(index)), image)
    return folder


def write_scene(root: Path, count: int = 4, size: tuple[int, int] = SIZE) -> Path:
    """A CDnet-layout scene: input/, groundtruth/ (the moving square), ROI.bmp, temporalROI."""
    write_frames(root / "input", count, size)
    (root / "groundtruth").mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(moving_frames(count, size), start=1):
        mask = np.where((frame == (250, 240, 30)).all(axis=2), 255, 0).astype(np.uint8)
        cv2.imwrite(str(root / "groundtruth" / f"gt{index:06d}.png"), mask)
    cv2.imwrite(str(root / "ROI.bmp"), np.full((size[1], size[0]), 255, np.uint8))
    (root / "temporalROI.txt").write_text(f"1 {count}\n")
    return root


def training_caches(root: Path, *, count: int = 4) -> tuple[Path, Path]:
    """Two tiny scenes under ``root``, preprocessed, and a split where ``scene_000`` trains and
    ``scene_001`` validates: what ``crossnet train`` needs. Returns (cache folder, split)."""
    for index in range(2):
        write_scene(root / "scenes" / f"scene_{index:03d}", count=count)
    assert main([str(arg) for arg in ("preprocess", root / "scenes", "--out", root / "cache",
                                      "--strides", "1,2", "--flow", "dis-ultrafast",
                                      "--no-progress")]) == 0
    split = root / "split.json"
    split.write_text(json.dumps({"name": "s", "train": ["scene_000"],
                                 "validation": ["scene_001"], "test": []}))
    return root / "cache", split


def tiny_model(path: Path, *, seed: int = 0, strides=(1, 2), **config) -> Path:
    """A small random HOFAM checkpoint using the dis-ultrafast flow backend."""
    torch.manual_seed(seed)
    model = build_hofam(HofamConfig(strides=strides, widths=(8, 16, 16, 16), **config))
    return save_checkpoint(path, {"model": model.state_dict(),
                                  "model_config": model.config.to_dict(),
                                  "flow_backend": "dis-ultrafast", "threshold": 0.5})


def run(capsys, *args: str) -> tuple[int, str, list[str]]:
    """``crossnet ARGS`` in this process: (exit code, stdout, non-empty stderr lines)."""
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


# Runs `crossnet ARGS` in a child process, printing "progress N" (flushed) after each frame a
# command commits (a cache frame, a mask, a checkpoint) and pausing PAUSE seconds there, so a
# test can send a signal while the command is provably mid-run. SIGINT is restored to Python's
# default handler: a child of a non-interactive shell's background job inherits SIGINT
# ignored, which a terminal user's Ctrl-C never is.
_RUNNER = textwrap.dedent("""
    import os, signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pause = float(os.environ["CROSSNET_TEST_PAUSE"])
    count = 0

    def announce():
        global count
        count += 1
        print(f"progress {count}", flush=True)
        time.sleep(pause)

    import flow.cache
    import pipelines.imageio
    import crossnet.checkpoint
    import pipelines.train
    import pipelines.train_flow

    append = flow.cache.CacheWriter.append
    def counted_append(self, *args, **kwargs):
        append(self, *args, **kwargs)
        announce()
    flow.cache.CacheWriter.append = counted_append

    write_png = pipelines.imageio.write_png_atomic
    def counted_write_png(*args, **kwargs):
        write_png(*args, **kwargs)
        announce()
    pipelines.imageio.write_png_atomic = counted_write_png

    save = crossnet.checkpoint.save_checkpoint
    def counted_save(*args, **kwargs):
        result = save(*args, **kwargs)
        announce()
        return result
    pipelines.train.save_checkpoint = counted_save
    pipelines.train_flow.save_checkpoint = counted_save  # last.pt, then weights.pt

    from pipelines.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def start_cli(*args: str, pause: float = 0.05, env: dict | None = None) -> subprocess.Popen:
    """Start ``crossnet ARGS`` in a child process that reports ``progress N`` on stdout."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "CROSSNET_TEST_PAUSE": str(pause),
                   "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", _RUNNER, *map(str, args)], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_progress(process: subprocess.Popen, count: int) -> None:
    """Read the child's stdout until it reports ``progress COUNT`` (fails if it exits first)."""
    for line in process.stdout:
        if line.strip() == f"progress {count}":
            return
    process.wait(timeout=30)
    raise AssertionError(f"the command ended (exit {process.returncode}) before progress "
                         f"{count}: {process.stderr.read()[-2000:]}")
