"""Pixel-grid geometry for flow fields: coordinate grids, bilinear sampling, upsampling, padding.

Conventions used by every function here:

- A coordinate field of shape (B, 2, H, W) holds (x, y) in pixels: channel 0 is the column,
  channel 1 the row, and (0, 0) is the centre of the top-left pixel. Sampling grids in the
  channel-last layout (N, H_out, W_out, 2) hold the same (x, y) pairs.
- A flow field of shape (B, 2, H, W) holds (u, v) in pixels, from the first image to the second
  (see :mod:`flow`): the point at ``coords`` in the first image lies at ``coords + flow`` in the
  second.
- ``padding`` tuples are ``(left, right, top, bottom)`` in pixels, the order ``F.pad`` takes.

These are pure functions on tensors; they keep the input's device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Padding = tuple[int, int, int, int]


def _require_4d(name: str, tensor: Tensor, layout: str) -> None:
    """Raise ValueError unless ``tensor`` is 4-D; ``layout`` names the expected dimensions."""
    if tensor.dim() != 4:
        raise ValueError(f"{name} must be 4-D {layout}, got shape {tuple(tensor.shape)}")


def coordinate_grid(
    batch: int,
    height: int,
    width: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The pixel coordinates of every pixel of a (height, width) image.

    Args:
        batch: number of copies along the batch dimension.
        height: number of rows H.
        width: number of columns W.
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape (B, 2, H, W) with ``grid[:, 0, y, x] == x`` and ``grid[:, 1, y, x] == y``.

    Raises:
        ValueError: if a size is not positive.
    """
    if batch < 1 or height < 1 or width < 1:
        raise ValueError(
            f"coordinate_grid: batch, height and width must be >= 1, got "
            f"batch={batch}, height={height}, width={width}"
        )
    rows = torch.arange(height, device=device, dtype=dtype)
    columns = torch.arange(width, device=device, dtype=dtype)
    y, x = torch.meshgrid(rows, columns, indexing="ij")
    return torch.stack((x, y), dim=0).unsqueeze(0).expand(batch, 2, height, width).contiguous()


