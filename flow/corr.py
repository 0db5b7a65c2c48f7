"""All-pairs correlation volume, its pyramid and windowed lookup (RAFT paper, section 3.2).

For feature maps ``f1, f2`` of shape (B, C, H, W) the volume is
``volume[b, i, j, k, l] = <f1[b, :, i, j], f2[b, :, k, l]> / sqrt(C)``: every pixel (i, j) of
the first frame against every pixel (k, l) of the second. The pyramid average-pools the last
two dimensions (the second frame's) ``num_levels - 1`` times with kernel and stride 2, so level
``n`` has size (H // 2**n, W // 2**n).

The lookup takes, for every first-frame pixel, a point ``x'`` in the second frame (its current
correspondence, in level-0 pixels) and samples each level bilinearly at ``x' / 2**n + d`` for
every integer offset ``d`` with ``|d|_inf <= radius``: ``(2 * radius + 1)**2`` values per level
(the paper writes the 1-norm; the code and torchvision's note, princeton-vl/RAFT issue 122,
say it is the infinity norm). Points outside the level read zero.

Window order: value ``p * (2r + 1) + q`` of a level is offset ``(dx, dy) = (p - r, q - r)``;
the x offset is the SLOW index. This is the order of the RAFT paper code (it builds the offset
grid with ``meshgrid(dy, dx)`` and adds it to (x, y) coordinates) and of torchvision, so the
motion encoder's first convolution of their weights expects it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flow.geometry import bilinear_sample


def correlation_volume(features1: Tensor, features2: Tensor) -> Tensor:
    """All-pairs dot products of two feature maps, divided by sqrt(C).

    Half-precision features are multiplied in float32 (autocast disabled), as the RAFT paper
    code does, so the sums over C channels keep their precision; the volume is then float32.

    Args:
        features1: first-frame features of shape (B, C, H, W).
        features2: second-frame features of shape (B, C, H, W).

    Returns:
        Tensor of shape (B, H, W, H, W); ``[b, i, j, k, l]`` pairs first-frame pixel (i, j)
        with second-frame pixel (k, l).

    Raises:
        ValueError: if the inputs are not 4-D or their shapes differ.
    """
    if features1.dim() != 4 or features1.shape != features2.shape:
        raise ValueError(
            f"correlation_volume: need two feature maps of the same shape (B, C, H, W), got "
            f"{tuple(features1.shape)} and {tuple(features2.shape)}"
        )
    if features1.dtype in (torch.float16, torch.bfloat16):
        features1, features2 = features1.float(), features2.float()
    batch, channels, height, width = features1.shape
    # Autocast would run bmm in half precision again; the paper code builds the volume outside
    # its autocast region for the same reason.
    with torch.autocast(device_type=features1.device.type, enabled=False):
        volume = torch.bmm(
            features1.reshape(batch, channels, height * width).transpose(1, 2),
            features2.reshape(batch, channels, height * width),
        )
    return volume.reshape(batch, height, width, height, width) / math.sqrt(channels)


def correlation_pyramid(volume: Tensor, *, num_levels: int) -> list[Tensor]:
    """Average-pool the second-frame dimensions of a correlation volume into a pyramid.

    Args:
        volume: correlation volume of shape (B, H, W, H, W).
        num_levels: number of levels (>= 1), the first being the volume itself.

    Returns:
        ``num_levels`` tensors; level n has shape (B * H * W, 1, H // 2**n, W // 2**n).

    Raises:
        ValueError: if ``volume`` is not 5-D or the coarsest level would be empty.
    """
    if volume.dim() != 5 or num_levels < 1:
        raise ValueError(
            f"correlation_pyramid: need a volume (B, H, W, H, W) and num_levels >= 1, got "
            f"shape {tuple(volume.shape)} and num_levels={num_levels}"
        )
    batch, height, width, second_height, second_width = volume.shape
    coarsest = 2 ** (num_levels - 1)
    if second_height < coarsest or second_width < coarsest:
        raise ValueError(
            f"correlation_pyramid: {num_levels} levels need feature maps of at least "
            f"{coarsest}x{coarsest}, got {second_height}x{second_width}"
        )
    level = volume.reshape(batch * height * width, 1, second_height, second_width)
    pyramid = [level]
    for _ in range(num_levels - 1):
        level = F.avg_pool2d(level, kernel_size=2, stride=2)
        pyramid.append(level)
    return pyramid


def window_offsets(
    radius: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The lookup window: offsets ``d`` with ``|d|_inf <= radius``, x offset the slow index.

    Args:
        radius: window radius r >= 0.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        Tensor of shape (2r + 1, 2r + 1, 2) with ``[p, q] == (p - r, q - r)`` as (dx, dy).
    """
    steps = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    slow, fast = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((slow, fast), dim=-1)


def lookup_pyramid(pyramid: list[Tensor], coords: Tensor, *, radius: int) -> Tensor:
    """Sample a window of every pyramid level around each first-frame pixel's correspondence.

    Args:
        pyramid: levels from :func:`correlation_pyramid`, level n of shape
            (B * H * W, 1, H_n, W_n).
        coords: correspondences of shape (B, 2, H, W): (x, y) in level-0 pixels of the second
            frame, for every first-frame pixel.
        radius: window radius r >= 0.

    Returns:
        Tensor of shape (B, len(pyramid) * (2r + 1)**2, H, W); the levels are concatenated in
        order, each in the window order of the module docstring.

    Raises:
        ValueError: if ``coords`` is not (B, 2, H, W) with B * H * W matching the pyramid.
    """
    if coords.dim() != 4 or coords.shape[1] != 2 or radius < 0 or not pyramid:
        raise ValueError(
            f"lookup_pyramid: need coords (B, 2, H, W), radius >= 0 and a non-empty pyramid, "
            f"got coords {tuple(coords.shape)}, radius {radius}, {len(pyramid)} levels"
        )
    batch, _, height, width = coords.shape
    if pyramid[0].shape[0] != batch * height * width:
        raise ValueError(
            f"lookup_pyramid: the pyramid holds {pyramid[0].shape[0]} first-frame pixels but "
            f"coords {tuple(coords.shape)} has {batch * height * width}"
        )
    side = 2 * radius + 1
    centroids = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
    offsets = window_offsets(radius, device=coords.device, dtype=coords.dtype).unsqueeze(0)
    windows = []
    for level_index, level in enumerate(pyramid):
        sampled = bilinear_sample(level, centroids / 2**level_index + offsets)
        windows.append(sampled.reshape(batch, height, width, side * side))
    return torch.cat(windows, dim=-1).permute(0, 3, 1, 2).contiguous()


class CorrBlock(nn.Module):
    """Correlation pyramid and lookup with fixed ``num_levels`` and ``radius`` (no parameters).

    The block is stateless: :meth:`build_pyramid` returns the pyramid and :meth:`index_pyramid`
    takes it, so one model can serve several frame pairs at once.
    """

    def __init__(self, *, num_levels: int = 4, radius: int = 4) -> None:
        """Build the block.

        Args:
            num_levels: pyramid levels (>= 1).
            radius: lookup window radius (>= 0).

        Raises:
            ValueError: if a value is out of range.
        """
        super().__init__()
        if num_levels < 1 or radius < 0:
            raise ValueError(
                f"CorrBlock: need num_levels >= 1 and radius >= 0, got num_levels={num_levels}, "
                f"radius={radius}"
            )
        self.num_levels = num_levels
        self.radius = radius
        self.out_channels = num_levels * (2 * radius + 1) ** 2
        # The coarsest level must keep 2 pixels per axis: bilinear_sample normalises pixel
        # coordinates with align_corners=True, i.e. divides by (size - 1).
        self.min_feature_size = 2**num_levels

    def build_pyramid(self, features1: Tensor, features2: Tensor) -> list[Tensor]:
        """Correlation pyramid of two feature maps of shape (B, C, H, W).

        Returns:
            ``num_levels`` tensors; level n of shape (B * H * W, 1, H // 2**n, W // 2**n).

        Raises:
            ValueError: as :func:`correlation_volume` and :func:`correlation_pyramid`.
        """
        volume = correlation_volume(features1, features2)
        return correlation_pyramid(volume, num_levels=self.num_levels)

    def index_pyramid(self, pyramid: list[Tensor], coords: Tensor) -> Tensor:
        """Windowed lookup at ``coords`` of shape (B, 2, H, W) (level-0 pixels).

        Returns:
            Tensor of shape (B, out_channels, H, W).

        Raises:
            ValueError: as :func:`lookup_pyramid`, or if the pyramid has the wrong depth.
        """
        if len(pyramid) != self.num_levels:
            raise ValueError(
                f"CorrBlock.index_pyramid: expected {self.num_levels} levels, got {len(pyramid)}"
            )
        return lookup_pyramid(pyramid, coords, radius=self.radius)

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}, radius={self.radius}"
