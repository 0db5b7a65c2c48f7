"""Shared helpers of the benchmark scripts: the environment header, tables and RESULTS.md.

Every benchmark prints its results to stdout and, unless run with ``--no-record``, appends them
as one section to ``benchmarks/RESULTS.md``: a title, the UTC date, the machine (CPU model, core
count, thread counts, GPU), the software versions, the repository's git commit, the exact command
and the script's tables. A section is never rewritten; a rerun appends a new one, so the file is
the history of every recorded measurement.

The scripts import this module as ``_report``: Python puts a script's own folder first on
``sys.path``, so ``python benchmarks/<script>.py`` finds it from any working directory.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
# The clip the speed benchmarks share, so their tables can be read side by side.
DEFAULT_VIDEO = DEFAULT_DATA / "videos" / "highway2_320x240.avi"

_NUMERIC_CELL = re.compile(r"[-+x\d.,/% ]+")

_RESULTS_INTRO = """\
# Benchmark results

Every speed or accuracy figure quoted in the README comes from a script in `benchmarks/` and is
recorded here. Each section below is the output of one run of one script, appended by the script
itself (pass `--no-record` to print without recording): its title, the UTC date, the machine
(CPU model, `os.cpu_count()`, torch and OpenCV thread counts, CUDA device, and the load
average before and after the run: other processes on the machine slow timings down; on a
2-core machine a load above about 1 means the timings were shared with other work), the versions of
Python, torch, OpenCV, numpy and h5py, the git commit of the code ("+ uncommitted changes" when
the working tree differed from it), and the exact command, run from the repository root. Rerun
that command to check a number; sections are never edited, a rerun appends a new one. Methods
compared in one table were measured in the same run; their ratios are steadier than absolute
times, but still move when the load changes during a run.

Scripts: `flow_accuracy.py` (EPE / Fl-all of every flow backend on every flow scene with ground
truth), `preprocess_throughput.py` (frames/s of decoding, MOG2/KNN, 3D-HOP building and the
whole `preprocess` stage, and the cache's size), `baselines.py` (MOG2 vs KNN scored by CDnet-2014
rules on every real scene with ground truth).
"""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or ``platform.processor()`` where that is absent."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """The repository's HEAD commit, with a note when the working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=normal"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} + uncommitted changes" if dirty else commit


def _load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def environment() -> dict[str, str]:
    """What a measurement ran on: date, machine, library versions and code version."""
    import cv2
    import h5py
    import numpy
    import torch

    if torch.cuda.is_available():
        gpu = ", ".join(
            torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())
        )
    else:
        gpu = "none"
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": cpu_model(),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "threads": f"torch {torch.get_num_threads()}, OpenCV {cv2.getNumThreads()}",
        "CUDA device": gpu,
        # Other processes on the machine slow the timings; the load shows whether there were.
        "load average (1/5/15 min) before the run": _load_average(),
        "software": (
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"OpenCV {cv2.__version__}, numpy {numpy.__version__}, h5py {h5py.__version__}"
        ),
        "git commit": git_commit(),
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this script, as typed from the repository root.

    The interpreter is written ``python`` and the script's path relative to the repository,
    so the line can be pasted on another machine.
    """
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(script)
    return shlex.join(["python", shown, *argv[1:]])


def header_markdown(env: dict[str, str], command: str) -> str:
    """The environment and command as a markdown bullet list."""
    lines = [f"- {key}: {value}" for key, value in env.items()]
    lines.append(f"- command: `{command}`")
    return "\n".join(lines)


def format_value(value: object, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals, NaN and None as ``-``, the rest as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], *, digits: int = 3
) -> str:
    """A GitHub markdown table: numeric columns right-aligned, text columns left-aligned.

    A column counts as numeric when every cell, as printed, holds only digits, signs, ``.``,
    ``,``, ``/``, ``%``, ``x`` (ratios such as ``x0.40``) and spaces; the first column is
    always text.

    Args:
        header: the column titles.
        rows: the rows, each as long as ``header``; floats are printed by :func:`format_value`.
        digits: decimals for float cells.

    Returns:
        the table, one line per row, no trailing newline.

    Raises:
        ValueError: a row's length differs from the header's.
    """
    cells = [[format_value(value, digits) for value in row] for row in rows]
    for index, row in enumerate(cells):
        if len(row) != len(header):
            raise ValueError(
                f"benchmarks/_report.py: row {index} has {len(row)} cells, the header "
                f"{len(header)}: {row}"
            )
    numeric = [
        column > 0 and all(_NUMERIC_CELL.fullmatch(row[column]) for row in cells)
        for column in range(len(header))
    ]
    widths = [
        max([3, len(title)] + [len(row[column]) for row in cells])
        for column, title in enumerate(header)
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (width - 1) + ":" if right else "-" * width
            for width, right in zip(widths, numeric)]
    return "\n".join([line(header), line(rule)] + [line(row) for row in cells])


def append_results(
    section_title: str, command: str, body: str, *, env: dict[str, str] | None = None,
    path: Path = RESULTS_PATH,
) -> Path:
    """Append one section to RESULTS.md, creating the file with its introduction if missing.

    Args:
        section_title: the section's heading (without ``##``).
        command: the exact command that produced ``body``.
        body: the script's tables and notes, markdown.
        env: the environment to record; default: :func:`environment` now.
        path: the results file.

    Returns:
        the path written.
    """
    env = environment() if env is None else env
    section = f"\n## {section_title}\n\n{header_markdown(env, command)}\n\n{body.strip()}\n"
    if not path.exists():
        path.write_text(_RESULTS_INTRO)
    with path.open("a") as handle:
        handle.write(section)
    return path


def add_record_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-record`` (print only, leave RESULTS.md alone) to a script's parser."""
    parser.add_argument(
        "--no-record", action="store_true",
        help="print the results without appending them to benchmarks/RESULTS.md",
    )


