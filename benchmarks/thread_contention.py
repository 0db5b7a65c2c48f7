"""`crossnet segment` on a CPU other jobs share: OpenMP's waiting threads, measured.

torch's CPU build runs its operators on OpenMP threads, one per core by default. Between two
parallel regions OpenMP's own default keeps the idle threads spinning for a while before they
sleep; while another job holds a core, the spinning thread and the job it waits for take turns
on it, and a whole run slows down many times over. This script runs the real command,
``crossnet segment <clip> --size 320x240`` in a subprocess, with 0, 1 and 2 busy-loop
processes ("hogs", one core's worth each) beside it, in four ways:

- ``OpenMP default``: no wait policy set (torch is imported before the CLI starts, so this
  arm stays OpenMP's default even if the CLI ever sets one);
- ``OMP_WAIT_POLICY=PASSIVE``: idle threads sleep at once;
- ``GOMP_SPINCOUNT=10000``: idle threads spin for 10,000 iterations, not libgomp's 300,000,
  then sleep;
- ``--threads 1``: one thread, nothing to wait for.

Each (hogs, way) cell runs ``--rounds`` times, the ways in an order rotated per round;
the table gives the median wall and CPU (user + system) seconds of the command and each way's
ratio to the OpenMP default's wall time at the same load.

Usage (from the repository root)::

    python benchmarks/thread_contention.py
    python benchmarks/thread_contention.py --video ../shared/data/videos/escalator.avi --no-record
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import REPO_ROOT, add_record_argument, data_root, environment, markdown_table, report

# The CLI with torch (and so OpenMP) loaded first: the environment crossnet sets later is not
# read any more.
_TORCH_FIRST = ("import sys, torch; from pipelines.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
WAYS = {
    "OpenMP default": ([sys.executable, "-c", _TORCH_FIRST], {}, []),
    "OMP_WAIT_POLICY=PASSIVE": ([sys.executable, "-m", "pipelines.cli"],
                                {"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "GOMP_SPINCOUNT=10000": ([sys.executable, "-m", "pipelines.cli"],
                             {"GOMP_SPINCOUNT": "10000"}, []),
    "--threads 1": ([sys.executable, "-c", _TORCH_FIRST], {}, ["--threads", "1"]),
}


def run_once(way: str, video: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``crossnet segment`` run in the given way."""
    launcher, extra_env, global_options = WAYS[way]
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(extra_env, PYTHONPATH=str(REPO_ROOT))
    command = [*launcher, *global_options, "segment", str(video), "--out", str(out),
               "--size", "320x240", "--overwrite", "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="clip to segment (default: escalator.avi of the data)")
    parser.add_argument("--data", help="real data folder (default <repo>/../shared/data)")
    parser.add_argument("--hogs", default="0,1,2", help="busy-loop processes beside the run")
    parser.add_argument("--rounds", type=int, default=3)
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    started = time.perf_counter()
    video = Path(args.video) if args.video else data_root(args.data) / "videos" / "escalator.avi"
    hog_counts = [int(h) for h in args.hogs.split(",")]
    ways = list(WAYS)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "masks"
        run_once(ways[0], video, out)  # warm-up: file caches, inductor-free imports
        for hogs in hog_counts:
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(hogs)]
            try:
                time.sleep(1.0)
                walls: dict[str, list[float]] = {way: [] for way in ways}
                cpus: dict[str, list[float]] = {way: [] for way in ways}
                for round_ in range(args.rounds):
                    shift = round_ % len(ways)
                    for way in ways[shift:] + ways[:shift]:
                        wall, cpu = run_once(way, video, out)
                        walls[way].append(wall)
                        cpus[way].append(cpu)
                        print(f"hogs {hogs} round {round_} {way:24s} {wall:6.2f} s wall "
                              f"{cpu:6.2f} s CPU", flush=True)
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
            reference = statistics.median(walls[ways[0]])
            for way in ways:
                wall = statistics.median(walls[way])
                rows.append([hogs, way, wall, statistics.median(cpus[way]),
                             f"x{reference / wall:.2f}",
                             " ".join(f"{w:.1f}" for w in walls[way])])

    table = markdown_table(["hogs", "way", "median wall s", "median CPU s",
                            "speed vs OpenMP default", "wall s per round"], rows)
    body = "\n\n".join([
        (f"`crossnet segment {video.name} --size 320x240` (bundled weights, DIS-fast, "
         f"defaults) as a subprocess, {args.rounds} rounds per row group, the ways in an "
         "order rotated per round; `hogs`: busy-loop Python processes running beside it (each "
         "keeps one core busy). `OpenMP default`: torch loaded before the CLI sets anything; "
         "`OMP_WAIT_POLICY=PASSIVE`: waiting OpenMP threads sleep at once; "
         "`GOMP_SPINCOUNT=10000`: they spin 10,000 times (libgomp's default 300,000), then "
         "sleep; `--threads 1`: one "
         "torch and OpenCV thread. CPU s: user + system time of the command."),
        table,
        f"Run time {time.perf_counter() - started:.0f} s.",
    ])
    report("segment on a shared CPU: OpenMP wait policy and threads", body,
           record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
