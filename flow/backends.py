"""Flow methods by name, adapted to the 3D-HOP builder's encode-once interface.

``make_hop_backend("dis-fast")`` or ``make_hop_backend("raft-small")`` (the bundled weights;
``weights=...`` overrides them) returns an object with ``encode(frames)`` and
``estimate(first, second)`` (see :class:`flow.hop.HopBackend`).
For RAFT an encoding is a frame's feature map and context (hidden state and context features),
computed once per frame; for the classical backends it is the frame itself (OpenCV needs the
whole image per pair, and the grayscale conversion is negligible next to the flow).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flow.classical import CLASSICAL_BACKEND_NAMES, make_classical_backend

RAFT_BACKEND_NAMES = ("raft-small", "raft-large")
BACKEND_NAMES = CLASSICAL_BACKEND_NAMES + RAFT_BACKEND_NAMES


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:N"`` as given.

    Raises:
        ValueError: CUDA was asked for but is not available, or the name is not a device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda[:N]") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return resolved


# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic.
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16), read from the
    ``flags`` lines of ``cpuinfo``; False where that file cannot be read (not Linux). Without
    these instructions bf16 is emulated in float32 arithmetic; such a CPU keeps float32, as
    it always did (bf16 was not measured on one)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    return any(not _BF16_CPU_FLAGS.isdisjoint(line.split(":", 1)[-1].split())
               for line in text.splitlines() if line.startswith("flags"))


def bf16_pays(device: torch.device) -> bool:
    """RAFT's default precision: bf16 autocast on CUDA and on CPUs with native bf16.

    On the AVX512-BF16 CPU of ``benchmarks/RESULTS.md`` the bundled RAFT-small ran 1.4-1.6x
    faster per Middlebury pair under bf16, and no scene's EPE rose by more than 0.005 px
    ("Flow accuracy", 2026-11-25 17:58, ``flow_accuracy.py --bf16``)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file (weights are recorded by it in caches and model cards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SHA256_OR_EMPTY = re.compile(r"(?:[0-9a-f]{64})?")


def is_sha256_or_empty(value: object) -> bool:
    """Whether ``value`` is a sha256 as :func:`file_sha256` writes it (64 lowercase hex
    digits), or "" (no network weights: classical flow, or nothing recorded)."""
    return isinstance(value, str) and _SHA256_OR_EMPTY.fullmatch(value) is not None


class ClassicalHopBackend:
    """An OpenCV backend (DIS, Farneback) for the 3D-HOP builder; runs on the CPU.

    Args:
        name: one of :data:`flow.classical.CLASSICAL_BACKEND_NAMES`.
    """

    weights_sha256 = ""
    settings = ""  # caches' flow_settings: nothing beyond the name

    def __init__(self, name: str) -> None:
        self._estimator = make_classical_backend(name)
        self.name = name

    def encode(self, frames: torch.Tensor) -> list[np.ndarray]:
        """(B, 3, H, W) uint8 RGB -> B numpy (H, W, 3) uint8 RGB images."""
        return list(frames.permute(0, 2, 3, 1).contiguous().cpu().numpy())

    def estimate(self, first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> torch.Tensor:
        """Flow from each first to its second image: (P, 2, H, W) float32 on the CPU."""
        flows = [self._estimator.compute_flow(a, b) for a, b in zip(first, second, strict=True)]
        return torch.from_numpy(np.stack(flows))


class RaftHopBackend:
    """A RAFT-style network for the 3D-HOP builder: features once per frame, pairs batched.

    Args:
        model: a :class:`flow.raft.RAFT` in eval mode.
        num_flow_updates: recurrent refinement steps per pair.
        device: where the network runs.
        name: recorded in caches.
        weights_sha256: sha256 of the checkpoint the weights came from.
        bf16: run under bfloat16 autocast; None (default): where it pays (:func:`bf16_pays`:
            CUDA, and CPUs with AVX512-BF16 or AMX).
        warm_updates: None (default): every pair of a 3D-HOP starts from zero flow and runs
            ``num_flow_updates`` steps. A number: the longer strides start from their shorter
            strides' flows, composed (:mod:`flow.warm_start`), and run this many steps.

    Caches record ``name``, ``weights_sha256`` and :attr:`settings` (updates, warm starts,
    precision). A cache is reused for the same updates and warm starts whatever its precision:
    that follows the machine (:func:`bf16_pays`), within the tolerance that
    ``tests/flow/test_backends.py`` states.
    """

    def __init__(self, model: torch.nn.Module, *, num_flow_updates: int = 12,
                 device: torch.device | str = "cpu", name: str = "raft",
                 weights_sha256: str = "", bf16: bool | None = None,
                 warm_updates: int | None = None) -> None:
        for label, value in (("num_flow_updates", num_flow_updates),
                             ("warm_updates", warm_updates)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.num_flow_updates = num_flow_updates
        self.warm_updates = warm_updates
        self.name = name
        self.weights_sha256 = weights_sha256
        self.bf16 = bf16_pays(self.device) if bf16 is None else bf16

    @property
    def settings(self) -> str:
        """How this backend makes flow beyond its name and weights, as caches record it
        (``flow_settings`` in :mod:`flow.cache`): ``"updates=12 warm_updates=none
        precision=bf16"``."""
        warm = "none" if self.warm_updates is None else str(self.warm_updates)
        precision = "bf16" if self.bf16 else "fp32"
        return f"updates={self.num_flow_updates} warm_updates={warm} precision={precision}"

    def _context(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """(B, 3, H, W) uint8 RGB -> B tuples (features, hidden, context) on the device."""
        images = frames.to(self.device, non_blocking=True).float()
        with self._context():
            features = self.model.extract_features(images)
            hidden, context = self.model.extract_context(images)
        self._image_size = tuple(frames.shape[-2:])
        return list(zip(features, hidden, context))

    @torch.inference_mode()
    def estimate(self, first: Sequence[tuple[torch.Tensor, ...]],
                 second: Sequence[tuple[torch.Tensor, ...]], *,
                 init: torch.Tensor | None = None, updates: int | None = None) -> torch.Tensor:
        """Flow from each first to its second frame: (P, 2, H, W) float32 on the CPU.

        ``init``: a starting flow per pair, (P, 2, H, W) in pixels (None: zero); ``updates``:
        refinement steps (None: ``num_flow_updates``).
        """
        features1 = torch.stack([encoding[0] for encoding in first])
        features2 = torch.stack([encoding[0] for encoding in second])
        hidden = torch.stack([encoding[1] for encoding in first])
        context = torch.stack([encoding[2] for encoding in first])
        with self._context():
            flows = self.model.estimate_flow(
                features1, features2, (hidden, context),
                num_flow_updates=self.num_flow_updates if updates is None else updates,
                flow_init=None if init is None else init.to(self.device),
                image_size=self._image_size)
        return flows[-1].float().cpu()


def make_hop_backend(name: str, *, weights: str | os.PathLike | None = None,
                     device: str = "auto", num_flow_updates: int = 12,
                     warm_updates: int | None = None) -> Any:
    """A 3D-HOP backend by name.

    Args:
        name: one of :data:`BACKEND_NAMES`.
        weights: a RAFT checkpoint (torchvision or princeton-vl layout, or a ``crossnet
            train-flow`` ``weights.pt``); RAFT backends only. None: the weights bundled with
            the package (:mod:`flow.weights`), when there are any for ``name``.
        device: ``auto``, ``cpu`` or ``cuda[:N]``; classical backends always run on the CPU.
        num_flow_updates: RAFT refinement steps.
        warm_updates: RAFT only: warm-start the longer strides of a 3D-HOP and run this many
            steps for them (see :class:`RaftHopBackend`); None: no warm starts.

    Raises:
        ValueError: unknown name, weights or warm updates given to a classical backend, or a
            RAFT backend without weights (none given and none bundled).
    """
    if name in CLASSICAL_BACKEND_NAMES:
        if weights is not None:
            raise ValueError(f"--weights applies to the RAFT backends, not to {name}")
        if warm_updates is not None:
            raise ValueError(f"warm starts apply to the RAFT backends, not to {name}")
        return ClassicalHopBackend(name)
    if name not in RAFT_BACKEND_NAMES:
        raise ValueError(f"unknown flow backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")
    from flow.checkpoints import load_flow_checkpoint
    from flow.raft import raft_large, raft_small
    from flow.weights import bundled_weights_path

    if weights is None:
        weights = bundled_weights_path(name)
        if not weights.is_file():
            raise ValueError(f"{name}: no trained weights are bundled for it ({weights.name} "
                             "is not in flow/weights); pass --weights PATH (a crossnet "
                             "train-flow weights.pt, or a RAFT checkpoint in the torchvision or "
                             "princeton-vl layout)")

    weights = Path(weights)
    if not weights.is_file():
        raise ValueError(f"{weights}: no such weights file")
    model = raft_small() if name == "raft-small" else raft_large()
    load_flow_checkpoint(model, weights)
    return RaftHopBackend(model, num_flow_updates=num_flow_updates,
                          device=resolve_device(device), name=name,
                          weights_sha256=file_sha256(weights), warm_updates=warm_updates)
