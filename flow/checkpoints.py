"""Load RAFT checkpoints in the torchvision layout (ours) or the princeton-vl layout.

:class:`flow.raft.RAFT` names its parameters exactly as torchvision's
``models.optical_flow.raft.RAFT`` does, so a torchvision state dict (``raft_small`` or
``raft_large``) loads as is. Checkpoints of the RAFT paper code (github.com/princeton-vl/RAFT,
``raft-things.pth``, ``raft-small.pth``, ...) use other names; they were saved from
``nn.DataParallel``, so every key starts with ``module.``. The mapping, ``<enc>`` being
``fnet`` <-> ``feature_encoder`` or ``cnet`` <-> ``context_encoder`` and ``L.B`` a block
(``layer1.0``, ...):

=====================================  ==================================================
princeton-vl (after ``module.``)       torchvision / ours
=====================================  ==================================================
``<enc>.conv1.*``                      ``<enc>.convnormrelu.0.*``
``<enc>.norm1.*``                      ``<enc>.convnormrelu.1.*``
``<enc>.conv2.*``                      ``<enc>.conv.*``
``<enc>.L.B.conv{k}.*``                ``<enc>.L.B.convnormrelu{k}.0.*``
``<enc>.L.B.norm{k}.*``                ``<enc>.L.B.convnormrelu{k}.1.*``
``<enc>.L.B.downsample.{0,1}.*``       ``<enc>.L.B.downsample.{0,1}.*``
``<enc>.L.B.norm3.*`` (residual) /     (dropped: the shortcut's norm, which princeton
``<enc>.L.B.norm4.*`` (bottleneck)     registers twice, also as ``downsample.1``)
``update_block.encoder.convc{k}.*``    ``update_block.motion_encoder.convcorr{k}.0.*``
``update_block.encoder.convf{k}.*``    ``update_block.motion_encoder.convflow{k}.0.*``
``update_block.encoder.conv.*``        ``update_block.motion_encoder.conv.0.*``
``update_block.gru.conv{g}{k}.*``      ``update_block.recurrent_block.convgru{k}.conv{g}.*``
``update_block.gru.conv{g}.*``         ``update_block.recurrent_block.convgru1.conv{g}.*``
``update_block.flow_head.*``           ``update_block.flow_head.*``
``update_block.mask.0.*``              ``mask_predictor.convrelu.0.*``
``update_block.mask.2.*``              ``mask_predictor.conv.*``
=====================================  ==================================================

with ``k`` a digit and ``g`` one of ``z, r, q``. The large model's separable GRU
(``SepConvGRU``) numbers its convolutions (``convz1``, ``convz2``, ...), the small model's
``ConvGRU`` does not (``convz``). The small model has no mask predictor in either layout (it
upsamples bilinearly). The inverse, :func:`torchvision_to_princeton`, writes the shortcut norm
under both of its princeton names and restores the GRU numbering from the presence of a second
GRU, so the two functions are inverse bijections (princeton keys without ``module.``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from flow.safe_load import load_weights_only

PRINCETON = "princeton"
TORCHVISION = "torchvision"

_ENCODERS = {"fnet": "feature_encoder", "cnet": "context_encoder"}
_ENCODERS_INVERSE = {ours: theirs for theirs, ours in _ENCODERS.items()}
_MAX_LISTED = 5

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rules(table: list[tuple[str, Callable[[re.Match[str]], str]]]) -> list[Rule]:
    return [(re.compile(pattern), rewrite) for pattern, rewrite in table]


# princeton -> torchvision, for every key but the duplicated shortcut norms (handled apart).
_PRINCETON_RULES = _rules(
    [
        (r"^(fnet|cnet)\.conv1\.(.+)$", lambda m: f"{_ENCODERS[m[1]]}.convnormrelu.0.{m[2]}"),
        (r"^(fnet|cnet)\.norm1\.(.+)$", lambda m: f"{_ENCODERS[m[1]]}.convnormrelu.1.{m[2]}"),
        (r"^(fnet|cnet)\.conv2\.(.+)$", lambda m: f"{_ENCODERS[m[1]]}.conv.{m[2]}"),
        (
            r"^(fnet|cnet)\.(layer\d+\.\d+)\.conv(\d)\.(.+)$",
            lambda m: f"{_ENCODERS[m[1]]}.{m[2]}.convnormrelu{m[3]}.0.{m[4]}",
        ),
        (
            r"^(fnet|cnet)\.(layer\d+\.\d+)\.norm(\d)\.(.+)$",
            lambda m: f"{_ENCODERS[m[1]]}.{m[2]}.convnormrelu{m[3]}.1.{m[4]}",
        ),
        (
            r"^(fnet|cnet)\.(layer\d+\.\d+)\.downsample\.([01])\.(.+)$",
            lambda m: f"{_ENCODERS[m[1]]}.{m[2]}.downsample.{m[3]}.{m[4]}",
        ),
        (
            r"^update_block\.encoder\.convc(\d)\.(.+)$",
            lambda m: f"update_block.motion_encoder.convcorr{m[1]}.0.{m[2]}",
        ),
        (
            r"^update_block\.encoder\.convf(\d)\.(.+)$",
            lambda m: f"update_block.motion_encoder.convflow{m[1]}.0.{m[2]}",
        ),
        (
            r"^update_block\.encoder\.conv\.(.+)$",
            lambda m: f"update_block.motion_encoder.conv.0.{m[1]}",
        ),
        (
            r"^update_block\.gru\.conv([zrq])(\d?)\.(.+)$",
            lambda m: f"update_block.recurrent_block.convgru{m[2] or 1}.conv{m[1]}.{m[3]}",
        ),
        (r"^update_block\.flow_head\.(.+)$", lambda m: f"update_block.flow_head.{m[1]}"),
        (r"^update_block\.mask\.0\.(.+)$", lambda m: f"mask_predictor.convrelu.0.{m[1]}"),
        (r"^update_block\.mask\.2\.(.+)$", lambda m: f"mask_predictor.conv.{m[1]}"),
    ]
)

_PRINCETON_NORM = re.compile(r"^(fnet|cnet)\.(layer\d+\.\d+)\.norm(\d)\.(.+)$")
_TORCHVISION_BLOCK = re.compile(r"^(feature_encoder|context_encoder)\.(layer\d+\.\d+)\.")


def _apply(rules: list[Rule], key: str) -> str | None:
    """The first rule's rewrite of ``key``, or None when no rule matches."""
    for pattern, rewrite in rules:
        match = pattern.match(key)
        if match:
            return rewrite(match)
    return None


