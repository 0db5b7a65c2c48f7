"""``crossnet ensemble``: several segmentation checkpoints written as one (the mean of their
logits, :mod:`crossnet.ensemble`), usable wherever a checkpoint is (``segment``, ``evaluate``,
``--weights``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import crossnet
from crossnet.checkpoint import load_checkpoint, save_checkpoint
from crossnet.ensemble import ensemble_checkpoint
from flow.backends import file_sha256, is_sha256_or_empty
from pipelines.errors import InputError
from pipelines.outputs import check_output_file


def make_ensemble(members: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                  threshold: float | None = None, overwrite: bool = False) -> Path:
    """Write the ensemble of ``members`` (segmentation checkpoints, each a single model) to
    ``out``, atomically.

    Args:
        members: the checkpoints, in order; the first one's model configuration is the
            ensemble's ``model_config``.
        out: the file to write.
        threshold: the ensemble's foreground-probability threshold; None takes the mean of the
            members' own thresholds (each picked on validation scenes in training).
        overwrite: replace an existing ``out``.

    Returns:
        ``out``.

    Raises:
        InputError: ``out`` exists (without ``overwrite``); fewer than two members, a member
            that is itself an ensemble, members trained with different flow backends or on
            flow from different RAFT networks, on different splits or reading different
            inputs; a member that is not a readable segmentation checkpoint or records a
            malformed flow-network sha256. Each message names the file.
    """
    out = check_output_file(out, overwrite=overwrite)
    if len(members) < 2:
        raise InputError(f"{out}: an ensemble needs at least two checkpoints, got "
                         f"{len(members)}")
    documents = []
    for path in members:
        try:
            document = load_checkpoint(path)
        except (ValueError, OSError) as error:
            raise InputError(str(error).splitlines()[0]) from error
        if document.get("extra_members"):
            raise InputError(f"{path}: is an ensemble already; name its members instead")
        documents.append(document)
    backends = [document.get("flow_backend", "dis-fast") for document in documents]
    for path, backend in zip(members, backends):
        if not isinstance(backend, str):
            raise InputError(f"{path}: flow_backend {backend!r} in the checkpoint is not a name")
    if len(set(backends)) > 1:
        named = ", ".join(f"{Path(p).name}: {b}" for p, b in zip(members, backends))
        raise InputError(f"{out}: the members were trained with different flow backends "
                         f"({named})")
    flow_weights = [document.get("flow_weights_sha256", "") for document in documents]
    for path, value in zip(members, flow_weights):
        if not is_sha256_or_empty(value):
            raise InputError(f"{path}: flow_weights_sha256 {value!r} in the checkpoint is not "
                             "a sha256")
    if len(set(flow_weights)) > 1:
        named = ", ".join(f"{Path(p).name}: {w[:12] or 'none recorded'}"
                          for p, w in zip(members, flow_weights))
        raise InputError(f"{out}: the members were trained on flow from different network "
                         f"weights ({named})")
    splits = [document.get("split") for document in documents]
    if any(split != splits[0] for split in splits):
        raise InputError(f"{out}: the members were trained on different splits (a scene one "
                         "never saw may be another's training scene)")
    thresholds = [float(document.get("threshold", 0.5)) for document in documents]
    if threshold is None:
        threshold = sum(thresholds) / len(thresholds)
    try:
        entries = ensemble_checkpoint(documents, threshold=threshold, flow_backend=backends[0])
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{out}: {error}") from error
    entries.update(code_version=crossnet.__version__,
                   members_sha256=[file_sha256(path) for path in members],
                   members_threshold=thresholds, flow_weights_sha256=flow_weights[0],
                   **({"split": splits[0]} if splits[0] is not None else {}))
    return save_checkpoint(out, entries)
