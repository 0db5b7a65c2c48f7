"""flow/synthetic_pairs.py: the ground-truth flow is exact, the occlusion mask means what it says."""

import dataclasses

import pytest
import torch

from flow.geometry import bilinear_sample, coordinate_grid
from flow.synthetic_pairs import (
    SyntheticPairConfig,
    generate_batch,
    generate_pair,
    seeded_generator,
)

CONFIG = SyntheticPairConfig(size=(72, 88), min_objects=3, max_objects=5)


def linear_ramps(generator, height, width):
    """Textures that are affine in x and y: bilinear interpolation reproduces them exactly, so
    any warping error left is an error of the flow, not of resampling."""
    slopes = (2 * torch.rand(3, 2, generator=generator) - 1) * 150 / max(height, width)
    rows = torch.arange(height, dtype=torch.float32)[:, None] - (height - 1) / 2
    columns = torch.arange(width, dtype=torch.float32)[None, :] - (width - 1) / 2
    return 128 + slopes[:, 0, None, None] * columns + slopes[:, 1, None, None] * rows


def warp_second_to_first(pair):
    height, width = pair.flow.shape[-2:]
    coords = coordinate_grid(1, height, width) + pair.flow[None]
    return bilinear_sample(pair.image2[None], coords.permute(0, 2, 3, 1))[0]


@pytest.mark.parametrize("seed", range(4))
def test_warping_image2_by_the_flow_reproduces_image1_where_visible(seed):
    pair = generate_pair(CONFIG.without_degradations(), seeded_generator(11, seed),
                         texture_source=linear_ramps)
    error = (warp_second_to_first(pair) - pair.image1).abs().amax(dim=0)
    visible = pair.non_occluded
    assert visible.float().mean() > 0.5
    # Float32 rounding only: a flow off by 0.01 px would already show at these slopes.
    assert error[visible].max() < 2e-3
    assert pair.flow.abs().max() > 1.0  # the layers do move


def test_the_occlusion_mask_marks_the_pixels_that_do_not_reappear():
    errors = []
    for seed in range(4):
        pair = generate_pair(CONFIG.without_degradations(), seeded_generator(12, seed),
                             texture_source=linear_ramps)
        occluded = ~pair.non_occluded
        if occluded.any():
            error = (warp_second_to_first(pair) - pair.image1).abs().amax(dim=0)
            errors.append(error[occluded].mean())
    assert errors and min(errors) > 1.0


def test_procedural_textures_warp_up_to_interpolation_error():
    pair = generate_pair(CONFIG.without_degradations(), seeded_generator(13, 0))
    error = (warp_second_to_first(pair) - pair.image1).abs().amax(dim=0)
    assert error[pair.non_occluded].mean() < 1.5  # grey levels of 255


def test_degradations_change_the_images_but_not_the_flow():
    clean = generate_pair(CONFIG.without_degradations(), seeded_generator(14, 0))
    degraded = generate_pair(dataclasses.replace(CONFIG, blur_probability=1.0),
                             seeded_generator(14, 0))
    torch.testing.assert_close(degraded.flow, clean.flow, rtol=0, atol=0)
    assert torch.equal(degraded.non_occluded, clean.non_occluded)
    assert (degraded.image1 - clean.image1).abs().mean() > 1.0
    assert torch.equal(degraded.image1, degraded.image1.round())  # quantised
    assert degraded.image1.min() >= 0 and degraded.image1.max() <= 255


def test_batches_are_determined_by_their_keys_and_use_the_texture_pool():
    first = generate_batch(CONFIG, keys=(1, 2), batch_size=2)
    again = generate_batch(CONFIG, keys=(1, 2), batch_size=2)
    other = generate_batch(CONFIG, keys=(1, 3), batch_size=2)
    assert first["image1"].shape == (2, 3, 72, 88) and first["flow"].shape == (2, 2, 72, 88)
    assert first["non_occluded"].dtype == torch.bool
    for name in first:
        assert torch.equal(first[name], again[name])
    assert not torch.equal(first["image1"], other["image1"])
    grey = [torch.full((3, 40, 50), 77, dtype=torch.uint8)]
    pooled = generate_pair(dataclasses.replace(CONFIG.without_degradations(),
                                               real_texture_fraction=1.0, min_objects=0,
                                               max_objects=0),
                           seeded_generator(15, 0), texture_pool=grey)
    torch.testing.assert_close(pooled.image1, torch.full_like(pooled.image1, 77.0))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        SyntheticPairConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="blur_probability"):
        SyntheticPairConfig(blur_probability=2.0)
