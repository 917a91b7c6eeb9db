"""Agreement of ncscope.attacks with torchattacks and with the paper's reference code.

On a small BN-MLP trained on sklearn's digits (normalisation inside the model): with random
start off, PGD l_inf / PGD l2 / FGSM give the same adversarial images as torchattacks'
PGD / PGDL2 / FGSM to 1e-5; with random start on, robust accuracies agree within 1 point.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _attack_helpers import (
    accuracy,
    digits_data,
    official_trades_linf,
    rice_attack_pgd,
    trained_digits_model,
)
from ncscope.attacks import FGSM, PGD, TRADES

ta = pytest.importorskip("torchattacks")

AGREE = 1e-5


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return trained_digits_model()


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_data()
    return x[1500:], y[1500:]


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_model_is_trained(model, test_set):
    x, y = test_set
    assert accuracy(model, x, y) > 0.85


@pytest.mark.parametrize(("eps", "alpha", "steps"),
                         [(8 / 255, 2 / 255, 10), (0.1, 0.02, 10), (0.3, 0.05, 20)])
def test_pgd_linf_matches_torchattacks(model, test_set, eps, alpha, steps):
    x, y = test_set
    ours = PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    theirs = ta.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert _maxdiff(ours, theirs) <= AGREE
    assert not model.training


@pytest.mark.parametrize(("eps", "alpha", "steps"),
                         [(128 / 255, 15 / 255, 10), (1.0, 0.2, 10), (2.0, 0.5, 20)])
def test_pgd_l2_matches_torchattacks(model, test_set, eps, alpha, steps):
    x, y = test_set
    ours = PGD(model, eps=eps, alpha=alpha, steps=steps, norm="l2", random_start=False)(x, y)
    theirs = ta.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert _maxdiff(ours, theirs) <= AGREE


@pytest.mark.parametrize("eps", [8 / 255, 0.1, 0.3])
def test_fgsm_matches_torchattacks(model, test_set, eps):
    x, y = test_set
    assert _maxdiff(FGSM(model, eps=eps)(x, y), ta.FGSM(model, eps=eps)(x, y)) <= AGREE


def test_targeted_pgd_matches_torchattacks(model, test_set):
    x, y = test_set
    ours = PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False, targeted=True)(x, y)
    ref = ta.PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False)
    ref.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10, quiet=True)
    assert _maxdiff(ours, ref(x, y)) <= AGREE


@pytest.mark.parametrize(("norm", "eps", "alpha"), [("linf", 0.1, 0.02), ("l2", 1.0, 0.2)])
def test_random_start_same_global_seed_is_identical(model, test_set, norm, eps, alpha):
    """Without seed/generator ncscope draws from the global RNG exactly as torchattacks."""
    x, y = test_set
    torch.manual_seed(123)
    ours = PGD(model, eps=eps, alpha=alpha, steps=10, norm=norm)(x, y)
    ref = ta.PGD if norm == "linf" else ta.PGDL2
    torch.manual_seed(123)
    theirs = ref(model, eps=eps, alpha=alpha, steps=10)(x, y)
    assert _maxdiff(ours, theirs) <= AGREE


@pytest.mark.parametrize(("norm", "eps", "alpha"),
                         [("linf", 8 / 255, 2 / 255), ("linf", 0.1, 0.02),
                          ("l2", 128 / 255, 15 / 255), ("l2", 1.0, 0.2)])
def test_random_start_robust_accuracy_agrees(model, norm, eps, alpha, capsys):
    """Independent random starts (ncscope seed vs torchattacks global RNG) on all 1797
    digits: robust accuracies within 1 percentage point."""
    x, y = digits_data()
    ours = PGD(model, eps=eps, alpha=alpha, steps=10, norm=norm, seed=7)(x, y)
    ref = ta.PGD if norm == "linf" else ta.PGDL2
    torch.manual_seed(2024)
    theirs = ref(model, eps=eps, alpha=alpha, steps=10)(x, y)
    acc_ours, acc_theirs = accuracy(model, ours, y), accuracy(model, theirs, y)
    with capsys.disabled():
        print(f"\n[robust acc] {norm} eps={eps:.4f}: ncscope {acc_ours:.4f}, "
              f"torchattacks {acc_theirs:.4f} (clean {accuracy(model, x, y):.4f})")
    assert abs(acc_ours - acc_theirs) <= 0.01, (acc_ours, acc_theirs)
    assert acc_ours < accuracy(model, x, y)


# ---- the paper's own code (robust_neural_collapse / Rice et al.) ----------------------------


@pytest.mark.parametrize(("norm", "eps", "alpha", "restarts"),
                         [("linf", 0.1, 0.02, 1), ("linf", 8 / 255, 2 / 255, 3),
                          ("l2", 1.0, 0.2, 1), ("l2", 128 / 255, 15 / 255, 3)])
def test_pgd_matches_paper_attack_pgd(model, test_set, norm, eps, alpha, restarts):
    """Same global seed: random starts, steps, projections and the per-example restart
    selection by final loss reproduce the paper's ``attack_pgd``."""
    x, y = test_set
    torch.manual_seed(5)
    ours = PGD(model, eps=eps, alpha=alpha, steps=10, norm=norm, restarts=restarts)(x, y)
    torch.manual_seed(5)
    ref = rice_attack_pgd(model, x, y, eps, alpha, 10, restarts,
                          "l_inf" if norm == "linf" else "l_2")
    assert _maxdiff(ours, ref) <= AGREE