def report(title: str, body: str, *, record: bool, env: dict[str, str] | None = None) -> None:
    """Print a section (header, command, body) to stdout and, if ``record``, append it.

    Args:
        title: the section's heading.
        body: the tables and notes, markdown.
        record: append the section to RESULTS.md.
        env: the environment taken before the measurements (its load average is the one that
            matters); default: :func:`environment` now.
    """
    env = environment() if env is None else dict(env)
    env["load average (1/5/15 min) after the run"] = _load_average()
    command = command_line()
    print(f"## {title}\n\n{header_markdown(env, command)}\n\n{body.strip()}\n")
    if record:
        written = append_results(title, command, body, env=env)
        print(f"recorded in {written}")


def data_root(path: str | os.PathLike | None) -> Path:
    """The real-data folder: ``path`` if given, else ``<repo>/../shared/data``.

    Raises:
        SystemExit: the folder does not exist (a one-line message, no traceback).
    """
    root = Path(path) if path is not None else DEFAULT_DATA
    if not root.is_dir():
        raise SystemExit(
            f"{root}: data folder not found (pass --data PATH; by default the benchmarks read "
            "<repo>/../shared/data)"
        )
    return root


def ratio(value: float | None, reference: float | None) -> str | None:
    """``value / reference`` as a table cell, ``x0.40``; None when either is missing."""
    if value is None or reference is None:
        return None
    return f"x{value / reference:.2f}"


def nan_mean(values: Iterable[float | None]) -> float:
    """The mean of the finite values (None and NaN left out); NaN when there are none."""
    finite = [value for value in values if value is not None and not math.isnan(value)]
    return statistics.fmean(finite) if finite else math.nan


def f_measure(result: dict[str, float]) -> float:
    """CDnet-2014 F of a scene (``VideoScorer.result()``), with 0 (not NaN) where ground truth
    has foreground and the method marked none: a post-processing step or a coarser flow can
    erase every object of a scene (the small cars of ``traffic``), and a mean that skipped the
    scene would reward it."""
    if math.isnan(result["F"]) and not math.isnan(result["Re"]):
        return 0.0
    return result["F"]


def synchronize(device) -> None:
    """Wait for the work queued on a CUDA ``device`` (a :class:`torch.device`), so that a clock
    stopped next counts it; nothing on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def median_seconds(function: Callable[[], object], *, repeats: int, warmup: int = 1,
                   device=None) -> float:
    """Median wall-clock seconds of ``function()`` over ``repeats`` calls after ``warmup`` calls;
    with a CUDA ``device``, each call's queued GPU work is waited for before its clock stops.

    Raises:
        ValueError: ``repeats`` < 1.
    """
    if repeats < 1:
        raise ValueError(f"benchmarks/_report.py: repeats must be >= 1, got {repeats}")

    def call() -> None:
        function()
        if device is not None:
            synchronize(device)

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_speedups(functions: dict[str, Callable[[], object]], *, rounds: int
                    ) -> dict[str, list[float]]:
    """How much faster each function runs than the first one, measured side by side.

    Every round calls each function once, in an order rotated by one place per round, and
    divides the first function's time in that round by each one's. A VM whose speed drifts
    between runs (this project's does, by up to a third) slows a whole round alike, so the
    ratios keep what a median of separate runs loses. Each function is called once before the
    first round (warm-up).

    Returns:
        label -> one speed-up per round (the first label's are all 1.0).

    Raises:
        ValueError: ``rounds`` < 1 or no functions.
    """
    if rounds < 1 or not functions:
        raise ValueError(f"benchmarks/_report.py: need functions and rounds >= 1, got "
                         f"{len(functions)} and {rounds}")
    labels = list(functions)
    for label in labels:
        functions[label]()
    speedups: dict[str, list[float]] = {label: [] for label in labels}
    for round_ in range(rounds):
        shift = round_ % len(labels)
        seconds = {}
        for label in labels[shift:] + labels[:shift]:
            start = time.perf_counter()
            functions[label]()
            seconds[label] = time.perf_counter() - start
        for label in labels:
            speedups[label].append(seconds[labels[0]] / seconds[label])
    return speedups
