"""Test-time flip averaging: the logits of a frame and of its mirror image, averaged.

A scene seen in a mirror is as plausible as the scene itself (training flips half of its
samples, :mod:`crossnet.augment`), but a network with a few short scenes of training is not
exactly symmetric: its two answers differ mostly where it is unsure, and their mean is a
better one. The mirror of the inputs is the mirror of every image and of the flow field, whose
u component changes sign; the mirrored logits are mirrored back before averaging.

Measured (``benchmarks/flip_average.py``, recorded in ``benchmarks/RESULTS.md``): on the bundled
weights and on two more runs of its recipe, validation F and test F both rose; it costs a
second forward pass of HOFAM per frame. ``crossnet segment`` and ``crossnet evaluate`` do it by
default (``--no-flip-average`` turns it off).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crossnet.augment import mirror_flow


def mirror_inputs(frames: Tensor, hop: Tensor, background: Tensor | None = None
                  ) -> tuple[Tensor, Tensor, Tensor | None]:
    """The model's inputs mirrored left to right.

    Args:
        frames: (B, 3, H, W).
        hop: (B, S, 2, H, W) flow in pixels, (u, v) order.
        background: (B, 3, H, W) or None.

    Returns:
        The mirrored ``frames``, ``hop`` (u negated) and ``background``.
    """
    return (frames.flip(-1), mirror_flow(hop),
            None if background is None else background.flip(-1))


def flip_averaged_logits(model: nn.Module, frames: Tensor, hop: Tensor,
                         background: Tensor | None = None) -> Tensor:
    """The mean of ``model``'s logits on the inputs and, mirrored back, on their mirror image.

    Both run as one batch of twice the size. Shapes as :meth:`crossnet.hofam.HOFAM.forward`.
    """
    count = frames.shape[0]
    flipped = mirror_inputs(frames, hop, background)
    logits = model(torch.cat([frames, flipped[0]]), torch.cat([hop, flipped[1]]),
                   None if background is None else torch.cat([background, flipped[2]]))
    return (logits[:count] + logits[count:].flip(-1)) / 2
