"""The mean of several HOFAMs' logits, and what may be averaged."""

import pytest
import torch

from crossnet.ensemble import (
    MAX_MEMBERS,
    LogitMean,
    check_same_inputs,
    ensemble_checkpoint,
)
from crossnet.hofam import HofamConfig, build_hofam


def _inputs(batch=2, height=32, width=48, strides=(1, 2)):
    torch.manual_seed(0)
    return (torch.rand(batch, 3, height, width), torch.randn(batch, len(strides), 2, height, width),
            torch.rand(batch, 3, height, width))


def test_the_ensemble_answers_the_mean_of_its_members_logits():
    torch.manual_seed(3)
    members = [build_hofam(HofamConfig(strides=(1, 2), dynamic_filter=flag)).eval()
               for flag in (True, False, True)]
    frames, hop, background = _inputs()
    with torch.no_grad():
        each = [member(frames, hop, background) for member in members]
        mean = LogitMean(members)(frames, hop, background)
    assert mean.shape == each[0].shape == (2, 1, 32, 48)
    torch.testing.assert_close(mean, (each[0] + each[1] + each[2]) / 3)
    assert not torch.allclose(each[0], each[1])  # the members really differ
    with torch.no_grad():
        torch.testing.assert_close(LogitMean(members[:1])(frames, hop, background), each[0])
    with pytest.raises(ValueError, match="at least one member"):
        LogitMean([])


def test_members_must_read_the_same_inputs_but_may_differ_inside():
    base = HofamConfig(strides=(1, 4, 8))
    check_same_inputs([base, HofamConfig(strides=(1, 4, 8), dynamic_filter=False,
                                         widths=(16, 16, 32, 64), cmdff=False)])
    for change, field in (({"strides": (1, 2, 4)}, "strides"),
                          ({"use_background": False}, "use_background"),
                          ({"background_estimator": "median"}, "background_estimator"),
                          ({"camera_motion": "affine"}, "camera_motion")):
        other = HofamConfig(**{"strides": (1, 4, 8), **change})
        with pytest.raises(ValueError, match=f"members 1 and 3 read different inputs \\({field}"):
            check_same_inputs([base, base, other])


def test_ensemble_checkpoint_entries_and_refusals():
    members = [{"model": {"w": torch.zeros(1)}, "model_config": HofamConfig().to_dict()}
               for _ in range(3)]
    entries = ensemble_checkpoint(members, threshold=0.4, flow_backend="dis-fast")
    assert entries["model"] is members[0]["model"]
    assert [m["model"] for m in entries["extra_members"]] == [members[1]["model"],
                                                             members[2]["model"]]
    assert entries["threshold"] == 0.4 and entries["flow_backend"] == "dis-fast"
    with pytest.raises(ValueError, match="1 to 16 members, got 0"):
        ensemble_checkpoint([], threshold=0.5, flow_backend="dis-fast")
    with pytest.raises(ValueError, match=f"got {MAX_MEMBERS + 1}"):
        ensemble_checkpoint(members[:1] * (MAX_MEMBERS + 1), threshold=0.5,
                            flow_backend="dis-fast")
    with pytest.raises(ValueError, match="threshold must be in"):
        ensemble_checkpoint(members, threshold=1.0, flow_backend="dis-fast")
    odd = {"model": {}, "model_config": HofamConfig(strides=(1, 2)).to_dict()}
    with pytest.raises(ValueError, match="strides"):
        ensemble_checkpoint([members[0], odd], threshold=0.5, flow_backend="dis-fast")
