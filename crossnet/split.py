"""The cross-scene split: which scenes train, which validate, which are only ever tested.

A split is a JSON file with lists of scene names under ``"train"``, ``"validation"`` and
``"test"``, and optional ``"train_patterns"`` (shell patterns, e.g. ``"scene_*"`` for synthetic
scenes from ``crossnet synth``). A scene is named as ``crossnet preprocess`` names its cache
(the file stem). Validation and test names are never trained on, even when a training pattern
matches them.

The project's own splits ship inside the package (``crossnet/splits/*.json``), so
``load_split("cross_scene_v1")`` and ``crossnet train --split cross_scene_v1`` work from a
``pip install`` as from a checkout; :func:`bundled_split_names` lists them.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Split:
    """A leave-scenes-out split.

    Attributes:
        name: the split's name, recorded in checkpoints.
        train: scene names used for training.
        validation: scene names used to pick checkpoints and settings.
        test: scene names never trained on nor tuned on.
        train_patterns: shell patterns of further training scenes (synthetic ones).
    """

    name: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    train_patterns: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        parts = {"train": self.train, "validation": self.validation, "test": self.test}
        for part, names in parts.items():
            if len(set(names)) != len(names):
                raise ValueError(f"split {self.name!r}: {part} lists a scene twice")
        for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
            shared = sorted(set(parts[first]) & set(parts[second]))
            if shared:
                raise ValueError(f"split {self.name!r}: {', '.join(shared)} in both {first} "
                                 f"and {second}")

    def part_of(self, scene: str) -> str | None:
        """``"train"``, ``"validation"``, ``"test"`` or None for a scene name."""
        if scene in self.validation:
            return "validation"
        if scene in self.test:
            return "test"
        if scene in self.train or any(fnmatch.fnmatchcase(scene, p) for p in self.train_patterns):
            return "train"
        return None

    def select(self, paths: Iterable[str | os.PathLike], part: str) -> list[Path]:
        """The cache files (named ``<scene>.h5``) among ``paths`` that belong to ``part``."""
        if part not in ("train", "validation", "test"):
            raise ValueError(f"unknown split part {part!r}; expected train, validation or test")
        return [Path(p) for p in paths if self.part_of(Path(p).stem) == part]

    def to_dict(self) -> dict:
        return {"name": self.name, "train": list(self.train), "validation": list(self.validation),
                "test": list(self.test), "train_patterns": list(self.train_patterns)}


BUNDLED_SPLITS = Path(__file__).parent / "splits"
"""The folder of the splits that ship with the package."""


def bundled_split_names() -> list[str]:
    """The names of the bundled splits (their file stems), sorted."""
    return sorted(path.stem for path in BUNDLED_SPLITS.glob("*.json"))


def split_path(spec: str | os.PathLike) -> Path:
    """The file a ``--split`` names: an existing file, else a bundled split's name.

    Raises:
        FileNotFoundError: neither; the message lists the bundled names.
    """
    path = Path(spec)
    if path.is_file():
        return path
    bundled = BUNDLED_SPLITS / f"{spec}.json"
    if path.name == str(spec) and bundled.is_file():
        return bundled
    raise FileNotFoundError(f"{spec}: no such split file, nor a bundled split (bundled: "
                            f"{', '.join(bundled_split_names())})")


def load_split(spec: str | os.PathLike) -> Split:
    """Read a split: a split file, or a bundled split by name (``"cross_scene_v1"``).

    Raises:
        FileNotFoundError: ``spec`` is neither a file nor a bundled split's name.
        ValueError: the file is not JSON, misses a part, or lists a scene in two parts.
        OSError: the file cannot be read.
    """
    path = split_path(spec)
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON split file ({error})") from error
    parts = ("train", "validation", "test")
    missing = [key for key in parts if key not in document] if isinstance(document, dict) else parts
    if missing:
        raise ValueError(f"{path}: split file misses {', '.join(missing)}")
    return Split(name=str(document.get("name", path.stem)), train=tuple(document["train"]),
                 validation=tuple(document["validation"]), test=tuple(document["test"]),
                 train_patterns=tuple(document.get("train_patterns", ())))
