"""An exponential moving average of a model's weights, kept next to the trained model.

Training on a few short scenes moves the weights a lot from step to step, and the validation F
of consecutive epochs swings with them (``log.jsonl`` of the bundled recipe: one validation
scene between 0.45 and 0.62 from one epoch to the next). The average of the recent weights
(Polyak averaging) is a model of its own that moves slowly; ``crossnet train
--weight-average DECAY`` validates and saves it instead of the raw weights.

After step n the average is ``a_n = d_n * a_{n-1} + (1 - d_n) * w_n`` over every floating
entry of the state dict (parameters and BatchNorm statistics; integer entries such as
``num_batches_tracked`` are copied), starting from the initial weights, with

    d_n = min(decay, (1 + n) / (10 + n)),

so the first steps, far from anything useful, are forgotten quickly: d_1 = 0.18, d_10 = 0.55,
d_100 = 0.92, d_500 = 0.98; a decay of 0.99 (about the last 100 steps) takes over from step 890.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``model``'s weights, itself a model (``.model``, in eval mode).

    Args:
        model: the model being trained (not wrapped in DistributedDataParallel).
        decay: the largest weight of the old average, in (0, 1).

    Example::

        average = WeightAverage(model, decay=0.99)
        for batch in batches:
            ...; optimizer.step()
            average.update(model)
        validate(average.model)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight-average decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.steps = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The weight of the old average in the next update (see the module docstring)."""
        step = self.steps + 1
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average."""
        decay = self.current_decay()
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name].to(average.dtype), 1.0 - decay)
            else:
                average.copy_(current[name])
        self.steps += 1

    def load_state_dict(self, state: dict) -> None:
        """Restore the average (resuming a run) from ``{"model": its state dict, "steps": the
        number of updates folded in}``."""
        self.model.load_state_dict(state["model"])
        self.steps = int(state["steps"])
