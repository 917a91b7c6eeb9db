"""Training-free adversarial examples: FGSM and PGD on the kernel predictor (Tsilivis & Kempe,
NeurIPS 2022, §4: the perturbation needs only the kernel and the training data, not a
trained network, and transfers to finite networks in the lazy regime).

:class:`KernelFGSM` and :class:`KernelPGD` are the ncscope :class:`~ncscope.attacks.FGSM` and
:class:`~ncscope.attacks.PGD` run on a :class:`~ncscope.ntk.KernelPredictor` (its outputs are
the logits of the cross-entropy the attacks maximise): the same call shape
``atk(images, labels) -> perturbed images``, threat models (ℓ∞, ℓ2), step rules and reports.
As sweep sources (``ncscope.analyze(model, data, sources={"kernel_pgd": KernelPGD(...)})``)
they perturb the data a *different* model is measured on: a transfer attack.
"""

from __future__ import annotations

from typing import ClassVar

from ncscope.attacks import FGSM, PGD

__all__ = ["KernelFGSM", "KernelPGD"]


class KernelFGSM(FGSM):
    """FGSM on a :class:`~ncscope.ntk.KernelPredictor` (arguments as :class:`ncscope.attacks.FGSM`,
    the predictor in place of the model)."""

    name: ClassVar[str] = "kernel_fgsm"


class KernelPGD(PGD):
    """PGD on a :class:`~ncscope.ntk.KernelPredictor` (arguments as :class:`ncscope.attacks.PGD`,
    the predictor in place of the model)."""

    name: ClassVar[str] = "kernel_pgd"
