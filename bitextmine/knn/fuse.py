"""Both directions' approximate neighbours pooled: each pair found either way counts for both rows.

An approximate search (IVF) misses some true neighbours, and a missed neighbour lowers the
row's k-NN mean, which the margin divides by: the ratio margin of a pair whose neighbourhood was
half missed is inflated (up to +38% against exact search on near-isotropic data, 100k, IVF1024
with 64 probes: ``benchmarks/mine_speed.py``). :func:`knn_pair` searches both directions, and a
pair (x, y) found by y's search is a neighbour candidate of x with the same similarity, whether
or not x's own probes reached y's list. :func:`_fuse` adds every pair found in one direction to
the other direction's candidates and keeps each row's k best (free: no vector is read). The
result is never worse than either search alone: every kept similarity is a real pair's.

Deterministic (one sort over all candidates, ties by id): the same for any number of threads.
"""
from __future__ import annotations

import numpy as np

from .workers import _canonical

Knn = tuple[np.ndarray, np.ndarray]


def _fuse(fwd: Knn, bwd: Knn) -> tuple[Knn, Knn]:
    """``(fwd, bwd)`` with each row's neighbours taken from both directions' pairs (k best, canonical order)."""
    (fd, fi), (bd, bi) = fwd, bwd
    nx, ny = len(fd), len(bd)
    if nx == 0 or ny == 0 or fd.shape[1] == 0 or bd.shape[1] == 0:
        return fwd, bwd
    # every pair found in either direction, as (x, y, sim)
    fx = np.repeat(np.arange(nx, dtype=np.int64), fd.shape[1])
    by = np.repeat(np.arange(ny, dtype=np.int64), bd.shape[1])
    xs = np.concatenate([fx, bi.ravel()])
    ys = np.concatenate([fi.ravel(), by])
    ss = np.concatenate([fd.ravel(), bd.ravel()])
    own = np.concatenate([np.ones(len(fx), bool), np.zeros(len(by), bool)])  # found by x's own search
    ok = (xs >= 0) & (ys >= 0)
    xs, ys, ss, own = xs[ok], ys[ok], ss[ok], own[ok]
    return _top(xs, ys, ss, own, nx, fd.shape[1]), _top(ys, xs, ss, ~own, ny, bd.shape[1])


def _top(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, own: np.ndarray, n: int, k: int) -> Knn:
    """(n, k) best (sim, col) per row from the triples; -inf / -1 padding. A pair found both ways
    keeps the similarity of the row's own search (with fp16 codes the two differ in the last bits)."""
    order = np.lexsort((~own, cols, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols, sims = rows[first], cols[first], sims[first]
    order = np.lexsort((cols, -sims, rows))  # by row, then similarity descending, then id
    rows, cols, sims = rows[order], cols[order], sims[order]
    start = np.searchsorted(rows, np.arange(n, dtype=np.int64))
    rank = np.arange(len(rows), dtype=np.int64) - start[rows]
    keep = rank < k
    D = np.full((n, k), -np.inf, dtype=np.float32)
    I = np.full((n, k), -1, dtype=np.int64)
    D[rows[keep], rank[keep]] = sims[keep]
    I[rows[keep], rank[keep]] = cols[keep]
    _canonical(D, I)
    return D, I
