"""Synthetic flow-training batches made ahead in worker processes are the ones made in line."""

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
