"""The shape of ncscope.attacks: one loop, one noise family, sanity checks in use, no circles."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest
import torch

from _attack_helpers import digits_data, trained_digits_model
from ncscope.attacks import (
    FGSM,
    PGD,
    TRADES,
    GaussianL2,
    GaussianNoise,
    GradientAttack,
    NoiseSource,
    RandomSign,
    UniformLinf,
    sanity,
)
from ncscope.attacks.gradient import GradientCall

PACKAGE = pathlib.Path(importlib.import_module("ncscope.attacks").__file__).parent


def _runtime_imports(path: pathlib.Path) -> set[str]:
    """Modules imported at run time (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_modules_are_small_and_sanity_has_no_runtime_import_of_attacks():
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 300, path.name
    assert not {m for m in _runtime_imports(PACKAGE / "sanity.py")
                if m.startswith("ncscope")}
    for name in ("pgd.py", "trades.py", "noise.py", "fgsm.py"):
        tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
        private = [a.name for n in tree.body if isinstance(n, ast.ImportFrom)
                   and (n.module or "").startswith("ncscope") for a in n.names
                   if a.name.startswith("_")]
        assert private == [], (name, private)


@pytest.mark.parametrize("module", ["sanity", "base", "fast"])
def test_each_module_imports_alone(module):
    """No import circle: every module imports first in a fresh interpreter."""
    code = f"import ncscope.attacks.{module}"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_loop_hooks_only_in_subclasses():
    for cls in (PGD, TRADES, FGSM):
        assert "_run" not in vars(cls)  # the loop lives once, in GradientAttack
    assert "_run" in vars(GradientAttack)
    for cls in (GaussianNoise, GaussianL2, RandomSign, UniformLinf):
        assert "__init__" not in vars(cls) and "sample" in vars(cls)
        assert issubclass(cls, NoiseSource)


def test_start_point_check_matches_the_single_checks():
    g = torch.randn(6, 3, 4)
    g[1] = 0
    g[2, 0, 0] = float("nan")
    z = torch.randn(6, 5)
    z[4, 1] = float("inf")
    frac, found = sanity.check_start_point(z, g)
    assert frac == 1 / 6
    assert found == [sanity.check_nonfinite(z, "logits"),
                     sanity.check_nonfinite(g, "input gradient"),
                     sanity.check_zero_gradients(g)]
    assert sanity.check_start_point(torch.zeros(2, 3), torch.ones(2, 4)) == (0.0, [])


class _FGM(GradientAttack):
    """l2 fast gradient method in a few lines: the hooks are enough to write an attack."""

    name = "FGM"

    def __init__(self, model, eps):
        super().__init__(model, checks="off")
        self.eps, self.alpha, self.steps, self.norm = eps, eps, 1, "l2"

    def _hparams(self):
        return {"eps": self.eps}

    def start(self, call: GradientCall) -> torch.Tensor:
        return call.x.clone()

    def objective(self, logits, call):
        return torch.nn.functional.cross_entropy(logits, call.labels), None

    def score(self, logits, call):
        return torch.nn.functional.cross_entropy(logits, call.labels, reduction="none")

    def success(self, logits, call):
        return logits.argmax(1) != call.labels


def test_a_new_attack_from_the_hooks():
    model = trained_digits_model()
    x, y = digits_data()
    x, y = x[1500:1564], y[1500:1564]
    out = _FGM(model, 1.0)(x, y)
    assert torch.equal(out, PGD(model, 1.0, 1.0, 1, "l2", random_start=False)(x, y))
