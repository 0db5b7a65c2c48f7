"""Strict-JSON helpers of pipelines.outputs: NaN and numpy values never reach a file as-is."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.outputs import json_safe, write_jsonl_atomic

REPO = Path(__file__).resolve().parents[2]


def test_json_safe_turns_non_finite_floats_into_null_and_numpy_into_python():
    value = {"F": math.nan, "fps": np.float32(12.5), "n": np.int64(3),
             "rows": [math.inf, 1.0, (np.float64(-math.inf),)]}
    assert json_safe(value) == {"F": None, "fps": 12.5, "n": 3, "rows": [None, 1.0, [None]]}
    json.dumps(json_safe(value), allow_nan=False)  # raises if anything non-strict is left


def test_write_jsonl_atomic_writes_one_strict_line_per_record(tmp_path):
    path = write_jsonl_atomic(tmp_path / "log.jsonl", [{"epoch": 1, "F": math.nan},
                                                        {"epoch": 2, "F": 0.5}])
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "F": None},
                                                    {"epoch": 2, "F": 0.5}]
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_folder_lock_holds_against_another_process_until_it_dies(tmp_path):
    from pipelines.outputs import folder_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from pipelines.outputs import folder_lock
            with folder_lock(Path({str(tmp_path)!r}), what="test"):
                print("held", flush=True)
                time.sleep(60)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match="another crossnet segment is writing"), \
                folder_lock(tmp_path, what="crossnet segment"):
            pass
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
        holder.wait()
    with folder_lock(tmp_path, what="crossnet segment"):
        assert list(tmp_path.iterdir()) == []  # and no lock file is left behind


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_does_not_keep_the_folder_locked(tmp_path):
    """Data-loader and batch workers are forked while a run holds its folder; an flock lasts
    until every copy of its descriptor is closed, so a worker that outlived a killed run kept
    the folder locked, and the rerun was refused. Forked children close their copies."""
    import multiprocessing

    from pipelines.outputs import folder_lock

    context = multiprocessing.get_context("fork")
    started = context.Event()
    with folder_lock(tmp_path, what="crossnet train"):
        child = context.Process(target=_set_then_sleep, args=(started,))
        child.start()
        assert started.wait(30)  # the child runs: its fork handlers have run
    try:
        with folder_lock(tmp_path, what="crossnet train"):  # the child lives on, unlocked
            assert child.is_alive()
    finally:
        child.kill()
        child.join()


def _set_then_sleep(event) -> None:
    import time

    event.set()
    time.sleep(60)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_leaving_a_lock_closes_none_of_its_own_files(tmp_path):
    """The child's copy of the lock is closed at the fork, so its number may name another
    file of the child's by the time the child leaves the lock's block: that one stays open."""
    from pipelines import outputs

    pid = None
    try:
        with outputs.folder_lock(tmp_path, what="test"):
            held = set(outputs._HELD_LOCKS)
            pid = os.fork()
            if pid == 0:
                reused = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: the lock's
        if pid == 0:
            os.fstat(reused)  # raises (exit 1) if leaving the block closed it
            os._exit(0 if reused in held else 2)
    except BaseException:
        if pid == 0:
            os._exit(1)
        raise
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
