"""Photometric losses for self-supervised flow: backward warping, census and SSIM.

An image pair (I1, I2) and a flow f from I1 to I2 (flow convention of :mod:`flow`) give the
reconstruction ``I2w(x) = I2(x + f(x))``; where the flow is right and x is visible in both
images, I2w equals I1 up to illumination changes. Both losses here compare I1 with I2w in ways
that tolerate those changes:

- census (Zabih and Woodfill, ECCV 1994; the soft version of Meister et al., "UnFlow", AAAI 2018,
  and Jonschkowski et al., "What Matters in Unsupervised Optical Flow" (UFlow), ECCV 2020): each
  pixel is described by the signs of its differences to its neighbours in a 7x7 patch, made soft
  as ``d / sqrt(0.81 + d^2)`` (d in grey levels of 255), and two descriptors are compared by the
  soft Hamming distance ``sum (a - b)^2 / (0.1 + (a - b)^2)``. Additive and most multiplicative
  brightness changes leave it unchanged.
- SSIM (Wang et al., IEEE TIP 2004), over 3x3 windows as in Godard et al. (Monodepth, CVPR
  2017): the loss is ``(1 - SSIM) / 2`` clipped to [0, 1].

Both are 0 for identical images. Images are RGB (B, 3, H, W) in [0, 255]; masks (B, 1, H, W) in
[0, 1] weigh the pixels (a masked mean; 0 when the mask is empty).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from flow.geometry import bilinear_sample, coordinate_grid

# ITU-R BT.601 luma weights, the usual RGB -> grey conversion.
_LUMA = (0.299, 0.587, 0.114)
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _check_images(function: str, **images: Tensor) -> None:
    shapes = {name: tuple(image.shape) for name, image in images.items()}
    first = next(iter(images.values()))
    if first.dim() != 4 or any(image.shape != first.shape for image in images.values()):
        raise ValueError(f"{function}: images must be (B, C, H, W) of one shape, got {shapes}")


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (B, C, H, W) ``values`` weighted by a (B, 1, H, W) mask; 0 for an empty mask."""
    if mask is None:
        return values.mean()
    weights = mask.expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1e-6)


def warp_backward(images: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Sample ``images`` (the second frames) at x + flow(x): the second frame seen from the first.

    Args:
        images: (B, C, H, W) second images, H, W >= 2.
        flow: (B, 2, H, W) flow from the first to the second image, pixels.

    Returns:
        ``(warped, inside)``: (B, C, H, W) samples (zero outside the image), and a (B, 1, H, W)
        float mask, 1 where x + flow(x) lies inside the image.

    Raises:
        ValueError: the shapes do not match.
    """
    if flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[0] != images.shape[0] or (
            flow.shape[-2:] != images.shape[-2:]):
        raise ValueError(f"warp_backward: need images (B, C, H, W) and flow (B, 2, H, W) of the "
                         f"same B, H, W, got {tuple(images.shape)} and {tuple(flow.shape)}")
    batch, _, height, width = flow.shape
    coords = coordinate_grid(batch, height, width, device=flow.device, dtype=flow.dtype) + flow
    warped = bilinear_sample(images, coords.permute(0, 2, 3, 1))
    x, y = coords[:, 0:1], coords[:, 1:2]
    inside = ((x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)).to(images.dtype)
    return warped, inside


def to_grey(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) grey, same range."""
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def census_transform(images: Tensor, *, patch_size: int = 7) -> Tensor:
    """Soft census descriptors: ``d / sqrt(0.81 + d^2)`` for every neighbour in the patch.

    Args:
        images: (B, 3, H, W) RGB in [0, 255].
        patch_size: odd side of the square neighbourhood.

    Returns:
        (B, patch_size**2, H, W) descriptors in (-1, 1); 0 for every neighbour of a constant
        image. Neighbours beyond the border replicate it.

    Raises:
        ValueError: ``images`` is not (B, 3, H, W) or the patch size is not odd.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"census_transform: images must be (B, 3, H, W), got "
                         f"{tuple(images.shape)}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"census_transform: patch_size must be odd, got {patch_size}")
    grey = to_grey(images)
    radius = patch_size // 2
    padded = F.pad(grey, (radius, radius, radius, radius), mode="replicate")
    height, width = grey.shape[-2:]
    neighbours = F.unfold(padded, kernel_size=patch_size).view(
        grey.shape[0], patch_size * patch_size, height, width)
    difference = neighbours - grey
    return difference / torch.sqrt(0.81 + difference**2)


def census_loss(image1: Tensor, warped2: Tensor, mask: Tensor | None = None, *,
                patch_size: int = 7) -> Tensor:
    """Mean soft Hamming distance between the census descriptors of I1 and the warped I2.

    Args:
        image1: (B, 3, H, W) first images in [0, 255].
        warped2: (B, 3, H, W) second images warped to the first (:func:`warp_backward`).
        mask: optional (B, 1, H, W) pixel weights in [0, 1].
        patch_size: census patch side.

    Returns:
        The scalar loss: the per-pixel distance divided by the number of neighbours, so in
        [0, 1) per pixel; 0 for identical images.
    """
    _check_images("census_loss", image1=image1, warped2=warped2)
    difference = (census_transform(image1, patch_size=patch_size)
                  - census_transform(warped2, patch_size=patch_size))
    squared = difference**2
    distance = (squared / (0.1 + squared)).mean(dim=1, keepdim=True)
    return masked_mean(distance, mask)


def ssim_map(image1: Tensor, image2: Tensor) -> Tensor:
    """Per-pixel SSIM over 3x3 windows (reflect-padded), images scaled from [0, 255] to [0, 1].

    Args:
        image1: (B, C, H, W) in [0, 255].
        image2: (B, C, H, W) in [0, 255].

    Returns:
        (B, C, H, W) SSIM in [-1, 1]; exactly 1 where the images are identical.
    """
    _check_images("ssim_map", image1=image1, image2=image2)
    x = F.pad(image1 / 255.0, (1, 1, 1, 1), mode="reflect")
    y = F.pad(image2 / 255.0, (1, 1, 1, 1), mode="reflect")
    mean_x = F.avg_pool2d(x, 3, stride=1)
    mean_y = F.avg_pool2d(y, 3, stride=1)
    variance_x = F.avg_pool2d(x * x, 3, stride=1) - mean_x**2
    variance_y = F.avg_pool2d(y * y, 3, stride=1) - mean_y**2
    covariance = F.avg_pool2d(x * y, 3, stride=1) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_x**2 + mean_y**2 + SSIM_C1) * (variance_x + variance_y + SSIM_C2)
    return numerator / denominator


def ssim_loss(image1: Tensor, warped2: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``(1 - SSIM) / 2`` clipped to [0, 1], over the masked pixels and the channels.

    Args:
        image1: (B, C, H, W) first images in [0, 255].
        warped2: (B, C, H, W) second images warped to the first.
        mask: optional (B, 1, H, W) pixel weights in [0, 1].

    Returns:
        The scalar loss; 0 for identical images.
    """
    dissimilarity = ((1 - ssim_map(image1, warped2)) / 2).clamp(0, 1)
    return masked_mean(dissimilarity, mask)
