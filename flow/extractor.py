"""Feature and context encoders of the RAFT-style flow network (RAFT paper, section 3.1).

Both encoders map an image of shape (B, 3, H, W) (H, W multiples of 8) to a feature map of
shape (B, C, H / 8, W / 8): a 7x7 stride-2 convolution, three stages of two residual (large
model) or bottleneck (small model) blocks with strides 1, 2, 2, and a 1x1 output convolution.

- The feature encoder runs on both frames and uses instance normalisation (no parameters).
- The context encoder runs on the first frame only; the large model normalises it with batch
  normalisation, the small model with none (both as in the RAFT paper code).

Module and attribute names follow torchvision's ``models.optical_flow.raft`` so that its
checkpoints load with ``strict=True`` and no renaming; :mod:`flow.checkpoints` maps the
princeton-vl names onto these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]


def conv_norm_relu(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    stride: int = 1,
    norm_layer: NormLayer | None = None,
    activation: bool = True,
) -> nn.Sequential:
    """A "same"-padded convolution, an optional normalisation and an optional ReLU.

    The children are numbered in that order, skipping the absent ones (conv ``0``, norm ``1``,
    ReLU last), which is the parameter layout of torchvision's ``Conv2dNormActivation``.

    The convolution always has a bias, even before a normalisation: RAFT trains the batch-norm
    layers on the first dataset only and then freezes them, after which the bias still learns
    (torchvision's note on ``bias=True`` in its RAFT ``ResidualBlock``); the original weights
    have these biases too.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size; padding is ``kernel_size // 2``.
        stride: convolution stride.
        norm_layer: builds the normalisation from a channel count, or None for none.
        activation: whether a ReLU follows.

    Returns:
        The ``nn.Sequential`` block.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=True,
        )
    ]
    if norm_layer is not None:
        layers.append(norm_layer(out_channels))
    if activation:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _projection(
    in_channels: int, out_channels: int, *, stride: int, norm_layer: NormLayer | None
) -> nn.Module:
    """The shortcut of a residual block: identity, or a 1x1 convolution and norm when it strides."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_norm_relu(
        in_channels,
        out_channels,
        kernel_size=1,
        stride=stride,
        norm_layer=norm_layer,
        activation=False,
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-ReLU layers plus a shortcut, then a ReLU (the large model's block).

    Shape: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, norm_layer: NormLayer | None, stride: int = 1
    ) -> None:
        """Build the block.

        Args:
            in_channels: input channels.
            out_channels: output channels.
            norm_layer: builds the normalisation from a channel count, or None for none.
            stride: stride of the first convolution and of the shortcut.
        """
        super().__init__()
        self.convnormrelu1 = conv_norm_relu(
            in_channels, out_channels, kernel_size=3, stride=stride, norm_layer=norm_layer
        )
        self.convnormrelu2 = conv_norm_relu(
            out_channels, out_channels, kernel_size=3, norm_layer=norm_layer
        )
        self.downsample = _projection(
            in_channels, out_channels, stride=stride, norm_layer=norm_layer
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)."""
        y = self.convnormrelu2(self.convnormrelu1(x))
        return self.relu(self.downsample(x) + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 conv-norm-ReLU layers at a quarter width plus a shortcut (small model).

    Shape: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, norm_layer: NormLayer | None, stride: int = 1
    ) -> None:
        """Build the block.

        Args:
            in_channels: input channels.
            out_channels: output channels (a multiple of 4).
            norm_layer: builds the normalisation from a channel count, or None for none.
            stride: stride of the 3x3 convolution and of the shortcut.

        Raises:
            ValueError: if ``out_channels`` is not a multiple of 4.
        """
        super().__init__()
        if out_channels % 4:
            raise ValueError(
                f"BottleneckBlock: out_channels must be a multiple of 4, got {out_channels}"
            )
        width = out_channels // 4
        self.convnormrelu1 = conv_norm_relu(
            in_channels, width, kernel_size=1, norm_layer=norm_layer
        )
        self.convnormrelu2 = conv_norm_relu(
            width, width, kernel_size=3, stride=stride, norm_layer=norm_layer
        )
        self.convnormrelu3 = conv_norm_relu(
            width, out_channels, kernel_size=1, norm_layer=norm_layer
        )
        self.downsample = _projection(
            in_channels, out_channels, stride=stride, norm_layer=norm_layer
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)."""
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return self.relu(self.downsample(x) + y)


class FeatureEncoder(nn.Module):
    """The RAFT encoder, used as feature encoder and as context encoder.

    ``layers = (stem, stage1, stage2, stage3, output)`` channels; with the default strides
    (2, 1, 2, 2) the output stride is 8.

    Shape: (B, 3, H, W) -> (B, layers[4], H / 8, W / 8) for H, W multiples of 8.
    """

    def __init__(
        self,
        *,
        block: type[ResidualBlock | BottleneckBlock],
        layers: Sequence[int],
        norm_layer: NormLayer | None,
        strides: Sequence[int] = (2, 1, 2, 2),
    ) -> None:
        """Build the encoder.

        Args:
            block: :class:`ResidualBlock` (large model) or :class:`BottleneckBlock` (small).
            layers: 5 channel counts: stem, the three stages, the output.
            norm_layer: builds the normalisation from a channel count, or None for none.
            strides: 4 strides: stem and the first block of each stage.

        Raises:
            ValueError: if ``layers`` does not have 5 entries or ``strides`` 4.
        """
        super().__init__()
        if len(layers) != 5 or len(strides) != 4:
            raise ValueError(
                f"FeatureEncoder: need 5 layers and 4 strides, got layers={tuple(layers)}, "
                f"strides={tuple(strides)}"
            )
        self.convnormrelu = conv_norm_relu(
            3, layers[0], kernel_size=7, stride=strides[0], norm_layer=norm_layer
        )
        self.layer1 = self._stage(block, layers[0], layers[1], strides[1], norm_layer)
        self.layer2 = self._stage(block, layers[1], layers[2], strides[2], norm_layer)
        self.layer3 = self._stage(block, layers[2], layers[3], strides[3], norm_layer)
        self.conv = nn.Conv2d(layers[3], layers[4], kernel_size=1)
        self.output_channels = layers[4]
        self.downsample_factor = 1
        for stride in strides:
            self.downsample_factor *= stride

        # He initialisation, norms at identity: the initialisation of the RAFT paper code.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @staticmethod
    def _stage(
        block: type[ResidualBlock | BottleneckBlock],
        in_channels: int,
        out_channels: int,
        stride: int,
        norm_layer: NormLayer | None,
    ) -> nn.Sequential:
        """Two blocks; the first one changes the width and strides."""
        return nn.Sequential(
            block(in_channels, out_channels, norm_layer=norm_layer, stride=stride),
            block(out_channels, out_channels, norm_layer=norm_layer, stride=1),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: tensor of shape (B, 3, H, W), normalised to [-1, 1].

        Returns:
            Tensor of shape (B, output_channels, H / 8, W / 8).
        """
        x = self.convnormrelu(images)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.conv(x)


__all__ = ["BottleneckBlock", "FeatureEncoder", "ResidualBlock", "conv_norm_relu"]
