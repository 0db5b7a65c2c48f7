"""Flow backends by name, through the 3D-HOP builder: RAFT's encode-once path equals its forward."""

import pytest
import torch

from flow.backends import file_sha256, make_hop_backend, resolve_device
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
    frames = _frames(6)
    hops = dict(build_hops(frames, backend, (1, 4), batch_frames=4))
    with torch.inference_mode():
        for t, k_index, k in ((5, 0, 1), (5, 1, 4), (2, 1, 4)):
            earlier = max(t - k, 0)
            expected = model(frames[t][None].float(), frames[earlier][None].float(),
                             num_flow_updates=3)[-1][0]
            torch.testing.assert_close(hops[t][k_index], expected, rtol=1e-4, atol=1e-4)


def test_classical_backend_and_errors(tmp_path):
    backend = make_hop_backend("dis-fast")
    assert backend.name == "dis-fast" and backend.weights_sha256 == ""
    frames = _frames(3)
    stacks = dict(build_hops(frames, backend, (1,)))
    assert stacks[2].shape == (1, 2, 40, 56)
    with pytest.raises(ValueError, match="unknown flow backend 'pwc'"):
        make_hop_backend("pwc")
    with pytest.raises(ValueError, match="--weights"):
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
