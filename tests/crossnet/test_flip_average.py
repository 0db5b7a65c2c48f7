"""Flip averaging: mirrored inputs negate u, and known models give known averages."""

import torch

from crossnet.flip_average import flip_averaged_logits, mirror_inputs
from crossnet.hofam import HofamConfig, build_hofam


def _inputs(seed=0, batch=2, strides=2, height=6, width=8):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, height, width, generator=generator),
            torch.randn(batch, strides, 2, height, width, generator=generator),
            torch.rand(batch, 3, height, width, generator=generator))


def test_mirror_swaps_columns_and_negates_u_only():
    frames, hop, background = _inputs()
    mirrored_frames, mirrored_hop, mirrored_background = mirror_inputs(frames, hop, background)
    torch.testing.assert_close(mirrored_frames[..., 0], frames[..., -1], rtol=0, atol=0)
    torch.testing.assert_close(mirrored_background[..., 2], background[..., -3], rtol=0, atol=0)
    torch.testing.assert_close(mirrored_hop[:, :, 0, :, 0], -hop[:, :, 0, :, -1], rtol=0, atol=0)
    torch.testing.assert_close(mirrored_hop[:, :, 1, :, 0], hop[:, :, 1, :, -1], rtol=0, atol=0)
    twice = mirror_inputs(*mirror_inputs(frames, hop, background))
    for got, want in zip(twice, (frames, hop, background)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert mirror_inputs(frames, hop)[2] is None


def test_known_models_give_known_averages():
    frames, hop, background = _inputs(seed=1)

    def brightness(frames, hop, background=None):  # mirror-equivariant: kept as it is
        return frames[:, :1]

    def rightward_motion(frames, hop, background=None):  # flips sign in the mirror: cancels
        return hop[:, 0, :1]

    def column(frames, hop, background=None):  # x: averages to the middle column everywhere
        width = frames.shape[-1]
        return torch.arange(width, dtype=frames.dtype).expand(frames.shape[0], 1,
                                                                *frames.shape[2:])

    torch.testing.assert_close(flip_averaged_logits(brightness, frames, hop, background),
                               frames[:, :1])
    torch.testing.assert_close(flip_averaged_logits(rightward_motion, frames, hop, background),
                               torch.zeros_like(frames[:, :1]))
    torch.testing.assert_close(flip_averaged_logits(column, frames, hop, background),
                               torch.full_like(frames[:, :1], (frames.shape[-1] - 1) / 2))


def test_hofam_logits_average_with_its_mirror_answer():
    torch.manual_seed(0)
    model = build_hofam(HofamConfig(strides=(1, 2), use_background=True)).eval()
    frames, hop, background = _inputs(seed=2, height=32, width=32)
    with torch.no_grad():
        plain = model(frames, hop, background)
        mirrored = model(*mirror_inputs(frames, hop, background)).flip(-1)
        averaged = flip_averaged_logits(model, frames, hop, background)
    torch.testing.assert_close(averaged, (plain + mirrored) / 2, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, mirrored)  # the network is not exactly symmetric
