"""The recurrent update operator of the RAFT-style flow network (RAFT paper, section 3.3).

One update step, on the 1/8-resolution grid (h, w):

1. the motion encoder turns the correlation features and the current flow into motion
   features (the flow itself is appended to them),
2. a convolutional GRU updates the hidden state from [context, motion features],
3. the flow head reads a flow increment off the hidden state,
4. separately, the mask predictor reads the convex-upsampling weights off the hidden state
   (large model only; the small model upsamples bilinearly).

The large model's GRU is two separable GRUs (1x5 then 5x1 kernels), the small model's one
3x3 GRU. All sizes are constructor arguments; the numbers of the two configurations live in
:func:`flow.raft.raft_small` and :func:`flow.raft.raft_large`.

Module and attribute names follow torchvision's ``models.optical_flow.raft`` so that its
checkpoints load with ``strict=True``; :mod:`flow.checkpoints` maps the princeton-vl names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flow.extractor import conv_norm_relu

KernelSize = int | tuple[int, int]


class MotionEncoder(nn.Module):
    """Encode correlation features and the current flow into motion features.

    Shape: corr_features (B, in_channels_corr, h, w) and flow (B, 2, h, w) ->
    (B, out_channels, h, w), whose last 2 channels are the flow itself.
    """

    def __init__(
        self,
        *,
        in_channels_corr: int,
        corr_layers: Sequence[int],
        flow_layers: Sequence[int],
        out_channels: int,
    ) -> None:
        """Build the encoder.

        Args:
            in_channels_corr: channels of the correlation features (levels * (2r + 1)**2).
            corr_layers: 1 or 2 widths of the correlation branch (1x1, then 3x3 convolution).
            flow_layers: 2 widths of the flow branch (7x7, then 3x3 convolution).
            out_channels: output channels, including the 2 flow channels appended at the end.

        Raises:
            ValueError: on a wrong number of layers or ``out_channels`` <= 2.
        """
        super().__init__()
        if len(corr_layers) not in (1, 2) or len(flow_layers) != 2 or out_channels <= 2:
            raise ValueError(
                f"MotionEncoder: need 1 or 2 corr_layers, 2 flow_layers and out_channels > 2, "
                f"got corr_layers={tuple(corr_layers)}, flow_layers={tuple(flow_layers)}, "
                f"out_channels={out_channels}"
            )
        self.convcorr1 = conv_norm_relu(in_channels_corr, corr_layers[0], kernel_size=1)
        self.convcorr2: nn.Module = (
            conv_norm_relu(corr_layers[0], corr_layers[1], kernel_size=3)
            if len(corr_layers) == 2
            else nn.Identity()
        )
        self.convflow1 = conv_norm_relu(2, flow_layers[0], kernel_size=7)
        self.convflow2 = conv_norm_relu(flow_layers[0], flow_layers[1], kernel_size=3)
        self.conv = conv_norm_relu(
            corr_layers[-1] + flow_layers[-1], out_channels - 2, kernel_size=3
        )
        self.out_channels = out_channels

    def forward(self, flow: Tensor, corr_features: Tensor) -> Tensor:
        """Motion features of shape (B, out_channels, h, w)."""
        corr = self.convcorr2(self.convcorr1(corr_features))
        motion = self.convflow2(self.convflow1(flow))
        encoded = self.conv(torch.cat((corr, motion), dim=1))
        return torch.cat((encoded, flow), dim=1)


class ConvGRU(nn.Module):
    """A convolutional GRU cell: gates and candidate are convolutions of [hidden, input].

    Shape: hidden (B, hidden_size, h, w) and input (B, input_size, h, w) ->
    (B, hidden_size, h, w).
    """

    def __init__(
        self, *, input_size: int, hidden_size: int, kernel_size: KernelSize, padding: KernelSize
    ) -> None:
        """Build the cell.

        Args:
            input_size: input channels.
            hidden_size: hidden state channels.
            kernel_size: kernel of the three convolutions, e.g. 3, (1, 5) or (5, 1).
            padding: their padding, keeping the spatial size, e.g. 1, (0, 2) or (2, 0).
        """
        super().__init__()
        channels = hidden_size + input_size
        self.convz = nn.Conv2d(channels, hidden_size, kernel_size=kernel_size, padding=padding)
        self.convr = nn.Conv2d(channels, hidden_size, kernel_size=kernel_size, padding=padding)
        self.convq = nn.Conv2d(channels, hidden_size, kernel_size=kernel_size, padding=padding)

    def forward(self, hidden_state: Tensor, inputs: Tensor) -> Tensor:
        """The next hidden state, shape (B, hidden_size, h, w)."""
        hidden_and_inputs = torch.cat((hidden_state, inputs), dim=1)
        update_gate = torch.sigmoid(self.convz(hidden_and_inputs))
        reset_gate = torch.sigmoid(self.convr(hidden_and_inputs))
        candidate = torch.tanh(self.convq(torch.cat((reset_gate * hidden_state, inputs), dim=1)))
        return (1 - update_gate) * hidden_state + update_gate * candidate


class RecurrentBlock(nn.Module):
    """One ConvGRU, or two applied in turn (the large model's separable 1x5 then 5x1 GRUs).

    Shape: hidden (B, hidden_size, h, w) and input (B, input_size, h, w) ->
    (B, hidden_size, h, w).
    """

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        kernel_size: Sequence[KernelSize] = ((1, 5), (5, 1)),
        padding: Sequence[KernelSize] = ((0, 2), (2, 0)),
    ) -> None:
        """Build the block.

        Args:
            input_size: input channels (context + motion features).
            hidden_size: hidden state channels.
            kernel_size: 1 or 2 kernels, one per GRU.
            padding: the matching paddings.

        Raises:
            ValueError: if the two sequences differ in length or have not 1 or 2 entries.
        """
        super().__init__()
        if len(kernel_size) != len(padding) or len(kernel_size) not in (1, 2):
            raise ValueError(
                f"RecurrentBlock: need 1 or 2 kernel sizes with as many paddings, got "
                f"kernel_size={tuple(kernel_size)}, padding={tuple(padding)}"
            )
        self.convgru1 = ConvGRU(
            input_size=input_size,
            hidden_size=hidden_size,
            kernel_size=kernel_size[0],
            padding=padding[0],
        )
        self.convgru2: ConvGRU | None = None
        if len(kernel_size) == 2:
            self.convgru2 = ConvGRU(
                input_size=input_size,
                hidden_size=hidden_size,
                kernel_size=kernel_size[1],
                padding=padding[1],
            )
        self.hidden_size = hidden_size

    def forward(self, hidden_state: Tensor, inputs: Tensor) -> Tensor:
        """The next hidden state, shape (B, hidden_size, h, w)."""
        hidden_state = self.convgru1(hidden_state, inputs)
        if self.convgru2 is not None:
            hidden_state = self.convgru2(hidden_state, inputs)
        return hidden_state


class FlowHead(nn.Module):
    """Two 3x3 convolutions from the hidden state to a flow increment.

    Shape: (B, in_channels, h, w) -> (B, 2, h, w), in pixels of the 1/8 grid.
    """

    def __init__(self, *, in_channels: int, hidden_size: int) -> None:
        """Build the head.

        Args:
            in_channels: hidden state channels.
            hidden_size: channels between the two convolutions.
        """
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, hidden_state: Tensor) -> Tensor:
        """Flow increment of shape (B, 2, h, w)."""
        return self.conv2(self.relu(self.conv1(hidden_state)))


class UpdateBlock(nn.Module):
    """Motion encoder, recurrent block and flow head: one refinement step of the flow.

    Exposes ``hidden_state_size``, the channels of the hidden state it carries.
    """

    def __init__(
        self, *, motion_encoder: MotionEncoder, recurrent_block: RecurrentBlock, flow_head: FlowHead
    ) -> None:
        """Build the block from its parts.

        Args:
            motion_encoder: see :class:`MotionEncoder`.
            recurrent_block: see :class:`RecurrentBlock`; its ``input_size`` must be the context
                channels plus ``motion_encoder.out_channels``.
            flow_head: see :class:`FlowHead`.
        """
        super().__init__()
        self.motion_encoder = motion_encoder
        self.recurrent_block = recurrent_block
        self.flow_head = flow_head
        self.hidden_state_size = recurrent_block.hidden_size

    def forward(
        self, hidden_state: Tensor, context: Tensor, corr_features: Tensor, flow: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One update step on the 1/8 grid.

        Args:
            hidden_state: tensor of shape (B, hidden_state_size, h, w).
            context: context features of shape (B, C_context, h, w).
            corr_features: correlation lookup of shape (B, C_corr, h, w).
            flow: current flow of shape (B, 2, h, w), in 1/8-grid pixels.

        Returns:
            ``(hidden_state, delta_flow)`` of shapes (B, hidden_state_size, h, w) and
            (B, 2, h, w).
        """
        motion_features = self.motion_encoder(flow, corr_features)
        inputs = torch.cat((context, motion_features), dim=1)
        hidden_state = self.recurrent_block(hidden_state, inputs)
        return hidden_state, self.flow_head(hidden_state)


class MaskPredictor(nn.Module):
    """Predict the convex-upsampling logits from the hidden state (paper section 3.3, app. B).

    Shape: (B, in_channels, h, w) -> (B, 9 * factor**2, h, w), the ``mask`` argument of
    :func:`flow.geometry.convex_upsample`.
    """

    def __init__(
        self, *, in_channels: int, hidden_size: int, factor: int = 8, multiplier: float = 0.25
    ) -> None:
        """Build the predictor.

        Args:
            in_channels: hidden state channels.
            hidden_size: channels of the 3x3 convolution before the 1x1 output convolution.
            factor: the upsampling factor (the encoders' stride).
            multiplier: scale of the logits. The RAFT paper code multiplies them by 0.25
                "to balance gradients" (update.py, ``BasicUpdateBlock``): it damps this
                branch's gradients into the shared hidden state; see princeton-vl/RAFT issues
                24 and 119 (the authors: it makes little difference to the EPE). Kept at 0.25
                so the published weights, trained with it, give their results.
        """
        super().__init__()
        self.convrelu = conv_norm_relu(in_channels, hidden_size, kernel_size=3)
        self.conv = nn.Conv2d(hidden_size, 9 * factor * factor, kernel_size=1)
        self.factor = factor
        self.multiplier = multiplier

    def forward(self, hidden_state: Tensor) -> Tensor:
        """Upsampling logits of shape (B, 9 * factor**2, h, w)."""
        return self.multiplier * self.conv(self.convrelu(hidden_state))
