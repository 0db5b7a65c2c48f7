"""Tests for crossnet/hofam.py: one contract suite for every HOFAM configuration.

In the style of segmentation_models_pytorch's BaseModelTester: each configuration in
:data:`CONFIGS` goes through the same checks (shapes at odd sizes, backward, determinism, batch
independence, dtype, device), and every option is switched off at least once.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from crossnet.blocks import Encoder
from crossnet.hofam import HOFAM, HofamConfig, build_hofam

# Narrow widths keep the suite fast; the default widths get their own checks below.
SMALL = {"widths": (8, 8, 16, 16), "blocks_per_stage": (0, 1, 1, 0)}

CONFIGS: dict[str, HofamConfig] = {
    "default": HofamConfig(),
    "magnitude_background": HofamConfig(flow_encoding="magnitude", use_background=True, **SMALL),
    "no_cmdff_no_attention": HofamConfig(cmdff=False, attention=False, use_background=False,
                                         **SMALL),
    "static_filter_full_res_motion": HofamConfig(
        dynamic_filter=False, flow_clamp=None, motion_downsample=1, use_background=False, **SMALL
    ),
    "thin_motion_stream": HofamConfig(motion_widths=(4, 8, 8, 12), use_background=False,
                                      **SMALL),
    "scene_norm_median_background": HofamConfig(
        use_background=True, background_estimator="median", appearance_norm="scene", **SMALL
    ),
    "scene_norm_no_background": HofamConfig(appearance_norm="scene", use_background=False,
                                            **SMALL),
    "two_strides_three_levels": HofamConfig(
        strides=(1, 2), widths=(8, 12, 16), blocks_per_stage=(1, 0, 1), attention=False,
        use_background=False,
    ),
}


def _inputs(
    config: HofamConfig,
    batch: int,
    height: int,
    width: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, 3, height, width, generator=generator, dtype=dtype)
    hop = 3 * torch.randn(
        batch, len(config.strides), 2, height, width, generator=generator, dtype=dtype
    )
    background = None
    if config.use_background:
        background = torch.rand(batch, 3, height, width, generator=generator, dtype=dtype)
    return frames, hop, background


def _model(config: HofamConfig, *, seed: int = 0) -> HOFAM:
    torch.manual_seed(seed)
    return build_hofam(config)


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def config(request) -> HofamConfig:
    return CONFIGS[request.param]


@pytest.mark.parametrize(("height", "width"), [(37, 53), (9, 11), (16, 16)])
def test_forward_shape_and_finite_at_any_size(config: HofamConfig, height: int, width: int):
    model = _model(config).eval()
    with torch.no_grad():
        logits = model(*_inputs(config, 2, height, width))
    assert logits.shape == (2, 1, height, width)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["default", "magnitude_background"])
def test_forward_at_240x320(name: str) -> None:
    config = CONFIGS[name]
    model = _model(config).eval()
    with torch.inference_mode():
        logits = model(*_inputs(config, 1, 240, 320))
    assert logits.shape == (1, 1, 240, 320)
    assert torch.isfinite(logits).all()


def test_backward_reaches_every_parameter(config: HofamConfig) -> None:
    model = _model(config).train()
    logits = model(*_inputs(config, 2, 37, 53))
    target = torch.zeros_like(logits)
    target[..., 10:20, 10:30] = 1.0
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_eval_is_deterministic(config: HofamConfig) -> None:
    model = _model(config).eval()
    inputs = _inputs(config, 2, 37, 53)
    with torch.no_grad():
        first, second = model(*inputs), model(*inputs)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_batch_items_are_independent_in_eval(config: HofamConfig) -> None:
    model = _model(config).eval()
    frames, hop, background = _inputs(config, 2, 37, 53)
    single_background = None if background is None else background[:1]
    with torch.no_grad():
        batched = model(frames, hop, background)
        single = model(frames[:1], hop[:1], single_background)
    torch.testing.assert_close(batched[:1], single, rtol=1e-4, atol=1e-4)


def test_float64_on_a_tiny_input(config: HofamConfig) -> None:
    model = _model(config).double().eval()
    with torch.no_grad():
        logits = model(*_inputs(config, 1, 9, 11, dtype=torch.float64))
    assert logits.dtype == torch.float64 and logits.shape == (1, 1, 9, 11)
    assert torch.isfinite(logits).all()


def test_channels_last_model_matches(config: HofamConfig) -> None:
    model = _model(config).eval()
    inputs = _inputs(config, 1, 37, 53)
    with torch.no_grad():
        expected = model(*inputs)
        model = model.to(memory_format=torch.channels_last)
        frames = inputs[0].contiguous(memory_format=torch.channels_last)
        actual = model(frames, *inputs[1:])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_on_cpu(config: HofamConfig) -> None:
    model = _model(config).eval()
    inputs = _inputs(config, 1, 37, 53)
    with torch.no_grad():
        expected = torch.sigmoid(model(*inputs))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(*inputs)
    assert logits.shape == (1, 1, 37, 53)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(torch.sigmoid(logits.float()), expected, rtol=0, atol=0.05)


def test_float16_hop_is_accepted() -> None:
    config = CONFIGS["two_strides_three_levels"]
    model = _model(config).eval()
    frames, hop, _ = _inputs(config, 1, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(
            model(frames, hop.half()), model(frames, hop.half().float()), rtol=0, atol=0
        )


def test_logit_bias_starts_at_the_foreground_prior() -> None:
    model = _model(HofamConfig(foreground_prior=0.05)).eval()
    prior_logit = math.log(0.05 / 0.95)
    torch.testing.assert_close(model.head.conv.bias, torch.tensor([prior_logit]))
    with torch.no_grad():
        logits = model(*_inputs(model.config, 1, 48, 64))
    # Fresh BatchNorm statistics keep features small, so the output sits near the prior.
    assert abs(logits.mean().item() - prior_logit) < 0.5


def test_background_required_iff_configured() -> None:
    with_background = _model(CONFIGS["magnitude_background"]).eval()
    frames, hop, background = _inputs(with_background.config, 1, 16, 16)
    with pytest.raises(ValueError, match="use_background=True"):
        with_background(frames, hop)
    without = _model(CONFIGS["no_cmdff_no_attention"]).eval()
    with pytest.raises(ValueError, match=r"use_background=False.*\(1, 3, 16, 16\)"):
        without(frames, hop, background)
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\)"):
        with_background(frames, hop, background[..., :8, :8])


@pytest.mark.parametrize(
    ("frames_shape", "hop_shape", "match"),
    [
        ((1, 3, 16, 16), (1, 2, 2, 16, 16), r"S = 3 .*\(1, 2, 2, 16, 16\)"),
        ((1, 3, 16, 16), (1, 3, 2, 16, 17), r"\(1, 3, 16, 16\).*\(1, 3, 2, 16, 17\)"),
        ((2, 3, 16, 16), (1, 3, 2, 16, 16), r"\(2, 3, 16, 16\).*\(1, 3, 2, 16, 16\)"),
        ((1, 3, 16, 16), (1, 3, 16, 16), r"\(1, 3, 16, 16\)"),
        ((1, 4, 16, 16), (1, 3, 2, 16, 16), r"\(1, 4, 16, 16\)"),
    ],
)
def test_bad_shapes_are_rejected_quoting_them(frames_shape, hop_shape, match) -> None:
    model = _model(CONFIGS["no_cmdff_no_attention"]).eval()
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(frames_shape), torch.zeros(hop_shape))


def test_integer_frames_are_rejected() -> None:
    model = _model(CONFIGS["no_cmdff_no_attention"]).eval()
    with pytest.raises(ValueError, match="torch.uint8"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, 3, 2, 16, 16))


def test_misaligned_encoders_are_rejected() -> None:
    config = HofamConfig(**SMALL)
    parts = build_hofam(config)
    with pytest.raises(ValueError, match="appearance reduction 16 .* motion reduction 16"):
        HOFAM(
            config=config,
            appearance_encoder=parts.appearance_encoder,
            motion_encoder=Encoder(9, widths=SMALL["widths"], blocks_per_stage=(0, 0, 0, 0)),
            fusions=parts.fusions,
            decoder=parts.decoder,
            head=parts.head,
        )


def test_model_keeps_its_config(config: HofamConfig) -> None:
    assert _model(config).config == config


def test_config_round_trips_through_json(config: HofamConfig) -> None:
    restored = HofamConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.strides, tuple)


def test_config_from_dict_rejects_unknown_keys_naming_them() -> None:
    values = HofamConfig().to_dict()
    values.update({"depth": 5, "dropout": 0.1})
    with pytest.raises(ValueError, match=r"\['depth', 'dropout'\]"):
        HofamConfig.from_dict(values)


def test_config_from_partial_dict_uses_defaults() -> None:
    assert HofamConfig.from_dict({"cmdff": False}) == HofamConfig(cmdff=False)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("flow_encoding", "rgb", "'rgb'"),
        ("strides", (0, 2), r"\(0, 2\)"),
        ("flow_clamp", -1.0, "-1.0"),
        ("motion_downsample", 4, "4"),
        ("widths", (16,), r"\(16,\)"),
        ("blocks_per_stage", (1, 1), r"\(1, 1\)"),
        ("motion_widths", (8, 8), r"\(8, 8\)"),
        ("foreground_prior", 1.0, "1.0"),
        ("background_estimator", "mode", "'mode'"),
        ("appearance_norm", "none", "'none'"),
    ],
)
def test_config_rejects_invalid_values(field: str, value, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HofamConfig(**{field: value})


@pytest.mark.parametrize("use_background", [True, False])
def test_scene_norm_ignores_the_scene_s_contrast_and_brightness(use_background: bool) -> None:
    # Halving the contrast and brightening (a foggy version of the same scene) leaves the
    # scene-normalised input, hence the output, unchanged; the ImageNet-normalised model sees
    # a different image.
    outputs = {}
    for norm in ("scene", "imagenet"):
        config = HofamConfig(appearance_norm=norm, use_background=use_background, **SMALL)
        model = _model(config).eval()
        frames, hop, background = _inputs(config, 2, 32, 48, seed=3)
        foggy = {"frames": 0.4 + 0.5 * frames,
                 "background": None if background is None else 0.4 + 0.5 * background}
        with torch.no_grad():
            outputs[norm] = (model(frames, hop, background), model(hop=hop, **foggy))
    scene_change = (outputs["scene"][1] - outputs["scene"][0]).abs().max()
    imagenet_change = (outputs["imagenet"][1] - outputs["imagenet"][0]).abs().max()
    # (A freshly initialised model's logits stay near the prior's bias, so changes are small.)
    assert scene_change < 1e-5, scene_change
    assert imagenet_change > 100 * scene_change, (imagenet_change, scene_change)


def test_scene_norm_of_a_flat_scene_is_finite() -> None:
    # A flat background (std 0) is divided by the floor, not by zero.
    config = HofamConfig(appearance_norm="scene", use_background=True, **SMALL)
    model = _model(config).eval()
    frames, hop, _ = _inputs(config, 1, 32, 32)
    with torch.no_grad():
        logits = model(frames, hop, torch.full((1, 3, 32, 32), 0.5))
    assert torch.isfinite(logits).all()


def test_configs_without_the_newer_options_keep_the_old_behaviour() -> None:
    # Checkpoints written before background_estimator and appearance_norm existed.
    config = HofamConfig.from_dict({"use_background": True})
    assert (config.background_estimator, config.appearance_norm) == ("ema", "imagenet")


@pytest.mark.parametrize(("field", "value"), [("cmdff", "yes"), ("strides", 3)])
def test_config_rejects_wrong_types(field: str, value) -> None:
    with pytest.raises(TypeError, match=field):
        HofamConfig(**{field: value})


def test_state_dict_round_trip_gives_the_same_model() -> None:
    config = CONFIGS["magnitude_background"]
    model = _model(config, seed=0).eval()
    checkpoint = {"config": model.config.to_dict(), "model": model.state_dict()}
    restored = build_hofam(HofamConfig.from_dict(checkpoint["config"]))
    restored.load_state_dict(checkpoint["model"])
    restored.eval()
    inputs = _inputs(config, 1, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(restored(*inputs), model(*inputs), rtol=0, atol=0)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_cuda_matches_cpu(config: HofamConfig) -> None:
    model = _model(config).eval()
    inputs = _inputs(config, 2, 37, 53)
    with torch.no_grad():
        expected = model(*inputs)
        model = model.cuda()
        actual = model(*(None if x is None else x.cuda() for x in inputs))
    assert actual.device.type == "cuda"
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(config: HofamConfig, dtype: torch.dtype) -> None:
    model = _model(config).cuda().train()
    inputs = [None if x is None else x.cuda() for x in _inputs(config, 2, 37, 53)]
    with torch.autocast("cuda", dtype=dtype):
        logits = model(*inputs)
    assert logits.shape == (2, 1, 37, 53) and torch.isfinite(logits).all()
    logits.float().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
