"""Tests for flow/checkpoints.py: princeton-vl <-> torchvision key mapping and loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from flow.checkpoints import (
    detect_layout,
    load_flow_checkpoint,
    princeton_to_torchvision,
    torchvision_to_princeton,
)
from flow.raft import RAFT, raft_large, raft_small

# ---------------------------------------------------------------------------------------------
# An oracle for the princeton-vl layout: module trees with the attribute names, registration
# and shapes of github.com/princeton-vl/RAFT (core/extractor.py, core/update.py, core/raft.py),
# without their computations. Their state dicts are what the paper's checkpoints hold.
# ---------------------------------------------------------------------------------------------


def _module(**children: nn.Module) -> nn.Module:
    module = nn.Module()
    for name, child in children.items():
        setattr(module, name, child)
    return module


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    return nn.Sequential()


def _princeton_block(kind: str, in_planes: int, planes: int, stride: int, bottleneck: bool):
    block = nn.Module()
    if bottleneck:
        block.conv1 = nn.Conv2d(in_planes, planes // 4, 1)
        block.conv2 = nn.Conv2d(planes // 4, planes // 4, 3, padding=1, stride=stride)
        block.conv3 = nn.Conv2d(planes // 4, planes, 1)
        widths = (planes // 4, planes // 4, planes)
    else:
        block.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        block.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        widths = (planes, planes)
    for index, width in enumerate(widths, start=1):
        setattr(block, f"norm{index}", _norm(kind, width))
    if stride != 1:
        # princeton registers the shortcut's norm twice: as normN and inside downsample.
        shortcut_norm = _norm(kind, planes)
        setattr(block, f"norm{len(widths) + 1}", shortcut_norm)
        block.downsample = nn.Sequential(
            nn.Conv2d(in_planes, planes, 1, stride=stride), shortcut_norm
        )
    return block


def _princeton_encoder(kind: str, output_dim: int, *, small: bool) -> nn.Module:
    widths = (32, 32, 64, 96) if small else (64, 64, 96, 128)
    encoder = _module(
        norm1=_norm(kind, widths[0]), conv1=nn.Conv2d(3, widths[0], 7, stride=2, padding=3)
    )
    in_planes = widths[0]
    for index, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
        blocks = nn.Sequential(
            _princeton_block(kind, in_planes, planes, stride, small),
            _princeton_block(kind, planes, planes, 1, small),
        )
        setattr(encoder, f"layer{index}", blocks)
        in_planes = planes
    encoder.conv2 = nn.Conv2d(in_planes, output_dim, 1)
    return encoder


def _princeton_gru(hidden: int, inputs: int, suffixes: tuple[str, ...]) -> nn.Module:
    gru = nn.Module()
    kernels = {"": 3, "1": (1, 5), "2": (5, 1)}
    for suffix in suffixes:
        for gate in "zrq":
            setattr(gru, f"conv{gate}{suffix}", nn.Conv2d(hidden + inputs, hidden, kernels[suffix]))
    return gru


def princeton_model(*, small: bool) -> nn.Module:
    """A module tree whose state dict has the princeton-vl RAFT keys and shapes."""
    if small:
        encoder = _module(
            convc1=nn.Conv2d(4 * 7**2, 96, 1),
            convf1=nn.Conv2d(2, 64, 7),
            convf2=nn.Conv2d(64, 32, 3),
            conv=nn.Conv2d(128, 80, 3),
        )
        update_block = _module(
            encoder=encoder,
            gru=_princeton_gru(96, 82 + 64, ("",)),
            flow_head=_module(conv1=nn.Conv2d(96, 128, 3), conv2=nn.Conv2d(128, 2, 3)),
        )
        return _module(
            fnet=_princeton_encoder("instance", 128, small=True),
            cnet=_princeton_encoder("none", 96 + 64, small=True),
            update_block=update_block,
        )
    encoder = _module(
        convc1=nn.Conv2d(4 * 9**2, 256, 1),
        convc2=nn.Conv2d(256, 192, 3),
        convf1=nn.Conv2d(2, 128, 7),
        convf2=nn.Conv2d(128, 64, 3),
        conv=nn.Conv2d(64 + 192, 128 - 2, 3),
    )
    update_block = _module(
        encoder=encoder,
        gru=_princeton_gru(128, 128 + 128, ("1", "2")),
        flow_head=_module(conv1=nn.Conv2d(128, 256, 3), conv2=nn.Conv2d(256, 2, 3)),
        mask=nn.Sequential(nn.Conv2d(128, 256, 3), nn.ReLU(), nn.Conv2d(256, 8**2 * 9, 1)),
    )
    return _module(
        fnet=_princeton_encoder("instance", 256, small=False),
        cnet=_princeton_encoder("batch", 128 + 128, small=False),
        update_block=update_block,
    )


BUILDERS = {"small": raft_small, "large": raft_large}


def _shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


@pytest.mark.parametrize("name", ["small", "large"])
def test_our_keys_map_onto_the_princeton_layout(name: str) -> None:
    ours = BUILDERS[name]().state_dict()
    theirs = princeton_model(small=name == "small").state_dict()
    assert _shapes(torchvision_to_princeton(ours)) == _shapes(theirs)
    assert _shapes(princeton_to_torchvision(theirs)) == _shapes(ours)


def test_princeton_spot_checks() -> None:
    mapped = torchvision_to_princeton(raft_large().state_dict())
    for key in (
        "fnet.conv1.weight",
        "cnet.norm1.running_mean",
        "cnet.layer2.0.norm3.weight",
        "cnet.layer2.0.downsample.1.weight",
        "update_block.encoder.convc2.weight",
        "update_block.gru.convq2.bias",
        "update_block.mask.2.weight",
    ):
        assert key in mapped, key
    small = torchvision_to_princeton(raft_small().state_dict())
    assert "update_block.gru.convz.weight" in small
    assert not any(key.startswith("update_block.mask.") for key in small)


@pytest.mark.parametrize("name", ["small", "large"])
def test_mapping_is_a_bijection(name: str) -> None:
    ours = BUILDERS[name]().state_dict()
    there = torchvision_to_princeton(ours)
    back = princeton_to_torchvision(there)
    assert list(back) == list(ours)
    assert all(back[key] is ours[key] for key in ours)
    again = torchvision_to_princeton(back)
    assert list(again) == list(there)
    assert all(again[key] is there[key] for key in there)


def _randomise_batch_norm_statistics(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(1 + torch.rand(module.num_features, generator=generator))


@pytest.mark.parametrize("name", ["small", "large"])
def test_princeton_checkpoint_file_loads_with_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = BUILDERS[name]().eval()
    _randomise_batch_norm_statistics(source, seed=1)
    princeton = torchvision_to_princeton(source.state_dict())
    path = tmp_path / "raft-princeton.pth"
    # The paper's checkpoints come from nn.DataParallel: every key starts with "module.".
    torch.save({f"module.{key}": value for key, value in princeton.items()}, path)

    torch.manual_seed(1)
    target = BUILDERS[name]().eval()
    assert load_flow_checkpoint(target, path) == "princeton"

    generator = torch.Generator().manual_seed(2)
    image1 = 255 * torch.rand(1, 3, 20, 28, generator=generator)
    image2 = 255 * torch.rand(1, 3, 20, 28, generator=generator)
    with torch.no_grad():
        expected = source(image1, image2, num_flow_updates=2)
        actual = target(image1, image2, num_flow_updates=2)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_torchvision_layout_loads_from_a_wrapped_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = raft_small()
    path = tmp_path / "raft-ours.pth"
    torch.save({"state_dict": source.state_dict(), "epoch": torch.tensor(3)}, path)
    target = raft_small()
    assert load_flow_checkpoint(target, str(path)) == "torchvision"
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)


def test_missing_num_batches_tracked_is_tolerated() -> None:
    state_dict = {
        key: value
        for key, value in raft_large().state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    assert load_flow_checkpoint(raft_large(), state_dict) == "torchvision"


def test_small_checkpoint_into_large_model_names_the_network_in_one_line(tmp_path) -> None:
    path = tmp_path / "raft_small.pt"
    torch.save(raft_small().state_dict(), path)
    with pytest.raises(ValueError) as error:
        load_flow_checkpoint(raft_large(), path)
    # The small model has no batch norm in its context encoder, no second GRU and no mask
    # predictor; its bottleneck blocks have a third convolution.
    assert str(error.value) == (
        f"{path}: its weights do not fit this raft-large network: it holds a raft-small "
        "network (72 tensors missing, 24 unexpected, 81 of another shape)")
    # Either layout, either way round.
    checkpoint = torchvision_to_princeton(raft_large().state_dict())
    with pytest.raises(ValueError, match=r"^checkpoint: its weights do not fit this raft-small "
                                         r"network: it holds a raft-large network \("):
        load_flow_checkpoint(raft_small(), checkpoint)


def test_weights_of_no_known_network_list_the_keys_that_differ() -> None:
    state_dict = dict(raft_small().state_dict())
    state_dict["feature_encoder.convnormrelu.0.weight"] = torch.zeros(16, 3, 7, 7)
    del state_dict["feature_encoder.conv.bias"]
    with pytest.raises(ValueError) as error:
        load_flow_checkpoint(raft_small(), state_dict)
    message = str(error.value)
    assert message.startswith("checkpoint (torchvision layout) does not fit RAFT (106 keys): ")
    assert "1 missing keys: feature_encoder.conv.bias" in message
    assert ("1 shape mismatches: feature_encoder.convnormrelu.0.weight (16, 3, 7, 7) vs model "
            "(32, 3, 7, 7)") in message


def test_unexpected_keys_are_listed() -> None:
    state_dict = dict(raft_small().state_dict())
    state_dict["feature_encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"1 unexpected keys: feature_encoder\.extra\.weight"):
        load_flow_checkpoint(raft_small(), state_dict)


def test_unknown_princeton_keys_are_named() -> None:
    checkpoint = torchvision_to_princeton(raft_small().state_dict())
    checkpoint["update_block.unknown.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"update_block\.unknown\.weight"):
        princeton_to_torchvision(checkpoint)
    with pytest.raises(ValueError, match=r"checkpoint: .*update_block\.unknown\.weight"):
        load_flow_checkpoint(raft_small(), checkpoint)


def test_diverging_shortcut_norm_copies_are_rejected() -> None:
    checkpoint = torchvision_to_princeton(raft_large().state_dict())
    checkpoint["cnet.layer2.0.norm3.weight"] = checkpoint["cnet.layer2.0.norm3.weight"] + 1
    with pytest.raises(ValueError, match=r"cnet\.layer2\.0\.norm3\.weight"):
        princeton_to_torchvision(checkpoint)


def test_unknown_layout_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a RAFT state dict.*backbone.weight"):
        detect_layout({"backbone.weight": torch.zeros(1)})
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="list.pth: expected a state dict, got a list"):
        load_flow_checkpoint(raft_small(), path)


def test_missing_file_raises() -> None:
    with pytest.raises(FileNotFoundError):
        load_flow_checkpoint(raft_small(), "/nonexistent/raft.pth")


def test_model_type_is_ours() -> None:
    # load_flow_checkpoint targets our RAFT (torchvision names): guard against a wrong import.
    assert isinstance(raft_small(), RAFT)
