"""Will it fit? Memory estimates checked before a command starts its real work.

A request far too big for the machine (``--size 20000x20000``, a RAFT backend on 4K frames, a
huge ``--batch-frames`` or ``--crop``) must say so in one line before it starts, not after an
hour, and not by being killed by the kernel. The estimates count the large buffers of each
stage per pixel of the processing size, with constants measured on this code (the
measurements are quoted beside them); they aim within a factor of about 1.5 of the real peak,
enough to refuse what cannot fit. Fixed costs (the interpreter, torch, the model's weights,
some hundreds of MB) come on top and are not counted, so a request is refused only when its
buffers alone exceed the memory available.

Frames are resized as they are read (see :mod:`pipelines.sources`), so a 4K video processed
at ``--size 320x240`` holds one 4K frame at a time, never a whole video.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from pipelines.errors import InputError

SEGMENT_LOOKAHEAD_BYTES = 32e6  # see segment_lookahead_frames

GIB = 1024**3

# Working memory of one classical flow pair per pixel, output included (RSS growth for one pair
# at 1920x1080, OpenCV 5.0): dis-ultrafast 18, dis-fast 23, dis-medium 61, farneback 85 B/px.
_CLASSICAL_PAIR_BYTES_PER_PIXEL = 90.0
# RAFT (RSS growth, raft-small/large at 320x240 and 640x480): encoding a frame peaks at about
# 300-450 B/px (encoder activations at 1/2 and 1/4 resolution); a frame's kept encoding
# (features, hidden state, context at 1/8 resolution) is 18 (small) to 32 (large) B/px; a pair
# adds its all-pairs correlation pyramid, (P/64)^2 float32 values times 4/3 for the pyramid,
# plus about 100 B/px of update-block activations and the upsampled flow (measured 425 B/px in
# all at 640x480, of which 400 B/px is the correlation).
_RAFT_ENCODE_BYTES_PER_PIXEL = 450.0
_RAFT_KEPT_BYTES_PER_PIXEL = 32.0
_RAFT_PAIR_LINEAR_BYTES_PER_PIXEL = 100.0
# HOFAM: bytes saved for backward by a training-mode forward, measured per pixel and sample at
# 128x128 (see hofam_saved_bytes_per_pixel), relate to the real peaks (RSS growth of a forward
# in inference mode, of a forward + backward in training; default config, 640x480 and
# 1280x720): inference 172-189 B/px = 0.38 x saved (478 B/px); training 553 B/px = 1.16 x.
_HOFAM_INFERENCE_FACTOR = 0.4
_HOFAM_TRAINING_FACTOR = 1.2
# RAFT training (`crossnet train-flow`): bytes a training-mode forward saves for backward, per
# pixel of one pair, measured under saved_tensors_hooks at 256x256: raft-small 1758 B/px with
# 1 flow update, 2018 with 3; raft-large 4220 and 4960; as (fixed, per update). The real peak
# (RSS growth of forward + backward of the supervised loss, batch 1-2, 256-384 px, 3-6 updates)
# was 0.95-1.0 x the estimate of raft_training_bytes (1.2 x saved plus twice the correlation
# pyramid, which grows with the pixel count squared).
_RAFT_TRAINING_SAVED_BYTES_PER_PIXEL = {"raft-small": (1630.0, 130.0),
                                        "raft-large": (3850.0, 370.0)}
_RAFT_TRAINING_FACTOR = 1.2


def gib(size: float) -> str:
    """Bytes as GiB for messages: ``"3.2 GiB"`` (``"0.01 GiB"`` for small values)."""
    value = size / GIB
    return f"{value:.1f} GiB" if value >= 0.1 else f"{value:.2f} GiB"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """What a container's memory limit still allows (cgroup v2, then v1), or None."""
    candidates = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                   "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    for limit_file, usage_file in candidates:
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max":
            return None
        limit = int(limit_text)
        if limit >= 1 << 60:  # cgroup v1 writes "no limit" as a huge number
            return None
        return max(limit - usage, 0)
    return None


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory a new allocation can use on ``device`` now, or None when it cannot be told.

    CPU: ``MemAvailable`` of /proc/meminfo, capped by the container's cgroup limit. CUDA: the
    free memory the driver reports.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free)
    values = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
    return min(values) if values else None


