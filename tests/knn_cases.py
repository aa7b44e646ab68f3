"""Shared by the k-NN tests (tests/test_knn*.py): random unit vectors, a brute-force reference,
the equality check against it, and a block source with irregular blocks."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

NQ, NB, D_ = 37, 53, 24


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference: (sims sorted desc, ids by (-sim, id), full float64 sim matrix)."""
    S = xq.astype(np.float64) @ xb.astype(np.float64).T
    I = np.argsort(-S, axis=1, kind="stable")[:, : min(k, xb.shape[0])]
    return np.take_along_axis(S, I, 1), I, S


def assert_knn_equal(D: np.ndarray, I: np.ndarray, xq: np.ndarray, xb: np.ndarray, k: int) -> None:
    """Equal to brute force up to float32 rounding; ids exactly equal wherever there is no near tie."""
    Dr, Ir, S = brute(xq, xb, k)
    assert D.shape == I.shape == Dr.shape
    assert D.dtype == np.float32 and I.dtype == np.int64
    np.testing.assert_allclose(D, Dr, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(S, I, 1), Dr, atol=1e-5)  # the ids carry those sims
    assert all(len(set(row)) == len(row) for row in I.tolist())
    if Dr.shape[1]:
        srt = -np.sort(-S, axis=1)[:, : Dr.shape[1] + 1]
        clear = (np.diff(srt, axis=1) < -1e-4).all(axis=1) if srt.shape[1] > 1 else np.ones(len(S), bool)
        np.testing.assert_array_equal(I[clear], Ir[clear])


def small_data() -> tuple[np.ndarray, np.ndarray]:
    """NQ queries and NB database rows of dimension D_."""
    rng = np.random.default_rng(0)
    return unit(rng, NQ, D_), unit(rng, NB, D_)


def structured_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 sources; targets hold a noisy copy of each source among 1600 unrelated vectors (shuffled)."""
    rng = np.random.default_rng(1)
    d = 32
    x = unit(rng, 400, d)
    copies = x + 0.15 * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(d)
    y = np.concatenate([copies / np.linalg.norm(copies, axis=1, keepdims=True), unit(rng, 1600, d)])
    perm = rng.permutation(len(y))
    y = y[perm]
    truth = np.argsort(perm)[:400]  # target row of source i's copy
    return x, y, truth


class Ragged:
    """A BlockSource that yields short, irregular blocks (like shards ending mid-block)."""

    def __init__(self, array: np.ndarray, sizes: list[int], lie: int = 0) -> None:
        self.array, self.sizes, self.lie = array, sizes, lie

    def __len__(self) -> int:
        return len(self.array) + self.lie

    @property
    def dim(self) -> int:
        return self.array.shape[1]

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        start, i = 0, 0
        while start < len(self.array):
            n = min(self.sizes[i % len(self.sizes)], rows)
            yield np.ascontiguousarray(self.array[start : start + n], dtype=np.float32)
            start, i = start + n, i + 1
