"""Neural tangent kernels and adversarial robustness (Tsilivis & Kempe, "What Can the Neural
Tangent Kernel Tell Us About Adversarial Robustness?", NeurIPS 2022).

One idea per module:

* :mod:`~ncscope.ntk.analytic` — the analytic NNGP / NTK of fully connected ReLU networks of
  any depth (:func:`relu_kernels`, :func:`relu_ntk`, :func:`relu_nngp`), float64,
  differentiable in the inputs; :mod:`~ncscope.ntk.mlp` — the finite network
  (:class:`NTKMLP`, NTK parameterisation) they are the limit of, and :class:`Centered` (its output
  at initialisation removed);
* :mod:`~ncscope.ntk.empirical` — the empirical NTK of any ``nn.Module`` through ``torch.func``
  (:func:`empirical_ntk`, full or trace over the logits, memory-bounded chunks);
* :mod:`~ncscope.ntk.predictor` — the kernel predictor at training time τ or ∞
  (:class:`KernelPredictor`, one eigendecomposition);
* :mod:`~ncscope.ntk.attacks` — training-free attacks on it (:class:`KernelFGSM`,
  :class:`KernelPGD`), usable as sweep sources and transferred to finite networks;
* :mod:`~ncscope.ntk.features` — eigen-features of a binary task, their usefulness and
  robustness (:func:`eigen_features`);
* :mod:`~ncscope.ntk.dynamics` — kernel distance, top-k spectral mass, class alignment and the
  per-epoch :class:`KernelProbe` (the trainer's ``track_ntk``);
* :mod:`~ncscope.ntk.linearize` — :func:`linearize`, the first-order Taylor model.
"""

from ncscope.ntk.analytic import relu_kernels, relu_nngp, relu_ntk
from ncscope.ntk.attacks import KernelFGSM, KernelPGD
from ncscope.ntk.dynamics import (
    KERNEL_METRICS,
    KernelProbe,
    class_alignment,
    kernel_distance,
    top_mass,
)
from ncscope.ntk.empirical import empirical_ntk, jacobian_rows
from ncscope.ntk.features import eigen_features
from ncscope.ntk.linearize import LinearizedModel, linearize
from ncscope.ntk.mlp import NTKMLP, Centered, NTKLinear
from ncscope.ntk.predictor import KernelPredictor, gd_time

__all__ = [
    "KERNEL_METRICS",
    "Centered",
    "KernelFGSM",
    "KernelPGD",
    "KernelPredictor",
    "KernelProbe",
    "LinearizedModel",
    "NTKLinear",
    "NTKMLP",
    "class_alignment",
    "eigen_features",
    "empirical_ntk",
    "gd_time",
    "jacobian_rows",
    "kernel_distance",
    "linearize",
    "relu_kernels",
    "relu_nngp",
    "relu_ntk",
    "top_mass",
]
