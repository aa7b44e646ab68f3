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

from .tiles import _sort_key
from .workers import _canonical, _Workers

Knn = tuple[np.ndarray, np.ndarray]


#: Rows pooled at a time: memory grows with the rows of a chunk, not with the sets (~60 bytes an
#: entry while sorted, 2k entries a row: ~0.5 GiB a chunk at k = 4, where the whole 10M x 10M pool
#: at once would be ~5 GiB, by that arithmetic). Results do not depend on it.
CHUNK_ROWS = 1 << 20


def _fuse(fwd: Knn, bwd: Knn, chunk_rows: int = CHUNK_ROWS) -> tuple[Knn, Knn]:
    """``(fwd, bwd)`` with each row's neighbours taken from both directions' pairs (k best, canonical order)."""
    (fd, fi), (bd, bi) = fwd, bwd
    if len(fd) == 0 or len(bd) == 0 or fd.shape[1] == 0 or bd.shape[1] == 0:
        return fwd, bwd
    with _Workers(2) as workers:  # the two directions on two threads (numpy's sorts release the GIL)
        out = workers.map(lambda a: _pooled(*a, chunk_rows), [(fd, fi, bd, bi), (bd, bi, fd, fi)])
    return out[0], out[1]


def _pooled(d: np.ndarray, i: np.ndarray, od: np.ndarray, oi: np.ndarray, chunk_rows: int) -> Knn:
    """Each row's k best of its own search's pairs (``d``, ``i``: (n, k)) and of the other side's
    pairs that name it (``od``, ``oi``: (m, k') ids into this side), ``chunk_rows`` rows at a time."""
    n, k = d.shape
    D = np.empty((n, k), dtype=np.float32)
    I = np.empty((n, k), dtype=np.int64)
    flat_oi, flat_od = oi.ravel(), od.ravel()
    step = max(1, int(chunk_rows))
    for a in range(0, n, step):
        b = min(n, a + step)
        rows = np.repeat(np.arange(b - a, dtype=np.int64), k)
        cols = i[a:b].ravel().astype(np.int64, copy=False)
        sims = d[a:b].ravel()
        at = np.flatnonzero((flat_oi >= a) & (flat_oi < b))  # the other side's pairs naming these rows
        rows = np.concatenate([rows, flat_oi[at].astype(np.int64) - a])
        cols = np.concatenate([cols, at // oi.shape[1]])
        sims = np.concatenate([sims, flat_od[at]])
        own = np.zeros(len(rows), bool)
        own[: (b - a) * k] = True  # found by the row's own search
        ok = cols >= 0
        D[a:b], I[a:b] = _top(rows[ok], cols[ok], sims[ok], own[ok], b - a, k)
    return D, I


def _top(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, own: np.ndarray, n: int, k: int) -> Knn:
    """(n, k) best (sim, col) per row from the triples; -inf / -1 padding. A pair found both ways
    keeps the similarity of the row's own search (with fp16 codes the two differ in the last bits)."""
    if n < 1 << 30 and (not len(cols) or int(cols.max()) < 1 << 32):  # one int64 key a sort (lexsort is slower)
        key = (rows << 33) | (cols << 1) | (~own).astype(np.int64)  # by row, then id, own search first
        order = np.argsort(key, kind="stable")  # equal keys (a repeated pair) keep their given order
        key = key[order] >> 1
        first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
    else:
        order = np.lexsort((~own, cols, rows))
        r, c = rows[order], cols[order]
        first = np.r_[True, (r[1:] != r[:-1]) | (c[1:] != c[:-1])] if len(r) else np.zeros(0, bool)
    order = order[first]  # each pair once: the row's own search's similarity where it found it
    rows, cols, sims = rows[order], cols[order], sims[order]
    order = np.argsort(_sort_key(rows, sims), kind="stable")  # by row, then similarity descending, then id
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
