"""The written split's real scenes for the benchmark scripts, and the caches they train on.

Imported as ``_split`` (a script's own folder is first on ``sys.path``, as for ``_report``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from crossnet.split import Split
from flow.backends import make_hop_backend
from pipelines.preprocess import preprocess
from pipelines.scenes import find_scenes

FLOW = "dis-fast"
"""The model card's flow backend (``crossnet preprocess --flow``), of the training caches and
so of the model."""


def split_scenes(root: Path, split: Split,
                 parts: Sequence[str] = ("train", "validation", "test")) -> dict[str, Path]:
    """Scene name -> folder for every real scene under ``root``.

    Raises:
        SystemExit: a scene named in the given parts of the split is not under ``root``.
    """
    scenes = {scene.name: Path(scene.path) for scene in find_scenes([root])}
    named = [name for part in parts for name in getattr(split, part)]
    missing = sorted(set(named) - set(scenes))
    if missing:
        raise SystemExit(f"scenes of split {split.name} not found under {root}: "
                         f"{', '.join(missing)}")
    return scenes


def fit_caches(strides: Sequence[int], split: Split, scenes: dict[str, Path],
               work: Path, flow: str = FLOW) -> Path:
    """Caches of the split's training and validation scenes for one stride set and flow
    backend, under ``work/caches_<strides>`` (``..._<flow>`` for a backend other than
    :data:`FLOW`): made once, reused (and refused, with the preprocess error, when a source
    changed since)."""
    out = work / ("caches_" + "-".join(map(str, strides))
                  + ("" if flow == FLOW else f"_{flow}"))
    fit_paths = sorted({scenes[name] for name in split.train + split.validation})
    summary = preprocess(fit_paths, out, backend=make_hop_backend(flow), strides=strides,
                         progress=False)
    if summary.failed:
        reasons = "\n".join(reason for _, reason in summary.failed)
        raise SystemExit(f"preprocess failed:\n{reasons}")
    return out
