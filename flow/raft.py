"""RAFT: Recurrent All-Pairs Field Transforms for optical flow (Teed and Deng, ECCV 2020).

The model is assembled from its parts (feature encoder, context encoder, correlation block,
update block, optional mask predictor); :func:`raft_small` and :func:`raft_large` hold the
numbers of the paper's two configurations. Parameter names follow torchvision's
``models.optical_flow.raft``, so its state dicts load with ``strict=True``; see
:mod:`flow.checkpoints` for the princeton-vl layout.

Input and output contract:

- Images are RGB float tensors of shape (B, 3, H, W) with values in [0, 255] (what a decoded
  uint8 frame gives after ``.float()``). They are normalised inside as ``2 * (x / 255) - 1``,
  the RAFT paper code's convention, which its weights and torchvision's expect.
- Any H, W >= 1: images are replicate-padded (evenly on both sides) to multiples of 8 and to
  at least :attr:`RAFT.min_image_size` per axis, and every output is cropped back. The minimum
  comes from the correlation pyramid: its coarsest level must keep 2 feature pixels per axis
  (8 * 2**num_levels image pixels: 128 for 4 levels), so tiny images give finite flow instead
  of NaN.
- Outputs are flows of shape (B, 2, H, W), one after each update, from ``image1`` to
  ``image2`` in pixels: a point at (x, y) in ``image1`` lies at (x + u, y + v) in ``image2``.
  They are float32 (float64 for a float64 model), also under autocast: the correlation volume,
  the coordinates and the upsampling stay out of half precision, as in the paper code.

For multi-stride flow (3D-HOP) the work splits so each frame is encoded once:
:meth:`RAFT.extract_features` (both roles), :meth:`RAFT.extract_context` (the first frame of a
pair) and :meth:`RAFT.estimate_flow`; :meth:`RAFT.forward` is exactly these three calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flow.corr import CorrBlock
from flow.extractor import BottleneckBlock, FeatureEncoder, ResidualBlock
from flow.geometry import (
    convex_upsample,
    coordinate_grid,
    downsample_flow,
    pad_to_multiple,
    padding_to_multiple,
    unpad,
    upsample_flow,
)
from flow.update import FlowHead, MaskPredictor, MotionEncoder, RecurrentBlock, UpdateBlock

# Output stride of both encoders: flow is estimated on the 1/8 grid and upsampled by 8.
DOWNSAMPLE_FACTOR = 8


def normalise_images(images: Tensor) -> Tensor:
    """Map [0, 255] images to [-1, 1]: ``2 * (images / 255) - 1`` (RAFT's input convention)."""
    return 2 * (images / 255.0) - 1


def _check_images(name: str, images: Tensor) -> None:
    """Raise ValueError unless ``images`` is a floating (B, 3, H, W) tensor."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"RAFT: {name} must have shape (B, 3, H, W) (RGB), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"RAFT: {name} must be a float tensor with values in [0, 255], got {images.dtype}"
        )


class RAFT(nn.Module):
    """The RAFT optical-flow network, built from its parts.

    Attributes:
        min_image_size: smallest padded image side, ``8 * corr_block.min_feature_size``.
    """

    def __init__(
        self,
        *,
        feature_encoder: nn.Module,
        context_encoder: nn.Module,
        corr_block: nn.Module,
        update_block: nn.Module,
        mask_predictor: nn.Module | None = None,
    ) -> None:
        """Assemble the network.

        Args:
            feature_encoder: (N, 3, H, W) in [-1, 1] -> (N, C, H / 8, W / 8); runs on both
                frames.
            context_encoder: (N, 3, H, W) in [-1, 1] -> (N, hidden_state_size + C_context,
                H / 8, W / 8); runs on the first frame. The first ``hidden_state_size``
                channels (after tanh) start the hidden state, the rest (after ReLU) are the
                context, as in the paper.
            corr_block: exposes ``build_pyramid(features1, features2) -> pyramid``,
                ``index_pyramid(pyramid, coords) -> (B, C_corr, h, w)`` and optionally
                ``min_feature_size`` (smallest feature-map side it handles, default 1); see
                :class:`flow.corr.CorrBlock`.
            update_block: ``(hidden_state, context, corr_features, flow) -> (hidden_state,
                delta_flow)`` exposing ``hidden_state_size``; see
                :class:`flow.update.UpdateBlock`.
            mask_predictor: hidden state -> (B, 9 * 64, h, w) convex-upsampling logits, or
                None to upsample bilinearly (the small model).

        Raises:
            ValueError: if ``update_block`` has no ``hidden_state_size`` or the mask predictor
                upsamples by another factor than 8.
        """
        super().__init__()
        if not hasattr(update_block, "hidden_state_size"):
            raise ValueError("RAFT: update_block must expose a 'hidden_state_size' attribute")
        mask_factor = getattr(mask_predictor, "factor", DOWNSAMPLE_FACTOR)
        if mask_predictor is not None and mask_factor != DOWNSAMPLE_FACTOR:
            raise ValueError(
                f"RAFT: the mask predictor must upsample by {DOWNSAMPLE_FACTOR}, got {mask_factor}"
            )
        self.feature_encoder = feature_encoder
        self.context_encoder = context_encoder
        self.corr_block = corr_block
        self.update_block = update_block
        self.mask_predictor = mask_predictor
        self.min_image_size = DOWNSAMPLE_FACTOR * int(getattr(corr_block, "min_feature_size", 1))

    def _pad(self, images: Tensor) -> Tensor:
        """Normalise and pad (N, 3, H, W) images the way :meth:`estimate_flow` expects."""
        padded, _ = pad_to_multiple(
            normalise_images(images), multiple=DOWNSAMPLE_FACTOR, min_size=self.min_image_size
        )
        return padded

    def _padding(self, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` padding of an image of ``image_size`` (H, W)."""
        height, width = image_size
        return padding_to_multiple(
            height, width, multiple=DOWNSAMPLE_FACTOR, min_size=self.min_image_size
        )

    def extract_features(self, images: Tensor) -> Tensor:
        """Feature-encoder output for a batch of frames (any role in a pair).

        Args:
            images: RGB tensor of shape (N, 3, H, W), values in [0, 255].

        Returns:
            Tensor of shape (N, C, H_pad / 8, W_pad / 8), where (H_pad, W_pad) is the padded
            size (multiples of 8, at least ``min_image_size``).

        Raises:
            ValueError: if ``images`` is not a float (N, 3, H, W) tensor.
        """
        _check_images("images", images)
        return self.feature_encoder(self._pad(images))

    def extract_context(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Initial hidden state and context features of first frames.

        Args:
            images: RGB tensor of shape (N, 3, H, W), values in [0, 255].

        Returns:
            ``(hidden_state, context)``: tanh of the first ``hidden_state_size`` channels of the
            context encoder, shape (N, hidden_state_size, H_pad / 8, W_pad / 8), and ReLU of the
            rest, shape (N, C_context, H_pad / 8, W_pad / 8).

        Raises:
            ValueError: if ``images`` is not a float (N, 3, H, W) tensor, or the context
                encoder does not output more channels than the hidden state has.
        """
        _check_images("images", images)
        encoded = self.context_encoder(self._pad(images))
        hidden_size = int(self.update_block.hidden_state_size)
        context_size = encoded.shape[1] - hidden_size
        if context_size <= 0:
            raise ValueError(
                f"RAFT: the context encoder outputs {encoded.shape[1]} channels, it needs more "
                f"than hidden_state_size={hidden_size}"
            )
        hidden_state, context = torch.split(encoded, [hidden_size, context_size], dim=1)
        return torch.tanh(hidden_state), F.relu(context)

    def estimate_flow(
        self,
        features1: Tensor,
        features2: Tensor,
        context: tuple[Tensor, Tensor],
        *,
        num_flow_updates: int = 12,
        flow_init: Tensor | None = None,
        image_size: tuple[int, int],
    ) -> list[Tensor]:
        """Iteratively estimate flow from encoded frames.

        Args:
            features1: :meth:`extract_features` of the first frames, (B, C, h, w).
            features2: :meth:`extract_features` of the second frames, (B, C, h, w).
            context: :meth:`extract_context` of the first frames: hidden state
                (B, hidden_state_size, h, w) and context (B, C_context, h, w).
            num_flow_updates: number of recurrent updates (>= 1).
            flow_init: optional warm start, a flow of shape (B, 2, H, W) at the input
                resolution (e.g. the previous pair's estimate); it is replicate-padded and
                averaged over 8x8 blocks onto the 1/8 grid.
            image_size: (H, W) of the unpadded input images.

        Returns:
            ``num_flow_updates`` flows of shape (B, 2, H, W), first to second frame, in pixels.

        Raises:
            ValueError: if a shape does not match ``image_size`` or the others.
        """
        if num_flow_updates < 1:
            raise ValueError(f"RAFT: num_flow_updates must be >= 1, got {num_flow_updates}")
        padding = self._padding(image_size)
        left, right, top, bottom = padding
        height, width = image_size
        grid_size = (
            (height + top + bottom) // DOWNSAMPLE_FACTOR,
            (width + left + right) // DOWNSAMPLE_FACTOR,
        )
        if (
            features1.dim() != 4
            or features1.shape != features2.shape
            or tuple(features1.shape[-2:]) != grid_size
        ):
            raise ValueError(
                f"RAFT: features1 and features2 must both have shape (B, C, {grid_size[0]}, "
                f"{grid_size[1]}) for images of size {tuple(image_size)}, got "
                f"{tuple(features1.shape)} and {tuple(features2.shape)}"
            )
        batch = features1.shape[0]
        hidden_state, context_features = context
        for name, tensor in (("hidden state", hidden_state), ("context", context_features)):
            if tensor.dim() != 4 or tensor.shape[0] != batch or tensor.shape[-2:] != grid_size:
                raise ValueError(
                    f"RAFT: the {name} must have shape (B={batch}, C, {grid_size[0]}, "
                    f"{grid_size[1]}), got {tuple(tensor.shape)}"
                )
        _check_flow_init(flow_init, batch=batch, image_size=image_size)

        # Coordinates stay in float32 (or float64) even when the encoders run in half
        # precision: they accumulate sub-pixel increments over all updates.
        dtype = torch.promote_types(features1.dtype, torch.float32)
        coords0 = coordinate_grid(batch, *grid_size, device=features1.device, dtype=dtype)
        coords1 = coords0
        if flow_init is not None:
            padded_init = F.pad(flow_init.to(dtype), padding, mode="replicate")
            coords1 = coords0 + downsample_flow(padded_init, factor=DOWNSAMPLE_FACTOR)

        pyramid = self.corr_block.build_pyramid(features1, features2)
        predictions = []
        for _ in range(num_flow_updates):
            # No gradient through the lookup coordinates, as in the paper (section 3.3): each
            # update is trained to improve on the current estimate, not to move it.
            coords1 = coords1.detach()
            corr_features = self.corr_block.index_pyramid(pyramid, coords1)
            hidden_state, delta_flow = self.update_block(
                hidden_state, context_features, corr_features, coords1 - coords0
            )
            coords1 = coords1 + delta_flow
            flow = coords1 - coords0
            mask = None if self.mask_predictor is None else self.mask_predictor(hidden_state)
            # Outputs keep the coordinates' precision under autocast, as in the paper code,
            # which upsamples outside its autocast region.
            with torch.autocast(device_type=flow.device.type, enabled=False):
                if mask is None:
                    upsampled = upsample_flow(flow, factor=DOWNSAMPLE_FACTOR)
                else:
                    upsampled = convex_upsample(flow, mask.to(dtype), factor=DOWNSAMPLE_FACTOR)
            predictions.append(unpad(upsampled, padding))
        return predictions

    def forward(
        self,
        image1: Tensor,
        image2: Tensor,
        *,
        num_flow_updates: int = 12,
        flow_init: Tensor | None = None,
    ) -> list[Tensor]:
        """Estimate the flow from ``image1`` to ``image2``.

        Exactly ``extract_features`` on both frames (one batch), ``extract_context`` on
        ``image1``, then ``estimate_flow``.

        Args:
            image1: RGB tensor of shape (B, 3, H, W), values in [0, 255].
            image2: RGB tensor of shape (B, 3, H, W), values in [0, 255].
            num_flow_updates: number of recurrent updates (>= 1).
            flow_init: optional warm start of shape (B, 2, H, W), in pixels.

        Returns:
            ``num_flow_updates`` flows of shape (B, 2, H, W), the last the most refined.

        Raises:
            ValueError: on images that are not float (B, 3, H, W), of different shapes, or a
                ``flow_init`` that is not (B, 2, H, W).
        """
        _check_images("image1", image1)
        _check_images("image2", image2)
        if image1.shape != image2.shape:
            raise ValueError(
                f"RAFT: image1 and image2 must have the same shape, got {tuple(image1.shape)} "
                f"and {tuple(image2.shape)}"
            )
        image_size = (image1.shape[-2], image1.shape[-1])
        _check_flow_init(flow_init, batch=image1.shape[0], image_size=image_size)
        features1, features2 = self.extract_features(torch.cat((image1, image2), dim=0)).chunk(2)
        context = self.extract_context(image1)
        return self.estimate_flow(
            features1,
            features2,
            context,
            num_flow_updates=num_flow_updates,
            flow_init=flow_init,
            image_size=image_size,
        )


def _check_flow_init(flow_init: Tensor | None, *, batch: int, image_size: tuple[int, int]) -> None:
    """Raise ValueError unless ``flow_init`` is None or of shape (batch, 2, H, W)."""
    expected = (batch, 2, *image_size)
    if flow_init is not None and tuple(flow_init.shape) != expected:
        raise ValueError(
            f"RAFT: flow_init must have shape {expected} (B, 2, H, W) at the input "
            f"resolution, got {tuple(flow_init.shape)}"
        )


def raft_large() -> RAFT:
    """The paper's full model (5.3 M parameters): residual encoders, separable GRU, convex
    upsampling. Same sizes and parameter names as torchvision's ``raft_large``.

    Returns:
        A randomly initialised :class:`RAFT`.
    """
    hidden_state_size = 128
    context_encoder_channels = 256
    corr_block = CorrBlock(num_levels=4, radius=4)
    motion_encoder = MotionEncoder(
        in_channels_corr=corr_block.out_channels,
        corr_layers=(256, 192),
        flow_layers=(128, 64),
        out_channels=128,
    )
    recurrent_block = RecurrentBlock(
        input_size=motion_encoder.out_channels + context_encoder_channels - hidden_state_size,
        hidden_size=hidden_state_size,
        kernel_size=((1, 5), (5, 1)),
        padding=((0, 2), (2, 0)),
    )
    return RAFT(
        feature_encoder=FeatureEncoder(
            block=ResidualBlock, layers=(64, 64, 96, 128, 256), norm_layer=nn.InstanceNorm2d
        ),
        context_encoder=FeatureEncoder(
            block=ResidualBlock,
            layers=(64, 64, 96, 128, context_encoder_channels),
            norm_layer=nn.BatchNorm2d,
        ),
        corr_block=corr_block,
        update_block=UpdateBlock(
            motion_encoder=motion_encoder,
            recurrent_block=recurrent_block,
            flow_head=FlowHead(in_channels=hidden_state_size, hidden_size=256),
        ),
        mask_predictor=MaskPredictor(in_channels=hidden_state_size, hidden_size=256),
    )


def raft_small() -> RAFT:
    """The paper's small model (1.0 M parameters): bottleneck encoders (the context encoder
    without normalisation), one 3x3 GRU, bilinear upsampling. Same sizes and parameter names
    as torchvision's ``raft_small``.

    Returns:
        A randomly initialised :class:`RAFT`.
    """
    hidden_state_size = 96
    context_encoder_channels = 160
    corr_block = CorrBlock(num_levels=4, radius=3)
    motion_encoder = MotionEncoder(
        in_channels_corr=corr_block.out_channels,
        corr_layers=(96,),
        flow_layers=(64, 32),
        out_channels=82,
    )
    recurrent_block = RecurrentBlock(
        input_size=motion_encoder.out_channels + context_encoder_channels - hidden_state_size,
        hidden_size=hidden_state_size,
        kernel_size=(3,),
        padding=(1,),
    )
    return RAFT(
        feature_encoder=FeatureEncoder(
            block=BottleneckBlock, layers=(32, 32, 64, 96, 128), norm_layer=nn.InstanceNorm2d
        ),
        context_encoder=FeatureEncoder(
            block=BottleneckBlock,
            layers=(32, 32, 64, 96, context_encoder_channels),
            norm_layer=None,
        ),
        corr_block=corr_block,
        update_block=UpdateBlock(
            motion_encoder=motion_encoder,
            recurrent_block=recurrent_block,
            flow_head=FlowHead(in_channels=hidden_state_size, hidden_size=128),
        ),
        mask_predictor=None,
    )
