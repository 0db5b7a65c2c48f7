"""Segmentation losses on CDnet-2014 labels: size-balanced focal/BCE plus soft Dice.

Labels follow the CDnet-2014 rules of :mod:`crossnet.metrics`, so the loss trains on exactly the
pixels the benchmark scores: 255 is foreground; 0 and 50 (shadow) are background; 85 (outside
ROI) and 170 (unknown) are not scored; any other value is foreground when ``>= 128``. An
optional ROI (bool, True = scored) removes more pixels. Unscored pixels get weight 0 in every
term, so neither the loss nor its gradient depends on the logits there.

The pixel term is weighted by :func:`size_balanced_weights`: every foreground instance (8-connected
component of the scored foreground, :func:`instance_map`) of an image gets the same total weight,
so a distant pedestrian of 30 pixels counts as much as a bus of 30 000 in the same frame.
Background pixels weigh 1. The formula is in :func:`size_balanced_weights`.

Every function computes in float32 whatever the dtype of the logits (bf16/fp16 under autocast),
and returns a float32 scalar connected to the logits.

Example::

    loss_fn = SegmentationLoss(LossConfig(focal_gamma=2.0, dice_weight=0.5))
    total, parts = loss_fn(foreground_logits, labels, roi=roi)  # parts: {"pixel", "dice", ...}
    total.backward()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossnet.metrics import FOREGROUND_THRESHOLD, OUTSIDE_ROI, UNKNOWN


def _check_bhw(name: str, tensor: torch.Tensor, where: str) -> None:
    if tensor.ndim != 3:
        raise ValueError(
            f"crossnet/losses.py {where}: {name} must have shape (B, H, W), got "
            f"{tuple(tensor.shape)}"
        )


def _check_same_shape(where: str, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"crossnet/losses.py {where}: shapes must match, got {shapes}")


def _logits_bhw(logits: torch.Tensor, where: str) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) logits as float32 (B, H, W)."""
    if logits.ndim == 4 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim != 3:
        raise ValueError(
            f"crossnet/losses.py {where}: logits must have shape (B, 1, H, W) or (B, H, W), got "
            f"{tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(
            f"crossnet/losses.py {where}: logits must be floating point, got {logits.dtype}"
        )
    # Autocast hands bf16/fp16 logits over; the exp/log of the losses run in float32.
    return logits.float()


def _zero_like_graph(logits: torch.Tensor) -> torch.Tensor:
    """A float32 zero scalar whose graph reaches ``logits``, with an exactly-zero gradient.

    Summing an empty slice gives 0 without multiplying anything by 0, so even inf logits cannot
    turn it into NaN; under DistributedDataParallel every parameter still receives a (zero)
    gradient, so a rank whose batch has nothing to score does not stall the all-reduce.
    """
    return logits.reshape(-1)[:0].float().sum()


