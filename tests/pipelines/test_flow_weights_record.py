"""A model trained on RAFT flow records which network made that flow, and segmentation refuses
to feed it the flow of another network (e.g. the bundled raft-small weights in place of the
user's own, which `--flow raft-small` would load silently otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossnet.checkpoint import load_checkpoint
from crossnet.hofam import HofamConfig
from crossnet.split import Split
from flow.backends import file_sha256, make_hop_backend
from flow.raft import raft_small
from pipelines.cli import main as cli
from pipelines.ensemble import make_ensemble
from pipelines.errors import InputError
from pipelines.preprocess import preprocess
from pipelines.segment import check_flow_weights, load_segmentation_model, segment_frames
from pipelines.sources import open_source
from pipelines.synth import SynthConfig, generate_scenes
from pipelines.train import TrainConfig, train

SPLIT = Split(name="tiny", train=(), validation=("scene_002",), test=(),
              train_patterns=("scene_00[01]",))


def _raft_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(raft_small().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny scenes preprocessed with one random RAFT network (A), one of them again with
    another (B), and a HOFAM trained on the A caches."""
    root = tmp_path_factory.mktemp("raft_record")
    config = SynthConfig(size=(64, 48), num_frames=10, strides=(1, 2), min_objects=1,
                         max_objects=2, min_object_size=0.2, max_object_size=0.4)
    generate_scenes(root / "scenes", num_scenes=3, config=config, seed=11, progress=False)
    weights_a = _raft_weights(root / "a.pt", 0)
    weights_b = _raft_weights(root / "b.pt", 1)
    for name, weights in (("cache_a", weights_a), ("cache_b", weights_b)):
        summary = preprocess([root / "scenes"], root / name,
                             backend=make_hop_backend("raft-small", weights=weights,
                                                      num_flow_updates=2),
                             strides=(1, 2), progress=False)
        assert len(summary.written) == 3
    train_config = TrainConfig(epochs=1, batch_size=4, samples_per_epoch=8, crop_size=(32, 48),
                               composite_fraction=0.0, num_workers=0, seed=0,
                               model=HofamConfig(widths=(8, 16, 16, 16)))
    best = train([root / "cache_a"], SPLIT, root / "run", train_config, device="cpu",
                 progress=False)
    return {"root": root, "a": weights_a, "b": weights_b, "best": best,
            "config": train_config}


def test_the_checkpoint_records_the_flow_networks_weights(runs):
    assert load_checkpoint(runs["best"])["flow_weights_sha256"] == file_sha256(runs["a"])
    segmentation = load_segmentation_model(runs["best"])
    assert segmentation.flow_backend == "raft-small"
    assert segmentation.flow_weights_sha256 == file_sha256(runs["a"])


def test_caches_of_two_networks_are_refused(runs, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, folder in (("scene_000", "cache_a"), ("scene_001", "cache_b"),
                         ("scene_002", "cache_a")):
        (mixed / f"{name}.h5").symlink_to(runs["root"] / folder / f"{name}.h5")
    with pytest.raises(InputError, match=r"scene_001\.h5: its flow comes from other network "
                                         r"weights .*one --weights"):
        train([mixed], SPLIT, tmp_path / "run", runs["config"], device="cpu", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_segmentation_refuses_another_networks_flow(runs):
    segmentation = load_segmentation_model(runs["best"])
    frames = runs["root"] / "scenes" / "scene_000"
    same = make_hop_backend("raft-small", weights=runs["a"], num_flow_updates=2)
    check_flow_weights(segmentation, same)
    masks = [mask for _, mask in segment_frames(open_source(frames), segmentation,
                                                backend=same)]
    assert len(masks) == 10 and all(mask.shape == (48, 64) for mask in masks)
    other = make_hop_backend("raft-small", weights=runs["b"], num_flow_updates=2)
    with pytest.raises(InputError, match=r"best\.pt: trained on raft-small flow from network "
                                         rf"weights {file_sha256(runs['a'])[:12]}, but this "
                                         rf"raft-small backend runs weights "
                                         rf"{file_sha256(runs['b'])[:12]}"):
        next(segment_frames(open_source(frames), segmentation, backend=other))
    # Another backend chosen on purpose is the user's call, as before.
    check_flow_weights(segmentation, make_hop_backend("dis-fast"))


def test_segment_cli_says_so_in_one_line(runs, tmp_path, capsys):
    """`crossnet segment --flow raft-small` loads the bundled network (or none), never A."""
    code = cli(["segment", str(runs["root"] / "scenes" / "scene_000"), "--out",
                str(tmp_path / "masks"), "--weights", str(runs["best"]), "--no-progress"])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "best.pt" in err[0]
    assert ("network weights" in err[0] or "no trained weights are bundled" in err[0]), err[0]
    assert not (tmp_path / "masks").exists() or not any((tmp_path / "masks").iterdir())


def test_an_ensemble_keeps_the_record_and_refuses_mixed_networks(runs, tmp_path):
    best = runs["best"]
    ensemble = make_ensemble([best, best], tmp_path / "ensemble.pt")
    assert load_checkpoint(ensemble)["flow_weights_sha256"] == file_sha256(runs["a"])
    other = load_checkpoint(best)
    other["flow_weights_sha256"] = file_sha256(runs["b"])
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(InputError, match="trained on flow from different network weights"):
        make_ensemble([best, tmp_path / "other.pt"], tmp_path / "mixed.pt")
