"""Robustness verification by relaxed ImageStar reachability (Tran, Pal, Musau, Manzanas Lopez,
Hamilton, Yang, Bak & Johnson, "Robustness Verification of Semantic Segmentation Neural
Networks Using Relaxed Reachability", CAV 2021, LNCS 12759).

* :class:`ImageStar` — the set representation, estimated and LP-optimised bounds;
* :func:`linf_ball`, :func:`darkening` — input sets (the paper's attacks);
* :func:`chain`, :func:`affine_step`, :func:`ibp` — exact affine steps of chain networks and the
  interval baseline;
* :func:`reach` with :class:`ReachOptions` — the approx-star ReLU with relaxation factor ``rF``
  and the neuron heuristics (relaxed reachability);
* :func:`verify_classification`, :func:`pixel_verdict` (RV, RS, RIoU),
  :func:`soundness_violations` (a sampling check);
* :func:`collapse_certified` and the radii of :mod:`.radius` (certified collapse radius,
  certified logit radius, PGD radius).

LPs go through ``scipy.optimize.linprog(method="highs")``; numerics are float64. Imports
``models`` and ``attacks`` only.
"""

from ncscope.verify.network import AFFINE, affine_step, box_of, chain, ibp, is_affine
from ncscope.verify.radius import (
    bisect_radius,
    class_means,
    collapse_certified,
    collapse_lp_max,
    logit_certified,
    penultimate_chain,
    pgd_radius,
)
from ncscope.verify.reach import Reach, ReachOptions, reach
from ncscope.verify.relu import HEURISTICS, choose_neurons, relu_step
from ncscope.verify.sets import darkened_pixels, darkening, linf_ball
from ncscope.verify.star import ImageStar, ReachStats, lp_extreme
from ncscope.verify.verify import (
    PixelVerdict,
    margin_lower_bounds,
    pixel_verdict,
    riou,
    soundness_violations,
    verify_classification,
)

__all__ = [
    "AFFINE",
    "HEURISTICS",
    "ImageStar",
    "PixelVerdict",
    "Reach",
    "ReachOptions",
    "ReachStats",
    "affine_step",
    "bisect_radius",
    "box_of",
    "chain",
    "choose_neurons",
    "class_means",
    "collapse_certified",
    "collapse_lp_max",
    "darkened_pixels",
    "darkening",
    "ibp",
    "is_affine",
    "linf_ball",
    "logit_certified",
    "lp_extreme",
    "margin_lower_bounds",
    "penultimate_chain",
    "pgd_radius",
    "pixel_verdict",
    "reach",
    "relu_step",
    "riou",
    "soundness_violations",
    "verify_classification",
]
