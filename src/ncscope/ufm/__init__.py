"""The unconstrained feature model (UFM): Neural Collapse as an optimisation problem.

Two problems, both measured with the NC engine that measures networks
(:class:`ncscope.collapse.NCStats`) and solved in float64 on the CPU:

* :func:`solve_regularized`: ``min (1/N) Σ ℓ(W h_i + b, y_i) + λ_W/2‖W‖² + λ_H/2‖H‖² +
  λ_b/2‖b‖²`` for any loss of :mod:`ncscope.losses` (Zhu et al. 2021; Zhou et al. 2022),
  with L-BFGS;
* :func:`solve_oblique`: CE of ``scale · ⟨w_k, h_i⟩`` with unit-norm rows (Yaras et al. 2022),
  by Riemannian gradient descent (:func:`riemannian_grad`, :func:`retract`).

* :func:`spherical_ufm`: the spherical UFM for many classes (``K >> d``; Jiang et al. 2023):
  CE of ``s · ⟨w_k, h_i⟩`` on the sphere with the scale ``s`` annealed (default 2 → 60), the
  same Riemannian step; its trajectory has the generalized-NC metrics ``gnc1``-``gnc3``.

All three return a :class:`UFMResult` (final ``W``, ``H``, ``b``, labels, a long NC trajectory);
:func:`iterations_to` reads when a metric first reached a threshold. :func:`etf_solution`
builds the simplex-ETF critical point of the regularised problem, :func:`simplex_etf` a unit
simplex ETF. :mod:`ncscope.ufm.codes` builds codes on the sphere, each as ``(W, value)``:
:func:`etf_code`, :func:`polygon_code`, :func:`tammes_code` (max-min angle) and
:func:`softmax_code` (max-min one-vs-rest distance). Conventions (``W`` (K, d), ``H``
(N, d), sorted labels): :mod:`ncscope.ufm.problem`. Imports ``losses``, ``collapse`` and
``validation`` only (and scipy's HiGHS LP, lazily, in :func:`softmax_code`).
"""

from ncscope.ufm.codes import Code, etf_code, min_angle, polygon_code, softmax_code, tammes_code
from ncscope.ufm.etf import etf_solution
from ncscope.ufm.oblique import oblique_objective, retract, riemannian_grad, solve_oblique
from ncscope.ufm.problem import make_labels, simplex_etf
from ncscope.ufm.regularized import regularized_objective, solve_regularized
from ncscope.ufm.result import UFMResult, iterations_to, nc_record
from ncscope.ufm.spherical import scale_schedule, spherical_ufm

__all__ = [
    "Code",
    "UFMResult",
    "etf_code",
    "etf_solution",
    "iterations_to",
    "make_labels",
    "min_angle",
    "nc_record",
    "oblique_objective",
    "polygon_code",
    "regularized_objective",
    "retract",
    "riemannian_grad",
    "scale_schedule",
    "simplex_etf",
    "softmax_code",
    "solve_oblique",
    "solve_regularized",
    "spherical_ufm",
    "tammes_code",
]
