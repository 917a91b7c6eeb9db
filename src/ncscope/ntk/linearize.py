"""The linearised network: the first-order Taylor model of a network in its parameters around
their current values (Lee et al., NeurIPS 2019, §2.2; the ``lin_epoch`` experiment of Tsilivis &
Kempe, NeurIPS 2022, §5, which continues training the linearisation of the network at an
epoch):

    f_lin(x; θ) = f(x; θ₀) + J_θ f(x; θ₀) (θ − θ₀),

computed with one forward-mode product (``torch.func.jvp``) per call. Its parameters start at
θ₀ and train like those of any module (any optimiser, ncscope attacks); its empirical NTK is
constant, J(x; θ₀) J(x'; θ₀)ᵀ. The base network is evaluated in eval mode (BatchNorm as the
affine map of its running statistics, which stay frozen).
"""

from __future__ import annotations

import copy

from torch import Tensor, nn
from torch.func import functional_call, jvp

__all__ = ["LinearizedModel", "linearize"]


class LinearizedModel(nn.Module):
    """First-order Taylor model of ``model`` around its current parameters (module
    docstring); build it with :func:`linearize`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        base = copy.deepcopy(model).eval()
        for p in base.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_base", base)  # not a submodule: not trained, not saved twice
        self.names = [n for n, _ in model.named_parameters()]
        self.params = nn.ParameterList(
            [nn.Parameter(p.detach().clone()) for _, p in model.named_parameters()])
        self._origin = {n: p.detach().clone() for n, p in base.named_parameters()}
        self._rest = dict(base.named_buffers())

    def forward(self, x: Tensor) -> Tensor:
        """f(x; θ₀) + J(x; θ₀)(θ − θ₀)."""
        delta = {n: p - self._origin[n] for n, p in zip(self.names, self.params, strict=True)}

        def f(params: dict[str, Tensor]) -> Tensor:
            return functional_call(self._base, (params, self._rest), (x,))

        out, tangent = jvp(f, (self._origin,), (delta,))
        return out + tangent


def linearize(model: nn.Module) -> LinearizedModel:
    """The linearisation of ``model`` around its current parameters (a new module; ``model`` is
    copied, not changed)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"linearize: model must be a torch.nn.Module, got {type(model).__name__}")
    return LinearizedModel(model)