def bilinear_sample(images: Tensor, coords: Tensor) -> Tensor:
    """Sample ``images`` bilinearly at pixel coordinates; zero outside the image.

    Pixel coordinates are mapped to ``grid_sample``'s normalised range with
    ``align_corners=True`` (pixel 0 -> -1, pixel W-1 -> +1), as RAFT does, so that integer
    coordinates return the stored values exactly.

    Args:
        images: tensor of shape (N, C, H, W) with H >= 2 and W >= 2 (a size-1 axis has no
            ``align_corners=True`` normalisation: it would divide by zero).
        coords: tensor of shape (N, H_out, W_out, 2) holding (x, y) in pixels.

    Returns:
        Tensor of shape (N, C, H_out, W_out).

    Raises:
        ValueError: on wrong ranks, mismatched batch sizes, a last axis of ``coords`` that is not
            2, or an image axis shorter than 2 pixels.
    """
    _require_4d("bilinear_sample: images", images, "(N, C, H, W)")
    _require_4d("bilinear_sample: coords", coords, "(N, H_out, W_out, 2)")
    if coords.shape[-1] != 2 or coords.shape[0] != images.shape[0]:
        raise ValueError(
            f"bilinear_sample: coords must have shape (N, H_out, W_out, 2) with N matching "
            f"images {tuple(images.shape)}, got {tuple(coords.shape)}"
        )
    height, width = images.shape[-2:]
    if height < 2 or width < 2:
        raise ValueError(
            f"bilinear_sample: images must be at least 2x2 pixels, got {height}x{width} "
            f"(shape {tuple(images.shape)})"
        )
    x, y = coords.unbind(dim=-1)
    normalised = torch.stack((2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1), dim=-1)
    return F.grid_sample(
        images,
        normalised.to(images.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )


def upsample_flow(flow: Tensor, factor: int = 8) -> Tensor:
    """Upsample a flow field bilinearly by an integer factor, scaling its values by the factor.

    Interpolation uses ``align_corners=True`` (as RAFT's ``upflow8`` and torchvision's
    ``upsample_flow``), so weights trained with those reproduce their outputs.

    Args:
        flow: flow of shape (B, 2, h, w) in pixels of the low-resolution grid.
        factor: integer upsampling factor >= 1.

    Returns:
        Flow of shape (B, 2, h * factor, w * factor) in pixels of the high-resolution grid.

    Raises:
        ValueError: if ``flow`` is not (B, 2, h, w) or ``factor`` < 1.
    """
    _require_4d("upsample_flow: flow", flow, "(B, 2, h, w)")
    if flow.shape[1] != 2 or factor < 1:
        raise ValueError(
            f"upsample_flow: need flow (B, 2, h, w) and factor >= 1, got shape "
            f"{tuple(flow.shape)} and factor {factor}"
        )
    height, width = flow.shape[-2:]
    size = (height * factor, width * factor)
    return factor * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


def convex_upsample(flow: Tensor, mask: Tensor, factor: int = 8) -> Tensor:
    """Upsample a flow field with learned convex combinations (RAFT paper, section 3.3, app. B).

    Each high-resolution pixel is a convex combination of the 3x3 low-resolution neighbours of
    the low-resolution pixel it lies in; the weights are a softmax over the 9 neighbours of
    ``mask``. Neighbours outside the field count as zero flow (``F.unfold`` zero padding), as in
    the reference implementations, so weights trained there reproduce their outputs.

    Channel ``k * factor**2 + a * factor + b`` of ``mask`` is the logit of neighbour
    ``k = 3 * (dy + 1) + (dx + 1)`` (dy, dx in {-1, 0, 1}) for the sub-pixel at row ``a``,
    column ``b`` of the ``factor x factor`` block.

    Args:
        flow: flow of shape (B, 2, h, w) in pixels of the low-resolution grid.
        mask: logits of shape (B, 9 * factor**2, h, w).
        factor: integer upsampling factor >= 1.

    Returns:
        Flow of shape (B, 2, h * factor, w * factor) in pixels of the high-resolution grid.

    Raises:
        ValueError: if the shapes do not agree.
    """
    _require_4d("convex_upsample: flow", flow, "(B, 2, h, w)")
    batch, channels, height, width = flow.shape
    expected_mask = (batch, 9 * factor * factor, height, width)
    if channels != 2 or factor < 1 or tuple(mask.shape) != expected_mask:
        raise ValueError(
            f"convex_upsample: need flow (B, 2, h, w) and mask {expected_mask} for factor "
            f"{factor}, got flow {tuple(flow.shape)} and mask {tuple(mask.shape)}"
        )
    weights = torch.softmax(mask.reshape(batch, 9, factor, factor, height, width), dim=1)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1)
    neighbours = neighbours.reshape(batch, 2, 9, height, width)
    # (B, 2, a, b, h, w): sum over the 9 neighbours for every sub-pixel (a, b).
    blocks = torch.einsum("bkxyhw,bckhw->bcxyhw", weights, neighbours)
    return blocks.permute(0, 1, 4, 2, 5, 3).reshape(batch, 2, height * factor, width * factor)


