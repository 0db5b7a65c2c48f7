"""The moving average of the weights: known values, BatchNorm statistics, integer buffers."""

import pytest
import torch
from torch import nn

from crossnet.weight_average import WeightAverage


def test_average_follows_the_formula_with_its_warm_up():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.5)
    expected = 0.0
    for step, value in enumerate([10.0, 20.0, 30.0, 40.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        decay = min(0.5, (1 + step) / (10 + step))  # 0.18, 0.25, 0.31, 0.36: below 0.5
        assert average.current_decay() == pytest.approx(decay)
        average.update(model)
        expected = decay * expected + (1 - decay) * value
        assert average.model.weight.item() == pytest.approx(expected)
    assert average.steps == 4
    # Past the warm-up the configured decay holds.
    average.steps = 1000
    assert average.current_decay() == 0.5


def test_batchnorm_statistics_are_averaged_and_counters_copied():
    model = nn.BatchNorm1d(2)
    average = WeightAverage(model, decay=0.9)
    average.steps = 100  # warm-up over: decay 0.9
    with torch.no_grad():
        model.running_mean.fill_(1.0)
    model.num_batches_tracked.fill_(7)
    average.update(model)
    torch.testing.assert_close(average.model.running_mean, torch.full((2,), 0.1))
    assert average.model.num_batches_tracked.item() == 7


def test_the_average_is_its_own_frozen_model():
    model = nn.Linear(2, 2)
    average = WeightAverage(model, decay=0.99)
    assert not average.model.training
    assert not any(p.requires_grad for p in average.model.parameters())
    with torch.no_grad():
        model.weight.add_(1.0)  # the trained model moves; the copy does not until update
    assert not torch.equal(average.model.weight, model.weight)


def test_restoring_gives_the_same_average():
    model = nn.Linear(2, 2)
    average = WeightAverage(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model.weight.mul_(1.5)
        average.update(model)
    restored = WeightAverage(nn.Linear(2, 2), decay=0.99)
    restored.load_state_dict({"model": average.model.state_dict(), "steps": average.steps})
    assert restored.steps == 3 and restored.current_decay() == average.current_decay()
    torch.testing.assert_close(restored.model.weight, average.model.weight, rtol=0, atol=0)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_bad_decay(decay):
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(nn.Linear(1, 1), decay=decay)
