"""What `train` and `train-flow --resume` share: checking that a run's ``last.pt`` can continue
this run, and turning a failure while restoring it into one clear error line."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from pipelines.errors import InputError, one_line


def check_resumable(path: str | os.PathLike, checkpoint: Mapping[str, Any], *,
                    keys: Collection[str], train_config: Mapping[str, Any],
                    ignore: Collection[str] = ()) -> None:
    """Refuse a checkpoint that lacks ``keys`` or was trained with other settings.

    Settings are compared as JSON sees them (tuples and lists alike), except the entries in
    ``ignore`` (settings that change no result, such as the data-loader worker count).

    Raises:
        InputError: naming ``path`` and what is wrong.
    """
    missing = [key for key in keys if key not in checkpoint]
    if missing:
        raise InputError(f"{path}: not a resumable checkpoint (no "
                         f"{', '.join(map(repr, missing))})")
    recorded = checkpoint.get("train_config")
    if not isinstance(recorded, dict) or (_comparable(recorded, ignore)
                                          != _comparable(train_config, ignore)):
        raise InputError(f"{path}: was trained with other settings; resume with the same "
                         "options")


@contextlib.contextmanager
def restoring(path: str | os.PathLike) -> Iterator[None]:
    """Around loading a checkpoint's states and counters: a malformed entry becomes
    ``InputError("<path>: cannot be resumed (<reason>)")``."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise InputError(f"{path}: cannot be resumed ({one_line(error)})") from error


def _comparable(settings: Mapping[str, Any], ignore: Collection[str]) -> dict:
    normalised = json.loads(json.dumps(dict(settings)))
    for key in ignore:
        normalised.pop(key, None)
    return normalised
