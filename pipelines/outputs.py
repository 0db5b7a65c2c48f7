"""Output paths: created up front, checked writable, never overwritten unless asked.

Every command checks its outputs before doing any work, so a wrong ``--out`` fails in one line
within a second instead of after an hour of flow: folders are created (with their parents) and
probed for writability with a real file; a file named on the command line that already exists
is refused unless ``--overwrite`` is given. Files are written under a hidden temporary name in
the same folder and renamed (:func:`write_bytes_atomic`), so a path holds either its old
content or the complete new one, whatever interrupts the writer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipelines.errors import InputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)


def temporary_name(path: Path) -> Path:
    """A unique hidden name beside ``path`` for writing it atomically."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def is_temporary_name(name: str, final_name: str) -> bool:
    """Whether ``name`` is a temporary made by :func:`temporary_name` for ``final_name``."""
    return name.startswith(f".{final_name}.") and name.endswith(".tmp")


def _check_writable(folder: Path) -> None:
    probe = temporary_name(folder / "crossnet-write-test")
    try:
        descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as error:
        raise InputError(f"{folder}: output folder is not writable "
                         f"({error.strerror or error})") from None
    os.close(descriptor)
    os.unlink(probe)


def prepare_output_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) if needed and check that files can be written there.

    Raises:
        InputError: the path is a file, cannot be created, or is not writable.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{folder}: cannot create the output folder "
                         f"({error.strerror or error})") from None
    _check_writable(folder)
    return folder


def create_missing_folder(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders this call created,
    deepest first, for :func:`remove_unused_folders` ([] when the folder was there already, or
    cannot be made: :func:`prepare_output_folder` then says why). The creation is exclusive:
    of two runs that start together, only one has made the folder."""
    missing, path = [], Path(folder).absolute()
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    if not missing:
        return []
    try:
        Path(folder).mkdir(parents=True)
    except OSError:  # made by another run meanwhile, or cannot be made
        return []
    return missing


def remove_unused_folders(created: list[Path], *, disposable: frozenset[str] = frozenset()
                          ) -> None:
    """Remove folders a run created (:func:`create_missing_folder`, deepest first) that hold
    nothing but files named in ``disposable``, so that a run that wrote nothing leaves no empty
    output folder behind; stop at the first that holds more, is gone or cannot be removed."""
    for folder in created:
        try:
            entries = list(folder.iterdir())
            if any(entry.name not in disposable for entry in entries):
                return
            for entry in entries:
                entry.unlink()
            folder.rmdir()
        except OSError as error:  # something else wrote into it meanwhile, or it is gone
            logger.debug("%s: left in place (%s)", folder, error)
            return


@contextmanager
def folder_lock(folder: Path, *, what: str) -> Iterator[None]:
    """Hold ``folder`` for one writer: an exclusive ``flock`` on the folder itself, which the
    kernel drops when the process ends (however it ends), so no lock file is left behind.

    Where ``fcntl`` does not exist (Windows) the run goes on unlocked; where the file system
    refuses locks (some network file systems), too, with a warning.

    Raises:
        InputError: another live process holds the folder; ``what`` names that process in the
            message (e.g. ``"crossnet segment"``).
    """
    descriptor = None
    if fcntl is not None:
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise InputError(f"{folder}: another {what} is writing into this folder; wait for "
                             "it to finish, or choose another output folder") from None
        except OSError as error:  # e.g. a network file system without flock
            logger.warning("%s: cannot lock the folder (%s); a second run into it would not "
                           "be refused", folder, error.strerror or error)
        _hold(descriptor)
    try:
        yield
    finally:
        # Not ours any more in a forked child that unwinds through here: its copy was closed
        # at the fork, and the number may name another file by now.
        if descriptor is not None and descriptor in _HELD_LOCKS:
            _HELD_LOCKS.discard(descriptor)
            os.close(descriptor)  # closing the last descriptor releases the lock


# The descriptors of the folder locks this process holds. A forked child (data-loader and
# batch workers) gets copies of them, and an flock lasts until every copy is closed: a child
# that outlived a killed parent would hold the folder. Children close their copies at once.
_HELD_LOCKS: set[int] = set()
_FORK_HANDLER: list[bool] = []  # registered once, on the first lock (not at import)


@contextmanager
def held_folder(folder: str | os.PathLike, *, what: str,
                disposable: frozenset[str] = frozenset(),
                remove_parents: bool = True) -> Iterator[Path]:
    """``folder`` created if needed (:func:`create_missing_folder`), checked
    (:func:`prepare_output_folder`) and held (:func:`folder_lock`) while the block runs; yields
    the checked path.

    When the block fails, the folders this call created are removed again if they hold nothing
    but files named in ``disposable`` (:func:`remove_unused_folders`), still under the lock, so
    a run that starts meanwhile never loses its folder and a run that wrote nothing leaves no
    empty folder behind. ``remove_parents=False``: only ``folder`` itself, never the parents
    this call made.
    """
    created = create_missing_folder(folder)
    if not remove_parents:
        created = created[:1]
    try:
        folder = prepare_output_folder(folder)
    except BaseException:
        remove_unused_folders(created)
        raise
    with folder_lock(folder, what=what):
        try:
            yield folder
        except BaseException:
            remove_unused_folders(created, disposable=disposable)
            raise


def _hold(descriptor: int) -> None:
    """Record a held lock's descriptor, to be closed in forked children."""
    if not _FORK_HANDLER and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_close_inherited_locks)
        _FORK_HANDLER.append(True)
    _HELD_LOCKS.add(descriptor)


