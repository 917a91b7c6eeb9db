"""Studies of ``ncscope reproduce``: one module per reproduced paper, registered by name.

* ``su2024`` — Su, Zhang, Tsilivis & Kempe, "On the Robustness of Neural Collapse and the
  Neural Collapse of Robustness", TMLR 2024 (the default study).
* ``jiang2023`` — Jiang, Zhou, Wang, Qu, Mixon, You & Zhu, "Generalized Neural Collapse for a
  Large Number of Classes", arXiv 2310.05351 (K > d + 1: codes, spherical UFM, bottleneck nets).
* ``zhou2022`` — Zhou, You, Li, Liu, Liu, Qu & Zhu, "Are All Losses Created Equal: A Neural
  Collapse Perspective", NeurIPS 2022 (CE / LS / FL / MSE: UFM and networks, ST and AT).
* ``yaras2022`` — Yaras, Wang, Zhu, Balzano & Qu, "Neural Collapse with Normalized Features: A
  Geometric Analysis over the Riemannian Manifold", NeurIPS 2022 (oblique UFM; normalized head).
* ``tran2021`` — Tran, Pal, Musau, Manzanas Lopez, Hamilton, Yang, Bak & Johnson, "Robustness
  Verification of Semantic Segmentation Neural Networks Using Relaxed Reachability", CAV 2021
  (relaxed ImageStar reachability; a certified collapse radius of the digits models).
* ``tsilivis2022`` — Tsilivis & Kempe, "What Can the Neural Tangent Kernel Tell Us About
  Adversarial Robustness?", NeurIPS 2022 (analytic / empirical NTK, kernel attacks,
  eigen-features, kernel dynamics).

Add a study by writing a module here that calls :func:`register_study` and importing it below.
"""

from ncscope.experiments.studies.base import (
    STUDIES,
    Claim,
    Study,
    aggregate_claims,
    claims_frame,
    get_study,
    register_study,
)
from ncscope.experiments.studies.jiang2023 import STUDY as JIANG2023  # noqa: F401
from ncscope.experiments.studies.su2024 import STUDY as SU2024
from ncscope.experiments.studies.tran2021 import STUDY as TRAN2021  # noqa: F401
from ncscope.experiments.studies.tsilivis2022 import STUDY as TSILIVIS2022  # noqa: F401
from ncscope.experiments.studies.yaras2022 import STUDY as YARAS2022  # noqa: F401
from ncscope.experiments.studies.zhou2022 import STUDY as ZHOU2022  # noqa: F401

DEFAULT_STUDY = SU2024.name

__all__ = [
    "DEFAULT_STUDY",
    "STUDIES",
    "Claim",
    "Study",
    "aggregate_claims",
    "claims_frame",
    "get_study",
    "register_study",
]
