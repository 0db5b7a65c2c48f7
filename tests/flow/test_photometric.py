"""flow/photometric.py: warping, census and SSIM on tiny inputs with known answers."""

import pytest
import torch

from flow.photometric import census_loss, census_transform, ssim_loss, warp_backward


def _images(seed=0, size=(2, 3, 16, 20)):
    return 255 * torch.rand(size, generator=torch.Generator().manual_seed(seed))


def test_warping_by_a_whole_pixel_shift_reads_the_neighbour():
    image = _images()
    flow = torch.zeros(2, 2, 16, 20)
    flow[:, 0] = 1.0  # every pixel of image 1 lies one pixel to the right in image 2
    warped, inside = warp_backward(image, flow)
    # Up to float32 rounding of grid_sample's normalised coordinates.
    torch.testing.assert_close(warped[..., :-1], image[..., 1:], rtol=0, atol=1e-3)
    assert inside[..., :-1].all() and not inside[..., -1].any()


def test_census_of_a_constant_image_is_zero_and_of_a_step_is_signed():
    constant = torch.full((1, 3, 9, 9), 90.0)
    assert census_transform(constant).abs().max() == 0
    step = constant.clone()
    step[..., :, 5:] = 200.0
    descriptor = census_transform(step, patch_size=3)
    # At (4, 4) the right neighbours are 110 brighter: d / sqrt(0.81 + d^2) with d = 110.
    expected = 110 / (0.81 + 110**2) ** 0.5
    assert descriptor[0, 2, 4, 4].item() == pytest.approx(expected)  # (dy, dx) = (-1, +1)
    assert descriptor[0, 0, 4, 4].item() == 0.0  # (dy, dx) = (-1, -1): same value


def test_identical_images_have_zero_photometric_loss():
    image = _images()
    assert census_loss(image, image).item() == 0.0
    assert ssim_loss(image, image).item() == 0.0


def test_census_ignores_brightness_offsets_but_not_content():
    image = _images()
    brighter = image + 30.0
    assert census_loss(image, brighter).item() == pytest.approx(0.0, abs=1e-6)
    assert census_loss(image, _images(seed=1)).item() > 0.3
    assert ssim_loss(image, _images(seed=1)).item() > 0.2


def test_masks_select_the_pixels_that_count():
    image = _images()
    other = image.clone()
    other[..., :8, :] = 0.0
    mask = torch.zeros(2, 1, 16, 20)
    mask[..., 12:, :] = 1.0  # rows far from the changed ones (census patch radius 3)
    assert census_loss(image, other, mask).item() == 0.0
    assert ssim_loss(image, other, mask).item() == 0.0
    assert census_loss(image, other).item() > 0.1
