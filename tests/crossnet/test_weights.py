"""The bundled HOFAM weights: present, loadable safely, and exactly the file the model card names."""

import re

from crossnet.checkpoint import load_checkpoint
from crossnet.hofam import HofamConfig, build_hofam
from crossnet.weights import bundled_weights
from flow.backends import file_sha256


def test_bundled_weights_load_and_match_the_model_card():
    path = bundled_weights()
    assert path.stat().st_size < 25_000_000
    checkpoint = load_checkpoint(path)  # weights_only=True inside
    config = HofamConfig.from_dict(checkpoint["model_config"])
    model = build_hofam(config)
    model.load_state_dict(checkpoint["model"])
    assert checkpoint["flow_backend"] == "dis-fast"
    assert 0.0 < checkpoint["threshold"] < 1.0
    card = (path.parent / "MODEL_CARD.md").read_text()
    recorded = re.search(r"sha256: `([0-9a-f]{64})`", card)
    assert recorded is not None, "the model card records the file's sha256"
    assert recorded.group(1) == file_sha256(path)
    assert "cross_scene_v1" in card
