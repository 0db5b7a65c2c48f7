"""Checkpoints of the segmentation model: what they hold, and how they are written and read.

A checkpoint is a plain dict saved with :func:`torch.save` and read with
``torch.load(weights_only=True)`` (nothing in it can execute code). The same writer and reader
serve the flow network's training runs (``checkpoint_format="crossnet-raft"``, see
:mod:`pipelines.train_flow`); a segmentation checkpoint holds:

- ``"format"``: ``"crossnet-hofam"``; ``"format_version"``: 1.
- ``"model"``: the HOFAM state dict; ``"model_config"``: ``HofamConfig.to_dict()``.
- ``"train_config"``, ``"split"``: dicts of plain values recording how it was trained.
- ``"code_version"``: the package version; optionally ``"epoch"``, ``"metrics"``, and for
  resuming ``"optimizer"``, ``"scheduler"``, ``"rng"`` (torch generator states) and ``"history"``.

Files are written under a temporary name in the same folder and renamed, so a checkpoint on disk
is always whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "crossnet-hofam"
CHECKPOINT_FORMAT_VERSION = 1
FLOW_CHECKPOINT_FORMAT = "crossnet-raft"

_DESCRIPTIONS = {CHECKPOINT_FORMAT: "crossnet segmentation",
                 FLOW_CHECKPOINT_FORMAT: "crossnet flow-network"}


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any], *,
                    checkpoint_format: str = CHECKPOINT_FORMAT) -> Path:
    """Write ``checkpoint`` atomically (temporary file + ``os.replace``), adding the format keys."""
    path = Path(path)
    document = {"format": checkpoint_format, "format_version": CHECKPOINT_FORMAT_VERSION,
                **checkpoint}
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(document, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    checkpoint_format: str = CHECKPOINT_FORMAT) -> dict[str, Any]:
    """Read a crossnet checkpoint safely (``weights_only=True``) and check what it is.

    Raises:
        ValueError: the file is not a torch file, not a crossnet checkpoint, or of another
            format version; the message names the file.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        document = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for foreign or damaged files
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(document, dict) or document.get("format") != checkpoint_format:
        description = _DESCRIPTIONS.get(checkpoint_format, repr(checkpoint_format))
        raise ValueError(f"{path}: not a {description} checkpoint")
    if document.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {document.get('format_version')} "
                         f"is not supported (this code reads {CHECKPOINT_FORMAT_VERSION})")
    for key in ("model", "model_config"):
        if key not in document:
            raise ValueError(f"{path}: checkpoint has no {key!r} entry")
    return document
