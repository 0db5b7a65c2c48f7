"""Cross-modal dynamic feature filter (CmDFF): appearance and motion features filter each other.

HOFAM fuses its appearance stream (the RGB frame) and its motion stream (the 3D-HOP) at every
encoder scale. Each modality decides where and how much of the *other* one to keep:

- a per-pixel, per-channel gate ``sigmoid(G(source))`` from a 1x1 convolution of the source
  modality (motion says "these pixels move, look at their appearance"; appearance says "this is
  a textured object, trust its flow; this is sky or water, do not");
- optionally a dynamic depthwise filter: a 3x3 kernel per sample and channel, predicted from the
  globally pooled source features, applied to the target (the dynamic-filter idea of Jia et al.,
  "Dynamic Filter Networks", NeurIPS 2016, at per-sample granularity so it costs one grouped
  convolution). It starts as the identity kernel, so a fresh model is a plain gated fusion;

with a residual path, so no gate can erase a modality:

    target_hat = target + sigmoid(G(source)) * filter(target; K(pool(source)))

applied in both directions (motion -> appearance and appearance -> motion), then a 1x1
ConvNormAct fuses the concatenation ``[appearance_hat, motion_hat]``. :class:`ConcatFusion` is
the ablation without CmDFF: the same fusion convolution on ``[appearance, motion]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossnet.blocks import ConvNormAct


def cross_modal_gate(target: Tensor, gate_logits: Tensor, filtered: Tensor | None = None) -> Tensor:
    """Residual gating: ``target + sigmoid(gate_logits) * filtered`` (``filtered`` defaults to
    ``target``, giving ``target * (1 + sigmoid(gate_logits))``).

    Args:
        target: features to gate, shape (B, C, H, W).
        gate_logits: gate before the sigmoid, shape (B, C, H, W) (or broadcastable to it).
        filtered: the target after a dynamic filter, shape (B, C, H, W), or None.

    Returns:
        Tensor of shape (B, C, H, W).
    """
    return target + torch.sigmoid(gate_logits) * (target if filtered is None else filtered)


def dynamic_depthwise_conv(features: Tensor, kernels: Tensor) -> Tensor:
    """Depthwise convolution with a different kernel for every sample and channel.

    Runs as one grouped convolution over the batch folded into channels; "same" zero padding.

    Args:
        features: shape (B, C, H, W).
        kernels: shape (B, C, k, k) with odd k.

    Returns:
        Tensor of shape (B, C, H, W).

    Raises:
        ValueError: if the kernels' (B, C) differ from the features' or k is even.
    """
    batch, channels, height, width = features.shape
    if (
        kernels.dim() != 4
        or kernels.shape[:2] != features.shape[:2]
        or kernels.shape[2] != kernels.shape[3]
        or kernels.shape[2] % 2 != 1
    ):
        raise ValueError(
            f"crossnet/cmdff.py: kernels must have shape (B, C, k, k) with odd k matching "
            f"features {tuple(features.shape)}, got {tuple(kernels.shape)}"
        )
    size = kernels.shape[2]
    if batch == 1:
        # No folding needed; folding would give the tensor strides that oneDNN does not
        # recognise as channels_last, and an NCHW output that costs a copy downstream.
        return F.conv2d(features, kernels[0].unsqueeze(1), padding=size // 2, groups=channels)
    out = F.conv2d(
        features.reshape(1, batch * channels, height, width),
        kernels.reshape(batch * channels, 1, size, size),
        padding=size // 2,
        groups=batch * channels,
    ).reshape(batch, channels, height, width)
    if features.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class DynamicKernelPredictor(nn.Module):
    """Global average pool of the source, then a linear layer to one k x k kernel per channel.

    Initialised to predict the identity kernel (centre tap 1, zero weights), so the filter it
    drives starts as a no-op and training moves it away only where that helps.

    Shape: (B, source_channels, H, W) -> (B, target_channels, k, k).
    """

    def __init__(self, source_channels: int, target_channels: int, *, kernel_size: int = 3):
        super().__init__()
        self.target_channels = target_channels
        self.kernel_size = kernel_size
        self.linear = nn.Linear(source_channels, target_channels * kernel_size * kernel_size)
        nn.init.zeros_(self.linear.weight)
        identity = torch.zeros(target_channels, kernel_size, kernel_size)
        identity[:, kernel_size // 2, kernel_size // 2] = 1.0
        with torch.no_grad():
            self.linear.bias.copy_(identity.flatten())

    def forward(self, source: Tensor) -> Tensor:
        pooled = source.mean(dim=(2, 3))
        kernels = self.linear(pooled)
        return kernels.reshape(-1, self.target_channels, self.kernel_size, self.kernel_size)


class CrossModalDynamicFeatureFilter(nn.Module):
    """CmDFF at one scale (see the module docstring for the formula).

    Args:
        appearance_channels: channels of the appearance features.
        motion_channels: channels of the motion features.
        out_channels: channels of the fused output.
        dynamic_filter: add the per-sample dynamic depthwise filters; without them each
            modality is only gated by the other.

    Shape: (B, appearance_channels, H, W), (B, motion_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(
        self,
        appearance_channels: int,
        motion_channels: int,
        out_channels: int,
        *,
        dynamic_filter: bool = True,
    ) -> None:
        super().__init__()
        # Gates get a bias (no norm follows them); 1x1 so they cost one matmul per pixel.
        self.motion_to_appearance_gate = nn.Conv2d(motion_channels, appearance_channels, 1)
        self.appearance_to_motion_gate = nn.Conv2d(appearance_channels, motion_channels, 1)
        self.motion_to_appearance_kernels: DynamicKernelPredictor | None = None
        self.appearance_to_motion_kernels: DynamicKernelPredictor | None = None
        if dynamic_filter:
            self.motion_to_appearance_kernels = DynamicKernelPredictor(
                motion_channels, appearance_channels
            )
            self.appearance_to_motion_kernels = DynamicKernelPredictor(
                appearance_channels, motion_channels
            )
        self.fuse = ConvNormAct(appearance_channels + motion_channels, out_channels, kernel_size=1)

    def filter_pair(self, appearance: Tensor, motion: Tensor) -> tuple[Tensor, Tensor]:
        """The two filtered modalities before fusion, shapes as the inputs."""
        filtered_appearance = None
        filtered_motion = None
        if self.motion_to_appearance_kernels is not None:
            filtered_appearance = dynamic_depthwise_conv(
                appearance, self.motion_to_appearance_kernels(motion)
            )
        if self.appearance_to_motion_kernels is not None:
            filtered_motion = dynamic_depthwise_conv(
                motion, self.appearance_to_motion_kernels(appearance)
            )
        appearance_hat = cross_modal_gate(
            appearance, self.motion_to_appearance_gate(motion), filtered_appearance
        )
        motion_hat = cross_modal_gate(
            motion, self.appearance_to_motion_gate(appearance), filtered_motion
        )
        return appearance_hat, motion_hat

    def forward(self, appearance: Tensor, motion: Tensor) -> Tensor:
        appearance_hat, motion_hat = self.filter_pair(appearance, motion)
        return self.fuse(torch.cat([appearance_hat, motion_hat], dim=1))


class ConcatFusion(nn.Module):
    """The ablation without CmDFF: a 1x1 ConvNormAct on ``[appearance, motion]``.

    Shape: (B, appearance_channels, H, W), (B, motion_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, appearance_channels: int, motion_channels: int, out_channels: int):
        super().__init__()
        self.fuse = ConvNormAct(appearance_channels + motion_channels, out_channels, kernel_size=1)

    def forward(self, appearance: Tensor, motion: Tensor) -> Tensor:
        return self.fuse(torch.cat([appearance, motion], dim=1))
