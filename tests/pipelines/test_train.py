"""`crossnet train`: a real (tiny) run, resume == uninterrupted, NaN stops cleanly, DDP with gloo."""

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pipelines.train as train_module
from crossnet.checkpoint import load_checkpoint
from crossnet.hofam import HofamConfig
from crossnet.split import Split
from flow.backends import make_hop_backend
from pipelines.cli import main
from pipelines.errors import InputError, TrainingDiverged
from pipelines.preprocess import preprocess
from pipelines.synth import SynthConfig, generate_scenes
from pipelines.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
SPLIT = Split(name="tiny", train=(), validation=("scene_003",), test=(),
              train_patterns=("scene_00[0-2]",))


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> Path:
    """Four tiny synthetic scenes, preprocessed: three train, one validates."""
    root = tmp_path_factory.mktemp("synthetic")
    config = SynthConfig(size=(64, 48), num_frames=24, strides=(1, 2), min_objects=2,
                         max_objects=3, min_object_size=0.2, max_object_size=0.4)
    generate_scenes(root / "scenes", num_scenes=4, config=config, seed=5, progress=False)
    summary = preprocess([root / "scenes"], root / "cache",
                         backend=make_hop_backend("dis-ultrafast"), strides=(1, 2),
                         progress=False)
    assert len(summary.written) == 4
    return root / "cache"


def _config(**changes) -> TrainConfig:
    values = {"epochs": 2, "batch_size": 4, "lr": 2e-3, "samples_per_epoch": 16,
              "crop_size": (32, 48), "composite_fraction": 0.25, "num_workers": 0, "seed": 3,
              "model": HofamConfig(widths=(8, 16, 16, 16))}
    values.update(changes)
    return TrainConfig(**values)


