"""Flow backends by name, through the 3D-HOP builder: RAFT's encode-once path equals its forward."""

import cv2
import numpy as np
import pytest
import torch

import flow.backends
import flow.weights
from flow.backends import (
    RaftHopBackend,
    bf16_pays,
    cpu_has_native_bf16,
    file_sha256,
    make_hop_backend,
    resolve_device,
)
from flow.hop import build_hops
from flow.raft import raft_small


def _frames(count, height=40, width=56):
    generator = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3, height + count, width + count), generator=generator,
                         dtype=torch.uint8)
    return [base[:, i:i + height, i:i + width].contiguous() for i in range(count)]


def test_raft_backend_through_the_builder_equals_the_models_forward(tmp_path):
    torch.manual_seed(0)
    model = raft_small().eval()
    weights = tmp_path / "raft_small.pt"
    torch.save(model.state_dict(), weights)
    backend = make_hop_backend("raft-small", weights=weights, device="cpu", num_flow_updates=3)
    assert backend.weights_sha256 == file_sha256(weights)
    backend.bf16 = False  # the float32 reference path (bf16 is the default on some CPUs)
    frames = _frames(6)
    hops = dict(build_hops(frames, backend, (1, 4), batch_frames=4))
    with torch.inference_mode():
        for t, k_index, k in ((5, 0, 1), (5, 1, 4), (2, 1, 4)):
            earlier = max(t - k, 0)
            expected = model(frames[t][None].float(), frames[earlier][None].float(),
                             num_flow_updates=3)[-1][0]
            torch.testing.assert_close(hops[t][k_index], expected, rtol=1e-4, atol=1e-4)


def test_classical_backend_and_errors(tmp_path, monkeypatch):
    backend = make_hop_backend("dis-fast")
    assert backend.name == "dis-fast" and backend.weights_sha256 == ""
    frames = _frames(3)
    stacks = dict(build_hops(frames, backend, (1,)))
    assert stacks[2].shape == (1, 2, 40, 56)
    with pytest.raises(ValueError, match="unknown flow backend 'pwc'"):
        make_hop_backend("pwc")
    monkeypatch.setattr(flow.weights, "bundled_weights_path", lambda name: tmp_path / "no.pt")
    with pytest.raises(ValueError, match="no trained weights are bundled.*--weights"):
        make_hop_backend("raft-small")
    with pytest.raises(ValueError, match="not to dis-fast"):
        make_hop_backend("dis-fast", weights=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="no such weights file"):
        make_hop_backend("raft-small", weights=tmp_path / "absent.pt")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


def test_raft_backends_load_the_bundled_weights_unless_weights_are_given(tmp_path, monkeypatch):
    torch.manual_seed(0)
    bundled = tmp_path / "raft_small.pt"
    # As crossnet train-flow writes it: the state dict under "model", here in float16 (loading
    # converts to the model's float32).
    state = {key: value.half() if value.is_floating_point() else value
             for key, value in raft_small().state_dict().items()}
    torch.save({"format": "crossnet-raft", "model": state, "step": 7}, bundled)
    monkeypatch.setattr(flow.weights, "bundled_weights_path", lambda name: bundled)
    backend = make_hop_backend("raft-small", device="cpu", num_flow_updates=2)
    assert backend.weights_sha256 == file_sha256(bundled)
    parameter = backend.model.update_block.flow_head.conv2.weight
    assert parameter.dtype == torch.float32
    torch.testing.assert_close(parameter, state["update_block.flow_head.conv2.weight"].float())
    other = tmp_path / "other.pt"
    torch.save(raft_small().state_dict(), other)
    overridden = make_hop_backend("raft-small", weights=other, device="cpu")
    assert overridden.weights_sha256 == file_sha256(other)


def test_the_shipped_weights_fit_raft_small():
    path = flow.weights.bundled_weights_path("raft-small")
    if not path.is_file():
        pytest.skip("no raft_small.pt shipped in flow/weights")
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert file_sha256(path) in card, "MODEL_CARD.md must quote the shipped file's sha256"
    assert path.stat().st_size < 25e6
    backend = make_hop_backend("raft-small", device="cpu", num_flow_updates=4)
    frames = torch.stack(_frames(2, height=64, width=72))
    encoded = backend.encode(frames)
    flow_estimate = backend.estimate(encoded[:1], encoded[1:])
    assert flow_estimate.shape == (1, 2, 64, 72) and torch.isfinite(flow_estimate).all()


@pytest.mark.parametrize(("flags", "native"), [
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
    ("fpu avx2 amx_bf16 amx_tile", True),
    ("fpu avx2 avx512f avx512_vnni", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    # "bugs" and model names may mention anything; only the flags lines count.
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: avx512_bf16 lookalike\n"
                       f"flags\t\t: {flags}\nbugs\t\t: amx_bf16\n")
    assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16(tmp_path / "absent") is False


def test_raft_runs_in_bf16_by_default_only_where_it_pays(monkeypatch):
    model = raft_small().eval()
    for native in (False, True):
        monkeypatch.setattr(flow.backends, "cpu_has_native_bf16", lambda native=native: native)
        assert bf16_pays(torch.device("cpu")) is native
        assert RaftHopBackend(model, device="cpu").bf16 is native
        assert RaftHopBackend(model, device="cpu", bf16=not native).bf16 is (not native)
    assert bf16_pays(torch.device("cuda")) is True


def test_bf16_flow_stays_within_a_stated_tolerance_of_float32():
    path = flow.weights.bundled_weights_path("raft-small")
    if not path.is_file():
        pytest.skip("no raft_small.pt shipped in flow/weights")
    # A smooth random texture and the same view moved by (u, v) = (3, -2) px from b to a.
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (110, 140, 3)).astype(np.uint8), (0, 0), 1.5)
    base = torch.from_numpy(texture).permute(2, 0, 1)
    a, b = base[:, 4:100, 4:132].contiguous(), base[:, 2:98, 7:135].contiguous()
    backend = make_hop_backend("raft-small", device="cpu")
    flows = {}
    for bf16 in (False, True):
        backend.bf16 = bf16
        encoded = backend.encode(torch.stack([b, a]))
        flows[bf16] = backend.estimate(encoded[:1], encoded[1:])[0]
    truth = torch.tensor([3.0, -2.0]).view(2, 1, 1)
    inner = {bf16: (f - truth)[:, 8:-8, 8:-8].norm(dim=0).mean() for bf16, f in flows.items()}
    difference = (flows[True] - flows[False]).abs().mean()
    assert inner[False] < 0.35, "the float32 reference itself finds the shift"
    assert 0 < difference < 0.03, "bf16 ran (the flows differ) and stays within 0.03 px"
    assert inner[True] < inner[False] + 0.02