def check_fits(needed: float, *, what: str, hint: str,
               device: str | torch.device = "cpu") -> None:
    """Refuse a request whose estimated memory exceeds what is available.

    Args:
        needed: the estimate in bytes.
        what: the request, for the message, e.g. ``"clip.mp4 at 20000x20000"``.
        hint: what to change, e.g. ``"choose a smaller --size"``.
        device: where the memory is needed.

    Raises:
        InputError: ``needed`` exceeds the available memory (nothing is checked when the
            available memory cannot be told).
    """
    available = available_bytes(device)
    if available is not None and needed > available:
        where = "GPU memory" if torch.device(device).type == "cuda" else "memory"
        raise InputError(f"{what} needs about {gib(needed)} of {where}, only {gib(available)} "
                         f"available; {hint}")


def flow_bytes(size: tuple[int, int], *, strides: Sequence[int], batch_frames: int,
               backend: str, native_size: tuple[int, int] | None = None) -> float:
    """Peak memory of building 3D-HOP stacks at ``size`` (see :func:`flow.hop.build_hops`).

    Args:
        size: the processing size (width, height).
        strides: the 3D-HOP strides; the last ``max(strides)`` frames stay encoded.
        batch_frames: frames per chunk; a chunk's ``len(strides) * batch_frames`` flow pairs
            go to the backend in one call.
        backend: the flow backend's name (``raft-*`` or a classical one).
        native_size: the size frames are decoded at before resizing (default ``size``).
    """
    pixels = float(size[0]) * size[1]
    native = float(native_size[0]) * native_size[1] if native_size else pixels
    pairs = len(strides) * batch_frames
    kept_frames = max(strides) + batch_frames + 1
    # A decoded frame, its RGB conversion and the frames waiting for their stacks.
    frames = 2 * 3 * native + 4 * pixels * batch_frames
    # A chunk's flow: the backend's output and the per-frame stacks copied from it (float32).
    stacks = 2 * 8 * pixels * pairs
    if backend.startswith("raft"):
        correlation = (pixels / 64) ** 2 * 4 * 4 / 3
        work = (_RAFT_ENCODE_BYTES_PER_PIXEL * pixels * batch_frames
                + _RAFT_KEPT_BYTES_PER_PIXEL * pixels * kept_frames
                + pairs * (correlation + _RAFT_PAIR_LINEAR_BYTES_PER_PIXEL * pixels))
    else:
        work = 3 * pixels * kept_frames + _CLASSICAL_PAIR_BYTES_PER_PIXEL * pixels
    return frames + stacks + work


@functools.lru_cache(maxsize=16)
def hofam_saved_bytes_per_pixel(config) -> float:
    """Bytes a training-mode forward of HOFAM saves for backward, per pixel and sample.

    Measured, not modelled: one forward of a batch of 2 at 128x128 under
    :func:`torch.autograd.graph.saved_tensors_hooks`, each storage counted once. Activations
    grow with the pixel count, so this times the pixels and the batch size scales to any size.

    Args:
        config: a :class:`crossnet.hofam.HofamConfig`.
    """
    from crossnet.hofam import build_hofam

    height = width = 128
    batch = 2
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    # Measured with autograd on even when called under no_grad or inference_mode, where no
    # tensor would be saved and the estimate would read zero.
    with torch.inference_mode(False), torch.enable_grad():
        generator = torch.Generator().manual_seed(0)
        inputs = {"frames": torch.rand(batch, 3, height, width, generator=generator),
                  "hop": torch.rand(batch, len(config.strides), 2, height, width,
                                    generator=generator)}
        if config.use_background:
            inputs["background"] = torch.rand(batch, 3, height, width, generator=generator)
        model = build_hofam(config).train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(**inputs)
    return sum(storages.values()) / (batch * height * width)


