"""The exception types the CLI turns into a single clear error line, and that line."""

from __future__ import annotations

import logging


class InputError(Exception):
    """Bad user input: a missing path, an unreadable file, an unknown layout.

    The message must name the offending file or value and say what is wrong, e.g.
    ``"clip.mp4: not a readable video (OpenCV could not decode any frame)"``.
    """


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is left as it was."""


class Terminated(BaseException):
    """The process received SIGTERM (``kill PID``); raised so that cleanup code runs.

    A BaseException, like KeyboardInterrupt, so that handlers of ordinary errors (``except
    Exception``, a batch that records a failed input and goes on) do not swallow it.
    """


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line that names the file where the error has one.

    - An OSError with a file name reads ``"<file>: <reason>"`` (``"out/a.flo: No space left on
      device"``) instead of Python's ``"[Errno 28] No space left on device: 'out/a.flo'"``.
    - An error re-raised by a DataLoader from a worker process carries the worker's traceback
      in its message; only its last line (the original error) is kept.
    - Any other multi-line message keeps its first line.
    """
    if isinstance(error, OSError) and error.strerror:
        if error.filename is not None and error.filename2 is not None:
            return f"{error.filename} -> {error.filename2}: {error.strerror}"
        if error.filename is not None:
            return f"{error.filename}: {error.strerror}"
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "Original Traceback" in str(error):
        return lines[-1]
    return lines[0]


def failure_line(error: Exception, path: object,
                 expected: tuple[type[BaseException], ...] = (InputError, ValueError, OSError)
                 ) -> str:
    """One line for an input of a batch that failed, naming it (``path``) once; an error not
    of the ``expected`` kinds keeps its type, marked as an internal error. The traceback is
    logged at debug level (shown with ``crossnet --debug``)."""
    logging.getLogger(__name__).debug("failed: %s", path, exc_info=error)
    text = one_line(error)
    if not isinstance(error, expected):
        text = f"internal error: {type(error).__name__}: {text}"
    return text if str(path) in text else f"{path}: {text}"
