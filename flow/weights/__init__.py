"""Weights shipped with the package (package data), and where to find them.

``raft_small.pt`` is the RAFT-small network trained by this project (see ``MODEL_CARD.md`` in
this folder for its data, recipe, measured accuracy and sha256). It is a checkpoint written by
``crossnet train-flow`` (``weights.pt``): a dict whose ``"model"`` entry is the state dict in
the torchvision layout, read with ``torch.load(weights_only=True)`` by
:func:`flow.checkpoints.load_flow_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def bundled_weights_path(backend_name: str) -> Path:
    """Where the bundled weights of a RAFT backend live (``raft-small`` -> ``raft_small.pt``),
    whether or not the file is there."""
    return WEIGHTS_DIR / f"{backend_name.replace('-', '_')}.pt"
