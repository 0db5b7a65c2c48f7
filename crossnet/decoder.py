"""Attention-gated decoder with selective skip connections (Attention U-Net gates).

At each scale, from coarse to fine, the decoder feature is projected by a 1x1 ConvNormAct to
the skip's channel count (at the coarse resolution, where it is 4x cheaper) and bilinearly
upsampled to the skip's resolution, giving ``g``; ``g`` then decides which pixels of the fused
encoder skip ``x`` pass (Oktay et al., "Attention U-Net: Learning Where to Look for the
Pancreas", MIDL 2018, section 2):

    alpha = sigmoid(psi(relu(W_x x + W_g g)))        shape (B, 1, H, W), values in (0, 1)
    out   = block(concat(g, x * alpha))              block: depthwise-separable, 2C -> C

With ``attention=False`` the skip is concatenated as is (a plain U-Net decoder), which is the
ablation. Gating at the skip's resolution (rather than Oktay's strided W_x at the gating
resolution) keeps alpha as sharp as the skip it selects from, at little cost here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossnet.blocks import ConvNormAct, DepthwiseSeparableBlock


class AttentionGate(nn.Module):
    """Additive attention gate: the gating signal selects pixels of the skip features.

    Args:
        skip_channels: channels of ``x`` (the fused encoder skip).
        gating_channels: channels of ``g`` (the decoder feature, already at the skip's size).
        inter_channels: width of the hidden layer of ``W_x``, ``W_g`` and ``psi``.

    Shape: (B, skip_channels, H, W), (B, gating_channels, H, W) -> (B, skip_channels, H, W).
    """

    def __init__(self, skip_channels: int, gating_channels: int, inter_channels: int) -> None:
        super().__init__()
        # One bias for the sum W_x x + W_g g is enough.
        self.skip_projection = nn.Conv2d(skip_channels, inter_channels, 1, bias=False)
        self.gating_projection = nn.Conv2d(gating_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def coefficients(self, skip: Tensor, gating: Tensor) -> Tensor:
        """The attention map alpha, shape (B, 1, H, W), values in (0, 1).

        Raises:
            ValueError: if ``skip`` and ``gating`` differ in batch size or spatial size.
        """
        if skip.shape[0] != gating.shape[0] or skip.shape[2:] != gating.shape[2:]:
            raise ValueError(
                f"crossnet/decoder.py: skip {tuple(skip.shape)} and gating "
                f"{tuple(gating.shape)} must share batch and spatial size"
            )
        hidden = F.relu(self.skip_projection(skip) + self.gating_projection(gating))
        return torch.sigmoid(self.psi(hidden))

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        return skip * self.coefficients(skip, gating)


class DecoderStage(nn.Module):
    """Project and upsample the coarse feature, gate the skip (optional), concatenate, refine.

    Shape: (B, coarse_channels, h, w), (B, skip_channels, H, W) -> (B, skip_channels, H, W).
    """

    def __init__(self, coarse_channels: int, skip_channels: int, *, attention: bool = True):
        super().__init__()
        self.project = ConvNormAct(coarse_channels, skip_channels, kernel_size=1)
        self.attention_gate: AttentionGate | None = None
        if attention:
            self.attention_gate = AttentionGate(
                skip_channels, skip_channels, inter_channels=max(skip_channels // 2, 8)
            )
        self.block = DepthwiseSeparableBlock(2 * skip_channels, skip_channels)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        gating = F.interpolate(
            self.project(coarse), size=skip.shape[2:], mode="bilinear", align_corners=False
        )
        if self.attention_gate is not None:
            skip = self.attention_gate(skip, gating)
        return self.block(torch.cat([gating, skip], dim=1))


class AttentionDecoder(nn.Module):
    """Decode a feature pyramid (finest first) to the finest scale.

    Args:
        channels: channels of the pyramid levels, finest first (the encoder widths).
        attention: gate every skip connection (False: plain concatenation).

    Attributes:
        out_channels: ``channels[0]``.

    Shape: [(B, channels[i], H / 2**i, W / 2**i) for each i] -> (B, channels[0], H, W).
    """

    def __init__(self, channels: Sequence[int], *, attention: bool = True) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(
                f"crossnet/decoder.py: need at least two pyramid levels, got {tuple(channels)}"
            )
        self.out_channels = int(channels[0])
        stages = []
        for level in range(len(channels) - 2, -1, -1):
            stages.append(DecoderStage(channels[level + 1], channels[level], attention=attention))
        self.stages = nn.ModuleList(stages)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.stages) + 1:
            raise ValueError(
                f"crossnet/decoder.py: expected {len(self.stages) + 1} pyramid levels, "
                f"got {len(features)}"
            )
        decoded = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1]), strict=True):
            decoded = stage(decoded, skip)
        return decoded
