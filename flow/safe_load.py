"""Reading torch files that may come from anywhere: tensors and plain values only, never code.

``torch.load(weights_only=True)`` unpickles only tensors, containers and plain values; a file
that asks for anything else (a function or class to call, the way a malicious pickle runs
code) is refused before anything is called. This module adds one clear message per failure:
which global the file asked for, or that the file is not a torch file at all. Shared by the
RAFT checkpoints here and the segmentation checkpoints of :mod:`crossnet.checkpoint`.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_weights_only(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with a one-line error naming the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file asks for code to run on loading (refused, never run), or is not
            a readable torch file (truncated, another format, random bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        asked = _GLOBAL.search(str(error))
        if asked:
            raise ValueError(f"{path}: refused: the file would call {asked.group(1)} on loading "
                             "(code, not tensors); nothing was run") from error
        raise ValueError(f"{path}: not a readable checkpoint (not a torch file, or damaged)"
                         ) from error
    except Exception as error:  # torch raises several types for foreign or damaged files
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                         f"{first_line})") from error
