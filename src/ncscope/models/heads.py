"""Finding a model's classifier, penultimate features and layer taps **by module name**.

Convention shared with the NC engine (``ncscope.collapse``): a *layer spec* is a name from
``model.named_modules()`` meaning that module's output, or ``"<name>:in"`` meaning its input.
The penultimate features are ``"<classifier>:in"`` -- the input of the final ``nn.Linear``.

The classifier of any model (:func:`find_classifier`), first match wins:

1. an explicit name (an argument, ``ModelConfig.classifier``);
2. the model's ``classifier_name`` attribute;
3. the module returned by ``model.get_classifier()`` (timm's convention);
4. a module named ``classifier``, ``head`` or ``fc`` (or the last ``nn.Linear`` inside it);
5. the last ``nn.Linear`` whose output is the model's output.

With a probe batch the candidate is checked by one eval-mode forward: its output must be the
model's output (read by :func:`~ncscope.models.adapters.logits_of`), so that its input really is
the penultimate feature; an ``nn.Linear`` that is not the final layer is never taken. Without a
probe, rules 1-3 and the name ``classifier`` are taken as they are (the built-in models) and
rule 5 is not available. Every failure is a one-line ``ValueError`` saying how to name the
classifier. Module names are the user's own: :func:`prepare_model` never wraps or renames.

Every built-in model has a final ``nn.Linear`` called ``classifier`` and a list attribute
``tap_layers`` with the paper's layer-wise tap names (Su et al. 2024, §7).

**The linear map the NC engine uses** (NC2 of ``W``, NC3, NC4) is :func:`linear_map` of the
classifier: ``module.effective_linear()`` when the module defines it, else ``(weight, bias)``.
The contract: ``classifier(f) == f @ W.T + b`` for the features ``f`` the classifier receives
(``"<classifier>:in"``). A :class:`~ncscope.models.normalized.NormalizedHead` returns
``(scale * W / ||W||_row, None)``, which honours it when its input is already unit-norm (an
:class:`~ncscope.models.normalized.L2Normalize` before it, as in the built-in models); with a
probe batch :func:`find_classifier` checks the contract for any module that defines
``effective_linear`` and refuses, in one line, one whose input is not what that map reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncscope.models.adapters import OutputFn, probe
from ncscope.models.normalize import Normalize
from ncscope.models.normalized import NormalizedHead

__all__ = [
    "CLASSIFIER_NAMES",
    "NormalizedModel",
    "classifier_name",
    "classifier_of",
    "default_taps",
    "find_classifier",
    "linear_map",
    "penultimate_layer",
    "prepare_model",
]

#: Module names taken as the classifier when nothing names it (rule 4).
CLASSIFIER_NAMES = ("classifier", "head", "fc")
_HOW = ("name the final nn.Linear: classifier=NAME, a classifier_name attribute on the model or "
        "--set model.classifier=NAME")


def linear_map(module: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``(W, b)`` with ``module(f) == f @ W.T + b`` on the features ``f`` the module reads:
    ``module.effective_linear()`` when defined (e.g. a
    :class:`~ncscope.models.normalized.NormalizedHead`: ``scale * W / ||W||_row`` on unit-norm
    features), else its ``weight`` and ``bias``. Tensors are live (not detached)."""
    effective = getattr(module, "effective_linear", None)
    if callable(effective):
        weight, bias = effective()
        return weight, bias
    bias = getattr(module, "bias", None)
    return module.weight, bias if isinstance(bias, Tensor) else None  # type: ignore[return-value]


def classifier_name(model: nn.Module, name: str | None = None) -> str:
    """The *declared* classifier name: ``name`` if given, else the model's ``classifier_name``
    attribute, else ``"classifier"`` (no search; see :func:`find_classifier`)."""
    if name is not None:
        return name
    attr = getattr(model, "classifier_name", None)
    return attr if isinstance(attr, str) else "classifier"


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _linear_named(model: nn.Module, key: str) -> nn.Linear:
    try:
        module = model.get_submodule(key) if key else None
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