def downsample_flow(flow: Tensor, factor: int = 8) -> Tensor:
    """Average a flow field over ``factor x factor`` blocks, scaling its values by 1 / factor.

    The inverse of :func:`convex_upsample`'s block layout: low-resolution pixel (i, j) stands
    for the high-resolution block starting at (factor * i, factor * j).

    Args:
        flow: flow of shape (B, 2, H, W) with H and W multiples of ``factor``.
        factor: integer downsampling factor >= 1.

    Returns:
        Flow of shape (B, 2, H / factor, W / factor) in pixels of the low-resolution grid.

    Raises:
        ValueError: if ``flow`` is not (B, 2, H, W) with H and W multiples of ``factor``.
    """
    _require_4d("downsample_flow: flow", flow, "(B, 2, H, W)")
    height, width = flow.shape[-2:]
    if flow.shape[1] != 2 or factor < 1 or height % factor or width % factor:
        raise ValueError(
            f"downsample_flow: need flow (B, 2, H, W) with H and W multiples of factor {factor}, "
            f"got shape {tuple(flow.shape)}"
        )
    return F.avg_pool2d(flow, kernel_size=factor, stride=factor) / factor


def padding_to_multiple(
    height: int, width: int, *, multiple: int = 8, min_size: int = 0
) -> Padding:
    """The padding that makes a (height, width) image a multiple of ``multiple``, >= ``min_size``.

    The padding is split evenly between both sides (the extra pixel, if any, on the right or
    bottom), like RAFT's ``InputPadder`` in its default mode.

    Args:
        height: image height H >= 1.
        width: image width W >= 1.
        multiple: both padded sizes are multiples of this (>= 1).
        min_size: both padded sizes are at least this; rounded up to a multiple.

    Returns:
        ``(left, right, top, bottom)`` in pixels.

    Raises:
        ValueError: on a non-positive size or multiple, or a negative ``min_size``.
    """
    if height < 1 or width < 1 or multiple < 1 or min_size < 0:
        raise ValueError(
            f"padding_to_multiple: need height, width, multiple >= 1 and min_size >= 0, got "
            f"height={height}, width={width}, multiple={multiple}, min_size={min_size}"
        )

    def padded(size: int) -> int:
        return -(-max(size, min_size) // multiple) * multiple

    extra_rows = padded(height) - height
    extra_columns = padded(width) - width
    return (
        extra_columns // 2,
        extra_columns - extra_columns // 2,
        extra_rows // 2,
        extra_rows - extra_rows // 2,
    )


def pad_to_multiple(images: Tensor, multiple: int = 8, min_size: int = 0) -> tuple[Tensor, Padding]:
    """Replicate-pad images so H and W are multiples of ``multiple`` and at least ``min_size``.

    Args:
        images: tensor of shape (B, C, H, W).
        multiple: both padded sizes are multiples of this.
        min_size: both padded sizes are at least this.

    Returns:
        ``(padded, padding)``: padded of shape (B, C, H + top + bottom, W + left + right) and
        ``padding = (left, right, top, bottom)`` for :func:`unpad`.

    Raises:
        ValueError: if ``images`` is not 4-D, or as :func:`padding_to_multiple`.
    """
    _require_4d("pad_to_multiple: images", images, "(B, C, H, W)")
    padding = padding_to_multiple(
        images.shape[-2], images.shape[-1], multiple=multiple, min_size=min_size
    )
    if not any(padding):
        return images, padding
    return F.pad(images, padding, mode="replicate"), padding


def unpad(tensor: Tensor, padding: Padding) -> Tensor:
    """Crop the ``padding`` added by :func:`pad_to_multiple` off the last two dimensions.

    Args:
        tensor: tensor of shape (..., H_padded, W_padded).
        padding: ``(left, right, top, bottom)`` in pixels of this tensor's grid.

    Returns:
        Tensor of shape (..., H_padded - top - bottom, W_padded - left - right) (a view).

    Raises:
        ValueError: if the padding is negative or leaves nothing.
    """
    left, right, top, bottom = padding
    height, width = tensor.shape[-2:]
    if min(padding) < 0 or top + bottom >= height or left + right >= width:
        raise ValueError(
            f"unpad: padding {tuple(padding)} (left, right, top, bottom) does not fit a tensor "
            f"of shape {tuple(tensor.shape)}"
        )
    return tensor[..., top : height - bottom, left : width - right]