def _listed(keys: list[str]) -> str:
    """At most ``_MAX_LISTED`` keys, and how many more there are."""
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return f"{shown} (and {more} more)" if more > 0 else shown


def _strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` / DDP put on every key."""
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def princeton_to_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a princeton-vl RAFT state dict to the torchvision layout (see the module table).

    Args:
        state_dict: princeton-vl keys, with or without the ``module.`` prefix.

    Returns:
        A new dict with torchvision keys and the same tensors, in the input's order, the
        duplicated shortcut norms dropped.

    Raises:
        ValueError: on keys the table does not cover, or a duplicated shortcut norm whose two
            copies differ.
    """
    state_dict = _strip_module_prefix(state_dict)
    # A bottleneck block has three convolutions; its shortcut norm is norm4, a residual
    # block's norm3.
    convolutions: dict[tuple[str, str], int] = {}
    for key in state_dict:
        match = re.match(r"^(fnet|cnet)\.(layer\d+\.\d+)\.conv(\d)\.", key)
        if match:
            block = (match[1], match[2])
            convolutions[block] = max(convolutions.get(block, 0), int(match[3]))

    mapped: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        norm = _PRINCETON_NORM.match(key)
        if norm and int(norm[3]) > convolutions.get((norm[1], norm[2]), 0):
            twin = f"{norm[1]}.{norm[2]}.downsample.1.{norm[4]}"
            if twin in state_dict and not torch.equal(state_dict[twin], value):
                raise ValueError(
                    f"princeton_to_torchvision: {key} and {twin} are the same shortcut norm in "
                    f"RAFT but hold different values"
                )
            continue
        new_key = _apply(_PRINCETON_RULES, key)
        if new_key is None:
            unknown.append(key)
        else:
            mapped[new_key] = value
    if unknown:
        raise ValueError(
            f"princeton_to_torchvision: {len(unknown)} keys are not in the princeton-vl RAFT "
            f"layout: {_listed(unknown)}"
        )
    return mapped


def torchvision_to_princeton(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision-layout RAFT state dict (ours) to the princeton-vl layout.

    The result has no ``module.`` prefix (add it to mimic a ``DataParallel`` checkpoint).

    Args:
        state_dict: torchvision keys, with or without the ``module.`` prefix.

    Returns:
        A new dict with princeton-vl keys; each shortcut norm appears under both of its names.

    Raises:
        ValueError: on keys the table does not cover.
    """
    state_dict = _strip_module_prefix(state_dict)
    separable_gru = any(
        key.startswith("update_block.recurrent_block.convgru2.") for key in state_dict
    )
    bottleneck_blocks = {
        (match[1], match[2])
        for key in state_dict
        if (match := _TORCHVISION_BLOCK.match(key)) and ".convnormrelu3." in key
    }

    def gru(match: re.Match[str]) -> str:
        number = match[1] if separable_gru else ""
        return f"update_block.gru.conv{match[2]}{number}.{match[3]}"

    rules = _rules(
        [
            (
                r"^(feature_encoder|context_encoder)\.convnormrelu\.0\.(.+)$",
                lambda m: f"{_ENCODERS_INVERSE[m[1]]}.conv1.{m[2]}",
            ),
            (
                r"^(feature_encoder|context_encoder)\.convnormrelu\.1\.(.+)$",
                lambda m: f"{_ENCODERS_INVERSE[m[1]]}.norm1.{m[2]}",
            ),
            (
                r"^(feature_encoder|context_encoder)\.conv\.(.+)$",
                lambda m: f"{_ENCODERS_INVERSE[m[1]]}.conv2.{m[2]}",
            ),
            (
                r"^(feature_encoder|context_encoder)\.(layer\d+\.\d+)\.convnormrelu(\d)\.0\.(.+)$",
                lambda m: f"{_ENCODERS_INVERSE[m[1]]}.{m[2]}.conv{m[3]}.{m[4]}",
            ),
            (
                r"^(feature_encoder|context_encoder)\.(layer\d+\.\d+)\.convnormrelu(\d)\.1\.(.+)$",
                lambda m: f"{_ENCODERS_INVERSE[m[1]]}.{m[2]}.norm{m[3]}.{m[4]}",
            ),
            (
                r"^(feature_encoder|context_encoder)\.(layer\d+\.\d+)\.downsample\.([01])\.(.+)$",
                lambda m: f"{_ENCODERS_INVERSE[m[1]]}.{m[2]}.downsample.{m[3]}.{m[4]}",
            ),
            (
                r"^update_block\.motion_encoder\.convcorr(\d)\.0\.(.+)$",
                lambda m: f"update_block.encoder.convc{m[1]}.{m[2]}",
            ),
            (
                r"^update_block\.motion_encoder\.convflow(\d)\.0\.(.+)$",
                lambda m: f"update_block.encoder.convf{m[1]}.{m[2]}",
            ),
            (
                r"^update_block\.motion_encoder\.conv\.0\.(.+)$",
                lambda m: f"update_block.encoder.conv.{m[1]}",
            ),
            (r"^update_block\.recurrent_block\.convgru(\d)\.conv([zrq])\.(.+)$", gru),
            (r"^update_block\.flow_head\.(.+)$", lambda m: f"update_block.flow_head.{m[1]}"),
            (r"^mask_predictor\.convrelu\.0\.(.+)$", lambda m: f"update_block.mask.0.{m[1]}"),
            (r"^mask_predictor\.conv\.(.+)$", lambda m: f"update_block.mask.2.{m[1]}"),
        ]
    )

    mapped: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        new_key = _apply(rules, key)
        if new_key is None:
            unknown.append(key)
            continue
        mapped[new_key] = value
        shortcut_norm = re.match(
            r"^(feature_encoder|context_encoder)\.(layer\d+\.\d+)\.downsample\.1\.(.+)$", key
        )
        if shortcut_norm:
            block = (shortcut_norm[1], shortcut_norm[2])
            number = 4 if block in bottleneck_blocks else 3
            encoder = _ENCODERS_INVERSE[block[0]]
            mapped[f"{encoder}.{block[1]}.norm{number}.{shortcut_norm[3]}"] = value
    if unknown:
        raise ValueError(
            f"torchvision_to_princeton: {len(unknown)} keys are not in the torchvision RAFT "
            f"layout: {_listed(unknown)}"
        )
    return mapped


def detect_layout(state_dict: Mapping[str, Tensor]) -> str:
    """Which RAFT layout a state dict uses: :data:`PRINCETON` or :data:`TORCHVISION`.

    Args:
        state_dict: a RAFT state dict, with or without the ``module.`` prefix.

    Returns:
        ``"princeton"`` or ``"torchvision"``.

    Raises:
        ValueError: if neither layout's encoder keys are there.
    """
    keys = list(_strip_module_prefix(state_dict))
    if any(key.startswith(("fnet.", "cnet.", "update_block.gru.")) for key in keys):
        return PRINCETON
    if any(key.startswith(("feature_encoder.", "context_encoder.")) for key in keys):
        return TORCHVISION
    raise ValueError(
        f"not a RAFT state dict (no fnet./cnet. or feature_encoder./context_encoder. keys); "
        f"first keys: {_listed(keys) or 'none'}"
    )


def _shapes(state_dict: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape by key, without batch norm's ``num_batches_tracked`` counters."""
    return {key: tuple(value.shape) for key, value in state_dict.items()
            if not key.endswith("num_batches_tracked")}


@functools.cache
def _raft_variant_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """The tensor shapes of raft-small and raft-large (built once, when first needed)."""
    from flow.raft import raft_large, raft_small  # flow.raft is not needed to read a file

    return {"raft-small": _shapes(raft_small().state_dict()),
            "raft-large": _shapes(raft_large().state_dict())}


def _raft_variant(state_dict: Mapping[str, Tensor]) -> str | None:
    """``"raft-small"`` or ``"raft-large"`` when ``state_dict`` (torchvision layout) has
    exactly the keys and shapes of that network of :mod:`flow.raft`, else None."""
    shapes = _shapes(state_dict)
    return next((name for name, known in _raft_variant_shapes().items() if known == shapes),
                None)


def _read_state_dict(
    checkpoint: str | Path | Mapping[str, Tensor], source: str
) -> Mapping[str, Tensor]:
    """The state dict in ``checkpoint``: a file (``torch.load``, weights only) or a mapping.

    A mapping whose values are not all tensors is searched for a ``"state_dict"`` or ``"model"``
    entry (the usual wrappers of training checkpoints).
    """
    if isinstance(checkpoint, (str, Path)):
        loaded = load_weights_only(checkpoint)
    else:
        loaded = checkpoint
    if not isinstance(loaded, Mapping):
        # A file holding something else is a bad checkpoint like any other: one error type.
        raise ValueError(  # noqa: TRY004
            f"{source}: expected a state dict, got a {type(loaded).__name__}"
        )
    if loaded and all(isinstance(value, Tensor) for value in loaded.values()):
        return loaded
    for wrapper in ("state_dict", "model"):
        inner = loaded.get(wrapper)
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(value, Tensor) for value in inner.values())
        ):
            return inner
    raise ValueError(
        f"{source}: expected a state dict of tensors, or one under 'state_dict' or 'model'; "
        f"got keys {_listed([str(key) for key in loaded])}"
    )


def load_flow_checkpoint(model: nn.Module, checkpoint: str | Path | Mapping[str, Tensor], *,
                         source: str | None = None) -> str:
    """Load a RAFT checkpoint in either layout into ``model`` (strictly).

    Missing ``num_batches_tracked`` buffers (checkpoints from old PyTorch versions) are not an
    error: batch norm fills them in itself.

    Args:
        model: a :class:`flow.raft.RAFT` (torchvision parameter names).
        checkpoint: a path to a ``torch.save``'d state dict (loaded with
            ``weights_only=True``), or the state dict itself; princeton-vl or torchvision
            layout, with or without the ``module.`` prefix.
        source: how messages name the checkpoint (default: its path, or "checkpoint" for a
            mapping already read, e.g. by a caller that inspected the file first).

    Returns:
        The layout that was detected, ``"princeton"`` or ``"torchvision"``.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if the layout is unknown, or keys are missing, unexpected or of the wrong
            shape: the message names the network the checkpoint holds when it is the other
            RAFT of :mod:`flow.raft` (raft-small weights for raft-large), else lists the first
            few keys of each kind.
    """
    if source is None:
        source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "checkpoint"
    state_dict = _strip_module_prefix(_read_state_dict(checkpoint, source))
    try:
        layout = detect_layout(state_dict)
        if layout == PRINCETON:
            state_dict = princeton_to_torchvision(state_dict)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error

    expected = model.state_dict()
    missing = [
        key for key in expected if key not in state_dict and not key.endswith("num_batches_tracked")
    ]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        held, target = _raft_variant(state_dict), _raft_variant(expected)
        if held is not None and held != target:
            # The usual mistake (raft-small weights for raft-large): no key list, the reason.
            raise ValueError(
                f"{source}: its weights do not fit this {target or type(model).__name__} "
                f"network: it holds a {held} network ({len(missing)} tensors missing, "
                f"{len(unexpected)} unexpected, {len(mismatched)} of another shape)"
            )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listed(mismatched)}")
    if problems:
        raise ValueError(
            f"{source} ({layout} layout) does not fit {type(model).__name__} "
            f"({len(expected)} keys): " + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True)
    return layout
