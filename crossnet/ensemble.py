"""Several trained HOFAMs as one model: the mean of their foreground logits.

Runs of the same recipe with different seeds disagree on hard scenes (``benchmarks/RESULTS.md``
has two seeds of one recipe 0.07 apart in validation F), and averaging their logits is the oldest
remedy for that variance. An ensemble is only meaningful when every member reads the same
inputs, so :func:`check_same_inputs` insists on equal :data:`INPUT_FIELDS`; the members may
differ in everything else (widths, fusion, dynamic filters).

The checkpoint of an ensemble (written by ``crossnet ensemble``,
:func:`ensemble_checkpoint`) is an ordinary segmentation checkpoint whose ``"model"`` and
``"model_config"`` are the first member's, plus ``"extra_members"``: a list of
``{"model", "model_config"}`` dicts for the others. The threshold and flow backend are the
ensemble's own. Each member costs one HOFAM pass per frame (two with flip averaging).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from crossnet.hofam import HofamConfig

# What decides a model's inputs (read by the 3D-HOP, background and camera stages of
# ``segment`` and the training datasets): members of an ensemble must agree on all of them.
INPUT_FIELDS = ("strides", "use_background", "background_estimator", "camera_motion",
                "align_background")

# At most this many members in one checkpoint (each a full HOFAM pass per frame).
MAX_MEMBERS = 16


class LogitMean(nn.Module):
    """The mean of the members' logits; called like :class:`crossnet.hofam.HOFAM`."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("crossnet/ensemble.py: an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, frames: Tensor, hop: Tensor, background: Tensor | None = None) -> Tensor:
        total = None
        for member in self.members:
            logits = member(frames, hop, background)
            total = logits if total is None else total + logits
        return total / len(self.members)


def check_same_inputs(configs: Sequence[HofamConfig]) -> None:
    """Raise ValueError naming the first input field on which the configurations differ."""
    for index, config in enumerate(configs[1:], start=2):
        for field in INPUT_FIELDS:
            first, other = getattr(configs[0], field), getattr(config, field)
            if first != other:
                raise ValueError(f"members 1 and {index} read different inputs ({field}: "
                                 f"{first!r} and {other!r})")


def ensemble_checkpoint(members: Sequence[dict[str, Any]], *, threshold: float,
                        flow_backend: str) -> dict[str, Any]:
    """The checkpoint entries of an ensemble of ``members`` (each a loaded segmentation
    checkpoint, or any dict with ``"model"`` and ``"model_config"``).

    Raises:
        ValueError: no members, more than :data:`MAX_MEMBERS`, members reading different
            inputs, or a threshold outside (0, 1).
    """
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise ValueError(f"an ensemble needs 1 to {MAX_MEMBERS} members, got {len(members)}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    check_same_inputs([HofamConfig.from_dict(member["model_config"]) for member in members])
    first, *others = members
    return {"model": first["model"], "model_config": first["model_config"],
            "extra_members": [{"model": member["model"], "model_config": member["model_config"]}
                              for member in others],
            "threshold": float(threshold), "flow_backend": flow_backend}
