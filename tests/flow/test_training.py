"""flow/training.py: a few steps on a tiny RAFT lower the supervised and self-supervised losses."""

import pytest
import torch

from flow.self_supervised_loss import SelfSupervisedLossConfig
from flow.synthetic_pairs import SyntheticPairConfig, generate_batch
from flow.training import (
    average_epe,
    build_flow_model,
    one_cycle_optimizer,
    self_supervised_step_loss,
    supervised_loss,
)
from tests.flow.test_raft import tiny_raft


def _train(model, loss_of_batch, steps, lr=2e-3):
    optimizer, scheduler = one_cycle_optimizer(model, lr=lr, weight_decay=1e-4,
                                               total_steps=steps)
    losses = []
    for _ in range(steps):
        loss, _ = loss_of_batch()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_a_short_supervised_run_lowers_the_loss():
    torch.manual_seed(0)
    model = tiny_raft().train()
    config = SyntheticPairConfig(size=(32, 40), min_objects=1, max_objects=2,
                                 max_object_translation=4.0, max_background_translation=3.0)
    batch = generate_batch(config, keys=(0,), batch_size=2)
    losses = _train(model, lambda: supervised_loss(model, batch, num_flow_updates=2), steps=25)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    epe = average_epe(model, [(batch["image1"][:1], batch["image2"][:1], batch["flow"][:1],
                               None)], num_flow_updates=2)
    assert len(epe) == 1 and epe[0] >= 0 and model.training


def test_a_short_self_supervised_run_lowers_the_loss():
    torch.manual_seed(0)
    model = tiny_raft().train()
    scene = 255 * torch.rand(2, 3, 32, 44, generator=torch.Generator().manual_seed(1))
    scene = torch.nn.functional.avg_pool2d(scene, 3, stride=1, padding=1)  # some smoothness
    image1, image2 = scene[..., 3:43], scene[..., 0:40]
    config = SelfSupervisedLossConfig()
    losses = _train(model, lambda: self_supervised_step_loss(
        model, image1, image2, num_flow_updates=2, config=config), steps=25)
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3


def test_the_one_cycle_schedule_warms_up_then_decays_and_models_build_by_name():
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = one_cycle_optimizer(model, lr=1.0, weight_decay=0.0,
                                               total_steps=1900)
    rates = []
    for _ in range(1900):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    # RAFT's schedule: 5 % warm-up of total + 100 steps, linear decay, 100 steps left over.
    assert rates.index(max(rates)) == pytest.approx(100, abs=2)
    assert max(rates) == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(100 / 1900, rel=0.05)
    assert sum(p.numel() for p in build_flow_model("raft-small").parameters()) < 1.1e6
    with pytest.raises(ValueError, match="unknown flow model"):
        build_flow_model("pwc")
