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
    if not isinstance(recorded, dict):
        raise InputError(f"{path}: records no training settings, so it cannot be resumed")
    before = _flat(_comparable(recorded, ignore))
    now = _flat(_comparable(train_config, ignore))
    if before != now:
        differing = sorted(key for key in before.keys() | now.keys()
                           if before.get(key) != now.get(key))
        shown = ", ".join(f"{key}: {_short(before.get(key))} there, {_short(now.get(key))} now"
                          for key in differing[:3])
        more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
        raise InputError(f"{path}: was trained with other settings ({shown}{more}); resume "
                         "with the same options")


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


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``model.dynamic_filter``), so a refusal names the leaf."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any) -> str:
    """A setting as the refusal quotes it, cut to 60 characters."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
