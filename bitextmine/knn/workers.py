"""CPU execution shared by every search path: worker threads and the order of results.

On the CPU, searches run on ``faiss.omp_get_max_threads()`` Python worker threads, each with
single-threaded FAISS on its own share of the queries (or lists). FAISS releases the GIL;
independent workers need no OpenMP barrier after every small operation, which is 1.5x faster
for exact search and over 10x for the by-list IVF search on a 2-core machine shared with other
jobs (``benchmarks/mine.py``). FAISS thread counts themselves are left to the caller.

Every path then puts its results in one canonical order (:func:`_canonical`), so that exact and
approximate searches, blocked or not, list equal similarities the same way.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np


class _Workers:
    """CPU worker threads with single-threaded FAISS (OpenMP settings are per thread); ``map`` runs inline for one."""

    def __init__(self, n: int | None = None) -> None:
        self.n = max(1, int(n if n is not None else faiss.omp_get_max_threads()))
        self._pool = ThreadPoolExecutor(self.n, initializer=faiss.omp_set_num_threads, initargs=(1,)) if self.n > 1 else None

    def map(self, fn: Callable, items: list) -> list:
        if self._pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def slices(self, n: int, minimum: int = 64) -> list[slice]:
        """``n`` rows cut into one contiguous slice per worker (fewer for small ``n``)."""
        parts = max(1, min(self.n, n // minimum))
        edges = np.linspace(0, n, parts + 1).astype(np.int64)
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _canonical(D: np.ndarray, I: np.ndarray) -> None:
    """In place: padding (I < 0) gets D = -inf; rows with equal similarities are ordered by (-D, I)."""
    pad = I < 0
    if pad.any():
        D[pad] = -np.inf
    if D.shape[1] < 2:
        return
    rows = np.nonzero((D[:, 1:] >= D[:, :-1]).any(axis=1))[0]  # a tie or an unsorted pair
    if len(rows):
        d, i = D[rows], I[rows]
        i_key = np.where(i < 0, np.iinfo(np.int64).max, i)  # padding last among equals
        order = np.lexsort((i_key, -d), axis=1)
        D[rows] = np.take_along_axis(d, order, axis=1)
        I[rows] = np.take_along_axis(i, order, axis=1)
