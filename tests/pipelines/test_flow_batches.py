"""Synthetic flow-training batches made ahead in worker processes are the ones made in line."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from flow.synthetic_pairs import SyntheticPairConfig
from pipelines.flow_batches import synthetic_batches

CONFIG = SyntheticPairConfig(size=(32, 40))
KEYS = [(1, 0, step) for step in range(5)]


def test_workers_make_exactly_the_batches_made_in_line():
    in_line = list(synthetic_batches(CONFIG, KEYS, batch_size=2))
    ahead = list(synthetic_batches(CONFIG, KEYS, batch_size=2, workers=2))
    assert len(in_line) == len(ahead) == len(KEYS)
    for a, b in zip(in_line, ahead, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert not torch.equal(in_line[0]["image1"], in_line[1]["image1"]), "steps differ"


def test_texture_pool_reaches_the_workers():
    pool = [torch.full((3, 64, 64), 0.25), torch.full((3, 64, 64), 0.75)]
    in_line = list(synthetic_batches(CONFIG, KEYS[:2], batch_size=2, texture_pool=pool))
    ahead = list(synthetic_batches(CONFIG, KEYS[:2], batch_size=2, texture_pool=pool,
                                   workers=1))
    without = list(synthetic_batches(CONFIG, KEYS[:2], batch_size=2))
    assert all(torch.equal(a["image1"], b["image1"]) for a, b in zip(in_line, ahead))
    assert not all(torch.equal(a["image1"], b["image1"]) for a, b in zip(in_line, without))


def test_negative_workers_are_refused():
    with pytest.raises(ValueError, match="workers must be >= 0"):
        list(synthetic_batches(CONFIG, KEYS, batch_size=2, workers=-1))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed():
    """A worker waits for its parent's next task forever; after a SIGKILL of the parent (the
    out-of-memory killer, kill -9) the workers used to live on, holding their memory and the
    run folder's lock, so that `train-flow --resume` was refused. They now end themselves."""
    script = textwrap.dedent("""
        import time
        from flow.synthetic_pairs import SyntheticPairConfig
        from pipelines.flow_batches import synthetic_batches
        keys = [(1, 0, step) for step in range(1000)]
        batches = synthetic_batches(SyntheticPairConfig(size=(32, 40)), keys, batch_size=1,
                                    workers=2)
        next(batches)
        print("ready", flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        workers = [int(pid) for pid in children]
        assert len(workers) == 2 and all(map(_alive, workers))
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 15
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, workers))
