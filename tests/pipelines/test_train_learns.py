"""A short real training run learns: on a synthetic scene it never trained on, it beats MOG2.

The issue asks for F > 0.9 here; a 2-minute CPU run reaches about 0.8 (measured 0.795 with
these settings, MOG2 0.52 on the same frames; validation F 0.88), so that target is not met yet
and this test holds what is: F > 0.7 and clearly above MOG2.
"""

import json

import pytest

from crossnet.split import Split
from flow.backends import make_hop_backend
from pipelines.cli import main
from pipelines.preprocess import preprocess
from pipelines.synth import SynthConfig, generate_scenes
from pipelines.train import TrainConfig, train

# Textured objects of a quarter to half the frame height moving 0.5 to 1.5 px per frame over a
# static textured background, with sensor noise and illumination drift; no rippling background
# (the real-scene benchmarks cover dynamic backgrounds).
SCENES = SynthConfig(size=(160, 120), num_frames=48, strides=(1, 4, 8), min_objects=4,
                     max_objects=6, min_object_size=0.25, max_object_size=0.5, min_speed=0.5,
                     max_speed=1.5, dynamic_background=False)


@pytest.mark.slow
def test_short_run_beats_mog2_on_an_unseen_synthetic_scene(tmp_path):
    generate_scenes(tmp_path / "scenes", num_scenes=20, config=SCENES, seed=21, progress=False)
    unseen = generate_scenes(tmp_path / "unseen", num_scenes=1, config=SCENES, seed=99,
                             progress=False)[0]
    preprocess([tmp_path / "scenes"], tmp_path / "cache", backend=make_hop_backend("dis-fast"),
               strides=(1, 4, 8), progress=False)
    split = Split(name="synthetic", train=(), validation=("scene_000",), test=(),
                  train_patterns=("scene_*",))
    config = TrainConfig(epochs=40, samples_per_epoch=256, batch_size=16, crop_size=(96, 96),
                         lr=3e-3, num_workers=0, composite_fraction=0.0)
    best = train([tmp_path / "cache"], split, tmp_path / "run", config, device="cpu",
                 progress=False)
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(unseen), "--method", "crossnet", "--method", "mog2",
                 "--weights", str(best), "--json", str(out), "--no-progress"]) == 0
    scores = json.loads(out.read_text())["methods"]
    f_model = scores["crossnet"]["scenes"][unseen.name]["F"]
    f_mog2 = scores["mog2"]["scenes"][unseen.name]["F"]
    assert f_model > 0.7, f_model
    assert f_model > f_mog2 + 0.1, (f_model, f_mog2)
