"""flow/synthetic_textures.py, synthetic_shapes.py, synthetic_motion.py: the parts of a pair."""

import math

import pytest
import torch

from flow.synthetic_motion import about, affine_matrix, apply_affine, random_motion
from flow.synthetic_shapes import Shape, random_shape
from flow.synthetic_textures import crop_texture, procedural_texture, value_noise


def test_value_noise_spans_zero_to_one_and_is_smooth():
    noise = value_noise(torch.Generator().manual_seed(0), channels=2, height=40, width=50,
                        cell_size=8)
    assert noise.shape == (2, 40, 50)
    assert noise.amin() == 0 and noise.amax() == pytest.approx(1.0)
    assert (noise[:, :, 1:] - noise[:, :, :-1]).abs().mean() < 0.1
    with pytest.raises(ValueError, match="positive"):
        value_noise(torch.Generator(), channels=1, height=0, width=5, cell_size=4)


def test_textures_are_rgb_in_range_and_seeded():
    first = procedural_texture(torch.Generator().manual_seed(3), height=30, width=20)
    again = procedural_texture(torch.Generator().manual_seed(3), height=30, width=20)
    assert first.shape == (3, 30, 20) and torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 255 and first.std() > 1
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).reshape(3, 20, 30) % 256
    crop = crop_texture(torch.Generator().manual_seed(0), [image], height=64, width=48)
    assert crop.shape == (3, 64, 48) and crop.min() >= 0 and crop.max() <= 255
    with pytest.raises(ValueError, match="empty"):
        crop_texture(torch.Generator(), [], height=4, width=4)


def test_shapes_contain_their_centre_and_not_far_points():
    ellipse = Shape(semi_axes=(10.0, 5.0))
    points = torch.tensor([[0.0, 0.0], [9.9, 0.0], [0.0, 5.1], [10.1, 0.0]])
    assert ellipse.contains(points).tolist() == [True, True, False, False]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        shape = random_shape(generator, size=30)
        outside = torch.tensor([[shape.radius + 0.5, 0.0], [0.0, -shape.radius - 0.5]])
        assert shape.contains(torch.zeros(1, 2)).item()
        assert not shape.contains(outside).any()


def test_affine_motion_about_a_centre_keeps_the_centre_but_translates_it():
    rotation = affine_matrix(angle=math.pi / 2)
    centred = about(rotation, (10.0, 20.0))
    centre = torch.tensor([[10.0, 20.0]], dtype=torch.float64)
    torch.testing.assert_close(apply_affine(centred, centre), centre)
    torch.testing.assert_close(apply_affine(centred, torch.tensor([[11.0, 20.0]],
                                                                  dtype=torch.float64)),
                               torch.tensor([[10.0, 21.0]], dtype=torch.float64))
    motion = random_motion(torch.Generator().manual_seed(1), centre=(5.0, 5.0),
                           max_translation=3.0, max_angle_degrees=0.0, max_scale_change=0.0)
    moved = apply_affine(motion, torch.tensor([[5.0, 5.0]], dtype=torch.float64)) - 5.0
    assert 0 < moved.norm() <= 3.0
