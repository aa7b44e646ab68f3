"""Running bounds of the by-list scan (bitextmine.knn.running): each query's bound is raised to the
k-th best similarity found so far, never above it, across several merges."""
from __future__ import annotations

import numpy as np

from bitextmine.knn.running import Running


def test_bounds_rise_to_the_kth_best_found_so_far() -> None:
    rng = np.random.default_rng(0)
    m, k = 50, 3
    thr = np.full(m, -np.inf, np.float32)
    thr[7] = 0.95  # a bound already above what is found: kept
    run = Running(thr, k)
    seen: dict[int, list[float]] = {q: [] for q in range(m)}
    for _ in range(6):  # several merges of disjoint batches (no pair twice)
        rows = rng.integers(0, m, 40)
        vals = (rng.integers(0, 20, 40) / 20).astype(np.float32)  # equal similarities too
        run.add(rows, vals)
        for q, v in zip(rows.tolist(), vals.tolist()):
            seen[q].append(v)
        for q in range(m):
            got = sorted(seen[q], reverse=True)
            want = np.float32(got[k - 1]) if len(got) >= k else -np.inf
            if q == 7:
                want = max(want, np.float32(0.95))
            assert thr[q] == want, (q, thr[q], want)


def test_nothing_found_changes_nothing() -> None:
    thr = np.array([0.1, -np.inf], np.float32)
    Running(thr, 4).add(np.zeros(0, np.int64), np.zeros(0, np.float32))
    np.testing.assert_array_equal(thr, np.array([0.1, -np.inf], np.float32))
