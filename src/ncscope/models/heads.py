"""Finding a model's classifier, penultimate features and layer taps **by module name**.

Convention shared with the NC engine (``ncscope.collapse``): a *layer spec* is a name from
``model.named_modules()`` meaning that module's output, or ``"<name>:in"`` meaning its input.
The penultimate features are ``"classifier:in"`` -- the input of the final ``nn.Linear``.

Every built-in model has a final ``nn.Linear`` called ``classifier`` and a list attribute
``tap_layers`` with the paper's layer-wise tap names (Su et al. 2024, §7); a model may name its
classifier differently by setting a ``classifier_name`` attribute (as
:class:`NormalizedModel` does). :func:`prepare_model` validates and adapts any user model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ncscope.models.normalize import Normalize

__all__ = [
    "NormalizedModel",
    "classifier_name",
    "classifier_of",
    "default_taps",
    "penultimate_layer",
    "prepare_model",
]


def classifier_name(model: nn.Module, name: str | None = None) -> str:
    """The module name of ``model``'s classifier: ``name`` if given, else the model's
    ``classifier_name`` attribute, else ``"classifier"``."""
    if name is not None:
        return name
    attr = getattr(model, "classifier_name", None)
    return attr if isinstance(attr, str) else "classifier"


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def classifier_of(model: nn.Module, name: str | None = None) -> nn.Linear:
    """Return the final ``nn.Linear`` of ``model``, looked up by module name.

    ``name`` defaults to :func:`classifier_name` (``"classifier"`` for built-in models). Raises
    ``ValueError`` naming the ``nn.Linear`` modules that do exist when the name is missing or is
    not an ``nn.Linear``.
    """
    key = classifier_name(model, name)
    try:
        module = model.get_submodule(key)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Linear):
        found = ", ".join(_linear_names(model)) or "none"
        what = "has no module" if module is None else f"has a {type(module).__name__}, not an"
        raise ValueError(
            f"model {what} nn.Linear named {key!r} to serve as the classifier; "
            f"nn.Linear modules present: {found} (pass the right name)"
        )
    return module


def penultimate_layer(model: nn.Module, name: str | None = None) -> str:
    """Layer spec of the penultimate features: ``"<classifier name>:in"`` (validated)."""
    key = classifier_name(model, name)
    classifier_of(model, key)
    return f"{key}:in"


def _fallback_taps(model: nn.Module, classifier: str, prefix: str = "") -> list[str]:
    return [
        f"{prefix}{n}"
        for n, m in model.named_children()
        if not isinstance(m, Normalize) and f"{prefix}{n}" != classifier
    ]


def default_taps(model: nn.Module) -> list[str]:
    """The paper's layer-wise tap names for ``model`` (module outputs, in forward order).

    Built-in models carry them as the attribute ``tap_layers`` (see each architecture's module
    docstring). For a user model without that attribute: every top-level child except the
    :class:`Normalize` and the classifier (the paper's ``VerboseExecution`` hook strategy).
    Names are checked against ``named_modules()``.
    """
    taps = getattr(model, "tap_layers", None)
    if taps is None:
        taps = _fallback_taps(model, classifier_name(model))
    names = dict(model.named_modules())
    missing = [t for t in taps if t not in names]
    if missing:
        raise ValueError(f"tap layers not found in the model: {', '.join(missing)}")
    return list(taps)


class NormalizedModel(nn.Module):
    """``net(normalize(x))``: puts a :class:`Normalize` in front of a user model.

    Module names are ``normalize`` and ``net.<user names>``; ``classifier_name`` and
    ``tap_layers`` are set accordingly (``net.<name>``).
    """

    def __init__(
        self,
        net: nn.Module,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        classifier: str = "classifier",
        taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.classifier_name = f"net.{classifier}"
        inner = list(taps) if taps is not None else _fallback_taps(net, classifier)
        self.tap_layers = [f"net.{t}" for t in inner]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped model on normalised input."""
        return self.net(self.normalize(x))


def prepare_model(
    model: nn.Module,
    *,
    classifier: str = "classifier",
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    taps: Sequence[str] | None = None,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """Validate a user model for ncscope and (optionally) give it its own normalisation.

    Checks that ``model`` has an ``nn.Linear`` named ``classifier``. With ``example_input``
    (a small pixel-space batch) it also checks, by one ``eval()`` forward pass under
    ``no_grad``, that this Linear is the *final* layer: the model's output must equal the
    classifier's output, so that ``"<classifier>:in"`` really is the penultimate feature.
    When ``mean`` / ``std`` are given the model is wrapped in :class:`NormalizedModel`
    (inputs stay pixels in [0, 1]); otherwise ``classifier_name`` (and ``tap_layers`` when
    ``taps`` is given) are set on the model itself and it is returned unchanged otherwise.
    """
    linear = classifier_of(model, classifier)
    if taps is not None:
        names = dict(model.named_modules())
        missing = [t for t in taps if t not in names]
        if missing:
            raise ValueError(f"tap layers not found in the model: {', '.join(missing)}")
    if example_input is not None:
        _check_final(model, linear, classifier, example_input)
    if mean is not None or std is not None:
        return NormalizedModel(
            model,
            0.0 if mean is None else mean,
            1.0 if std is None else std,
            classifier=classifier,
            taps=taps,
        )
    model.classifier_name = classifier
    if taps is not None:
        model.tap_layers = list(taps)
    return model


def _check_final(model: nn.Module, linear: nn.Linear, name: str, x: torch.Tensor) -> None:
    captured: list[torch.Tensor] = []
    handle = linear.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise ValueError(f"classifier {name!r} is not used in the model's forward pass")
    last = captured[-1]
    if (
        not isinstance(out, torch.Tensor)
        or out.shape != last.shape
        or not torch.allclose(out, last)
    ):
        raise ValueError(
            f"classifier {name!r} is not the final layer: the model output differs from its "
            "output, so its input would not be the penultimate feature"
        )
