"""The empirical NTK of any ``nn.Module``: Θ(x, x') = J(x) J(x')ᵀ, J the Jacobian of the
outputs in the trainable parameters (Jacot et al., NeurIPS 2018, §4; the after-kernel tracked
by Tsilivis & Kempe, NeurIPS 2022, §5).

Per-sample Jacobians come from ``torch.func`` (``jacrev`` of a ``functional_call``, a ``vmap``
over the outputs; samples in a loop on CPU and under a second ``vmap`` elsewhere), within a
memory bound ``max_bytes``. The model is evaluated in eval mode (BatchNorm uses its running
statistics, so the kernel is a function of single inputs); its mode is restored afterwards.
The Gram products are float64 by default whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from ncscope.models import logits_of
from ncscope.validation import check_choice, check_int

__all__ = ["MODES", "empirical_ntk", "jacobian_rows"]

#: ``full``: the (n₁K × n₂K) kernel; ``trace``: Σ_k of its K × K blocks, (n₁ × n₂).
MODES = ("full", "trace")
_DEFAULT_BYTES = 2**30
_CHUNK_BYTES = 2**27


def _params(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters; the empirical "
                         "NTK is taken in the parameters with requires_grad=True")
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b for n, b in model.named_buffers()}
    return params, {**frozen, **buffers}


def _one_output(model: nn.Module, rest: dict[str, Tensor],
                output: Callable[[object], Tensor] | None) -> Callable[..., Tensor]:
    read = output or logits_of

    def f(params: dict[str, Tensor], x: Tensor) -> Tensor:
        out = read(functional_call(model, (params, rest), (x.unsqueeze(0),)))
        return out.reshape(-1)

    return f


def jacobian_rows(model: nn.Module, x: Tensor, *, output: Callable[[object], Tensor] | None = None,
                  dtype: torch.dtype | None = None, per_sample: bool | None = None) -> Tensor:
    """Jacobian of the outputs in the trainable parameters, ``(n, K, P)`` (P = number of
    trainable entries, in ``named_parameters`` order; ``dtype``: default the model's).

    ``per_sample``: loop over the samples, each a ``jacrev`` (a ``vmap`` over the K outputs);
    else one ``vmap`` over the samples too. ``None``: the loop on CPU (measured 3-7× faster
    there: the batched per-sample convolution and matrix gradients are slow on CPU), the
    ``vmap`` elsewhere. Memory: n·K·P entries, written in place.
    """
    params, rest = _params(model)
    f = _one_output(model, rest, output)
    n = x.shape[0]
    loop = x.device.type == "cpu" if per_sample is None else per_sample
    was_training = model.training
    model.eval()
    try:
        if not loop:
            jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
            flat = torch.cat([j.reshape(n, j.shape[1], -1) for j in jac.values()], dim=2)
            return flat if dtype is None else flat.to(dtype)
        out: Tensor | None = None
        for i in range(n):
            jac = jacrev(f)(params, x[i])
            if out is None:
                first = next(iter(jac.values()))
                total = sum(j[0].numel() for j in jac.values())
                out = torch.empty((n, first.shape[0], total), dtype=dtype or first.dtype,
                                  device=x.device)
            col = 0
            for j in jac.values():
                width = j[0].numel()
                out[i, :, col:col + width] = j.reshape(j.shape[0], -1)
                col += width
        assert out is not None
        return out
    finally:
        model.train(was_training)


def _gram(ja: Tensor, jb: Tensor, mode: str) -> Tensor:
    """Gram block of two Jacobian chunks ``(a, K, P)``, ``(b, K, P)`` in their dtype, as float64:
    ``(aK, bK)`` (full) or ``(a, b)`` (trace: the K diagonal blocks summed in float64)."""
    a, k, _ = ja.shape
    b = jb.shape[0]
    if mode == "full":
        return (ja.reshape(a * k, -1) @ jb.reshape(b * k, -1).T).to(torch.float64)
    return torch.bmm(ja.transpose(0, 1), jb.transpose(0, 1).transpose(1, 2)).to(
        torch.float64).sum(0)


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    mode: str = "full",
    max_bytes: int = _DEFAULT_BYTES,
    float64_products: bool = True,
    output: Callable[[object], Tensor] | None = None,
) -> Tensor:
    """The empirical NTK of ``model`` between the batches ``x1`` and ``x2`` (``None``: ``x1``).

    Args:
        model: any module whose output (read by ``output``, default
            :func:`ncscope.models.logits_of`) is ``(n, K)`` logits.
        x1, x2: input batches (pixel space for ncscope models).
        mode: ``"full"``: the ``(n₁·K, n₂·K)`` kernel, row ``i·K + k`` = output k of sample
            i; ``"trace"``: the ``(n₁, n₂)`` sum of the K diagonal blocks Σ_k ⟨∇f_k(x), ∇f_k(x')⟩.
        max_bytes: memory bound of the Jacobians (default 1 GiB), which hold K·P entries per
            sample (float64, or the model's dtype with ``float64_products=False``). When the
            Jacobians of ``x1`` and ``x2`` fit together they are computed once and multiplied
            in one product; otherwise in chunk pairs of at most ``max_bytes / 2`` each, the
            Jacobians of ``x2`` recomputed for every chunk of ``x1``. Peak memory: about
            2·max_bytes (the concatenation copies), plus the float64 output (n₁·n₂·K² or
            n₁·n₂ entries). At least one sample per chunk:
            when one sample's Jacobian alone is larger, that is the bound.
        float64_products: convert the Jacobians to float64 before the Gram products
            (default; exact for the model's Jacobian). ``False`` multiplies in the model's
            dtype and sums the K blocks in float64: several times faster for float32 models,
            with a relative error of about 1e-6 (measured on the digits BN-MLP), which the
            kernel-dynamics metrics do not resolve.

    Returns:
        float64 kernel, symmetric positive semi-definite when ``x2`` is ``None``.
    """
    mode = check_choice("empirical_ntk", "mode", mode, MODES)
    max_bytes = check_int("empirical_ntk", "max_bytes", max_bytes, 1)
    if not isinstance(x1, Tensor) or x1.dim() < 2:
        raise ValueError("empirical_ntk: x1 must be a batch tensor (n, ...); add a batch "
                         "dimension with x[None]")
    same = x2 is None
    x2 = x1 if x2 is None else x2
    was_training = model.training
    try:
        with torch.no_grad():
            probe = (output or logits_of)(model.eval()(x1[:1]))
    finally:
        model.train(was_training)
    k = int(probe.reshape(1, -1).shape[1])
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    jac_dtype = torch.float64 if float64_products else next(model.parameters()).dtype
    itemsize = torch.empty((), dtype=jac_dtype).element_size()
    per_sample = k * n_params * itemsize
    n1, n2 = x1.shape[0], x2.shape[0]
    small = max(1, min(max_bytes, _CHUNK_BYTES) // per_sample)  # fast Jacobian batches

    def jac(xs: Tensor) -> Tensor:
        if xs.device.type == "cpu":  # the per-sample loop fills one tensor in place
            return jacobian_rows(model, xs, output=output, dtype=jac_dtype)
        parts = [jacobian_rows(model, xs[i:i + small], output=output, dtype=jac_dtype)
                 for i in range(0, xs.shape[0], small)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    if (n1 + (0 if same else n2)) * per_sample <= max_bytes:  # everything at once
        ja = jac(x1)
        return _gram(ja, ja if same else jac(x2), mode)
    out = torch.zeros((n1 * k, n2 * k) if mode == "full" else (n1, n2), dtype=torch.float64,
                      device=x1.device)
    chunk = max(1, max_bytes // (2 * per_sample))  # one chunk per side within the bound
    for i in range(0, n1, chunk):
        ja = jac(x1[i:i + chunk])
        for j in range(0, n2, chunk):
            if same and j < i:
                continue
            jb = ja if (same and j == i) else jac(x2[j:j + chunk])
            block = _gram(ja, jb, mode)
            ra, rb = (ja.shape[0] * k, jb.shape[0] * k) if mode == "full" else (ja.shape[0],
                                                                                jb.shape[0])
            oi, oj = (i * k, j * k) if mode == "full" else (i, j)
            out[oi:oi + ra, oj:oj + rb] = block
            if same and j != i:
                out[oj:oj + rb, oi:oi + ra] = block.T
    return out
