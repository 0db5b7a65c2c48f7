import configparser
import fnmatch
import json
from pathlib import Path

import pytest

from crossnet.split import BUNDLED_SPLITS, Split, bundled_split_names, load_split

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_split_is_disjoint_and_covers_every_real_scene(shared_data_names):
    split = load_split("cross_scene_v1")
    named = set(split.train) | set(split.validation) | set(split.test)
    assert named == shared_data_names  # every real scene is placed, and nothing else
    assert {"CAVIAR1", "CAVIAR2"} <= set(split.test)  # one camera: kept together


def test_parts_and_patterns():
    split = Split(name="s", train=("a",), validation=("v",), test=("t", "scene_009"),
                  train_patterns=("scene_*",))
    assert split.part_of("a") == "train"
    assert split.part_of("scene_001") == "train"
    assert split.part_of("scene_009") == "test"  # listed test scenes win over patterns
    assert split.part_of("v") == "validation"
    assert split.part_of("other") is None
    paths = ["x/a.h5", "y/scene_002.h5", "z/v.h5", "z/t.h5"]
    assert split.select(paths, "train") == [Path("x/a.h5"), Path("y/scene_002.h5")]
    assert split.select(paths, "test") == [Path("z/t.h5")]


def test_bad_splits_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="b in both train and test"):
        Split(name="s", train=("a", "b"), validation=(), test=("b",))
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="misses validation, test"):
        load_split(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not a JSON split file"):
        load_split(path)


def test_bundled_splits_load_by_name_and_ship_in_the_package(tmp_path, monkeypatch):
    assert bundled_split_names() == ["cross_scene_v1", "cross_scene_v1_pseudo"]
    for name in bundled_split_names():
        assert load_split(name) == load_split(BUNDLED_SPLITS / f"{name}.json")
        assert load_split(name).name == name
    # setup.cfg puts every bundled split into the wheel (pip installs have no checkout).
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    patterns = [line.strip() for line in config["options.package_data"]["crossnet"].splitlines()]
    for path in BUNDLED_SPLITS.glob("*.json"):
        inside = path.relative_to(REPO / "crossnet").as_posix()
        assert any(fnmatch.fnmatch(inside, pattern) for pattern in patterns), inside
    # A file of the user's own wins over a bundled name; anything else is one clear error.
    monkeypatch.chdir(tmp_path)
    Path("cross_scene_v1").write_text(json.dumps({"name": "mine", "train": ["a"],
                                                  "validation": [], "test": []}))
    assert load_split("cross_scene_v1").name == "mine"
    for spec in ("absent.json", "cross_scene_v2", "sub/cross_scene_v1_pseudo"):
        with pytest.raises(FileNotFoundError, match=rf"^{spec}: no such split file, nor a "
                                                    r"bundled split \(bundled: cross_scene_v1, "
                                                    r"cross_scene_v1_pseudo\)$"):
            load_split(spec)
