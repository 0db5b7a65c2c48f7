"""A model trained on RAFT flow records which network made that flow, and segmentation refuses
to feed it the flow of another network (e.g. the bundled raft-small weights in place of the
user's own, which `--flow raft-small` would load silently otherwise)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import flow.weights
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
    """Three tiny scenes preprocessed with one random RAFT network (A) and again with another
    (B), and a HOFAM trained on the A caches."""
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


@pytest.mark.parametrize("command", ["segment", "evaluate", "pseudo-label"])
def test_the_commands_refuse_the_bundled_network_in_one_line(runs, tmp_path, capsys,
                                                             monkeypatch, command):
    """Without --flow-weights, `--flow raft-small` means the bundled network (here B)."""
    monkeypatch.setattr(flow.weights, "bundled_weights_path", lambda name: runs["b"])
    scene = str(runs["root"] / "scenes" / "scene_000")
    out = tmp_path / "out"
    args = {"segment": ["segment", scene, "--out", str(out)],
            "evaluate": ["evaluate", scene, "--method", "crossnet"],
            "pseudo-label": ["pseudo-label", scene, "--out", str(out)]}[command]
    assert cli([*args, "--weights", str(runs["best"]), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert (f"best.pt: trained on raft-small flow from network weights "
            f"{file_sha256(runs['a'])[:12]}, but this raft-small backend runs weights "
            f"{file_sha256(runs['b'])[:12]}; pass --flow-weights") in err[0]
    assert not out.exists() or not any(out.rglob("*.png"))


@pytest.mark.parametrize("command", ["segment", "evaluate", "pseudo-label"])
def test_flow_weights_name_the_network(runs, tmp_path, command):
    scene = str(runs["root"] / "scenes" / "scene_000")
    out = tmp_path / "out"
    args = {"segment": ["segment", scene, "--out", str(out)],
            "evaluate": ["evaluate", scene, "--method", "crossnet", "--json",
                         str(tmp_path / "scores.json")],
            "pseudo-label": ["pseudo-label", scene, "--out", str(out)]}[command]
    assert cli([*args, "--weights", str(runs["best"]), "--flow-weights", str(runs["a"]),
                "--no-progress"]) == 0
    made = {"segment": lambda: list(out.glob("bin*.png")),
            "evaluate": lambda: [tmp_path / "scores.json"],
            "pseudo-label": lambda: list(out.glob("pseudo_*/groundtruth/gt*.png"))}[command]()
    assert made and all(path.is_file() for path in made)


def test_another_backend_than_the_models_runs_with_one_warning(runs, tmp_path, caplog):
    """`--flow` naming another backend than the model's is the user's call: it runs, and a
    warning says the pairing was never trained (before, it ran silently)."""
    scene = str(runs["root"] / "scenes" / "scene_000")
    with caplog.at_level("WARNING", logger="pipelines.cli"):
        assert cli(["segment", scene, "--out", str(tmp_path / "dis"), "--flow", "dis-ultrafast",
                    "--weights", str(runs["best"]), "--no-progress"]) == 0
        assert cli(["segment", scene, "--out", str(tmp_path / "own"), "--flow", "raft-small",
                    "--flow-weights", str(runs["a"]), "--weights", str(runs["best"]),
                    "--no-progress"]) == 0
    warning = (f"{runs['best']} was trained on raft-small flow, not on the dis-ultrafast flow "
               "it gets now: how well it does on that is not measured")
    assert [record.getMessage() for record in caplog.records] == [warning]


def test_flow_weights_are_refused_where_they_cannot_apply(runs, tmp_path, capsys):
    scene = str(runs["root"] / "scenes" / "scene_000")
    common = ["--weights", str(runs["best"]), "--flow-weights", str(runs["a"]), "--no-progress"]
    assert cli(["segment", scene, "--out", str(tmp_path / "dis"), "--flow", "dis-fast",
                *common]) == 1
    assert capsys.readouterr().err.strip() == ("crossnet: error: --flow-weights applies to the "
                                               "RAFT backends, not to dis-fast (--flow)")
    assert cli(["evaluate", scene, "--method", "mog2", *common]) == 1
    assert "--flow-weights applies to --method crossnet" in capsys.readouterr().err
    assert cli(["segment", scene, "--out", str(tmp_path / "large"), "--weights",
                str(runs["best"]), "--flow", "raft-large", "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == ("crossnet: error: no trained weights are bundled "
                                               "for raft-large (--flow); pass --flow-weights "
                                               "PATH")


def test_mask_folders_and_labels_record_the_flow_network(runs, tmp_path):
    """A rerun with another network is refused, not taken for the finished run."""
    older = load_checkpoint(runs["best"])
    del older["flow_weights_sha256"]  # no record: any named network runs
    torch.save(older, tmp_path / "older.pt")
    scene = str(runs["root"] / "scenes" / "scene_000")
    for command in (["segment", scene, "--out", str(tmp_path / "masks")],
                    ["pseudo-label", scene, "--out", str(tmp_path / "labels")]):
        first = [*command, "--weights", str(tmp_path / "older.pt"), "--no-progress"]
        assert cli([*first, "--flow-weights", str(runs["a"])]) == 0
        assert cli([*first, "--flow-weights", str(runs["a"])]) == 0  # finished: skipped
        assert cli([*first, "--flow-weights", str(runs["b"])]) == 1


def test_an_older_raft_model_is_refused_the_bundled_network(runs, tmp_path, monkeypatch):
    """Checkpoints from before the record name no network, but cannot have been trained on
    the bundled one (it came later): that pairing is refused, named weights pass."""
    older = load_checkpoint(runs["best"])
    del older["flow_weights_sha256"]
    torch.save(older, tmp_path / "older.pt")
    segmentation = load_segmentation_model(tmp_path / "older.pt")
    assert segmentation.flow_weights_sha256 == ""
    check_flow_weights(segmentation, make_hop_backend("raft-small", weights=runs["a"]),
                       weights_named=False)
    monkeypatch.setattr(flow.weights, "bundled_weights_path", lambda name: runs["b"])
    bundled = make_hop_backend("raft-small")
    with pytest.raises(InputError, match=r"older\.pt: trained on raft-small flow before "
                                         "checkpoints recorded the network"):
        check_flow_weights(segmentation, bundled, weights_named=False)
    check_flow_weights(segmentation, bundled)  # named on purpose (--flow-weights): passes


def test_a_malformed_record_is_refused(runs, tmp_path):
    bad = load_checkpoint(runs["best"])
    bad["flow_weights_sha256"] = ["not", "a", "hash"]
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt: flow_weights_sha256 .* is not a sha256"):
        load_segmentation_model(tmp_path / "bad.pt")
    with pytest.raises(InputError, match=r"bad\.pt: flow_weights_sha256 .* is not a sha256"):
        make_ensemble([runs["best"], tmp_path / "bad.pt"], tmp_path / "ensemble.pt")
    odd = load_checkpoint(runs["best"])
    odd["flow_backend"] = ["raft-small"]
    torch.save(odd, tmp_path / "odd.pt")
    with pytest.raises(InputError, match=r"odd\.pt: flow_backend \['raft-small'\] in the "
                                         "checkpoint is not a name"):
        make_ensemble([runs["best"], tmp_path / "odd.pt"], tmp_path / "ensemble.pt")


def test_resuming_on_another_networks_flow_is_refused(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["root"] / "run", run)
    with pytest.raises(InputError, match=r"last\.pt: trained so far on flow from network "
                                         rf"weights {file_sha256(runs['a'])[:12]}, but the "
                                         rf"caches now hold flow from network weights "
                                         rf"{file_sha256(runs['b'])[:12]}; point --data"):
        train([runs["root"] / "cache_b"], SPLIT, run, runs["config"], device="cpu",
              progress=False, resume=True)


def test_an_ensemble_keeps_the_record_and_refuses_mixed_networks(runs, tmp_path):
    best = runs["best"]
    ensemble = make_ensemble([best, best], tmp_path / "ensemble.pt")
    assert load_checkpoint(ensemble)["flow_weights_sha256"] == file_sha256(runs["a"])
    other = load_checkpoint(best)
    other["flow_weights_sha256"] = file_sha256(runs["b"])
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(InputError, match="trained on flow from different network weights"):
        make_ensemble([best, tmp_path / "other.pt"], tmp_path / "mixed.pt")
