"""Camera-motion compensation: known camera fields are removed, object motion is kept."""

import numpy as np
import pytest
import torch

from crossnet.camera_motion import fit_camera_flow, remove_camera_motion
from crossnet.hofam import HofamConfig

HEIGHT, WIDTH = 60, 80
STRIDES = (1, 4, 8)


def camera_field(stride: float) -> torch.Tensor:
    """A pan, a slight zoom and a roll: (2, H, W) pixels, for ``stride`` frames."""
    rows, columns = torch.meshgrid(torch.arange(HEIGHT).float(), torch.arange(WIDTH).float(),
                                   indexing="ij")
    u = 2.0 + 0.01 * columns - 0.004 * rows
    v = -1.5 + 0.003 * columns + 0.008 * rows
    return stride * torch.stack([u, v])


def hop_with_object(object_speed=(1.5, -0.5)) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 2, H, W) camera flow with a 15x20 object moving on its own, and the object mask."""
    hop = torch.stack([camera_field(k) for k in STRIDES])
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[20:35, 30:50] = True
    for s, k in enumerate(STRIDES):
        for c in range(2):
            hop[s, c][mask] = k * object_speed[c]
    return hop, mask


def test_a_camera_field_alone_is_removed_entirely():
    hop = torch.stack([camera_field(k) for k in STRIDES])
    residual = remove_camera_motion(hop, STRIDES)
    assert residual.shape == hop.shape and residual.dtype == hop.dtype
    assert residual.abs().max() < 0.01


def test_the_background_goes_to_zero_and_the_object_keeps_its_relative_motion():
    hop, mask = hop_with_object()
    residual = remove_camera_motion(hop, STRIDES)
    camera = torch.stack([camera_field(k) for k in STRIDES])
    # The fit runs on 32x24 pooled cells; cells straddling the object's edge blur its border,
    # so the background is checked two pixels away from the object.
    near = torch.nn.functional.max_pool2d(mask[None, None].float(), 5, 1, 2)[0, 0] > 0
    for s, k in enumerate(STRIDES):
        background = residual[s][:, ~near]
        assert background.abs().max() < 0.02 * k, (k, background.abs().max())
        relative = residual[s][:, mask]
        expected = hop[s][:, mask] - camera[s][:, mask]
        assert (relative - expected).abs().max() < 0.02 * k
        assert relative.norm(dim=0).min() > 0.5 * k  # the object still moves


def test_a_still_camera_passes_the_flow_through():
    hop = torch.zeros(len(STRIDES), 2, HEIGHT, WIDTH)
    np.testing.assert_array_equal(remove_camera_motion(hop, STRIDES).numpy(), hop.numpy())
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[10:40, 10:45] = True  # a big object: a quarter of the frame
    for s, k in enumerate(STRIDES):
        hop[s, 0][mask] = 2.0 * k
    residual = remove_camera_motion(hop, STRIDES)
    assert (residual - hop).abs().max() < 0.05 * max(STRIDES)


def test_batches_are_fitted_per_frame():
    first, _ = hop_with_object((1.0, 0.0))
    second = torch.stack([camera_field(-0.5 * k) for k in STRIDES])
    batched = remove_camera_motion(torch.stack([first, second]), STRIDES)
    torch.testing.assert_close(batched[0], remove_camera_motion(first, STRIDES))
    torch.testing.assert_close(batched[1], remove_camera_motion(second, STRIDES))


def test_arrays_come_back_as_arrays_and_none_changes_nothing():
    hop = torch.stack([camera_field(k) for k in STRIDES]).numpy().astype(np.float16)
    residual = remove_camera_motion(hop, STRIDES)
    assert isinstance(residual, np.ndarray) and residual.dtype == np.float16
    assert np.abs(residual.astype(np.float32)).max() < 0.05
    assert remove_camera_motion(hop, STRIDES, "none") is hop


def test_fit_without_strides_treats_fields_alike():
    field = camera_field(1.0)
    torch.testing.assert_close(fit_camera_flow(field), field, atol=0.01, rtol=0)


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(8, 8)])
def test_bad_shapes_are_refused(bad):
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, H, W\)"):
        fit_camera_flow(bad)


def test_unknown_modes_and_mismatched_strides_are_refused():
    hop = torch.zeros(3, 2, 8, 8)
    with pytest.raises(ValueError, match="unknown camera motion 'homography'"):
        remove_camera_motion(hop, STRIDES, "homography")
    with pytest.raises(ValueError, match="2 strides"):
        remove_camera_motion(hop, (1, 4))


def test_the_model_config_records_the_mode_and_old_configs_default_to_none():
    assert HofamConfig.from_dict({"strides": [1, 4, 8]}).camera_motion == "none"
    config = HofamConfig(camera_motion="affine")
    assert HofamConfig.from_dict(config.to_dict()).camera_motion == "affine"
    with pytest.raises(ValueError, match="camera_motion must be one of"):
        HofamConfig(camera_motion="pan")
