"""Attack-time twin of a model: eval-mode BatchNorm folded away (``fast=True``).

A gradient attack in eval mode differentiates a fixed function of the input. In that function an
eval-mode BatchNorm is an affine map per channel, so ``BN(conv(x))`` equals one convolution (or
linear layer) with rescaled weights and a new bias — the standard inference folding (e.g.
Jacob et al., CVPR 2018, §3.2; ``torch.nn.utils.fusion``). The twin built here:

* is a ``torch.fx`` trace of the model in which every ``Conv1d/2d/3d -> BatchNorm`` and
  ``Linear -> BatchNorm1d`` pair (the conv/linear output feeding only that BatchNorm, neither
  module hooked) is replaced by one new layer whose weights and bias are folded from the live
  weights and running statistics (per-channel scale and shift in float64, one multiply of the
  weights in their own dtype);
* shares every other sub-module with the model (same objects, so same live weights: nothing is
  copied, the model is never modified);
* on CPU, feeds 4-D inputs to convolutional models in channels-last memory format (oneDNN's
  fast path for convolution, pooling and the elementwise layers);
* re-folds the live weights and running statistics at every attack call (so optimiser steps,
  ``load_state_dict`` or train-mode passes between calls are always seen) and rebuilds itself
  when a tensor is replaced (``.to(...)``) or the module tree changes.

Same function, different float rounding: logits agree to ~1e-6 relative, but ``sign()`` of a
gradient component near zero may flip, so individual pixels can differ from the exact path by a
step (measured in ``tests/test_attacks_fast.py``). Where the twin cannot be built — the model is
not traceable by ``torch.fx``, hooks sit on modules the trace inlines, or there is nothing to
gain — the model itself is used and the reason is reported.

:class:`FastForward` is the opt-in wrapper a gradient attack holds with ``fast=True``: it picks
the module the attack's passes call (the twin) and verifies it; the folding of one pair lives
in :mod:`ncscope.attacks.fold`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ncscope.attacks.fold import Fold, bn_kind_matches, clone_layer
from ncscope.attacks.modes import preserved_buffers
from ncscope.validation import warn_user

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ncscope.attacks.base import AttackReport

__all__ = ["AttackTwin", "FastForward", "has_hooks", "twin_for"]

_FUSED_PREFIX = "_ncscope_folded_"
#: largest accepted |twin logit - model logit| relative to ``1 + max |model logit|`` in
#: :meth:`AttackTwin.verify`; folding only changes float rounding (~1e-6 in float32)
TWIN_RTOL = 1e-3


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` itself carries forward/backward (pre-)hooks."""
    return any(bool(getattr(module, attr, None)) for attr in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _tensors(model: nn.Module) -> Iterator[Tensor]:
    yield from model.parameters()
    yield from model.buffers()


def _layout_key(model: nn.Module) -> tuple:
    """Changes when the module tree changes or a tensor is replaced (not updated in place)."""
    return (tuple(id(m) for m in model.modules()),
            tuple((t.data_ptr(), t.dtype, t.device) for t in _tensors(model)))


class AttackTwin:
    """The function an eval-mode attack differentiates, built for speed (see module docstring).

    ``AttackTwin(model)`` traces and folds; ``twin.sync()`` catches up with changes of the model;
    ``twin(x)`` runs it; ``twin.net`` is the module actually run and ``twin.note``
    says what was done or why the model itself is used. Call it only with the model in eval
    mode (the attack's ``model_mode="eval"``).
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)  # no cycle: twin_for caches twins by model, weakly
        self._build()

    @property
    def model(self) -> nn.Module:
        """The model this twin stands for."""
        model = self._model()
        if model is None:
            raise RuntimeError("AttackTwin: its model no longer exists")
        return model

    # ---- public ---------------------------------------------------------------------------

    def sync(self) -> AttackTwin:
        """Bring the twin up to date with the model (once per attack call): rebuild it if the
        module tree changed or a tensor was replaced, else re-fold the live weights and running
        statistics. (Always re-folded: version counters miss updates made through ``.data``
        or inside kernels, e.g. BatchNorm's running statistics; folding costs one pass over
        the folded layers' weights, small next to a forward/backward pass of a batch.)"""
        if _layout_key(self.model) != self._layout:
            self._build()
        else:
            self._refresh()
        return self

    def verify(self, x: Tensor) -> str | None:
        """Compare the twin's logits with the model's on ``x`` (two forward passes; call with
        the model in eval mode, under ``torch.no_grad()``). On disagreement the folding is
        dropped (the model itself runs until the next rebuild) and the reason is returned."""
        self.verified = True
        if not self._folds:
            return None
        ref, got = self.model(x), self(x)
        if not isinstance(ref, Tensor) or not isinstance(got, Tensor):
            return None  # the attack reports a model that does not return logits
        ref, got = ref.detach().double(), got.detach().double()
        gap = float((ref - got).abs().max()) if ref.numel() else 0.0
        tol = TWIN_RTOL * (1.0 + (float(ref.abs().max()) if ref.numel() else 0.0))
        if gap <= tol:
            return None
        self._folds = []
        self.net = self.model
        self.note = (f"model used as is: the folded twin's logits differ from the model's by "
                     f"{gap:.3g} (> {tol:.3g}); please report this model")
        return self.note

    def __call__(self, x: Tensor) -> Tensor:
        """The model's function of ``x`` (call :meth:`sync` first if the model may have
        changed since the last call)."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    @property
    def folded(self) -> int:
        """Number of BatchNorm layers folded into the preceding conv/linear layer."""
        return len(self._folds)

    # ---- internals ------------------------------------------------------------------------

    def _refresh(self) -> None:
        for fold in self._folds:
            fold.refresh(self.channels_last)

    def _build(self) -> None:
        model = self.model
        self._layout = _layout_key(model)
        self._folds: list[Fold] = []
        self.verified = False
        self.net: nn.Module = model
        first = next(_tensors(model), None)
        on_cpu = first is None or first.device.type == "cpu"
        self.channels_last = on_cpu and any(isinstance(m, nn.Conv2d) for m in model.modules())
        layout = "channels-last input" if self.channels_last else ""
        if not any(isinstance(m, _BatchNorm) for m in model.modules()):
            self.note = layout or "model used as is (no BatchNorm to fold, no conv on CPU)"
            return
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as err:  # any tracing failure: fall back to the model itself
            reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
            self.note = f"model used as is: not traceable by torch.fx ({reason})" + (
                f"; {layout}" if layout else "")
            return
        modules = dict(model.named_modules())
        called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
        hooked = {name for name, m in modules.items() if has_hooks(m)}
        inlined = sorted(hooked - called)
        if inlined:
            shown = ", ".join(repr(n) if n else "<root>" for n in inlined[:3])
            self.note = (f"model used as is: hooks on modules the trace inlines ({shown}); "
                         "remove them or use fast=False") + (f"; {layout}" if layout else "")
            return
        graph = gm.graph
        skipped: list[str] = []
        for node in list(graph.nodes):
            if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
                continue
            bn = modules.get(node.target)
            src = node.args[0]
            if (not isinstance(bn, _BatchNorm) or not bn.track_running_stats
                    or bn.running_mean is None or not isinstance(src, torch.fx.Node)
                    or src.op != "call_module" or len(src.users) != 1):
                continue
            layer = modules.get(src.target)
            if layer is None or not bn_kind_matches(layer, bn):
                continue
            if node.target in hooked or src.target in hooked:  # a hook may read or change it
                skipped.append(str(node.target))
                continue
            target = clone_layer(layer)
            name = f"{_FUSED_PREFIX}{len(self._folds)}"
            gm.add_submodule(name, target)
            src.target = name
            node.replace_all_uses_with(src)
            graph.erase_node(node)
            self._folds.append(Fold(target, layer, bn))
        if not self._folds:
            why = (f"hooked BatchNorm or conv/linear layers: {', '.join(skipped[:3])}" if skipped
                   else "no conv/linear -> BatchNorm pair to fold")
            self.note = layout or f"model used as is ({why})"
            return
        graph.lint()
        gm.recompile()
        self.net = gm
        self._refresh()
        kinds = "conv/linear" if len({type(f.layer) for f in self._folds}) > 1 else (
            "linear" if isinstance(self._folds[0].layer, nn.Linear) else "conv")
        self.note = (f"folded {len(self._folds)} BatchNorm layer(s) into the preceding {kinds} "
                     "layer") + (f"; {layout}" if layout else "")


_TWINS: weakref.WeakKeyDictionary[nn.Module, AttackTwin] = weakref.WeakKeyDictionary()


def twin_for(model: nn.Module) -> AttackTwin:
    """The :class:`AttackTwin` of ``model``, built once and shared by every attack on it (kept
    only as long as the model lives)."""
    twin = _TWINS.get(model)
    if twin is None:
        twin = _TWINS[model] = AttackTwin(model)
        return twin
    return twin.sync()


class FastForward:
    """The opt-in ``fast=True`` path of one gradient attack: which module its passes call.

    :meth:`module` brings the model's shared :class:`AttackTwin` up to date, compares its logits
    with the model's on the batch after every (re)build and on fully checked calls (two forward
    passes, no side effect on buffers), and warns once per attack if the twin disagrees (it then
    runs the model itself) or brings nothing on this model.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._warned = False

    def module(self, model: nn.Module, x: Tensor, report: AttackReport,
               full_check: bool = False) -> AttackTwin:
        """The twin to run on ``x`` (model already in eval mode); records in ``report`` the
        forward passes spent and what was done (``report.fast``)."""
        twin = twin_for(model)  # built once per model, brought up to date here
        if twin.folded and (not twin.verified or full_check):
            with torch.no_grad(), preserved_buffers(model):
                failure = twin.verify(x)
            report.forwards += 2
            if failure:
                warn_user(f"{self.owner}: fast=True: {failure}")
                self._warned = True
        if not self._warned and twin.net is model and not twin.channels_last:
            warn_user(f"{self.owner}: fast=True has no effect on this model: {twin.note}")
            self._warned = True
        report.fast = twin.note
        return twin
