import numpy as np
import pytest

from pipelines.baselines import OpenCVSubtractor


def _frames(num_frames: int, square_from: int) -> list[np.ndarray]:
    """A static textured background; a bright square appears at frame ``square_from``."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, size=(48, 64, 3), dtype=np.uint8)
    frames = []
    for index in range(num_frames):
        frame = background.copy()
        if index >= square_from:
            frame[10:30, 20:44] = (250, 240, 230)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("name", ["mog2", "knn"])
def test_a_new_object_on_a_learned_background_is_foreground(name):
    subtract = OpenCVSubtractor(name)
    masks = [subtract(frame) for frame in _frames(40, square_from=35)]
    last = masks[-1]
    assert set(np.unique(last)) <= {0, 255}
    inside = last[12:28, 22:42]
    outside = np.ones_like(last, dtype=bool)
    outside[8:32, 18:46] = False
    assert (inside == 255).mean() > 0.95
    assert (last[outside] == 0).mean() > 0.99
    assert (masks[30] == 0).mean() > 0.99  # before the object appears: all background


def test_shadow_pixels_count_as_background():
    # A darker copy of the background is what MOG2 labels as shadow (127): it must map to 0.
    subtract = OpenCVSubtractor("mog2")
    background = np.full((32, 32, 3), 160, dtype=np.uint8)
    for _ in range(30):
        subtract(background)
    shadowed = background.copy()
    shadowed[8:24, 8:24] = 110  # about 0.69 of the brightness: inside MOG2's shadow band
    raw = subtract._subtractor.apply(shadowed[:, :, ::-1].copy())
    assert (raw[10:22, 10:22] == 127).mean() > 0.9, "precondition: OpenCV sees a shadow here"
    subtract = OpenCVSubtractor("mog2")
    for _ in range(30):
        subtract(background)
    mask = subtract(shadowed)
    assert (mask[10:22, 10:22] == 0).all()


def test_rejects_unknown_names_and_bad_frames():
    with pytest.raises(ValueError, match="unknown baseline 'vibe'"):
        OpenCVSubtractor("vibe")
    with pytest.raises(ValueError, match=r"\(4, 4\) uint8"):
        OpenCVSubtractor("mog2")(np.zeros((4, 4), dtype=np.uint8))