def test_trades_matches_official_linf(model, test_set):
    """Same global seed as the official TRADES loop (which recomputes the clean prediction at
    every step): the same perturbations."""
    x, y = test_set
    torch.manual_seed(11)
    ours = TRADES(model, eps=0.1, alpha=0.02, steps=10)(x, y)
    torch.manual_seed(11)
    ref = official_trades_linf(model, x, 0.02, 0.1, 10)
    assert _maxdiff(ours, ref) <= AGREE


def test_agreement_summary(model, test_set, capsys):
    """Prints the figures quoted in the report (max abs difference, robust accuracies)."""
    x, y = test_set
    rows = [
        ("PGD linf 8/255", PGD(model, random_start=False)(x, y),
         ta.PGD(model, random_start=False)(x, y)),
        ("PGD l2 128/255", PGD(model, 128 / 255, 15 / 255, norm="l2", random_start=False)(x, y),
         ta.PGDL2(model, 128 / 255, 15 / 255, random_start=False)(x, y)),
        ("FGSM 8/255", FGSM(model)(x, y), ta.FGSM(model)(x, y)),
    ]
    with capsys.disabled():
        for name, a, b in rows:
            print(f"\n[agreement] {name}: max|diff| = {_maxdiff(a, b):.3g}")
    for _, a, b in rows:
        assert _maxdiff(a, b) <= AGREE


def test_paper_exact_train_mode_pgd_matches_the_reference_batchnorm_updates():
    """In train mode the paper's ``attack_pgd`` runs a final selection forward even with one
    restart: BatchNorm sees ``steps + 1`` adversarial batches. ``paper_exact=True`` does the
    same (equal perturbation and running statistics); the default saves that forward."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                        nn.Linear(32, 10))
    x = torch.rand(64, 1, 8, 8)
    y = torch.arange(64) % 10
    start = {k: v.clone() for k, v in net.state_dict().items()}

    def run(fn):
        net.load_state_dict(start)
        net.train()
        torch.manual_seed(7)
        out = fn()
        return out, net[2].running_mean.clone(), int(net[2].num_batches_tracked)

    ref, ref_mean, ref_n = run(lambda: rice_attack_pgd(net, x, y, 0.1, 0.025, 5, 1, "l_inf"))
    exact, exact_mean, exact_n = run(lambda: PGD(net, eps=0.1, alpha=0.025, steps=5,
                                                 model_mode="train", paper_exact=True)(x, y))
    lean, lean_mean, lean_n = run(lambda: PGD(net, eps=0.1, alpha=0.025, steps=5,
                                              model_mode="train")(x, y))
    assert _maxdiff(exact, ref) <= AGREE and _maxdiff(lean, ref) <= AGREE  # same perturbation
    assert ref_n == exact_n == 6 and lean_n == 5
    assert torch.allclose(exact_mean, ref_mean, atol=1e-6)
    assert not torch.allclose(lean_mean, ref_mean, atol=1e-4)  # the default differs here
