"""What one training step of the flow network computes, and the optimiser RAFT trains with.

Pure functions on a model and tensors, no files and no loop: the loop (data, checkpoints,
logging, resuming) is :mod:`pipelines.train_flow`. Two kinds of step:

- supervised (:func:`supervised_loss`): synthetic pairs with exact flow
  (:mod:`flow.synthetic_pairs`), RAFT's sequence loss (:mod:`flow.sequence_loss`);
- self-supervised (:func:`self_supervised_step_loss`): unlabeled frame pairs, both flow
  directions in one batch, :mod:`flow.self_supervised_loss`, optionally distilled from a frozen
  teacher.

The optimiser is RAFT's (section 4 and its train.py): AdamW and a one-cycle schedule with linear
annealing and a 5 % warm-up; gradients are clipped by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from flow.metrics import endpoint_error
from flow.self_supervised_loss import SelfSupervisedLossConfig, self_supervised_loss
from flow.sequence_loss import sequence_loss

MODEL_NAMES = ("raft-small", "raft-large")


def build_flow_model(name: str) -> nn.Module:
    """A randomly initialised RAFT by backend name (``raft-small`` or ``raft-large``).

    Raises:
        ValueError: another name.
    """
    from flow.raft import raft_large, raft_small

    if name == "raft-small":
        return raft_small()
    if name == "raft-large":
        return raft_large()
    raise ValueError(f"unknown flow model {name!r}; expected one of {', '.join(MODEL_NAMES)}")


def one_cycle_optimizer(model: nn.Module, *, lr: float, weight_decay: float, total_steps: int,
                        warmup_fraction: float = 0.05
                        ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a one-cycle schedule (linear warm-up to ``lr``, linear decay), as RAFT.

    Args:
        model: the network.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        total_steps: optimiser steps of the whole run (the schedule ends there).
        warmup_fraction: share of the steps spent warming up.

    Returns:
        ``(optimizer, scheduler)``; call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, eps=1e-8)
    # RAFT schedules 100 steps more than it trains, so the last steps keep a small, non-zero
    # rate; a run's schedule is fixed by its total, which is what makes --resume exact.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total_steps + 100, pct_start=warmup_fraction,
        cycle_momentum=False, anneal_strategy="linear")
    return optimizer, scheduler


def supervised_loss(model: nn.Module, batch: dict[str, Tensor], *, num_flow_updates: int,
                    gamma: float = 0.8) -> tuple[Tensor, dict[str, float]]:
    """RAFT's sequence loss on a batch with ground truth.

    Every pixel is supervised, occluded ones too (their flow is known exactly, and RAFT learns
    to fill in occlusions from it, as on FlyingChairs).

    Args:
        model: a :class:`flow.raft.RAFT` in training mode.
        batch: ``image1``, ``image2`` (B, 3, H, W) in [0, 255], ``flow`` (B, 2, H, W), and
            optionally ``valid`` (B, H, W).
        num_flow_updates: recurrent updates.
        gamma: the sequence loss's decay.

    Returns:
        ``(loss, parts)``; parts: ``epe`` of the last update (mean over supervised pixels).
    """
    predictions = model(batch["image1"], batch["image2"], num_flow_updates=num_flow_updates)
    valid = batch.get("valid")
    loss = sequence_loss(predictions, batch["flow"], valid, gamma=gamma)
    epe = endpoint_error(predictions[-1].detach(), batch["flow"], valid)
    return loss, {"epe": epe}


def self_supervised_step_loss(model: nn.Module, image1: Tensor, image2: Tensor, *,
                              num_flow_updates: int, config: SelfSupervisedLossConfig,
                              teacher: nn.Module | None = None
                              ) -> tuple[Tensor, dict[str, float]]:
    """The self-supervised loss of a batch of unlabeled pairs, both directions at once.

    Args:
        model: a :class:`flow.raft.RAFT` in training mode.
        image1: (B, 3, H, W) first frames in [0, 255].
        image2: (B, 3, H, W) second frames.
        num_flow_updates: recurrent updates.
        config: the loss weights.
        teacher: a frozen network giving the distillation target (needed when
            ``config.distillation_weight > 0``).

    Returns:
        ``(loss, parts)`` as :func:`flow.self_supervised_loss.self_supervised_loss`.
    """
    first = torch.cat((image1, image2))
    second = torch.cat((image2, image1))
    predictions = model(first, second, num_flow_updates=num_flow_updates)
    teacher_flow = None
    if config.distillation_weight > 0:
        if teacher is None:
            raise ValueError("self_supervised_step_loss: distillation needs a teacher network")
        with torch.no_grad():
            teacher_flow = teacher(first, second, num_flow_updates=num_flow_updates)[-1]
    return self_supervised_loss(first, second, predictions, config, teacher_flow=teacher_flow)


@torch.no_grad()
def average_epe(model: nn.Module, pairs: Iterable[tuple[Tensor, Tensor, Tensor, Tensor | None]],
                *, num_flow_updates: int) -> list[float]:
    """End-point error of the last update on each pair (the model in eval mode meanwhile).

    Args:
        model: a :class:`flow.raft.RAFT`.
        pairs: ``(image1, image2, flow_gt, valid)`` with images (1, 3, H, W) in [0, 255],
            ``flow_gt`` (1, 2, H, W) and ``valid`` (1, H, W) or None (known ground truth).
        num_flow_updates: recurrent updates.

    Returns:
        The mean EPE of each pair, in order.
    """
    was_training = model.training
    model.eval()
    try:
        errors = []
        for image1, image2, flow_gt, valid in pairs:
            flow = model(image1, image2, num_flow_updates=num_flow_updates)[-1]
            errors.append(endpoint_error(flow, flow_gt, valid))
        return errors
    finally:
        model.train(was_training)