def hofam_bytes(config, size: tuple[int, int], *, batch: int, training: bool) -> float:
    """Peak activation memory of HOFAM on ``batch`` samples of ``size`` (width, height)."""
    pixels = float(size[0]) * size[1]
    factor = _HOFAM_TRAINING_FACTOR if training else _HOFAM_INFERENCE_FACTOR
    return factor * hofam_saved_bytes_per_pixel(config) * pixels * batch


def segment_bytes(config, size: tuple[int, int], *, batch_frames: int, backend: str,
                  native_size: tuple[int, int] | None = None) -> float:
    """Peak memory of ``crossnet segment``: flow, the running background, the model.

    Args:
        config: the model's :class:`crossnet.hofam.HofamConfig`.
        size: the processing size (width, height).
        batch_frames: frames per flow/model batch.
        backend: the flow backend's name.
        native_size: the frames' own size (masks are resized back to it).
    """
    pixels = float(size[0]) * size[1]
    native = float(native_size[0]) * native_size[1] if native_size else pixels
    model_inputs = batch_frames * pixels * 4 * (3 + 3 + 2 * len(config.strides))
    masks = batch_frames * native * 5  # logits resized to the frame's size, then the mask
    # Frames the background flow thread reads ahead, held at their own size (RGB).
    native_wh = native_size or size
    lookahead = segment_lookahead_frames(native_wh, batch_frames) * native * 3
    return (flow_bytes(size, strides=config.strides, batch_frames=batch_frames,
                       backend=backend, native_size=native_size)
            + background_bytes(config, size) + model_inputs + masks + lookahead
            + hofam_bytes(config, size, batch=batch_frames, training=False))


def background_bytes(config, size: tuple[int, int]) -> float:
    """Memory of the running background at the processing size (width, height).

    The float32 RGB estimate (12 bytes a pixel); the median also keeps its 9 uint8 samples
    (27) and, while it updates, at most 72 more: the stack of up to 8 samples, its sorted copy and
    the float32 middle images, in a video's first frames, or the sorting network's two new
    images per exchange (6) afterwards.
    """
    if not config.use_background:
        return 0.0
    per_pixel = 12 + (27 + 72 if config.background_estimator == "median" else 0)
    return float(per_pixel) * size[0] * size[1]


def segment_lookahead_frames(frame_size: tuple[int, int], batch_frames: int) -> int:
    """Frames ``segment``'s background flow thread may finish ahead of the model.

    Two batches, so the next one is ready when the model finishes the current one, but never
    more frames (held at their own size until their masks are made) than fit in
    :data:`SEGMENT_LOOKAHEAD_BYTES`: a 4K video (25 MB a frame) is read one frame ahead.
    """
    frame_bytes = 3 * frame_size[0] * frame_size[1]
    return max(1, min(2 * batch_frames, int(SEGMENT_LOOKAHEAD_BYTES // frame_bytes)))


def raft_training_bytes(model: str, size: tuple[int, int], *, pairs: int,
                        num_flow_updates: int) -> float:
    """Peak memory of one training step of RAFT on ``pairs`` pairs of ``size`` (width, height).

    Args:
        model: ``raft-small`` or ``raft-large``.
        size: the crop (width, height).
        pairs: pairs in one forward (the self-supervised stage runs both directions: twice the
            batch).
        num_flow_updates: recurrent updates (each saves its activations for backward).
    """
    pixels = float(size[0]) * size[1]
    fixed, per_update = _RAFT_TRAINING_SAVED_BYTES_PER_PIXEL[model]
    correlation = (pixels / 64) ** 2 * 4 * 4 / 3
    return pairs * (_RAFT_TRAINING_FACTOR * (fixed + per_update * num_flow_updates) * pixels
                    + 2 * correlation)


def format_size(size: tuple[int, int]) -> str:
    """``(320, 240)`` -> ``"320x240"``."""
    return f"{size[0]}x{size[1]}"

