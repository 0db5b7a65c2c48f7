"""Synthetic image pairs with exact optical flow, for supervised training of the flow network.

A pair is a stack of layers rendered twice. The bottom layer (the background) fills the frame;
the others are textured shapes (:mod:`flow.synthetic_shapes`) drawn over it in order, so later
layers occlude earlier ones. Each layer has its own random affine motion
(:mod:`flow.synthetic_motion`) from image 1 to image 2, the background too (camera motion, zoom).
Textures are procedural or, when a pool of real images is given, crops of them
(:mod:`flow.synthetic_textures`).

Both images are rendered by inverse mapping: each pixel is mapped back to every layer's local
coordinates, tested against the layer's shape there, and the top layer containing it gives its
colour (bilinear texture lookup). So every pixel belongs to exactly one layer in each image and:

- ``flow`` (flow convention of :mod:`flow`: pixel x of image 1 lies at x + flow(x) in image 2)
  is the motion of the layer that pixel x shows in image 1, exactly, for every pixel, also where
  that point is hidden or out of frame in image 2;
- ``non_occluded`` is True where x + flow(x) lies inside image 2 and all four pixels around it
  show the same layer in image 2: there, warping image 2 by the flow reproduces image 1 up to
  bilinear interpolation of the (band-limited) texture, before the photometric degradations.

Degradations are applied after rendering and never change the flow: colour jitter (shared by
the pair, plus a small difference between the two images), Gaussian blur, Gaussian noise and
rounding to integers. :meth:`SyntheticPairConfig.without_degradations` switches them all off.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from flow.synthetic_motion import affine_matrix, apply_affine, random_motion
from flow.synthetic_shapes import Shape, random_shape
from flow.synthetic_textures import crop_texture, procedural_texture


@dataclass(frozen=True)
class SyntheticPairConfig:
    """How synthetic pairs are drawn (saved with every training checkpoint).

    Attributes:
        size: (height, width) of the images.
        min_objects: fewest moving shapes over the background.
        max_objects: most moving shapes.
        object_size_range: a shape's extent as a fraction of the shorter image side.
        max_background_translation: longest background (camera) translation, pixels.
        max_object_translation: longest object translation, pixels (relative to image 1).
        max_background_angle: largest background rotation, degrees.
        max_object_angle: largest object rotation, degrees.
        max_background_scale_change: background zoom in [1 - m, 1 + m].
        max_object_scale_change: object scale change in [1 - m, 1 + m].
        texture_cell_size_range: (min, max) coarsest cell size of procedural textures, pixels.
        real_texture_fraction: share of layers textured with crops of real images, when a pool
            of real images is given.
        colour_jitter: strength of the colour jitter in [0, 1]; 0 switches it off.
        blur_probability: chance that a pair is blurred.
        max_blur_sigma: largest Gaussian blur sigma, pixels.
        max_noise: largest Gaussian noise standard deviation, grey levels (of 255).
        quantize: round the images to integers, like decoded 8-bit frames.
    """

    size: tuple[int, int] = (192, 192)
    min_objects: int = 2
    max_objects: int = 7
    object_size_range: tuple[float, float] = (0.12, 0.6)
    max_background_translation: float = 10.0
    max_object_translation: float = 24.0
    max_background_angle: float = 3.0
    max_object_angle: float = 12.0
    max_background_scale_change: float = 0.05
    max_object_scale_change: float = 0.12
    texture_cell_size_range: tuple[float, float] = (3.0, 24.0)
    real_texture_fraction: float = 0.5
    colour_jitter: float = 1.0
    blur_probability: float = 0.3
    max_blur_sigma: float = 1.2
    max_noise: float = 3.0
    quantize: bool = True

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 8:
            raise ValueError(f"SyntheticPairConfig: size must be (height, width) >= 8, got "
                             f"{self.size}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"SyntheticPairConfig: need 0 <= min_objects <= max_objects, got "
                             f"{self.min_objects} and {self.max_objects}")
        for name in ("real_texture_fraction", "colour_jitter", "blur_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SyntheticPairConfig: {name} must be in [0, 1], got "
                                 f"{getattr(self, name)}")

    def without_degradations(self) -> SyntheticPairConfig:
        """The same scenes with no colour jitter, blur, noise or rounding."""
        return dataclasses.replace(self, colour_jitter=0.0, blur_probability=0.0, max_noise=0.0,
                                   quantize=False)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in values.items()}


@dataclass
class SyntheticPair:
    """One pair.

    Attributes:
        image1: (3, H, W) float32 RGB in [0, 255].
        image2: (3, H, W) float32 RGB in [0, 255].
        flow: (2, H, W) float32, from image 1 to image 2, in pixels; exact everywhere.
        non_occluded: (H, W) bool, see the module docstring.
    """

    image1: Tensor
    image2: Tensor
    flow: Tensor
    non_occluded: Tensor


TextureSource = Callable[[torch.Generator, int, int], Tensor]


@dataclass(frozen=True)
class Layer:
    """A textured region moving rigidly (affinely) from image 1 to image 2.

    Attributes:
        texture: (3, T_h, T_w) float32 in [0, 255]; local (0, 0) is its centre.
        shape: the region in local coordinates, or None for the whole plane (the background).
        place: (3, 3) local coordinates -> image-1 pixels.
        motion: (3, 3) image-1 pixels -> image-2 pixels.
    """

    texture: Tensor
    shape: Shape | None
    place: Tensor
    motion: Tensor


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU torch generator seeded from a tuple of integers (seed, step, item, ...)."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _texture(generator: torch.Generator, config: SyntheticPairConfig,
             pool: Sequence[Tensor] | None, height: int, width: int) -> Tensor:
    if pool and torch.rand((), generator=generator) < config.real_texture_fraction:
        return crop_texture(generator, pool, height=height, width=width)
    return procedural_texture(generator, height=height, width=width,
                              cell_size_range=config.texture_cell_size_range)


def random_layers(generator: torch.Generator, config: SyntheticPairConfig,
                  texture_pool: Sequence[Tensor] | None = None, *,
                  texture_source: TextureSource | None = None) -> list[Layer]:
    """The background and the moving shapes of one pair, bottom first.

    Args:
        generator: the random generator (CPU).
        config: the pair settings.
        texture_pool: real images (3, H_i, W_i) to crop textures from, or None.
        texture_source: ``(generator, height, width) -> (3, height, width)`` texture maker
            replacing the configured one (procedural or real crops), e.g. linear ramps, which
            bilinear interpolation reproduces exactly.

    Returns:
        The layers, the background first.
    """
    def make_texture(generator: torch.Generator, height: int, width: int) -> Tensor:
        if texture_source is not None:
            return texture_source(generator, height, width)
        return _texture(generator, config, texture_pool, height, width)

    height, width = config.size
    centre = ((width - 1) / 2, (height - 1) / 2)
    # The background texture covers both frames under any rotation, zoom and motion drawn
    # here; lookups beyond it would reflect (still an exact flow, the texture just mirrored).
    zoom = _uniform(generator, 0.8, 1.25)
    shrink = max(0.5, 1.0 - 1.6 * config.max_background_scale_change)
    reach = math.hypot(height, width) + 2 * config.max_background_translation
    side = math.ceil(reach / (zoom * shrink)) + 8
    background = Layer(
        texture=make_texture(generator, side, side),
        shape=None,
        place=affine_matrix(angle=_uniform(generator, -math.pi, math.pi), scale=(zoom, zoom),
                            translation=centre),
        motion=random_motion(generator, centre=centre,
                             max_translation=config.max_background_translation,
                             max_angle_degrees=config.max_background_angle,
                             max_scale_change=config.max_background_scale_change),
    )
    layers = [background]
    count = int(torch.randint(config.min_objects, config.max_objects + 1, (),
                              generator=generator))
    shorter = min(height, width)
    for _ in range(count):
        size = shorter * _uniform(generator, *config.object_size_range)
        shape = random_shape(generator, size=size)
        extent = 2 * math.ceil(shape.radius) + 4
        position = (_uniform(generator, -0.1, 1.1) * (width - 1),
                    _uniform(generator, -0.1, 1.1) * (height - 1))
        layers.append(Layer(
            texture=make_texture(generator, extent, extent),
            shape=shape,
            place=affine_matrix(angle=_uniform(generator, -math.pi, math.pi),
                                translation=position),
            motion=random_motion(generator, centre=position,
                                 max_translation=config.max_object_translation,
                                 max_angle_degrees=config.max_object_angle,
                                 max_scale_change=config.max_object_scale_change),
        ))
    return layers


def _pixel_grid(height: int, width: int) -> Tensor:
    """(H, W, 2) float64 pixel coordinates (x, y)."""
    rows = torch.arange(height, dtype=torch.float64)
    columns = torch.arange(width, dtype=torch.float64)
    y, x = torch.meshgrid(rows, columns, indexing="ij")
    return torch.stack((x, y), dim=-1)


def _lookup(texture: Tensor, local: Tensor, *, reflect: bool) -> Tensor:
    """Bilinear lookup of ``texture`` (3, T_h, T_w) at local coordinates (H, W, 2) -> (3, H, W)."""
    texture_height, texture_width = texture.shape[-2:]
    x = local[..., 0] / ((texture_width - 1) / 2)
    y = local[..., 1] / ((texture_height - 1) / 2)
    grid = torch.stack((x, y), dim=-1).to(torch.float32)[None]
    return F.grid_sample(texture[None], grid, mode="bilinear", align_corners=True,
                         padding_mode="reflection" if reflect else "border")[0]


def render(layers: Sequence[Layer], size: tuple[int, int], *, second: bool) -> tuple[Tensor, Tensor]:
    """Render image 1 (or image 2) of a stack of layers.

    Args:
        layers: the layers, bottom first; the first must have no shape (it fills the frame).
        size: (height, width).
        second: render image 2 (each layer moved by its motion) instead of image 1.

    Returns:
        ``(image, layer_index)``: (3, H, W) float32 RGB in [0, 255], and (H, W) int64, the
        index of the layer each pixel shows.

    Raises:
        ValueError: the bottom layer has a shape.
    """
    if not layers or layers[0].shape is not None:
        raise ValueError("render: the bottom layer must be a background (shape None)")
    height, width = size
    pixels = _pixel_grid(height, width)
    image = torch.zeros(3, height, width)
    index = torch.zeros(height, width, dtype=torch.int64)
    for number, layer in enumerate(layers):
        to_image = layer.motion @ layer.place if second else layer.place
        if layer.shape is None:
            local = apply_affine(torch.linalg.inv(to_image), pixels)
            image = _lookup(layer.texture, local, reflect=True)
            index = torch.full_like(index, number)
            continue
        # Only the shape's bounding box in the image can change: map the corners of a square
        # enclosing it, and work on the pixels between them.
        radius = layer.shape.radius
        corners = torch.tensor([[-radius, -radius], [radius, -radius], [-radius, radius],
                                [radius, radius]], dtype=torch.float64)
        mapped = apply_affine(to_image, corners)
        left, top = (max(0, math.floor(value)) for value in mapped.amin(dim=0).tolist())
        right = min(width, math.ceil(mapped[:, 0].max().item()) + 1)
        bottom = min(height, math.ceil(mapped[:, 1].max().item()) + 1)
        if left >= right or top >= bottom:
            continue
        window = (slice(top, bottom), slice(left, right))
        local = apply_affine(torch.linalg.inv(to_image), pixels[window])
        inside = layer.shape.contains(local)
        colour = _lookup(layer.texture, local, reflect=False)
        image[(slice(None), *window)] = torch.where(inside, colour, image[(slice(None), *window)])
        index[window] = torch.where(inside, number, index[window])
    return image, index


def layer_flow(layers: Sequence[Layer], layer_index: Tensor) -> Tensor:
    """The exact flow of image 1: each pixel moves with the layer it shows.

    Args:
        layers: the layers, bottom first.
        layer_index: (H, W) int64, the layer each pixel of image 1 shows.

    Returns:
        Flow of shape (2, H, W), float32, image 1 -> image 2, in pixels.
    """
    height, width = layer_index.shape
    pixels = _pixel_grid(height, width)
    flow = torch.zeros(height, width, 2, dtype=torch.float64)
    for number, layer in enumerate(layers):
        here = layer_index == number
        flow[here] = apply_affine(layer.motion, pixels[here]) - pixels[here]
    return flow.permute(2, 0, 1).to(torch.float32)


def visible_in_second(flow: Tensor, index1: Tensor, index2: Tensor) -> Tensor:
    """Pixels of image 1 whose point is visible in image 2 (the non-occluded mask).

    Args:
        flow: (2, H, W) flow from image 1 to image 2.
        index1: (H, W) layer shown by each pixel of image 1.
        index2: (H, W) layer shown by each pixel of image 2.

    Returns:
        (H, W) bool: x + flow(x) inside image 2, and its four neighbouring pixels there all
        show the same layer as x does in image 1.
    """
    height, width = index1.shape
    pixels = _pixel_grid(height, width).permute(2, 0, 1)
    target = pixels + flow.to(torch.float64)
    x, y = target[0], target[1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    x, y = x.clamp(0, width - 1), y.clamp(0, height - 1)
    visible = inside.clone()
    for column in (x.floor(), x.ceil()):
        for row in (y.floor(), y.ceil()):
            visible &= index2[row.long(), column.long()] == index1
    return visible


def _gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Blur a (3, H, W) image with a separable Gaussian, replicating its borders."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(image[:, None], (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))[:, 0]


def degrade(generator: torch.Generator, config: SyntheticPairConfig, image1: Tensor,
            image2: Tensor) -> tuple[Tensor, Tensor]:
    """Colour jitter, blur, noise and rounding, as configured; the flow is unchanged.

    Args:
        generator: the random generator (CPU).
        config: the pair settings.
        image1: (3, H, W) float32 in [0, 255].
        image2: (3, H, W) float32 in [0, 255].

    Returns:
        The degraded images, same shapes, in [0, 255].
    """
    strength = config.colour_jitter
    values = torch.rand(12, generator=generator).tolist()
    gains = 1.0 + strength * 0.2 * (2 * torch.rand(3, 1, 1, generator=generator) - 1)
    brightness = 1.0 + strength * 0.25 * (2 * values[0] - 1)
    offset = strength * 20.0 * (2 * values[1] - 1)
    gamma = math.exp(strength * 0.25 * (2 * values[2] - 1))
    blur = config.blur_probability > 0 and values[3] < config.blur_probability
    degraded = []
    for number, image in enumerate((image1, image2)):
        # Image 2 differs a little from image 1 (illumination changes between frames).
        own_gain = 1.0 + strength * 0.04 * (2 * values[4 + number] - 1)
        own_offset = strength * 4.0 * (2 * values[6 + number] - 1)
        if strength > 0:
            image = 255.0 * (image / 255.0).clamp(0, 1) ** gamma
            image = image * gains * brightness * own_gain + offset + own_offset
        if blur:
            image = _gaussian_blur(image, 0.3 + (config.max_blur_sigma - 0.3) * values[8 + number])
        if config.max_noise > 0:
            sigma = config.max_noise * values[10 + number]
            image = image + sigma * torch.randn(image.shape, generator=generator)
        image = image.clamp(0, 255)
        degraded.append(image.round() if config.quantize else image)
    return degraded[0], degraded[1]


def generate_pair(config: SyntheticPairConfig, generator: torch.Generator,
                  texture_pool: Sequence[Tensor] | None = None, *,
                  texture_source: TextureSource | None = None) -> SyntheticPair:
    """Draw one synthetic pair with its exact flow.

    Args:
        config: the pair settings.
        generator: the random generator (CPU); it fixes the pair exactly.
        texture_pool: real images (3, H_i, W_i) in [0, 255] to crop textures from, or None
            for procedural textures only.
        texture_source: an optional texture maker, see :func:`random_layers`.

    Returns:
        A :class:`SyntheticPair`.
    """
    layers = random_layers(generator, config, texture_pool, texture_source=texture_source)
    image1, index1 = render(layers, config.size, second=False)
    image2, index2 = render(layers, config.size, second=True)
    flow = layer_flow(layers, index1)
    non_occluded = visible_in_second(flow, index1, index2)
    image1, image2 = degrade(generator, config, image1, image2)
    return SyntheticPair(image1=image1, image2=image2, flow=flow, non_occluded=non_occluded)


def generate_batch(config: SyntheticPairConfig, *, keys: Sequence[int], batch_size: int,
                   texture_pool: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
    """A batch of pairs, item ``i`` drawn from :func:`seeded_generator` ``(*keys, i)``.

    The same keys always give the same batch, which makes training runs reproducible and
    resumable (keys are typically (seed, step)).

    Returns:
        ``{"image1": (B, 3, H, W), "image2": (B, 3, H, W), "flow": (B, 2, H, W),
        "non_occluded": (B, H, W) bool}``.
    """
    pairs = [generate_pair(config, seeded_generator(*keys, item), texture_pool)
             for item in range(batch_size)]
    return {name: torch.stack([getattr(pair, name) for pair in pairs])
            for name in ("image1", "image2", "flow", "non_occluded")}
