"""Independent checks of the statistics the claims are judged on: the leap fractions on mixed
correct/wrong predictions, and the simplex similarity of two sets of class means (Su et al.
2024, §4 and §5), against brute-force numpy re-implementations and hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncscope.collapse import NCStats, simplex_similarity


def _oracle_leaps(ref_h, ref_y, h, y, pred, tgt, k):
    """Dense NCC of every measured point against the reference class means, then the counts."""
    means = np.stack([ref_h[ref_y == c].mean(0) for c in range(k)])
    d = ((h[:, None, :] - means[None]) ** 2).sum(-1)
    near = d.argmin(1)
    wrong = pred != y
    return {
        "ncc_accuracy": float((near == y).mean()),
        "leap_true": float((near == y).mean()),
        "leap_pred": float((near == pred).mean()),
        "nc4": float((near != pred).mean()),
        "net_accuracy": float((pred == y).mean()),
        "leap_pred_when_wrong": float((near == pred)[wrong].mean()),
        "leap_true_when_wrong": float((near == y)[wrong].mean()),
        "leap_target": float((near == tgt).mean()),
        "target_success": float((pred == tgt).mean()),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leap_fractions_on_mixed_predictions_match_a_dense_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, d, n = 5, 7, 400
    centres = rng.normal(0, 3, (k, d))
    ref_y = np.repeat(np.arange(k), 30)
    ref_h = centres[ref_y] + rng.normal(0, 1, (len(ref_y), d))
    y = rng.integers(0, k, n)
    # measured points: some near their own class, some moved to another vertex
    moved = rng.random(n) < 0.4
    dest = np.where(moved, (y + rng.integers(1, k, n)) % k, y)
    h = centres[dest] + rng.normal(0, 1.5, (n, d))
    # predictions: right for ~half of the moved points, the destination for the others
    pred = np.where(moved & (rng.random(n) < 0.7), dest, y)
    pred = np.where(rng.random(n) < 0.1, rng.integers(0, k, n), pred)  # some noise
    tgt = (y + 1) % k
    assert 0 < (pred != y).mean() < 1  # mixed correct and wrong predictions
    stats = NCStats(k).update(torch.from_numpy(ref_h), torch.from_numpy(ref_y))
    for i in range(0, n, 64):  # several batches
        sl = slice(i, i + 64)
        stats.update_measured(torch.from_numpy(h[sl]), torch.from_numpy(y[sl]),
                              predictions=torch.from_numpy(pred[sl]),
                              targets=torch.from_numpy(tgt[sl]))
    got = stats.compute()
    want = _oracle_leaps(ref_h, ref_y, h, y, pred, tgt, k)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    # the two "when wrong" fractions are not the unconditional ones on this data
    assert got["leap_pred_when_wrong"] != pytest.approx(got["leap_pred"])
    assert got["leap_true_when_wrong"] != pytest.approx(got["leap_true"])


def test_leap_fractions_on_a_hand_built_case() -> None:
    """Three classes on a line at 0, 10, 20; six measured points with known nearest means."""
    ref_h = torch.tensor([[0.0], [10.0], [20.0]], dtype=torch.float64)
    ref_y = torch.tensor([0, 1, 2])
    h = torch.tensor([[1.0], [9.0], [19.0], [11.0], [2.0], [18.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2, 2, 2])         # true labels
    near = [0, 1, 2, 1, 0, 2]                     # nearest reference means (by construction)
    pred = torch.tensor([0, 1, 1, 1, 2, 0])       # network decisions
    # wrong predictions (pred != y): samples 1, 3, 5
    # nearest == pred among them: samples 1 (1 == 1) and 3 (1 == 1) -> 2/3
    # nearest == label among them: sample 5 (2 == 2) -> 1/3
    stats = NCStats(3).update(ref_h, ref_y).update_measured(h, y, predictions=pred)
    got = stats.compute()
    assert got["leap_pred_when_wrong"] == pytest.approx(2 / 3)
    assert got["leap_true_when_wrong"] == pytest.approx(1 / 3)
    assert got["leap_pred"] == pytest.approx(3 / 6)  # samples 0, 1, 3
    assert got["ncc_accuracy"] == pytest.approx(sum(a == b for a, b in zip(near, y.tolist(),
                                                                            strict=True)) / 6)
    assert got["net_accuracy"] == pytest.approx(3 / 6)  # samples 0, 2, 4


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _oracle_similarity(ma: np.ndarray, mb: np.ndarray) -> dict[str, float]:
    """Each simplex centred by the unweighted mean of its class means (Su et al. 2024, §5)."""
    ga, gb = ma.mean(0), mb.mean(0)
    ca, cb = ma - ga, mb - gb
    return {
        "simplex_angle": float(_angle(ca, cb).mean()),
        "simplex_distance": float(np.linalg.norm(ca - cb, axis=1).mean()),
        "simplex_angle_uncentred": float(_angle(ma, mb).mean()),
        "simplex_distance_uncentred": float(np.linalg.norm(ma - mb, axis=1).mean()),
        "global_mean_distance": float(np.linalg.norm(ga - gb)),
        "global_mean_angle": float(_angle(ga[None], gb[None])[0]),
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_simplex_similarity_matches_a_dense_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, d = 6, 9
    centres = rng.normal(0, 2, (k, d))
    offset = 4.0 * np.ones(d)  # both simplices far from the origin: uncentred angles shrink
    ref_y = np.repeat(np.arange(k), rng.integers(5, 12, k))  # unbalanced
    ref_h = centres[ref_y] + rng.normal(0, 1, (len(ref_y), d)) + offset
    y = np.repeat(np.arange(k), rng.integers(4, 9, k))
    shift = rng.normal(0, 1.5, (k, d))  # the measured means move, class by class
    h = centres[y] + shift[y] + rng.normal(0, 1, (len(y), d)) + offset
    ma = np.stack([ref_h[ref_y == c].mean(0) for c in range(k)])
    mb = np.stack([h[y == c].mean(0) for c in range(k)])
    want = _oracle_similarity(ma, mb)
    got = NCStats(k).update(torch.from_numpy(ref_h), torch.from_numpy(ref_y)).update_measured(
        torch.from_numpy(h), torch.from_numpy(y)).compute()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    # the centred and uncentred angles differ here (the test tells them apart)
    assert abs(got["simplex_angle"] - got["simplex_angle_uncentred"]) > 1.0
    direct = simplex_similarity(torch.from_numpy(ma), torch.from_numpy(mb))
    assert direct["angle_mean"] == pytest.approx(want["simplex_angle"], rel=1e-9)


def test_simplex_similarity_constructed_angles() -> None:
    """Rotate a centred simplex by a known angle in a plane: every per-class angle is it."""
    k = 4
    theta = math.radians(30.0)
    base = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])  # centred
    rot = np.array([[math.cos(theta), -math.sin(theta), 0],
                    [math.sin(theta), math.cos(theta), 0], [0, 0, 1.0]])
    offset = np.array([0, 0, 5.0])
    ma, mb = base + offset, base @ rot.T + offset + np.array([0, 0, 1.0])
    sim = simplex_similarity(torch.from_numpy(ma), torch.from_numpy(mb))
    assert sim["angle_mean"] == pytest.approx(30.0, abs=1e-9)
    np.testing.assert_allclose(sim["angle"].numpy(), 30.0, atol=1e-9)
    assert sim["distance_mean"] == pytest.approx(2 * math.sin(theta / 2), abs=1e-12)
    assert sim["global_mean_distance"] == pytest.approx(1.0, abs=1e-12)
    assert sim["global_mean_angle"] == pytest.approx(0.0, abs=1e-6)
    assert k == len(ma)
