"""3D-HOP builder: which pairs, in which order, each frame encoded once, bounded memory."""

import pytest
import torch

from flow.hop import build_hops, check_strides, earlier_frame


class RecordingBackend:
    """A fake backend whose 'flow' encodes the pair: u = first frame index, v = second index.

    Frame i is a constant image of value i, so the encoding (the value) identifies the frame.
    """

    name = "recording"

    def __init__(self):
        self.encoded: list[int] = []
        self.calls = 0
        self.live_max = 0

    def encode(self, frames):
        values = [int(frame[0, 0, 0]) for frame in frames]
        self.encoded.extend(values)
        return values

    def estimate(self, first, second):
        self.calls += 1
        height, width = 4, 5
        out = torch.empty(len(first), 2, height, width)
        for i, (a, b) in enumerate(zip(first, second)):
            out[i, 0], out[i, 1] = a, b
        return out


def _frames(count):
    return [torch.full((3, 4, 5), i, dtype=torch.uint8) for i in range(count)]


@pytest.mark.parametrize("batch_frames", [1, 3, 8, 40])
def test_each_stack_pairs_t_with_t_minus_k_or_the_first_frame(batch_frames):
    backend = RecordingBackend()
    strides = (1, 4, 8)
    hops = list(build_hops(_frames(20), backend, strides, batch_frames=batch_frames))
    assert [t for t, _ in hops] == list(range(20))
    for t, stack in hops:
        assert stack.shape == (3, 2, 4, 5)
        for s, k in enumerate(strides):
            second = max(t - k, 0)
            if second == t:
                assert torch.count_nonzero(stack[s]) == 0  # frame 0 with itself: zero flow
            else:
                assert stack[s, 0].unique().tolist() == [t]
                assert stack[s, 1].unique().tolist() == [second]
    assert backend.encoded == list(range(20)), "every frame encoded exactly once"
    # one backend call per chunk, except a chunk of frame 0 alone (nothing to estimate)
    assert backend.calls == -(-20 // batch_frames) - (batch_frames == 1)


def test_resume_yields_only_frames_from_start_and_encodes_only_what_they_need():
    backend = RecordingBackend()
    hops = list(build_hops(_frames(30), backend, (1, 2, 5), batch_frames=4, start=20))
    assert [t for t, _ in hops] == list(range(20, 30))
    assert backend.encoded == list(range(15, 30))
    t, stack = hops[0]
    assert stack[2, 1].unique().tolist() == [15]
    reference = dict(build_hops(_frames(30), RecordingBackend(), (1, 2, 5), batch_frames=4))
    for t, stack in hops:
        torch.testing.assert_close(stack, reference[t], rtol=0, atol=0)


def test_helpers_and_errors():
    assert [earlier_frame(t, 4) for t in (0, 3, 4, 9)] == [0, 0, 0, 5]
    assert check_strides([1, 4, 8]) == (1, 4, 8)
    for bad in ([], [4, 1], [0, 2], [2, 2]):
        with pytest.raises(ValueError, match="strictly increasing"):
            check_strides(bad)
    frames = _frames(3) + [torch.zeros(3, 6, 5, dtype=torch.uint8)]
    with pytest.raises(ValueError, match=r"frame 3 has shape \(3, 6, 5\)"):
        list(build_hops(frames, RecordingBackend(), (1,)))
