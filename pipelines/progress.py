"""Progress bars that read well on a terminal and in a log file.

On a terminal a bar is tqdm's, redrawn in place. Off a terminal (stderr sent to a log file, a
pipe, a batch system) tqdm would write the same: a redraw every 0.1 s, each starting with a
carriage return, and cursor codes for nested bars, so a one-hour `segment` run leaves one line of
tens of thousands of updates. There, :func:`progress_bar` writes plain lines instead: the bar's
state at most once every :data:`LOG_INTERVAL` seconds and when it finishes, each on its own line,
with no carriage returns or escape codes.
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two lines of one bar off a terminal
_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is an interactive terminal (False for anything that cannot say)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineWriter:
    """A stream for tqdm off a terminal: each redraw becomes one plain line.

    tqdm writes ``"\\r" + state + padding``, blank padding to erase a bar, and cursor codes to
    move between nested bars. Here escape codes are dropped, the text is split at carriage
    returns and newlines, and each non-blank piece is written as a line, unless it repeats the
    count of the line written just before (a bar draws its last state again when it closes,
    with only the timings in brackets changed).
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._last = ""

    def write(self, text: str) -> None:
        for piece in re.split(r"[\r\n]", _ESCAPE.sub("", text)):
            line = piece.rstrip()
            state = line.rsplit(" [", 1)[0]  # without "[elapsed<left, rate]"
            if line and state != self._last:
                self.stream.write(line + "\n")
                self._last = state

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, *, file: IO[str] | None = None,
                 **options: Any) -> tqdm:
    """A tqdm bar (same arguments) that writes plain lines when ``file`` (default stderr) is
    not a terminal: one every :data:`LOG_INTERVAL` seconds at most, and the final state (the
    bar is then kept, ``leave=True``, whatever was asked)."""
    stream = sys.stderr if file is None else file
    if not is_terminal(stream):
        options.update(mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, leave=True,
                       dynamic_ncols=False, ascii=True)
        stream = LineWriter(stream)
    return tqdm(iterable, file=stream, **options)
