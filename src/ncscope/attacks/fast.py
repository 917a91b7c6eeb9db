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
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

__all__ = ["AttackTwin", "has_hooks", "twin_for"]

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


#: foldable layer type -> the BatchNorm type that may follow it (exact types only: a subclass
#: may override ``forward``, e.g. weight standardisation, and then folding would be wrong)
_FOLDABLE: dict[type, type] = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d,
                               nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def _bn_kind_matches(layer: nn.Module, bn: _BatchNorm) -> bool:
    want = _FOLDABLE.get(type(layer))
    if want is None or type(bn) is not want:
        return False
    n_out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return bn.num_features == n_out


@dataclass
class _Fold:
    """One folded pair: ``target`` (a new layer in the twin) = ``layer`` followed by ``bn``."""

    target: nn.Module
    layer: nn.Module
    bn: _BatchNorm

    @torch.no_grad()
    def refresh(self, channels_last: bool) -> None:
        """Fold the live weights and running statistics (``torch.nn.utils.fusion``'s formulas):
        ``s = gamma / sqrt(var + eps)``, ``W' = s * W`` per output channel,
        ``b' = s * (b - mean) + beta``; ``s`` and ``b'`` in float64, then one multiply in the
        weight's dtype written straight into the twin's layer (one pass over the weights)."""
        layer, bn = self.layer, self.bn
        w = layer.weight.detach()
        d = torch.float64
        assert bn.running_mean is not None and bn.running_var is not None
        scale = torch.rsqrt(bn.running_var.to(d) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach().to(d)
        shift = -bn.running_mean.to(d)
        if layer.bias is not None:
            shift = shift + layer.bias.detach().to(d)
        shift = shift * scale
        if bn.bias is not None:
            shift = shift + bn.bias.detach().to(d)
        scale = scale.to(w.dtype).view(-1, *([1] * (w.ndim - 1)))
        shift = shift.to(w.dtype)
        fmt = (torch.channels_last if channels_last and w.ndim == 4
               else torch.contiguous_format)
        target = self.target
        cur = target.weight
        if _fits(cur, w, fmt):
            torch.mul(w, scale, out=cur)  # never in place on the model's own weight
        else:
            target.weight = nn.Parameter((w * scale).contiguous(memory_format=fmt),
                                         requires_grad=False)
        if _fits(target.bias, shift, torch.contiguous_format):
            target.bias.copy_(shift)
        else:
            target.bias = nn.Parameter(shift, requires_grad=False)


def _fits(cur: Tensor | None, like: Tensor, fmt: torch.memory_format) -> bool:
    """Whether ``cur`` can take a value shaped like ``like`` in place (same shape, dtype,
    device, memory format; not the meta placeholder of a fresh twin layer)."""
    return (isinstance(cur, Tensor) and cur.device == like.device and cur.dtype == like.dtype
            and cur.shape == like.shape and cur.is_contiguous(memory_format=fmt))


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
        self._folds: list[_Fold] = []
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
            if layer is None or not _bn_kind_matches(layer, bn):
                continue
            if node.target in hooked or src.target in hooked:  # a hook may read or change it
                skipped.append(str(node.target))
                continue
            target = _clone_layer(layer)
            name = f"{_FUSED_PREFIX}{len(self._folds)}"
            gm.add_submodule(name, target)
            src.target = name
            node.replace_all_uses_with(src)
            graph.erase_node(node)
            self._folds.append(_Fold(target, layer, bn))
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


def _clone_layer(layer: nn.Module) -> nn.Module:
    """A hook-free copy of a conv/linear layer's configuration (weights are set by refresh)."""
    if isinstance(layer, nn.Linear):
        out: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=True,
                                   device="meta")
    else:
        assert isinstance(layer, _ConvNd)
        out = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                          groups=layer.groups, bias=True, padding_mode=layer.padding_mode,
                          device="meta")
    out.train(False)
    return out