def _inner_linear(model: nn.Module, name: str) -> str | None:
    """``name`` if that module is an ``nn.Linear``, else the last ``nn.Linear`` inside it."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return None
    if isinstance(module, nn.Linear):
        return name
    inner = [f"{name}.{n}" for n, m in module.named_modules() if n and isinstance(m, nn.Linear)]
    return inner[-1] if inner else None


def _timm_classifier(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)
    if not callable(get):
        return None
    try:
        module = get()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    if not isinstance(module, nn.Module):
        return None
    name = next((n for n, m in model.named_modules() if m is module and n), None)
    return None if name is None else _inner_linear(model, name)


def _candidate(model: nn.Module, name: str | None) -> tuple[str | None, str, bool]:
    """The classifier named by rules 1-4, how it was found and whether it is taken without a
    probe (rules 1-3 and ``classifier``); ``None``: rule 5."""
    if name is not None:
        return name, "classifier", True
    attr = getattr(model, "classifier_name", None)
    if isinstance(attr, str):
        return attr, "classifier (classifier_name attribute)", True
    timm = _timm_classifier(model)
    if timm is not None:
        return timm, "classifier (get_classifier())", True
    for conventional in CLASSIFIER_NAMES:
        found = _inner_linear(model, conventional)
        if found is not None:
            return found, "classifier", conventional == "classifier"
    return None, "classifier", False


def find_classifier(model: nn.Module, name: str | None = None, example: Tensor | None = None,
                    *, output: OutputFn | None = None) -> str:
    """The module name of ``model``'s final ``nn.Linear`` (rules in the module docstring).

    ``example``: a small batch the model takes; the candidate is then verified by one
    eval-mode forward (``output`` reads the logits, default
    :func:`~ncscope.models.adapters.logits_of`). Raises a one-line ``ValueError`` when no
    ``nn.Linear`` qualifies or the candidate is not the final layer, or -- for a module that
    defines ``effective_linear()``, e.g. a :class:`~ncscope.models.normalized.NormalizedHead`
    without an :class:`~ncscope.models.normalized.L2Normalize` before it -- when that map
    applied to its input on the probe batch does not give its output (:func:`linear_map`).
    """
    key, how, sure = _candidate(model, name)
    if key is not None and (sure or example is not None):
        linear = _linear_named(model, key)
        if example is not None:
            logits, seen, inputs = _probe_io(model, example, [linear], output)
            if linear not in seen:
                raise ValueError(f"{how} {key!r} is not used in the model's forward pass; {_HOW}")
            if not _same(seen[linear], logits):
                raise _not_final(seen[linear], logits, f"{how} {key!r}")
            _check_linear_map(linear, inputs, seen[linear], f"{how} {key!r}")
        return key
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to serve as the classifier "
                         "(the penultimate features are the input of the final nn.Linear)")
    if example is None:
        found = ", ".join(n for n, _ in linears)
        raise ValueError(f"which nn.Linear of {type(model).__name__} is the classifier needs a "
                         f"probe batch to tell (nn.Linear modules present: {found}); {_HOW}, "
                         "or give a probe batch")
    logits, seen, inputs = _probe_io(model, example, [m for _, m in linears], output)
    names = {m: n for n, m in linears}
    called = [names[m] for m in seen]  # in the order of their last call
    if not called:
        raise ValueError(f"no nn.Linear of {type(model).__name__} runs in its forward pass; "
                         f"{_HOW}")
    final = [n for n, m in linears if m in seen and _same(seen[m], logits)]
    if final:
        key = max(final, key=called.index)
        linear = model.get_submodule(key)
        _check_linear_map(linear, inputs, seen[linear], f"the final nn.Linear {key!r}")
        return key
    last = called[-1]
    raise _not_final(seen[model.get_submodule(last)], logits, f"the last nn.Linear {last!r}")


def _probe_io(model: nn.Module, example: Tensor, watch: list[nn.Module],
              output: OutputFn | None) -> tuple[Tensor, dict[nn.Module, Tensor],
                                                 dict[nn.Module, Tensor]]:
    """:func:`probe`, plus the last input of each watched module that defines
    ``effective_linear`` (for :func:`_check_linear_map`)."""
    inputs: dict[nn.Module, Tensor] = {}

    def keep_input(module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor):
            inputs[module] = args[0].detach()

    handles = [m.register_forward_pre_hook(keep_input) for m in watch
               if callable(getattr(m, "effective_linear", None))]
    try:
        logits, seen = probe(model, example, watch=watch, output=output)
    finally:
        for h in handles:
            h.remove()
    return logits, seen, inputs


def _check_linear_map(module: nn.Module, inputs: dict[nn.Module, Tensor], out: Tensor,
                      what: str) -> None:
    """One-line ``ValueError`` unless ``out == inp @ W.T + b`` for :func:`linear_map` (only
    for a module that defines ``effective_linear``; a plain ``nn.Linear`` holds by itself)."""
    inp = inputs.get(module)
    if inp is None:
        return
    with torch.no_grad():
        weight, bias = linear_map(module)
        pred = F.linear(inp.detach().to(weight.dtype), weight.detach(),
                        None if bias is None else bias.detach())
    tol = 1e-4 * (1.0 + float(out.detach().abs().max())) if out.numel() else 0.0
    if pred.shape == out.shape and bool(torch.allclose(pred.to(out.dtype), out, rtol=1e-4,
                                                       atol=tol)):
        return
    if isinstance(module, NormalizedHead):
        raise ValueError(f"{what} is a NormalizedHead whose input is not unit-norm, so its "
                         "effective_linear() map does not give the logits from the penultimate "
                         "features (NC3/NC4 would be wrong); put ncscope.models.L2Normalize() "
                         "right before it")
    raise ValueError(f"{what} ({type(module).__name__}): its effective_linear() map applied to "
                     "its input does not give its output (NC3/NC4 would be wrong); make "
                     "effective_linear() return the map the module applies to its input")


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.to(b.dtype), b))


def _not_final(out: Tensor, logits: Tensor, what: str) -> ValueError:
    detail = ("differs from the model's output" if out.shape == logits.shape else
              f"has shape {tuple(out.shape)}, the model's output {tuple(logits.shape)}")
    return ValueError(f"{what} is not the final layer: its output {detail}, so its input "
                      f"would not be the penultimate feature; {_HOW}")


def classifier_of(model: nn.Module, name: str | None = None,
                  example: Tensor | None = None) -> nn.Linear:
    """The final ``nn.Linear`` of ``model`` (:func:`find_classifier`)."""
    return _linear_named(model, find_classifier(model, name, example))


def penultimate_layer(model: nn.Module, name: str | None = None,
                      example: Tensor | None = None) -> str:
    """Layer spec of the penultimate features: ``"<classifier name>:in"`` (validated)."""
    return f"{find_classifier(model, name, example)}:in"


def _fallback_taps(model: nn.Module, classifier: str, prefix: str = "") -> list[str]:
    top = classifier.split(".")[0]
    return [
        f"{prefix}{n}"
        for n, m in model.named_children()
        if not isinstance(m, Normalize) and n != top
    ]


def default_taps(model: nn.Module, classifier: str | None = None) -> list[str]:
    """The paper's layer-wise tap names for ``model`` (module outputs, in forward order).

    Built-in models carry them as the attribute ``tap_layers`` (see each architecture's module
    docstring). For a user model without that attribute: every top-level child except the
    :class:`Normalize` and the one holding the classifier (``classifier``, default
    :func:`classifier_name`); the paper's ``VerboseExecution`` hook strategy. Names are
    checked against ``named_modules()``.
    """
    taps = getattr(model, "tap_layers", None)
    if taps is None:
        taps = _fallback_taps(model, classifier_name(model, classifier))
    names = dict(model.named_modules())
    missing = [t for t in taps if t not in names]
    if missing:
        raise ValueError(f"tap layers not found in the model: {', '.join(missing)}")
    return list(taps)


class NormalizedModel(nn.Module):
    """``net(normalize(x))``: a :class:`Normalize` in front of a user model, as a wrapper.

    Module names are ``normalize`` and ``net.<user names>``; ``classifier_name`` and
    ``tap_layers`` are set accordingly (``net.<name>``). :func:`prepare_model` keeps the user's
    names instead (a forward pre-hook); this wrapper is for code that wants a new module.
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

    def forward(self, x: torch.Tensor) -> Any:
        """The wrapped model's output on normalised input."""
        return self.net(self.normalize(x))


