"""``crossnet ensemble``: checkpoints written as one, loaded as the mean of their logits."""

import numpy as np
import pytest
import torch

from crossnet.checkpoint import load_checkpoint, save_checkpoint
from crossnet.ensemble import LogitMean
from crossnet.hofam import HofamConfig, build_hofam
from flow.backends import make_hop_backend
from pipelines.cli import main
from pipelines.scenes import open_scene
from pipelines.segment import load_segmentation_model, segment_frames
from pipelines.synth import SynthConfig, generate_scenes


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    config = SynthConfig(size=(48, 32), num_frames=5, strides=(1, 2))
    return generate_scenes(root, num_scenes=1, config=config, seed=4, progress=False)[0]


def _constant(path, logit, threshold=0.5, backend="dis-ultrafast", split=None, **config):
    """A checkpoint whose model answers ``logit`` everywhere."""
    torch.manual_seed(0)
    model = build_hofam(HofamConfig(**{"strides": (1, 2), **config}))
    with torch.no_grad():
        model.head.conv.weight.zero_()
        model.head.conv.bias.fill_(logit)
    entries = {"model": model.state_dict(), "model_config": model.config.to_dict(),
               "flow_backend": backend, "threshold": threshold}
    if split is not None:
        entries["split"] = split
    return save_checkpoint(path, entries)


def _masks(weights, scene, **options):
    segmentation = load_segmentation_model(weights, **options)
    return segmentation, [mask for _, mask in segment_frames(
        open_scene(scene), segmentation, backend=make_hop_backend(segmentation.flow_backend))]


def test_an_ensemble_answers_the_mean_logit_with_its_own_threshold(scene, tmp_path, capsys):
    # Logits 4 and -2: each alone says all foreground / all background; the mean, 1, is a
    # probability of 0.73, foreground under the members' mean threshold (0.6), background
    # under --threshold 0.8.
    sure = _constant(tmp_path / "sure.pt", 4.0, threshold=0.5)
    doubt = _constant(tmp_path / "doubt.pt", -2.0, threshold=0.7, dynamic_filter=False)
    out = tmp_path / "ens.pt"
    assert main(["ensemble", str(sure), str(doubt), "--out", str(out)]) == 0
    assert f"wrote {out} (2 members)" in capsys.readouterr().out
    stored = load_checkpoint(out)
    assert stored["threshold"] == pytest.approx(0.6) and len(stored["extra_members"]) == 1
    assert stored["members_threshold"] == [0.5, 0.7] and len(stored["members_sha256"]) == 2
    segmentation, masks = _masks(out, scene)
    assert isinstance(segmentation.model, LogitMean) and len(segmentation.model.members) == 2
    assert segmentation.flow_backend == "dis-ultrafast" and segmentation.threshold == 0.6
    assert len(masks) == 5 and all((mask == 255).all() for mask in masks)
    assert all((mask == 0).all() for mask in _masks(doubt, scene)[1])

    assert main(["ensemble", str(sure), str(doubt), "--out", str(out), "--threshold", "0.8",
                 "--overwrite"]) == 0
    assert all((mask == 0).all() for mask in _masks(out, scene)[1])
    # And through the commands that take --weights.
    folder = tmp_path / "masks"
    assert main(["segment", str(scene), "--out", str(folder), "--weights", str(out),
                 "--no-progress"]) == 0
    assert len(list(folder.glob("bin*.png"))) == 5


def test_camera_motion_override_applies_to_every_member(scene, tmp_path):
    members = [_constant(tmp_path / f"m{i}.pt", 1.0) for i in range(2)]
    main(["ensemble", *map(str, members), "--out", str(tmp_path / "ens.pt")])
    segmentation = load_segmentation_model(tmp_path / "ens.pt", camera_motion="affine")
    assert segmentation.config.camera_motion == "affine"


def _error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_what_cannot_be_averaged_is_refused_in_one_line(scene, tmp_path, capsys):
    a = _constant(tmp_path / "a.pt", 1.0)
    out = tmp_path / "ens.pt"
    cases = [
        ([a, _constant(tmp_path / "s.pt", 1.0, strides=(1, 4))], "different inputs (strides"),
        ([a, _constant(tmp_path / "f.pt", 1.0, backend="dis-fast")],
         "different flow backends (a.pt: dis-ultrafast, f.pt: dis-fast)"),
        ([a, _constant(tmp_path / "p.pt", 1.0, split={"name": "other"})], "different splits"),
        ([a, tmp_path / "absent.pt"], "absent.pt"),
    ]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases.append(([a, tmp_path / "junk.pt"], "junk.pt: "))
    for members, message in cases:
        assert main(["ensemble", *map(str, members), "--out", str(out)]) == 1
        line = _error(capsys)
        assert message in line, line
        assert not out.exists()
    assert main(["ensemble", str(a), str(a), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(a), str(a), "--out", str(out)]) == 1
    assert "exists; pass --overwrite" in _error(capsys)
    assert main(["ensemble", str(out), str(a), "--out", str(tmp_path / "e2.pt")]) == 1
    assert "is an ensemble already" in _error(capsys)


def test_an_ensemble_of_one_is_a_usage_error_naming_members(scene, tmp_path, capsys):
    from pipelines.ensemble import make_ensemble
    from pipelines.errors import InputError

    a = _constant(tmp_path / "a.pt", 1.0)
    out = tmp_path / "ens.pt"
    assert main(["ensemble", str(a), "--out", str(out)]) == 2
    assert ("Invalid value for MEMBERS: an ensemble needs at least two checkpoints, got 1"
            in capsys.readouterr().err)
    assert not out.exists()
    with pytest.raises(InputError, match="an ensemble needs at least two checkpoints, got 1"):
        make_ensemble([a], out)


def test_a_damaged_ensemble_checkpoint_is_refused_naming_the_member(tmp_path):
    path = _constant(tmp_path / "a.pt", 1.0)
    document = load_checkpoint(path)
    base = {k: v for k, v in document.items() if k not in ("format", "format_version")}
    good = {"model": document["model"], "model_config": document["model_config"]}
    wide = build_hofam(HofamConfig(strides=(1, 2), widths=(8, 16, 32, 128)))
    for extra, message in (
            ("members", "'extra_members' entry is not a list of dicts"),
            ([good, {"model_config": document["model_config"]}],
             "member 3: no 'model' or 'model_config' entry"),
            ([{"model": document["model"], "model_config": wide.config.to_dict()}],
             "member 2: weights do not fit"),
            ([{"model": document["model"],
               "model_config": {**document["model_config"], "widths": "wide"}}],
             "member 2: bad model configuration"),
            ([good] * 16, "an ensemble of 17 members (at most 16)")):
        save_checkpoint(tmp_path / "bad.pt", {**base, "extra_members": extra})
        with pytest.raises(ValueError, match="bad.pt: ") as error:
            load_segmentation_model(tmp_path / "bad.pt")
        assert message in str(error.value), str(error.value)
    # Members whose configurations fit their weights but read different inputs.
    other = build_hofam(HofamConfig(strides=(1, 2), use_background=False))
    save_checkpoint(tmp_path / "bad.pt", {**base, "extra_members": [
        {"model": other.state_dict(), "model_config": other.config.to_dict()}]})
    with pytest.raises(ValueError, match="members 1 and 2 read different inputs"):
        load_segmentation_model(tmp_path / "bad.pt")
    assert np.isfinite(load_segmentation_model(path).threshold)