def _close_inherited_locks() -> None:
    """In a forked child: close its copies of the parent's lock descriptors (the parent keeps
    its locks)."""
    for descriptor in _HELD_LOCKS:
        os.close(descriptor)
    _HELD_LOCKS.clear()


def check_output_file(path: str | os.PathLike, *, overwrite: bool,
                      option: str = "--out") -> Path:
    """Check that a file named on the command line may be written; prepares its folder.

    Args:
        path: the output file.
        overwrite: whether an existing file may be replaced.
        option: the option that named it, for the message.

    Raises:
        InputError: the file exists (without ``overwrite``), is a folder, or its folder cannot
            be created or written.
    """
    file = Path(path)
    if file.is_dir():
        raise InputError(f"{file}: {option} names a folder, expected a file")
    if file.exists() and not overwrite:
        raise InputError(f"{file}: exists; pass --overwrite to replace it")
    prepare_output_folder(file.parent)
    return file


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, sync: bool = False) -> Path:
    """Write ``data`` to ``path`` through a hidden temporary file and a rename.

    Args:
        path: destination; its folder must exist.
        data: the content.
        sync: ``fsync`` the file before the rename, so that the new content survives a power
            cut too (worth it for checkpoints, not for thousands of masks).

    Raises:
        OSError: the write failed (disk full, permissions...); ``path`` is left as it was and
            the temporary file is removed.
    """
    path = Path(path)
    temporary = temporary_name(path)
    # Opened with "xb" (not tempfile.mkstemp, which creates mode 0600) so that the final file
    # gets the usual umask permissions.
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise with_file_name(error, path) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def with_file_name(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` with ``path`` as its file name where it has none.

    A failed ``write()`` (``ENOSPC``, ``EIO``) does not say which file it was writing; the
    message a user sees should.
    """
    if error.filename is not None or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror or os.strerror(error.errno), str(path))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_safe(value):
    """``value`` with NaN/inf floats as None and numpy scalars as Python ones, recursively
    through dicts and lists: strict JSON (``null``) instead of Python's ``NaN``."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_jsonl_atomic(path: str | os.PathLike, records) -> Path:
    """Rewrite a JSON-lines log from ``records`` (one line each, :func:`json_safe`), atomically:
    rewritten whole from a checkpoint's history after a resume, it holds each record once."""
    return write_text_atomic(path, "".join(json.dumps(json_safe(r)) + "\n" for r in records))


def remove_stale_temporaries(folder: Path, final_name: re.Pattern[str]) -> int:
    """Delete temporary files that killed writers left in ``folder``; returns how many.

    Only names made by :func:`temporary_name` for a final name matching ``final_name`` (a
    full match) are touched. A live writer's temporary would be deleted too: the commands that
    call this own the folder's files of that name for the run.
    """
    removed = 0
    for entry in folder.iterdir():
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        parts = name[1:-len(".tmp")].rsplit(".", 2)
        if (len(parts) == 3 and parts[1].isdigit() and final_name.fullmatch(parts[0])
                and entry.is_file()):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed
