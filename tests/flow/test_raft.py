"""Tests for flow/raft.py: the RAFT model contract, shared by every configuration."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import ModuleType

import pytest
import torch
from torch import nn

from flow.corr import CorrBlock
from flow.extractor import FeatureEncoder, ResidualBlock
from flow.raft import RAFT, raft_large, raft_small
from flow.update import FlowHead, MaskPredictor, MotionEncoder, RecurrentBlock, UpdateBlock


def tiny_raft(*, with_mask: bool = True) -> RAFT:
    """A RAFT with 8-channel parts and a 2-level, radius-1 correlation block (fast on a CPU)."""
    corr_block = CorrBlock(num_levels=2, radius=1)
    motion_encoder = MotionEncoder(
        in_channels_corr=corr_block.out_channels,
        corr_layers=(8,),
        flow_layers=(8, 8),
        out_channels=8,
    )
    return RAFT(
        feature_encoder=FeatureEncoder(
            block=ResidualBlock, layers=(8, 8, 8, 8, 8), norm_layer=nn.InstanceNorm2d
        ),
        context_encoder=FeatureEncoder(
            block=ResidualBlock, layers=(8, 8, 8, 8, 12), norm_layer=nn.BatchNorm2d
        ),
        corr_block=corr_block,
        update_block=UpdateBlock(
            motion_encoder=motion_encoder,
            recurrent_block=RecurrentBlock(
                input_size=8 + 4, hidden_size=8, kernel_size=(3,), padding=(1,)
            ),
            flow_head=FlowHead(in_channels=8, hidden_size=8),
        ),
        mask_predictor=MaskPredictor(in_channels=8, hidden_size=8) if with_mask else None,
    )


BUILDERS: dict[str, Callable[[], RAFT]] = {
    "tiny": tiny_raft,
    "tiny_bilinear": lambda: tiny_raft(with_mask=False),
    "small": raft_small,
    "large": raft_large,
}


def _images(batch: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image1 = 255 * torch.rand(batch, 3, height, width, generator=generator)
    image2 = 255 * torch.rand(batch, 3, height, width, generator=generator)
    return image1, image2


def _model(name: str, seed: int = 0) -> RAFT:
    torch.manual_seed(seed)
    return BUILDERS[name]().eval()


@pytest.mark.parametrize("name", list(BUILDERS))
class TestRaftContract:
    """What every configuration must do, whatever its parts."""

    @pytest.mark.parametrize(("height", "width"), [(37, 53), (9, 11)])
    def test_forward_shapes_and_finite(self, name: str, height: int, width: int) -> None:
        model = _model(name)
        image1, image2 = _images(2, height, width, seed=1)
        with torch.no_grad():
            flows = model(image1, image2, num_flow_updates=3)
        assert len(flows) == 3
        for flow in flows:
            assert flow.shape == (2, 2, height, width)
            assert flow.dtype == torch.float32
            assert torch.isfinite(flow).all()

    @pytest.mark.parametrize("num_flow_updates", [1, 4])
    def test_one_output_per_update(self, name: str, num_flow_updates: int) -> None:
        model = _model(name)
        image1, image2 = _images(1, 24, 40, seed=2)
        with torch.no_grad():
            flows = model(image1, image2, num_flow_updates=num_flow_updates)
        assert len(flows) == num_flow_updates
        # Each update changes the estimate (random weights give non-zero increments).
        for previous, current in itertools.pairwise(flows):
            assert not torch.equal(previous, current)

    def test_backward_gives_finite_gradients_to_all_parameters(self, name: str) -> None:
        model = _model(name).train()
        image1, image2 = _images(2, 20, 28, seed=3)
        flows = model(image1, image2, num_flow_updates=2)
        loss = sum(flow.abs().mean() for flow in flows)
        loss.backward()
        for parameter_name, parameter in model.named_parameters():
            assert parameter.grad is not None, parameter_name
            assert torch.isfinite(parameter.grad).all(), parameter_name
        assert any(parameter.grad.abs().sum() > 0 for parameter in model.parameters())

    def test_flow_init_changes_the_first_output(self, name: str) -> None:
        model = _model(name)
        image1, image2 = _images(1, 21, 30, seed=4)
        flow_init = torch.zeros(1, 2, 21, 30)
        flow_init[:, 0] = 6.0
        flow_init[:, 1] = -3.0
        with torch.no_grad():
            cold = model(image1, image2, num_flow_updates=1)
            warm = model(image1, image2, num_flow_updates=1, flow_init=flow_init)
            zero = model(image1, image2, num_flow_updates=1, flow_init=torch.zeros_like(flow_init))
        assert not torch.allclose(cold[0], warm[0], atol=1e-2)
        torch.testing.assert_close(zero[0], cold[0], rtol=0, atol=0)

    def test_forward_is_extract_plus_estimate(self, name: str) -> None:
        model = _model(name)
        image1, image2 = _images(2, 19, 26, seed=5)
        with torch.no_grad():
            expected = model(image1, image2, num_flow_updates=2)
            features1, features2 = model.extract_features(torch.cat((image1, image2))).chunk(2)
            context = model.extract_context(image1)
            actual = model.estimate_flow(
                features1, features2, context, num_flow_updates=2, image_size=(19, 26)
            )
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=0, atol=0)

    def test_per_frame_features_can_be_reused(self, name: str) -> None:
        # 3D-HOP encodes every frame once, alone or in another batch than its partner.
        model = _model(name)
        image1, image2 = _images(1, 19, 26, seed=6)
        with torch.no_grad():
            expected = model(image1, image2, num_flow_updates=2)
            features = model.extract_features(torch.cat((image2, image1)))
            actual = model.estimate_flow(
                features[1:],
                features[:1],
                model.extract_context(image1),
                num_flow_updates=2,
                image_size=(19, 26),
            )
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_parameter_counts_match_torchvision() -> None:
    # num_params of torchvision's Raft_Small_Weights / Raft_Large_Weights metadata.
    assert sum(p.numel() for p in raft_small().parameters()) == 990162
    assert sum(p.numel() for p in raft_large().parameters()) == 5257536


def test_min_image_size_comes_from_the_pyramid() -> None:
    assert raft_large().min_image_size == 128
    assert raft_small().min_image_size == 128
    assert tiny_raft().min_image_size == 32


def test_zero_update_returns_flow_init_exactly() -> None:
    # With a flow head that outputs nothing, every estimate is the warm start itself: checks
    # the padding, the 8x8 averaging onto the 1/8 grid and the upsampling back.
    model = _model("tiny_bilinear")
    with torch.no_grad():
        model.update_block.flow_head.conv2.weight.zero_()
        model.update_block.flow_head.conv2.bias.zero_()
    image1, image2 = _images(1, 13, 45, seed=7)
    flow_init = torch.empty(1, 2, 13, 45)
    flow_init[:, 0], flow_init[:, 1] = 2.5, -7.0
    with torch.no_grad():
        flows = model(image1, image2, num_flow_updates=2, flow_init=flow_init)
        cold = model(image1, image2, num_flow_updates=1)
    for flow in flows:
        torch.testing.assert_close(flow, flow_init, rtol=0, atol=1e-5)
    torch.testing.assert_close(cold[0], torch.zeros(1, 2, 13, 45), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("image1_shape", "image2_shape", "match"),
    [
        ((3, 16, 16), (3, 16, 16), r"\(B, 3, H, W\).*\(3, 16, 16\)"),
        ((1, 1, 16, 16), (1, 1, 16, 16), r"\(1, 1, 16, 16\)"),
        ((1, 3, 16, 16), (1, 3, 16, 24), r"\(1, 3, 16, 16\) and \(1, 3, 16, 24\)"),
        ((2, 3, 16, 16), (1, 3, 16, 16), r"\(2, 3, 16, 16\) and \(1, 3, 16, 16\)"),
    ],
)
def test_forward_rejects_bad_images(
    image1_shape: tuple[int, ...], image2_shape: tuple[int, ...], match: str
) -> None:
    model = tiny_raft().eval()
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(image1_shape), torch.zeros(image2_shape))


def test_forward_rejects_integer_images_and_bad_flow_init() -> None:
    model = tiny_raft().eval()
    images = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="torch.uint8"):
        model(images.to(torch.uint8), images.to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(1, 2, 16, 16\).*\(1, 2, 8, 8\)"):
        model(images, images, flow_init=torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="num_flow_updates must be >= 1, got 0"):
        model(images, images, num_flow_updates=0)


def test_estimate_flow_rejects_features_of_another_size() -> None:
    model = tiny_raft().eval()
    with torch.no_grad():
        features = model.extract_features(torch.zeros(2, 3, 40, 40))
        context = model.extract_context(torch.zeros(1, 3, 40, 40))
        with pytest.raises(ValueError, match=r"\(B, C, 8, 5\).*\(64, 40\)"):
            model.estimate_flow(features[:1], features[1:], context, image_size=(64, 40))


def test_update_block_must_expose_hidden_state_size() -> None:
    parts = {name: getattr(tiny_raft(), name) for name in ("feature_encoder", "context_encoder")}
    with pytest.raises(ValueError, match="hidden_state_size"):
        RAFT(**parts, corr_block=CorrBlock(), update_block=nn.Identity())


def _torchvision_optical_flow() -> ModuleType:
    """torchvision's optical-flow models, or a skip: torchvision needs a CUDA build of torch."""
    try:
        from torchvision.models import optical_flow
    # ImportError when absent; RuntimeError or OSError when its build does not match torch's.
    except (ImportError, RuntimeError, OSError) as error:
        pytest.skip(f"torchvision is not importable: {error}")
    return optical_flow


@pytest.mark.parametrize("name", ["small", "large"])
def test_matches_torchvision_with_the_same_weights(name: str) -> None:
    optical_flow = _torchvision_optical_flow()
    torch.manual_seed(0)
    theirs = getattr(optical_flow, f"raft_{name}")(weights=None).eval()
    ours = BUILDERS[name]().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    # torchvision takes images already in [-1, 1], with H and W multiples of 8 (here also at
    # least 128, so our model pads nothing).
    image1, image2 = _images(1, 128, 136, seed=8)
    with torch.no_grad():
        expected = theirs(2 * image1 / 255 - 1, 2 * image2 / 255 - 1, num_flow_updates=4)
        actual = ours(image1, image2, num_flow_updates=4)
    assert len(actual) == len(expected) == 4
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["small", "large"])
def test_cuda_bf16_autocast_matches_float32(name: str) -> None:
    # Made on the CPU with a seed, then moved: the same weights and images on every machine.
    model = _model(name).cuda()
    image1, image2 = _images(1, 64, 96, seed=9)
    image2 = torch.roll(image1, shifts=(2, -3), dims=(2, 3))
    image1, image2 = image1.cuda(), image2.cuda()
    with torch.no_grad():
        reference = model(image1, image2, num_flow_updates=4)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            mixed = model(image1, image2, num_flow_updates=4)
    for flow, expected in zip(mixed, reference):
        assert flow.dtype == torch.float32
        assert torch.isfinite(flow).all()
        # bf16 keeps ~3 significant digits; the estimates drift a little over the updates.
        assert (flow - expected).abs().mean() < 0.05 * expected.abs().mean() + 0.05
