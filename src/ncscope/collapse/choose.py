"""Which layers to measure and which classifier reads them — by name, for any model.

``choose_layers`` turns a layer choice (``"penultimate"``, ``"all"`` or explicit specs) into tap
keys; ``head_of`` gives the ``{layer: (W, b)}`` map of the final linear layer for NC2-of-W, NC3
and NC4. Both go through module names and hooks only, never per-architecture code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ncscope.collapse.taps import FeatureTaps
from ncscope.models import classifier_of, default_taps, penultimate_layer

LAYER_CHOICES = ("penultimate", "all")


def choose_layers(model: nn.Module, spec: str | Sequence[str] = "all",
                  probe: Tensor | None = None, classifier: str | None = None) -> list[str]:
    """Tap keys for ``spec``.

    ``"penultimate"``: the input of the final linear layer (``"<classifier>:in"``). ``"all"``:
    the model's :func:`~ncscope.models.default_taps` followed by the penultimate features,
    dropping a tap whose features equal the next one's on ``probe`` (one eval-mode forward;
    e.g. an MLP's last block *is* the classifier input). A name, glob or list of them: those
    taps in model order (:class:`~ncscope.collapse.taps.FeatureTaps` specs).
    """
    if isinstance(spec, str) and spec == "penultimate":
        return [penultimate_layer(model, classifier)]
    if isinstance(spec, str) and spec == "all":
        try:
            taps = default_taps(model)
        except (AttributeError, ValueError):
            taps = []
        pen = penultimate_layer(model, classifier)
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
    """``{penultimate layer: (W, b)}`` of the final linear layer, when that layer is tapped."""
    pen = penultimate_layer(model, classifier)
    if pen not in layers:
        return {}
    head = classifier_of(model, classifier)
    return {pen: (head.weight.detach(), None if head.bias is None else head.bias.detach())}