#: Buffers :func:`prepare_model` adds to a model for its input normalisation.
NORMALIZE_BUFFERS = ("input_mean", "input_std")


def _normalize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    x, mean, std = args[0], module.input_mean, module.input_std
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - mean.view(shape)) / std.view(shape), *args[1:])


def prepare_model(
    model: nn.Module,
    *,
    classifier: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    taps: Sequence[str] | None = None,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """Validate a user model for ncscope and (optionally) give it its own normalisation.

    Finds the classifier (:func:`find_classifier`; ``classifier`` names it) and, with
    ``example_input`` (a small pixel-space batch), checks by one ``eval()`` forward under
    ``no_grad`` that it is the *final* layer. Sets ``classifier_name`` (and ``tap_layers`` when
    ``taps`` is given) on the model. With ``mean`` / ``std`` the model gets the buffers
    ``input_mean`` / ``input_std`` (saved in its ``state_dict``) and a forward pre-hook that
    normalises the input channel-wise, as :class:`Normalize` does: inputs stay pixels in [0, 1]
    and no module is added or renamed (an ``nn.Sequential`` keeps its layers). Calling
    ``model.forward`` directly skips the hook; preparing again replaces the statistics.
    Returns ``model`` itself.
    """
    key = find_classifier(model, classifier, example_input)
    if taps is not None:
        names = dict(model.named_modules())
        missing = [t for t in taps if t not in names]
        if missing:
            raise ValueError(f"tap layers not found in the model: {', '.join(missing)}")
    if mean is not None or std is not None:
        norm = Normalize(0.0 if mean is None else mean, 1.0 if std is None else std)
        param = next(model.parameters(), None)
        stats = [t if param is None else t.to(param.device) for t in (norm.mean, norm.std)]
        fresh = not all(n in model._buffers for n in NORMALIZE_BUFFERS)
        taken = [n for n in NORMALIZE_BUFFERS if fresh and hasattr(model, n)]
        if taken:
            raise ValueError(f"the model already has an attribute {taken[0]!r}; normalise "
                             "inside its forward instead")
        for n, t in zip(NORMALIZE_BUFFERS, stats, strict=True):
            model.register_buffer(n, t)
        if fresh:
            model.register_forward_pre_hook(_normalize_input)
    model.classifier_name = key
    if taps is not None:
        model.tap_layers = list(taps)
    return model
