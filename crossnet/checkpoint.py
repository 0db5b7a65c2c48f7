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

import io
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from flow.safe_load import load_weights_only

CHECKPOINT_FORMAT = "crossnet-hofam"
CHECKPOINT_FORMAT_VERSION = 1
FLOW_CHECKPOINT_FORMAT = "crossnet-raft"

_DESCRIPTIONS = {CHECKPOINT_FORMAT: "crossnet segmentation",
                 FLOW_CHECKPOINT_FORMAT: "crossnet flow-network"}


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any], *,
                    checkpoint_format: str = CHECKPOINT_FORMAT) -> Path:
    """Write ``checkpoint`` atomically, adding the format keys.

    The file is serialised in memory first, then written to a temporary file in the same
    folder, ``fsync``ed and renamed over ``path``: a checkpoint on disk is always whole, even
    after a kill or a power cut, and a failed write (a full disk) leaves the previous one.

    Raises:
        OSError: the file could not be written (``path`` keeps its previous content). Written
            through Python's own file I/O, so a full disk reads as ``ENOSPC`` with the file
            name, not as one of torch's serialiser errors.
    """
    path = Path(path)
    document = {"format": checkpoint_format, "format_version": CHECKPOINT_FORMAT_VERSION,
                **checkpoint}
    buffer = io.BytesIO()
    torch.save(document, buffer)
    # A hidden, unique temporary name (a killed writer's leftover never collides with a live
    # one); pipelines.outputs.remove_stale_temporaries recognises the pattern.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if error.filename is None and error.errno is not None:  # write() names no file
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
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
    document = load_weights_only(path, map_location=map_location)
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
