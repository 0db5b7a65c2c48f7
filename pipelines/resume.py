"""What `train` and `train-flow` share about their run folder: holding it for one process,
checking that a run's ``last.pt`` can continue this run, and turning a failure while restoring
it into one clear error line."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.errors import InputError, one_line
from pipelines.outputs import held_folder, remove_stale_temporaries


@contextlib.contextmanager
def held_run_folder(out_dir: Path, *, what: str, run_files: Sequence[str],
                    checkpoints: Sequence[str], resume: bool, overwrite: bool
                    ) -> Iterator[None]:
    """Create ``out_dir`` if needed and hold it for this process while the run writes there.

    Inside, this process owns the folder's ``run_files``: temporaries that a killed writer left
    are deleted, and ``--overwrite`` may delete the files themselves. A second process into the
    same folder (two commands started with one ``--out``) is refused before it touches a file
    (:func:`pipelines.outputs.folder_lock`); without the lock it could delete the first one's
    checkpoint temporaries mid-write or, with ``--overwrite``, its checkpoints.

    Args:
        out_dir: the run folder.
        what: the command, for the refusal (e.g. ``"crossnet train"``).
        run_files: the names a run writes there.
        checkpoints: those that make the folder "hold a run" (``last.pt`` first: what
            ``resume`` continues from).
        resume: continue the run there; ``last.pt`` must exist.
        overwrite: a run held there will be replaced (the caller deletes it when ready).

    A run that fails before writing anything there (a request refused for memory, a bad
    input found after the folder was made) removes the folders this call created, so that it
    leaves no empty run folder behind (:func:`pipelines.outputs.held_folder`).

    Raises:
        InputError: another process holds the folder, it holds a run (without ``resume`` or
            ``overwrite``), there is nothing to resume, or it cannot be created or written.
    """
    with held_folder(out_dir, what=what):
        names = re.compile("|".join(re.escape(name) for name in run_files))
        remove_stale_temporaries(out_dir, names)
        held = [name for name in checkpoints if (out_dir / name).exists()]
        if held and not resume and not overwrite:
            raise InputError(f"{out_dir}: holds a run already ({', '.join(held)}); pass "
                             "--resume to continue it, --overwrite to start over, or choose "
                             "another --out")
        last = out_dir / checkpoints[0]
        if resume and not last.exists():
            raise InputError(f"{last}: nothing to resume")
        yield


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
