"""Read the features of any layers of any ``nn.Module`` in one forward pass, with hooks.

A *layer spec* is a module name from ``model.named_modules()`` or a glob pattern over
those names (``"layer*"``, ``"features.*"``), optionally suffixed ``":in"`` to capture the
module's *input* instead of its output — ``"classifier:in"`` is the penultimate feature
vector read by the final linear layer. No per-architecture code is involved.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

Reduce = str | Callable[[torch.Tensor], torch.Tensor]
_REDUCTIONS = ("flatten", "gap")


def list_layers(model: nn.Module, *, with_types: bool = False) -> list[str] | list[tuple[str, str]]:
    """Names of all sub-modules of ``model`` in registration order (the tap names).

    With ``with_types=True`` returns ``(name, class name)`` pairs.
    """
    names = [(n, type(m).__name__) for n, m in model.named_modules() if n]
    return names if with_types else [n for n, _ in names]


def reduce_features(t: torch.Tensor, reduce: Reduce = "flatten") -> torch.Tensor:
    """Turn a layer output (B, ...) into a (B, d) matrix.

    ``"flatten"`` keeps every unit (C·H·W for conv maps; the paper's choice), ``"gap"``
    averages over the spatial dims (dims ≥ 2) to C per sample. A callable is applied as is.
    """
    if callable(reduce):
        return reduce(t)
    if t.ndim < 2:
        return t.reshape(t.shape[0] if t.ndim else 1, -1)
    if reduce == "flatten" or t.ndim == 2:
        return t.flatten(1)
    if reduce == "gap":
        return t.mean(dim=tuple(range(2, t.ndim)))
    raise ValueError(f"unknown reduce {reduce!r}; choose one of {', '.join(_REDUCTIONS)}")


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[tuple[str, str, str]]:
    """Expand layer specs into ``(key, module name, "in"|"out")`` triples, in model order.

    Unknown names raise ``ValueError`` naming the closest matches.
    """
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ValueError("no layers given; see ncscope.list_layers(model) for the names")
    names = [n for n, _ in model.named_modules() if n]
    order = {n: i for i, n in enumerate(names)}
    found: dict[tuple[str, str], None] = {}
    for spec in layers:
        pattern, _, where = spec.partition(":")
        where = where or "out"
        if where not in ("in", "out"):
            raise ValueError(f"layer spec {spec!r}: suffix must be ':in' or ':out'")
        if any(ch in pattern for ch in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        else:
            hits = [pattern] if pattern in order else []
        if not hits:
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.4)
            hint = f"closest: {', '.join(close)}" if close else f"e.g. {', '.join(names[:5])}"
            raise ValueError(
                f"no layer named {pattern!r} in {type(model).__name__}; {hint} "
                "(see ncscope.list_layers(model))"
            )
        for n in hits:
            found[(n, where)] = None
    ordered = sorted(found, key=lambda nw: (order[nw[0]], nw[1] == "out"))
    return [(n if w == "out" else f"{n}:in", n, w) for n, w in ordered]


class FeatureTaps:
    """Capture (reduced) features of chosen layers during a forward pass.

    Example::

        with FeatureTaps(model, ["layer*", "classifier:in"], reduce="flatten") as taps:
            logits = model(images)
            feats = taps.features          # {"layer1": (B, d1), ..., "classifier:in": (B, d)}

    Features are detached copies (safe against later in-place ops). A tapped module that
    runs more than once in one forward pass is an error (its features would be ambiguous).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        reduce: Reduce = "flatten",
        *,
        detach: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not callable(reduce) and reduce not in _REDUCTIONS:
            raise ValueError(f"unknown reduce {reduce!r}; choose one of {', '.join(_REDUCTIONS)}")
        self.model = model
        self.reduce = reduce
        self.detach = detach
        self.specs = resolve_layers(model, layers)
        self._store: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[Any] = []

    @property
    def names(self) -> list[str]:
        """Keys of :attr:`features`, in model order."""
        return [key for key, _, _ in self.specs]

    def _keep(self, key: str, value: Any) -> None:
        if isinstance(value, tuple) and len(value) >= 1:
            value = value[0]
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"layer {key!r} produced {type(value).__name__}, not a tensor; tap a "
                "sub-module that returns a tensor"
            )
        t = value.detach() if self.detach else value
        out = reduce_features(t, self.reduce)
        if out.data_ptr() == t.data_ptr():
            out = out.clone()
        self._calls[key] = self._calls.get(key, 0) + 1
        self._store[key] = out

    def __enter__(self) -> FeatureTaps:
        modules = dict(self.model.named_modules())
        self._handles.append(self.model.register_forward_pre_hook(lambda *_: self.clear()))
        for key, name, where in self.specs:
            mod = modules[name]
            if where == "in":
                hook = mod.register_forward_pre_hook(
                    lambda _m, args, key=key: self._keep(key, args)
                )
            else:
                hook = mod.register_forward_hook(
                    lambda _m, _args, out, key=key: self._keep(key, out)
                )
            self._handles.append(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove all hooks (the model is left as it was)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[FeatureTaps]:
        """Remove the hooks for the duration of the block (e.g. while an attack runs its own
        forward/backward passes), then put them back; the last features are kept."""
        active = bool(self._handles)
        store, calls = self._store, self._calls
        self.close()
        try:
            yield self
        finally:
            if active:
                self.__enter__()
                self._store, self._calls = store, calls

    def clear(self) -> None:
        """Forget the features of the previous forward pass."""
        self._store = {}
        self._calls = {}

    @property
    def features(self) -> dict[str, torch.Tensor]:
        """Features of the last forward pass, ``{key: (B, d)}`` in model order."""
        missing = [k for k in self.names if k not in self._store]
        if missing:
            raise RuntimeError(
                f"layers {missing} did not run in the last forward pass (or no forward ran "
                "inside the 'with FeatureTaps(...)' block)"
            )
        twice = [k for k in self.names if self._calls.get(k, 0) > 1]
        if twice:
            raise RuntimeError(
                f"layers {twice} ran more than once in one forward pass; tap modules that run "
                "once (e.g. a per-block activation, not a shared one)"
            )
        return {k: self._store[k] for k in self.names}

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        """Run ``model(*args, **kwargs)`` with the hooks on; return ``(output, features)``."""
        if self._handles:
            out = self.model(*args, **kwargs)
            return out, self.features
        with self:
            out = self.model(*args, **kwargs)
            return out, self.features
