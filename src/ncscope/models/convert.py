"""Loading checkpoints of the official code (``JingtongSu/robust_neural_collapse``).

The built-in VGG11-BN and PreActResNet18 variants have the same parameters and buffers, in the
same order, as the official ``vgg.py`` / ``vgg_imagenet.py`` (``vgg11_bn_pool``) /
``preactresnet.py`` / ``preactresnet_imagenet.py`` models -- only the names differ
(``features.0`` -> ``features.conv1``, ``linear`` / ``fc`` -> ``classifier``, ``final_bn`` ->
``bn``, ``pre_bn`` -> ``bn1`` ...), plus ncscope's leading ``normalize`` buffers, which the
official checkpoints do not have (their normalisation lived outside the saved modules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_reference_state_dict", "load_weights", "weight_mismatches"]


def load_reference_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, skip_prefix: str = "normalize."
) -> dict[str, str]:
    """Load an official-code ``state_dict`` into an ncscope model by position.

    Entries are matched in order (the model's own entries under ``skip_prefix`` -- the
    :class:`Normalize` buffers -- are kept); counts and every shape must agree, otherwise a
    ``ValueError`` names the first mismatch. A ``module.`` prefix (``DataParallel``) is ignored.
    Returns the mapping ``{reference name: ncscope name}``.
    """
    own = model.state_dict()
    targets = [k for k in own if not k.startswith(skip_prefix)]
    refs = list(state_dict.items())
    if len(refs) != len(targets):
        raise ValueError(
            f"reference state_dict has {len(refs)} entries, the model has {len(targets)} "
            f"(excluding {skip_prefix!r})"
        )
    mapping: dict[str, str] = {}
    new = dict(own)
    for (ref_key, value), key in zip(refs, targets, strict=True):
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"shape mismatch: reference {ref_key!r} {tuple(value.shape)} vs "
                f"model {key!r} {tuple(own[key].shape)}"
            )
        new[key] = value
        mapping[ref_key.removeprefix("module.")] = key
    model.load_state_dict(new)
    return mapping


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a ``state_dict`` file, or the ``model`` entry of an ncscope training checkpoint,
    into ``model`` (``torch.load(weights_only=True)``; one-line errors for a missing, unreadable
    or mismatching file -- a mismatch names the first few missing, unexpected and mis-shaped
    keys, :func:`weight_mismatches`). Returns ``model``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{p} is not a readable weights file ({type(exc).__name__}); "
                         "pass a state_dict or an ncscope checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{p} holds {type(state).__name__}, not a state_dict")
    problems = weight_mismatches(model, state)
    if problems:
        raise ValueError(f"{p} does not fit the model ({type(model).__name__}): {problems}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{p} does not fit the model ({type(model).__name__}): {first}") from None
    return model


def weight_mismatches(model: nn.Module, state: Mapping[str, object], shown: int = 3) -> str:
    """One line naming the first ``shown`` missing, unexpected and mis-shaped keys of
    ``state`` against ``model.state_dict()`` (``""`` when they match)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and isinstance(v, torch.Tensor)
              and tuple(v.shape) != tuple(own[k].shape)]

    def few(keys: list[str]) -> str:
        more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    parts = [f"{what} {len(keys)} key(s): {few(keys)}" for what, keys in
             (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if keys]
    return "; ".join(parts)
