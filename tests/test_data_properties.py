"""Property tests of the deterministic subsetting helpers (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ncscope.data import balanced_indices, stratified_indices

labels = st.lists(st.integers(0, 5), min_size=1, max_size=120).map(np.array)


@settings(max_examples=60, deadline=None)
@given(y=labels, frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**16))
def test_stratified_sizes_proportions_and_determinism(y, frac, seed):
    n = max(1, int(round(frac * len(y))))
    idx = stratified_indices(y, n, seed)
    assert len(idx) == n and len(set(idx.tolist())) == n
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < len(y)
    classes, counts = np.unique(y, return_counts=True)
    got = np.array([(y[idx] == c).sum() for c in classes])
    assert np.all(np.abs(got - n * counts / len(y)) < 1.0)  # largest-remainder quotas
    assert np.array_equal(idx, stratified_indices(y, n, seed))


@settings(max_examples=60, deadline=None)
@given(y=labels, k=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_balanced_exact_counts(y, k, seed):
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < k:
        return
    idx = balanced_indices(y, k, seed)
    assert all((y[idx] == c).sum() == k for c in classes)
    assert np.array_equal(idx, balanced_indices(y, k, seed))