def targets_from_labels(
    labels: torch.Tensor, roi: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary targets and the scored-pixel mask from CDnet-2014 labels.

    Args:
        labels: CDnet labels with shape (B, H, W), uint8 (see the module docstring).
        roi: region of interest with shape (B, H, W) or (H, W) (the same for every image), bool,
            True = scored; None scores every pixel that the labels do not exclude.

    Returns:
        ``(target, valid)``: ``target`` float32 with shape (B, H, W), 1.0 on scored foreground
        (``labels >= 128``, except 170) and 0.0 elsewhere, unscored pixels included; ``valid``
        bool with shape (B, H, W), False where the label is 85 or 170 or the ROI is False.

    Raises:
        ValueError: a shape or dtype is not the one listed above.
    """
    _check_bhw("labels", labels, "targets_from_labels")
    if labels.dtype != torch.uint8:
        raise ValueError(
            f"crossnet/losses.py targets_from_labels: labels dtype must be torch.uint8 (CDnet "
            f"labels), got {labels.dtype}"
        )
    valid = (labels != OUTSIDE_ROI) & (labels != UNKNOWN)
    if roi is not None:
        if roi.dtype != torch.bool:
            raise ValueError(
                f"crossnet/losses.py targets_from_labels: roi dtype must be torch.bool "
                f"(True = scored), got {roi.dtype}; convert a ROI.bmp image with `roi > 0`"
            )
        if roi.shape != labels.shape and roi.shape != labels.shape[1:]:
            raise ValueError(
                f"crossnet/losses.py targets_from_labels: roi shape {tuple(roi.shape)} must be "
                f"(B, H, W) or (H, W) with labels shape {tuple(labels.shape)}"
            )
        valid = valid & roi.to(labels.device)
    target = ((labels >= FOREGROUND_THRESHOLD) & valid).float()
    return target, valid


def _max_3x3(labels: torch.Tensor) -> torch.Tensor:
    """Maximum over each pixel's 3x3 neighbourhood (8-connectivity), zero padded; (B, H, W)."""
    padded = F.pad(labels, (1, 1, 1, 1))
    # Separable: a 3x1 maximum then a 1x3 one. Integer maxima, so the ids stay exact at any size.
    rows = torch.maximum(torch.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return torch.maximum(torch.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


@torch.no_grad()
def instance_map(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Connected components (8-connectivity) of the scored foreground, on the tensors' device.

    Algorithm: every foreground pixel starts with a unique id, ``H * W - raster_index`` (so the
    largest id of a component belongs to its first pixel in raster order). Each iteration
    replaces every foreground pixel's label by the maximum over its 3x3 neighbourhood within the
    foreground, then jumps pointers: a pixel whose label is the id of pixel q takes q's label if
    larger (q lies in the same component and its label is never below its id). Labels only
    grow and never exceed their component's largest id, and after k iterations they are at
    least the maximum over the geodesic k-neighbourhood, so the labels converge in at most
    ``D + 1`` iterations, D the largest geodesic eccentricity of a component (at most
    ``H * W - 1``; the loop's hard bound is ``H * W + 1``); pointer jumping makes long thin
    components converge in far fewer. Each component is then numbered 1..N in the raster order
    of its first pixel.

    Args:
        target: binary target with shape (B, H, W); foreground is ``target > 0.5``.
        valid: scored pixels with shape (B, H, W), bool; unscored foreground is not foreground,
            so an unscored line can split an object in two.

    Returns:
        int64 with shape (B, H, W): 0 on background and unscored pixels, 1..N on the N
        components of each image, numbered per image.

    Raises:
        ValueError: the shapes are not (B, H, W) or differ.
    """
    _check_bhw("target", target, "instance_map")
    _check_same_shape("instance_map", target=target, valid=valid)
    batch, height, width = target.shape
    num_pixels = height * width
    foreground = ((target > 0.5) & valid.to(target.device)).reshape(batch, num_pixels)
    ids = num_pixels - torch.arange(num_pixels, device=target.device, dtype=torch.int64)
    labels = torch.where(foreground, ids, 0)
    gather_index_max = max(num_pixels - 1, 0)
    for _ in range(num_pixels + 1):
        grown = _max_3x3(labels.reshape(batch, height, width)).reshape(batch, num_pixels)
        grown = torch.where(foreground, grown, 0)
        # Label v is the id of raster index num_pixels - v; background (0) gathers garbage from
        # the clamp and is masked out below.
        pointed = grown.gather(1, (num_pixels - grown).clamp(max=gather_index_max))
        updated = torch.where(foreground, torch.maximum(grown, pointed), 0)
        if torch.equal(updated, labels):
            break
        labels = updated
    else:
        raise RuntimeError(
            f"crossnet/losses.py instance_map: labels did not converge in {num_pixels + 1} "
            f"iterations on a {height}x{width} image, which the monotone bound rules out"
        )

    # Number components per image in raster order of their first pixel: a global sort key
    # b * HW + first_index, ranked, minus the rank of the image's first component.
    batch_index = torch.arange(batch, device=target.device, dtype=torch.int64)[:, None]
    keys = batch_index * num_pixels + (num_pixels - labels)
    instances = torch.zeros_like(labels)
    foreground_keys = keys[foreground]
    unique_keys, ranks = torch.unique(foreground_keys, sorted=True, return_inverse=True)
    first_rank = torch.searchsorted(unique_keys, batch_index[:, 0] * num_pixels)
    image_of_pixel = batch_index.expand(batch, num_pixels)[foreground]
    instances[foreground] = ranks - first_rank[image_of_pixel] + 1
    return instances.reshape(batch, height, width)


@torch.no_grad()
def size_balanced_weights(
    target: torch.Tensor, valid: torch.Tensor, *, max_weight: float = 50.0
) -> torch.Tensor:
    """Per-pixel weights that give every foreground instance of an image the same total weight.

    For one image with F scored foreground pixels in N instances (:func:`instance_map`),
    instance i of area ``a_i`` pixels::

        w(p) = min(max_weight, (F / N) / a_i)   p in instance i
        w(p) = 1                                p scored background
        w(p) = 0                                p unscored (label 85 or 170, or outside the ROI)

    Before clipping, each instance weighs ``F / N`` in total and the foreground ``F``, as much
    as with unit weights, so the balance between foreground and background is unchanged and only
    its split among instances moves: a 2x2 object next to a 20x20 one weighs (4 + 400) / 2 = 202
    each. Clipping caps a tiny instance (a 1-pixel speck of label noise beside a large object
    would otherwise weigh as much as the object); clipped weight is NOT renormalised, so such an
    image's foreground total drops below F. An image without scored foreground has weight 1 on
    every scored pixel.

    Args:
        target: binary target with shape (B, H, W); foreground is ``target > 0.5``.
        valid: scored pixels with shape (B, H, W), bool.
        max_weight: per-pixel cap, ``>= 1`` so that background keeps weight 1; ``math.inf``
            disables clipping.

    Returns:
        float32 weights with shape (B, H, W), without gradient.

    Raises:
        ValueError: the shapes are not (B, H, W) or differ, or ``max_weight < 1``.
    """
    if not max_weight >= 1.0:
        raise ValueError(
            f"crossnet/losses.py size_balanced_weights: max_weight must be >= 1 (background "
            f"weighs 1), got {max_weight}"
        )
    instances = instance_map(target, valid)
    batch = instances.shape[0]
    valid = valid.to(instances.device)
    num_instances = instances.reshape(batch, -1).amax(dim=1)
    slots = int(num_instances.max()) + 1 if instances.numel() else 1
    slot_index = (
        torch.arange(batch, device=instances.device)[:, None, None] * slots + instances
    ).reshape(-1)
    areas = torch.bincount(slot_index, minlength=batch * slots).reshape(batch, slots).float()
    foreground_area = areas[:, 1:].sum(dim=1)
    share = foreground_area / num_instances.clamp(min=1).float()
    # Slots past an image's N have area 0; clamping keeps them finite, and no pixel reads them.
    table = share[:, None] / areas.clamp(min=1.0)
    table[:, 0] = 1.0
    weights = table.gather(1, instances.reshape(batch, -1)).reshape(instances.shape)
    weights = torch.where(valid, weights.clamp(max=max_weight), 0.0)
    return weights


def _check_pixel_inputs(
    where: str, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    logits = _logits_bhw(logits, where)
    _check_same_shape(where, logits=logits, target=target, weights=weights)
    return logits


def _weighted_mean(per_pixel: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w * per_pixel) / sum(w)`` over the batch; zero (graph kept) when ``sum(w) == 0``."""
    weights = weights.float()
    # where, not a product: a weight-0 pixel with an infinite loss would give 0 * inf = NaN.
    weighted = torch.where(weights > 0, weights * per_pixel, 0.0)
    total_weight = weights.sum()
    # No host sync to test for an empty batch: with every weight 0 the numerator is an exact 0
    # that is still connected to the logits, and dividing it by 1 keeps it so.
    return weighted.sum() / torch.where(total_weight > 0, total_weight, 1.0)


def weighted_bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted binary cross-entropy, normalised by the sum of the weights.

    ``sum_p w_p * BCE(x_p, y_p) / sum_p w_p`` over every pixel of the batch, with
    ``BCE(x, y) = -y log sigmoid(x) - (1 - y) log sigmoid(-x)`` computed stably from logits.

    Args:
        logits: foreground logits with shape (B, 1, H, W) or (B, H, W), any float dtype.
        target: targets in [0, 1] with shape (B, H, W).
        weights: non-negative per-pixel weights with shape (B, H, W); 0 leaves a pixel out.

    Returns:
        float32 scalar; 0 (still connected to ``logits``) when every weight is 0.

    Raises:
        ValueError: shapes do not match.
    """
    logits = _check_pixel_inputs("weighted_bce_with_logits", logits, target, weights)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    return _weighted_mean(per_pixel, weights)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """Weighted focal loss (Lin et al., ICCV 2017), normalised by the sum of the weights.

    ``sum_p w_p * a_p * (1 - p_t)^gamma * BCE(x_p, y_p) / sum_p w_p``, where ``p_t`` is the
    predicted probability of the true class (``sigmoid(x)`` for ``y = 1``, ``sigmoid(-x)`` for
    ``y = 0``) and ``a_p = alpha`` on foreground, ``1 - alpha`` on background (1 when alpha is
    None). ``(1 - p_t)^gamma`` is ``exp(gamma * logsigmoid(-z))`` with ``z = x (2y - 1)``, stable
    for large logits; gamma 0 gives :func:`weighted_bce_with_logits` exactly.

    Args:
        logits: foreground logits with shape (B, 1, H, W) or (B, H, W), any float dtype.
        target: binary targets in {0, 1} with shape (B, H, W).
        weights: non-negative per-pixel weights with shape (B, H, W); 0 leaves a pixel out.
        gamma: focusing exponent, ``>= 0``; larger values down-weight easy pixels more.
        alpha: foreground class weight in [0, 1], or None for no class weighting.

    Returns:
        float32 scalar; 0 (still connected to ``logits``) when every weight is 0.

    Raises:
        ValueError: shapes do not match, ``gamma < 0`` or ``alpha`` outside [0, 1].
    """
    if not gamma >= 0:
        raise ValueError(f"crossnet/losses.py focal_loss: gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"crossnet/losses.py focal_loss: alpha must be in [0, 1], got {alpha}")
    logits = _check_pixel_inputs("focal_loss", logits, target, weights)
    target = target.float()
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if gamma > 0:
        signed = logits * (2.0 * target - 1.0)
        per_pixel = torch.exp(gamma * F.logsigmoid(-signed)) * per_pixel
    if alpha is not None:
        per_pixel = (alpha * target + (1.0 - alpha) * (1.0 - target)) * per_pixel
    return _weighted_mean(per_pixel, weights)


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, *, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss over the scored pixels, per image, then the mean over images.

    For image b with probabilities ``p = sigmoid(x)`` over its scored pixels::

        dice_b = (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)
        loss = mean over images with at least one scored pixel of (1 - dice_b)

    An image whose scored pixels have no foreground has ``1 - dice_b = sum(p) / (sum(p) +
    smooth)``: 0 when it predicts no foreground, approaching 1 as it predicts more. Images
    without a scored pixel are left out of the mean; with none at all the loss is 0 (still
    connected to ``logits``).

    Args:
        logits: foreground logits with shape (B, 1, H, W) or (B, H, W), any float dtype.
        target: targets in [0, 1] with shape (B, H, W).
        valid: scored pixels with shape (B, H, W), bool.
        smooth: additive smoothing, ``> 0``, which keeps empty images defined.

    Returns:
        float32 scalar in [0, 1).

    Raises:
        ValueError: shapes do not match or ``smooth <= 0``.
    """
    if not smooth > 0:
        raise ValueError(f"crossnet/losses.py soft_dice_loss: smooth must be > 0, got {smooth}")
    logits = _logits_bhw(logits, "soft_dice_loss")
    _check_same_shape("soft_dice_loss", logits=logits, target=target, valid=valid)
    valid = valid.to(logits.device)
    probabilities = torch.where(valid, torch.sigmoid(logits), 0.0)
    target = torch.where(valid, target.float(), 0.0)
    intersection = (probabilities * target).sum(dim=(1, 2))
    denominator = probabilities.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + smooth
    per_image = 1.0 - (2.0 * intersection + smooth) / denominator
    scored_images = valid.flatten(1).any(dim=1)
    num_scored = scored_images.sum().clamp(min=1)
    return torch.where(scored_images, per_image, 0.0).sum() / num_scored


@dataclass(frozen=True)
class LossConfig:
    """Settings of :class:`SegmentationLoss`, saved with every checkpoint.

    Attributes:
        size_balanced: weight the pixel term by :func:`size_balanced_weights`; False weighs every
            scored pixel 1.
        focal_gamma: focal exponent of the pixel term; 0 is plain (weighted) BCE.
        dice_weight: factor on the soft Dice term; 0 turns it off.
        max_weight: per-pixel cap of the size-balanced weights, ``>= 1``.

    Raises:
        TypeError: ``size_balanced`` is not a bool.
        ValueError: a number is out of its range (NaN included).
    """

    size_balanced: bool = True
    focal_gamma: float = 2.0
    dice_weight: float = 0.5
    max_weight: float = 50.0

    def __post_init__(self) -> None:
        if not isinstance(self.size_balanced, bool):
            raise TypeError(
                f"crossnet/losses.py LossConfig: size_balanced must be a bool, got "
                f"{self.size_balanced!r}"
            )
        checks = {
            "focal_gamma": (self.focal_gamma, self.focal_gamma >= 0, ">= 0"),
            "dice_weight": (self.dice_weight, self.dice_weight >= 0, ">= 0"),
            "max_weight": (self.max_weight, self.max_weight >= 1, ">= 1"),
        }
        # Written as "not (value >= bound)" so that NaN fails too.
        for name, (value, ok, rule) in checks.items():
            if not ok:
                raise ValueError(
                    f"crossnet/losses.py LossConfig: {name} must be {rule}, got {value}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (JSON- and ``torch.save``-friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LossConfig:
        """Settings from :meth:`to_dict` output; missing keys take their defaults.

        Raises:
            ValueError: an unknown key, or a value :class:`LossConfig` rejects.
            TypeError: ``size_balanced`` is not a bool.
        """
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"crossnet/losses.py LossConfig.from_dict: unknown keys {unknown}; known keys "
                f"are {sorted(known)}"
            )
        return cls(**dict(values))


class SegmentationLoss(nn.Module):
    """Pixel term (size-balanced focal or BCE) plus ``dice_weight`` times soft Dice.

    ``total = pixel + dice_weight * dice`` where ``pixel`` is :func:`focal_loss` (or
    :func:`weighted_bce_with_logits` when ``focal_gamma == 0``) weighted by
    :func:`size_balanced_weights` (or by the scored-pixel mask when ``size_balanced`` is False),
    and ``dice`` is :func:`soft_dice_loss`.

    Args:
        config: the settings; None takes :class:`LossConfig`'s defaults.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LossConfig()

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        roi: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch.

        Args:
            logits: foreground logits with shape (B, 1, H, W), any float dtype.
            labels: CDnet labels with shape (B, H, W), uint8.
            roi: bool with shape (B, H, W) or (H, W), True = scored; None scores every pixel.

        Returns:
            ``(total, parts)``: ``total`` a float32 scalar to back-propagate; ``parts`` floats
            for logging: ``"total"``, ``"pixel"``, ``"dice"`` and ``"valid_fraction"`` (share of
            the batch's pixels that are scored). A batch without a scored pixel gives a zero
            total that is still connected to ``logits`` (so DistributedDataParallel's gradient
            all-reduce runs on every rank) and all-zero parts.

        Raises:
            ValueError: the shapes or dtypes do not match those listed above.
        """
        if logits.ndim != 4 or logits.shape[1] != 1:
            raise ValueError(
                f"crossnet/losses.py SegmentationLoss: logits must have shape (B, 1, H, W), got "
                f"{tuple(logits.shape)}"
            )
        if labels.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"crossnet/losses.py SegmentationLoss: labels shape {tuple(labels.shape)} must "
                f"be (B, H, W) of logits shape {tuple(logits.shape)}"
            )
        config = self.config
        target, valid = targets_from_labels(labels.to(logits.device), roi)
        if not bool(valid.any()):
            zero = _zero_like_graph(logits)
            return zero, {"total": 0.0, "pixel": 0.0, "dice": 0.0, "valid_fraction": 0.0}

        if config.size_balanced:
            weights = size_balanced_weights(target, valid, max_weight=config.max_weight)
        else:
            weights = valid.float()
        if config.focal_gamma > 0:
            pixel = focal_loss(logits, target, weights, gamma=config.focal_gamma)
        else:
            pixel = weighted_bce_with_logits(logits, target, weights)
        total = pixel
        dice = torch.zeros((), device=logits.device)
        if config.dice_weight > 0:
            dice = soft_dice_loss(logits, target, valid)
            total = pixel + config.dice_weight * dice
        # One device-to-host copy for all the logged numbers.
        logged = torch.stack(
            [total.detach(), pixel.detach(), dice.detach(), valid.float().mean()]
        ).tolist()
        return total, dict(zip(("total", "pixel", "dice", "valid_fraction"), logged))
