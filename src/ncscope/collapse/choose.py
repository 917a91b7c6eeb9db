"""Which layers to measure and which classifier reads them — by name, for any model.

``choose_layers`` turns a layer choice (``"penultimate"``, ``"all"`` or explicit specs) into tap
keys; ``head_of`` gives the ``{layer: (W, b)}`` map of the final linear layer for NC2-of-W, NC3
and NC4. Both go through module names and hooks only, never per-architecture code. The
classifier is found once, on a probe batch, by :func:`ncscope.models.find_classifier`; pass its
name on as ``classifier``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ncscope.collapse.taps import FeatureTaps
from ncscope.models import classifier_of, default_taps, find_classifier, linear_map

LAYER_CHOICES = ("penultimate", "all")


def choose_layers(model: nn.Module, spec: str | Sequence[str] = "all",
                  probe: Tensor | None = None, classifier: str | None = None) -> list[str]:
    """Tap keys for ``spec``.

    ``"penultimate"``: the input of the final linear layer (``"<classifier>:in"``). ``"all"``:
    the model's :func:`~ncscope.models.default_taps` followed by the penultimate features,
    dropping a tap whose features equal the next one's on ``probe`` (one eval-mode forward;
    e.g. an MLP's last block *is* the classifier input). A name, glob or list of them: those
    taps in model order (:class:`~ncscope.collapse.taps.FeatureTaps` specs). ``classifier``:
    the classifier's name as found by :func:`~ncscope.models.find_classifier` (``None``: found
    here, on ``probe``).
    """
    if isinstance(spec, str) and spec in LAYER_CHOICES:
        clf = find_classifier(model, classifier, probe if classifier is None else None)
        pen = f"{clf}:in"
        if spec == "penultimate":
            return [pen]
        try:
            taps = default_taps(model, clf)
        except (AttributeError, ValueError):
            taps = []
        names = [*[t for t in taps if t != pen], pen]
        return names if probe is None else _drop_repeats(model, names, probe)
    specs = [spec] if isinstance(spec, str) else list(spec)
    return FeatureTaps(model, specs).names


def _drop_repeats(model: nn.Module, layers: list[str], probe: Tensor) -> list[str]:
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with FeatureTaps(model, layers) as taps, torch.no_grad():
            model(probe)
            feats = taps.features
    finally:
        for m, was in modes:
            m.training = was
    keep = []
    for name, nxt in zip(layers, [*layers[1:], None], strict=True):
        if nxt is not None and feats[name].shape == feats[nxt].shape and torch.equal(
                feats[name], feats[nxt]):
            continue
        keep.append(name)
    return keep


def head_of(model: nn.Module, layers: Sequence[str],
            classifier: str | None = None) -> dict[str, tuple[Tensor, Tensor | None]]:
    """``{penultimate layer: (W, b)}`` of the final linear layer, when that layer is tapped
    (``classifier``: its name, as :func:`~ncscope.models.find_classifier` gives it). ``(W, b)``
    is the classifier's :func:`~ncscope.models.linear_map` (a normalized head's
    ``scale * W / ||W||_row`` on its unit-norm input), so ``logits = features @ W.T + b``."""
    key = find_classifier(model, classifier)
    if f"{key}:in" not in layers:
        return {}
    weight, bias = linear_map(classifier_of(model, key))
    return {f"{key}:in": (weight.detach(), None if bias is None else bias.detach())}