def _states_equal(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        torch.testing.assert_close(value, second[key], rtol=0, atol=0, msg=key)


def test_a_run_writes_checkpoints_and_a_log(caches, tmp_path):
    best = train([caches], SPLIT, tmp_path / "run", _config(), device="cpu", progress=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert best == tmp_path / "run" / "best.pt" and best.exists()
    assert last["epoch"] == 2
    assert last["model_config"]["strides"] == [1, 2]  # taken from the caches
    assert last["split"]["validation"] == ["scene_003"]
    assert last["train_config"]["composite_fraction"] == 0.25
    assert last["threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # picked on validation
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert set(lines[0]["validation"]) == {"scene_003"}
    assert all(0.0 <= line["validation_f"] <= 1.0 for line in lines)
    assert all(line["threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8) for line in lines)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [Path(p).stem for p in config["train_caches"]] == ["scene_000", "scene_001",
                                                              "scene_002"]
    with pytest.raises(InputError, match="pass --resume"):
        train([caches], SPLIT, tmp_path / "run", _config(), device="cpu", progress=False)


def test_composites_are_made_with_the_caches_flow(caches, tmp_path, monkeypatch):
    """The composites' 3D-HOP comes from the backend that made the caches (dis-ultrafast
    here), never another one: segment feeds the model one kind of flow."""
    import flow.backends

    made_with = []
    real_make = flow.backends.make_hop_backend

    def recording_make(name, **options):
        made_with.append(name)
        return real_make(name, **options)

    monkeypatch.setattr(flow.backends, "make_hop_backend", recording_make)
    train([caches], SPLIT, tmp_path / "run", _config(epochs=1), device="cpu", progress=False)
    assert made_with == ["dis-ultrafast"]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]
    assert recorded["composite_flow"] == "dis-ultrafast"
    assert load_checkpoint(tmp_path / "run" / "best.pt")["flow_backend"] == "dis-ultrafast"
    with pytest.raises(InputError, match="composites would be made with dis-fast flow, but the "
                                         "caches hold dis-ultrafast flow"):
        train([caches], SPLIT, tmp_path / "other", _config(composite_flow="dis-fast"),
              device="cpu", progress=False)


def test_runs_of_older_code_resume_where_their_composites_flow_did_not_matter(caches, tmp_path):
    """Older code recorded dis-fast as the composites' flow whatever the caches held (here
    dis-ultrafast). A run without composites resumes; one whose composites mixed two kinds of
    flow is refused with one line naming it, since it cannot go on as it started."""
    for fraction in (0.0, 0.25):
        run = tmp_path / f"run{fraction}"
        train([caches], SPLIT, run, _config(epochs=1, composite_fraction=fraction),
              device="cpu", progress=False)
        checkpoint = load_checkpoint(run / "last.pt")
        checkpoint["train_config"]["composite_flow"] = "dis-fast"
        torch.save(checkpoint, run / "last.pt")
        resume = functools.partial(train, [caches], SPLIT, run,
                                   _config(epochs=1, composite_fraction=fraction),
                                   device="cpu", resume=True, progress=False)
        if fraction == 0.0:
            resume()  # nothing left to train, but the settings were accepted
        else:
            with pytest.raises(InputError, match=r"last\.pt: its composites were made with "
                                                 "dis-fast flow but its caches hold "
                                                 "dis-ultrafast flow"):
                resume()


def test_composites_of_raft_caches_are_refused(caches, tmp_path, monkeypatch):
    """RAFT caches name their weights only by sha256, so composites cannot be made with the
    same network: refused before anything is written, unless composites are off."""
    monkeypatch.setattr(train_module, "cache_flow", lambda paths: "raft-small")
    with pytest.raises(InputError, match="raft-small caches cannot be matched.*"
                                         "--composite-fraction 0"):
        train([caches], SPLIT, tmp_path / "run", _config(), device="cpu", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()
    train([caches], SPLIT, tmp_path / "run", _config(epochs=1, composite_fraction=0.0),
          device="cpu", progress=False)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["flow_backend"] == "raft-small"


def test_caches_of_two_flow_backends_are_refused(caches, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(caches, mixed)
    (mixed / "scene_001.h5").unlink()
    preprocess([caches.parent / "scenes" / "scene_001"], mixed,
               backend=make_hop_backend("dis-fast"), strides=(1, 2), progress=False)
    with pytest.raises(InputError, match=r"scene_001\.h5: made with dis-fast flow, not "
                                         "dis-ultrafast"):
        train([mixed], SPLIT, tmp_path / "run", _config(), device="cpu", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("weight_average", [0.0, 0.9])
def test_resume_reproduces_the_uninterrupted_run(caches, tmp_path, monkeypatch, weight_average,
                                                 capsys):
    config = _config(weight_average=weight_average)
    train([caches], SPLIT, tmp_path / "whole", config, device="cpu", progress=False)
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")

    real_validate = train_module.validate
    calls = []

    def validate_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second epoch dies before its checkpoint is written
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", validate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train([caches], SPLIT, tmp_path / "cut", config, device="cpu", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_module, "validate", real_validate)
    capsys.readouterr()
    train([caches], SPLIT, tmp_path / "cut", config, device="cpu", resume=True,
          progress=False)
    assert capsys.readouterr().out.startswith(
        f"resuming {tmp_path / 'cut' / 'last.pt'}: 1 of 2 epochs done, best validation F so far ")
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert resumed["epoch"] == 2
    _states_equal(resumed["model"], whole["model"])
    if weight_average:
        _states_equal(resumed["trained_model"], whole["trained_model"])
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in whole["history"]], rel=1e-6)
    with pytest.raises(InputError, match=r"other settings \(lr: 0.002 there, 0.001 now\)"):
        train([caches], SPLIT, tmp_path / "cut", dataclasses.replace(config, lr=1e-3),
              device="cpu", resume=True, progress=False)
    with pytest.raises(InputError, match=r"other settings \(model.attention: true there, "
                                         r"false now\)"):
        train([caches], SPLIT, tmp_path / "cut",
              dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                    attention=False)),
              device="cpu", resume=True, progress=False)


def test_weight_average_validates_and_ships_the_average(caches, tmp_path):
    train([caches], SPLIT, tmp_path / "run", _config(weight_average=0.9), device="cpu",
          progress=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    steps = 2 * (16 // 4)  # epochs x steps per epoch
    assert last["weight_average"] == {"steps": steps}
    # "model" is the average, which differs from the weights the optimiser left.
    weight = next(iter(last["model"]))
    assert not torch.equal(last["model"][weight], last["trained_model"][weight])
    # best.pt, what users load, holds the average only.
    assert not {"trained_model", "weight_average", "optimizer"} & set(best)
    if best["epoch"] == 2:
        _states_equal(best["model"], last["model"])


def test_a_run_of_older_code_resumes(caches, tmp_path):
    """A checkpoint written before a setting existed resumes as if it had its default."""
    train([caches], SPLIT, tmp_path / "run", _config(epochs=1), device="cpu", progress=False)
    path = tmp_path / "run" / "last.pt"
    checkpoint = load_checkpoint(path)
    del checkpoint["train_config"]["weight_average"], checkpoint["train_config"]["augment"]["haze"]
    torch.save(checkpoint, path)
    train([caches], SPLIT, tmp_path / "run", _config(epochs=1), device="cpu", resume=True,
          progress=False)  # nothing left to train, but the settings were accepted
    with pytest.raises(InputError, match="other settings"):
        train([caches], SPLIT, tmp_path / "run", _config(epochs=1, weight_average=0.9),
              device="cpu", resume=True, progress=False)


def test_older_configs_get_the_behaviour_of_their_time_where_a_default_changed():
    recorded = TrainConfig(camera_pan=0.0).to_dict()
    del recorded["camera_pan"]  # written before camera panning existed: all composites still
    assert train_module.with_new_defaults(recorded) == TrainConfig(camera_pan=0.0).to_dict()
    assert TrainConfig().camera_pan == 0.5
    assert train_module.with_new_defaults(TrainConfig().to_dict()) == TrainConfig().to_dict()


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(caches, tmp_path,
                                                                      monkeypatch):
    real_forward = train_module.SegmentationLoss.forward
    steps = []

    def forward_that_explodes(self, logits, labels, roi=None):
        steps.append(1)
        total, parts = real_forward(self, logits, labels, roi)
        return (total * float("nan"), parts) if len(steps) > 4 else (total, parts)

    monkeypatch.setattr(train_module.SegmentationLoss, "forward", forward_that_explodes)
    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 2"):
        train([caches], SPLIT, tmp_path / "run", _config(), device="cpu", progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_cli_reports_missing_data_in_one_line(tmp_path, capsys):
    split = tmp_path / "split.json"
    split.write_text(json.dumps(SPLIT.to_dict()))
    code = main(["train", "--data", str(tmp_path / "nothing"), "--split", str(split), "--out",
                 str(tmp_path / "run"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"crossnet: error: {tmp_path / 'nothing'}: no such folder of caches"]


def test_two_process_gloo_ddp_run(caches, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps(SPLIT.to_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "pipelines.cli", "train", "--data", str(caches),
               "--split", str(split), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--batch-size", "4", "--samples-per-epoch", "16", "--crop", "48x32",
               "--workers", "0", "--device", "cpu", "--no-progress"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["epoch"] == 1
    assert checkpoint["train_config"]["batch_size"] == 4
    # Two ranks of batch 4 share 16 samples: 2 steps each, one optimizer step per step.
    assert checkpoint["scheduler"]["last_epoch"] == 2


def test_cli_passes_haze_zoom_weight_average_camera_pan_and_dynamic_filter(caches, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps(SPLIT.to_dict()))
    args = ["train", "--data", str(caches), "--split", str(split), "--out", str(tmp_path / "run"),
            "--epochs", "1", "--batch-size", "2", "--samples-per-epoch", "2", "--crop", "32x32",
            "--workers", "0", "--no-progress"]
    assert main([*args, "--weight-average", "1"]) == 2  # a usage error: the decay is below 1
    assert main([*args, "--camera-pan", "1.5"]) == 2
    for zoom in ("1.5,0.67", "0,2", "2", "a,b", "nan,2"):
        assert main([*args, "--zoom", zoom]) == 2, zoom
    assert main([*args, "--haze", "0.5", "--weight-average", "0.9", "--camera-pan", "0.5",
                 "--no-dynamic-filter", "--zoom", "0.67,1.5"]) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]
    assert recorded["augment"]["haze"] == 0.5 and recorded["weight_average"] == 0.9
    assert recorded["augment"]["scale_range"] == [0.67, 1.5]
    assert recorded["camera_pan"] == 0.5
    assert recorded["model"]["dynamic_filter"] is False and recorded["model"]["cmdff"] is True
    assert load_checkpoint(tmp_path / "run" / "last.pt")["weight_average"] == {"steps": 1}


def test_camera_pan_is_a_share_and_needs_the_ema_background():
    with pytest.raises(ValueError, match="camera_pan must be in"):
        TrainConfig(camera_pan=-0.1)
    with pytest.raises(ValueError, match="ema background"):
        TrainConfig(camera_pan=0.5, model=HofamConfig(background_estimator="median"))
    TrainConfig(camera_pan=0.5, model=HofamConfig(use_background=False,
                                                  background_estimator="median"))


class _LeftThird(torch.nn.Module):
    """Foreground on the left third of every frame, whatever the inputs: not symmetric."""

    config = HofamConfig(strides=(1, 2))

    def forward(self, frames, hop, background=None):
        logits = torch.full_like(frames[:, :1], -5.0)
        logits[..., : frames.shape[-1] // 3] = 5.0
        return logits


def test_validation_can_score_flip_averaged_logits(caches):
    validation = [caches / "scene_003.h5"]
    options = {"device": torch.device("cpu"), "thresholds": (0.3, 0.6), "amp": False}
    model = _LeftThird()
    one_pass = train_module.validate(model, validation, **options)
    averaged = train_module.validate(model, validation, flip_average=True, **options)
    # Averaged, both outer thirds have logit 0 (probability 0.5) and the middle -5: only the
    # threshold 0.3 finds anything, and it finds both outer thirds.
    assert averaged[0] == 0.3 and one_pass != averaged
    assert model.training  # validation hands the model back in training mode


def test_training_without_validation_scenes_says_so(caches, tmp_path, caplog):
    split = Split(name="no-validation", train=(), validation=("absent_scene",), test=(),
                  train_patterns=("scene_00[0-2]",))
    with caplog.at_level("WARNING", logger="pipelines.train"):
        best = train([caches], split, tmp_path / "run", _config(epochs=1), device="cpu",
                     progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("split 'no-validation': none of its validation scenes (absent_scene)" in w
               and "best.pt is the newest epoch" in w for w in warnings), warnings
    assert best.exists()
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipelines.train"):
        train([caches], SPLIT, tmp_path / "with", _config(epochs=1), device="cpu",
              progress=False)
    assert not any("validation scenes" in r.getMessage() for r in caplog.records)
