"""Batch augmentation: flips negate u, zooms scale flow, jitter spares flow and labels."""

import numpy as np
import pytest
import torch

from crossnet.augment import AugmentConfig, augment_batch, colour_transform

OFF = {"flip_probability": 0.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
       "hue": 0.0, "noise_std": 0.0}
LABEL_SET = (0, 50, 170, 255)


def make_batch(batch_size=3, strides=2, height=24, width=32, seed=0, device="cpu"):
    """Random frames/backgrounds; flow u = column + 10 s, v = row; labels in LABEL_SET blocks."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    hop = np.stack([np.stack([columns + 10 * s, rows]) for s in range(strides)])
    blocks = rng.choice(np.array(LABEL_SET, np.uint8), size=(batch_size, height // 4, width // 4))
    batch = {
        "frame": torch.from_numpy(rng.integers(0, 256, (batch_size, 3, height, width),
                                               dtype=np.uint8)),
        "background": torch.from_numpy(rng.integers(0, 256, (batch_size, 3, height, width),
                                                    dtype=np.uint8)),
        "hop": torch.from_numpy(np.repeat(hop[None], batch_size, axis=0)),
        "labels": torch.from_numpy(blocks.repeat(4, axis=1).repeat(4, axis=2)),
        "scene": ["a", "b", "c"][:batch_size],
        "index": torch.arange(batch_size),
    }
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}


def generator(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def test_nothing_enabled_is_the_identity():
    batch = make_batch()
    out = augment_batch(batch, AugmentConfig(**OFF), generator())
    for key in ("frame", "background", "hop", "labels", "index"):
        torch.testing.assert_close(out[key], batch[key], rtol=0, atol=0)
    assert out["scene"] == batch["scene"]


def test_flip_mirrors_everything_and_negates_u():
    batch = make_batch(width=32)
    out = augment_batch(batch, AugmentConfig(**{**OFF, "flip_probability": 1.0}), generator())
    hop = out["hop"]
    columns = torch.arange(32, dtype=torch.float32)
    for s in range(2):
        # The pixel now in column j came from column 31 - j, whose u was (31 - j) + 10 s.
        torch.testing.assert_close(hop[:, s, 0], -(31 - columns + 10 * s).expand(3, 24, 32))
        torch.testing.assert_close(hop[:, s, 1], batch["hop"][:, s, 1])  # v: rows, unchanged
    for key in ("frame", "background", "labels"):
        torch.testing.assert_close(out[key], batch[key].flip(-1), rtol=0, atol=0)


def test_flip_is_per_sample():
    batch = make_batch(batch_size=3)
    out = augment_batch(batch, AugmentConfig(**{**OFF, "flip_probability": 0.5}), generator(4))
    flipped = [torch.equal(out["labels"][i], batch["labels"][i].flip(-1))
               and not torch.equal(out["labels"][i], batch["labels"][i]) for i in range(3)]
    kept = [torch.equal(out["labels"][i], batch["labels"][i]) for i in range(3)]
    assert all(f or k for f, k in zip(flipped, kept))
    for i in range(3):
        expected_u = -batch["hop"][i, :, 0].flip(-1) if flipped[i] else batch["hop"][i, :, 0]
        torch.testing.assert_close(out["hop"][i, :, 0], expected_u)


def test_zoom_in_scales_flow_values_and_keeps_geometry():
    batch = make_batch()
    config = AugmentConfig(**{**OFF, "scale_range": (2.0, 2.0)})
    out = augment_batch(batch, config, generator(1))
    hop = out["hop"]
    # u = s * (input column), and adjacent output columns are 1/s input columns apart:
    # differences of exactly 1 (interior columns; the outermost may blend in padding).
    interior = hop[..., 1:-1, 1:-1]
    torch.testing.assert_close(interior[:, :, 0].diff(dim=-1),
                               torch.ones_like(interior[:, :, 0, :, 1:]), rtol=0, atol=1e-4)
    torch.testing.assert_close(interior[:, :, 1].diff(dim=-2),
                               torch.ones_like(interior[:, :, 1, 1:, :]), rtol=0, atol=1e-4)
    # The stride offset 10 s is scaled too: 20 between the two strides.
    torch.testing.assert_close(interior[:, 1, 0] - interior[:, 0, 0],
                               torch.full_like(interior[:, 0, 0], 20.0), rtol=0, atol=1e-4)
    assert set(out["labels"].unique().tolist()) <= set(LABEL_SET)  # inside: no padding


def test_zoom_labels_stay_in_the_label_set_and_padding_is_unscored():
    batch = make_batch(batch_size=3, height=32, width=32)
    config = AugmentConfig(**{**OFF, "scale_range": (0.6, 0.6)})
    out = augment_batch(batch, config, generator(2))
    labels = out["labels"]
    assert labels.dtype == torch.uint8
    assert set(labels.unique().tolist()) <= {*LABEL_SET, 85}
    outside = labels == 85
    # Zooming out by 0.6 leaves 40% of each axis to padding: 1 - 0.6^2 of the pixels.
    assert abs(outside.float().mean().item() - (1 - 0.6 ** 2)) < 0.08
    # Flow is zero outside; bilinear sampling blends in the frame's last pixel within one
    # pixel of its edge, where nearest labels already say 85: check one pixel further out.
    inside = (~outside).float().unsqueeze(1)
    far_outside = torch.nn.functional.max_pool2d(inside, 3, stride=1, padding=1)[:, 0] == 0
    assert far_outside.float().mean() > 0.2
    hop = out["hop"].permute(0, 3, 4, 1, 2)  # (B, H, W, S, 2)
    assert (hop[far_outside] == 0).all()


def test_random_scale_labels_are_nearest_neighbours():
    batch = make_batch(batch_size=3, height=32, width=32)
    config = AugmentConfig(**{**OFF, "flip_probability": 0.5, "scale_range": (0.7, 1.6)})
    for seed in range(5):
        out = augment_batch(batch, config, generator(seed))
        assert set(out["labels"].unique().tolist()) <= {*LABEL_SET, 85}


def test_photometric_jitter_spares_flow_and_labels_and_matches_background():
    batch = make_batch()
    batch["background"] = batch["frame"].clone()
    config = AugmentConfig(**{**OFF, "brightness": 0.2, "contrast": 0.5, "saturation": 0.5,
                              "hue": 0.3})
    out = augment_batch(batch, config, generator(3))
    torch.testing.assert_close(out["hop"], batch["hop"], rtol=0, atol=0)
    torch.testing.assert_close(out["labels"], batch["labels"], rtol=0, atol=0)
    assert out["frame"].dtype == torch.uint8
    assert (out["frame"].int() - batch["frame"].int()).abs().float().mean() > 5
    # Same draws for frame and background: identical images stay identical (no noise here).
    torch.testing.assert_close(out["background"], out["frame"], rtol=0, atol=0)


def test_noise_is_small_and_independent_per_image():
    batch = make_batch()
    batch["background"] = batch["frame"].clone()
    out = augment_batch(batch, AugmentConfig(**{**OFF, "noise_std": 4.0}), generator(5))
    difference = out["frame"].float() - batch["frame"].float()
    assert 0.3 < difference.std() < 4.0
    assert not torch.equal(out["frame"], out["background"])


def test_same_generator_state_same_output():
    batch = make_batch()
    config = AugmentConfig(scale_range=(0.8, 1.25))
    first = augment_batch(batch, config, generator(11))
    second = augment_batch(batch, config, generator(11))
    third = augment_batch(batch, config, generator(12))
    for key in ("frame", "background", "hop", "labels"):
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert not torch.equal(first["frame"], third["frame"])


def test_bad_config_and_batch():
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.5, 1.0))
    with pytest.raises(ValueError, match="flip_probability"):
        AugmentConfig(flip_probability=2.0)
    batch = make_batch()
    batch["hop"] = batch["hop"][:, :, :1]
    with pytest.raises(ValueError, match="hop must be"):
        augment_batch(batch, AugmentConfig(), generator())
    with pytest.raises(ValueError, match="no 'labels'"):
        augment_batch({"frame": batch["frame"], "hop": batch["hop"]}, AugmentConfig(),
                      generator())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_gpu_deterministically():
    batch = make_batch(device="cuda")
    config = AugmentConfig(scale_range=(0.8, 1.25))
    first = augment_batch(batch, config, generator(1, "cuda"))
    second = augment_batch(batch, config, generator(1, "cuda"))
    for key in ("frame", "background", "hop", "labels"):
        assert first[key].device.type == "cuda"
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert set(first["labels"].unique().tolist()) <= {*LABEL_SET, 85}


def apply(matrix, offset, rgb):
    return matrix[0] @ torch.tensor(rgb) + offset[0]


def factors(**changes):
    values = {"brightness": 0.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0,
              "mean_grey": 0.5}
    values.update(changes)
    return {name: torch.tensor([value], dtype=torch.float32) for name, value in values.items()}


def test_colour_transform_known_answers():
    colour = [0.6, 0.3, 0.2]
    luma = 0.299 * 0.6 + 0.587 * 0.3 + 0.114 * 0.2
    # Identity factors: the identity map.
    torch.testing.assert_close(apply(*colour_transform(**factors()), colour),
                               torch.tensor(colour))
    # Brightness adds to every channel.
    torch.testing.assert_close(apply(*colour_transform(**factors(brightness=0.1)), colour),
                               torch.tensor(colour) + 0.1)
    # Contrast 0: every pixel becomes the pivot grey.
    torch.testing.assert_close(apply(*colour_transform(**factors(contrast=0.0)), colour),
                               torch.full((3,), 0.5))
    # Saturation 0: the pixel's own grey.
    torch.testing.assert_close(apply(*colour_transform(**factors(saturation=0.0)), colour),
                               torch.full((3,), luma))
    # A hue rotation leaves greys alone, keeps a colour's luma, changes its colour, and
    # rotating back restores it.
    matrix, offset = colour_transform(**factors(hue=1.0))
    torch.testing.assert_close(apply(matrix, offset, [0.4, 0.4, 0.4]), torch.full((3,), 0.4))
    rotated = apply(matrix, offset, colour)
    torch.testing.assert_close((rotated * torch.tensor([0.299, 0.587, 0.114])).sum(),
                               torch.tensor(luma), rtol=0, atol=2e-3)
    assert (rotated - torch.tensor(colour)).abs().max() > 0.1
    back, _ = colour_transform(**factors(hue=-1.0))
    torch.testing.assert_close(back[0] @ matrix[0], torch.eye(3), rtol=0, atol=1e-5)


def test_haze_lowers_contrast_by_one_factor_per_sample_for_frame_and_background():
    batch = make_batch(batch_size=16)
    # Two grey levels, 40 and 200, in every image: the haze maps them to (1 - h) x + h v.
    levels = torch.where(torch.arange(32) < 16, 40, 200).to(torch.uint8)
    batch["frame"] = levels.expand(16, 3, 24, 32).clone()
    batch["background"] = batch["frame"].clone()
    out = augment_batch(batch, AugmentConfig(**{**OFF, "haze": 0.6}), generator(4))
    torch.testing.assert_close(out["background"], out["frame"], rtol=0, atol=0)
    dark, bright = out["frame"][..., 0].float(), out["frame"][..., -1].float()
    kept = (bright - dark) / 160.0  # 1 - h per sample, all channels and pixels alike
    assert kept.amin(dim=(1, 2)).sub(kept.amax(dim=(1, 2))).abs().max() <= 2 / 160
    assert kept.min() >= 0.4 - 2 / 160 and kept.max() <= 1.0 + 1e-6
    assert kept.min() < 0.7  # some samples really hazy
    strength = 1.0 - kept[:, 0, 0]
    veil = (dark[:, 0, 0] - 40 * kept[:, 0, 0]) / (255 * strength.clamp_min(1e-3))
    hazy = strength > 0.1
    assert ((veil[hazy] > 0.5 - 0.03) & (veil[hazy] < 1.0 + 0.03)).all()
    torch.testing.assert_close(out["hop"], batch["hop"], rtol=0, atol=0)


def test_no_haze_draws_nothing():
    """haze = 0 leaves the random stream as it was before the option existed."""
    batch = make_batch()
    plain = augment_batch(batch, AugmentConfig(), generator(9))
    zero = augment_batch(batch, AugmentConfig(haze=0.0), generator(9))
    for key in ("frame", "background"):
        torch.testing.assert_close(zero[key], plain[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="haze"):
        AugmentConfig(haze=1.0)
