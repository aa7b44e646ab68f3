"""The coarse assignment of an IVF search: each row's ``nprobe`` nearest lists (:mod:`.bylist`, :mod:`.centred`).

FAISS's ``quantizer.search`` keeps a heap of the ``nprobe`` best lists for every row: with 64 probes
of 1,024 lists, the heap costs more than the product with the centroids (AVX512 EPYC, one thread,
4,096 rows: 80 ms in all, the product 32). Where the quantizer is a flat index (inner product or L2)
of at most :data:`MAX_LISTS` lists and several are probed, :func:`_nearest` takes the product with numpy's BLAS and selects
without a heap: a threshold for each row read off a sample of its columns, kept where at least
``nprobe`` values reach it (else the row's exact ``nprobe``-th value), then the ``nprobe``-th of the
few values that reach it (68 against 80 ms above). The lists are those of the largest ``x.c`` (inner product) or ``x.c - |c|^2/2``
(L2, the same order as FAISS's distances), ties by list id, the nearest first (the others by id); rows are
computed in fixed slices on single-threaded BLAS, so each row's lists do not depend on the threads.
FAISS's own search (float32 products too) ranks the same way up to the last bits of near ties.
"""
from __future__ import annotations

import faiss
import numpy as np

from .workers import _single_blas, _Workers

#: Lists up to which :func:`_nearest` selects faster than FAISS's heap (64 probes, one thread, 4,096 rows:
#: 68 against 80 ms at 1,024 lists, 209 against 195 ms at 4,096); FAISS's search past it.
MAX_LISTS = 2048
#: Bytes of products :func:`_nearest` selects from at once (1,024 rows at 1,024 lists): its passes over them
#: then run in cache (AVX512 EPYC, one thread, 64 of 1,024 k-means lists of the structured benchmark data:
#: 55 against 60 ms for 4,096 rows at once).
CHUNK_BYTES = 4 << 20


def _assign(quantizer: faiss.Index, x: np.ndarray, nprobe: int, workers: _Workers) -> np.ndarray:
    """(len(x), nprobe) int64: each row's ``nprobe`` nearest lists, the nearest first (-1: fewer lists); the
    order of the others differs between FAISS's search (by distance) and :func:`_nearest` (by id)."""
    flat = _flat(quantizer) if 1 < nprobe and quantizer.ntotal <= MAX_LISTS else None
    if flat is None or not np.isfinite(x).all():
        parts = workers.map(lambda sl: quantizer.search(x[sl], nprobe)[1], workers.slices(len(x)))
    else:
        with _single_blas():
            parts = workers.map(lambda sl: _nearest(x[sl], *flat, nprobe), workers.slices(len(x)))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _flat(quantizer: faiss.Index) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(centroids, |c|^2 / 2 or None)`` of a flat L2 / inner-product quantizer, else None."""
    q = faiss.downcast_index(quantizer)
    if not isinstance(q, faiss.IndexFlat) or q.ntotal < 1:
        return None
    c = np.ascontiguousarray(q.reconstruct_n(0, q.ntotal), dtype=np.float32)
    if q.metric_type == faiss.METRIC_L2:
        return c, 0.5 * np.einsum("ij,ij->i", c, c)
    return (c, None) if q.metric_type == faiss.METRIC_INNER_PRODUCT else None


def _nearest(x: np.ndarray, c: np.ndarray, half_norms: np.ndarray | None, p: int) -> np.ndarray:
    """(len(x), p) ids of each row's p largest ``x.c`` (less ``half_norms``), ties by id: the largest first,
    the others by id (the scan needs the set and the nearest list only). Rows are taken
    :func:`_chunk_rows` at a time (from the first row: fixed chunks), so that the products stay in cache."""
    rows = _chunk_rows(len(c))
    if len(x) > rows:
        return np.concatenate([_nearest_chunk(x[a : a + rows], c, half_norms, p) for a in range(0, len(x), rows)])
    return _nearest_chunk(x, c, half_norms, p)


def _chunk_rows(lists: int) -> int:
    """Rows of :func:`_nearest` selected at once: products of :data:`CHUNK_BYTES` (at least 256 rows)."""
    return max(256, CHUNK_BYTES // (4 * max(1, lists)))


def _nearest_chunk(x: np.ndarray, c: np.ndarray, half_norms: np.ndarray | None, p: int) -> np.ndarray:
    S = x @ c.T
    if half_norms is not None:
        S -= half_norms[None, :]
    m, n = S.shape
    if p >= n:
        order = np.argsort(-S, axis=1, kind="stable")
        return np.concatenate([order, np.full((m, p - n), -1, np.int64)], axis=1)
    # a first threshold: a high value of a sample of the columns, where ~1.25p of the n values should reach it
    step = max(1, n // max(4 * p, n // 4))
    sample = S[:, ::step]
    w = sample.shape[1]
    rank = min(w, int(np.ceil(1.25 * p * w / n)) + 2)
    t = np.partition(sample, w - rank, axis=1)[:, w - rank]
    mask = S >= t[:, None]
    count = mask.sum(axis=1)
    low = np.flatnonzero(count < p)
    if len(low):  # too few reach it: the row's exact p-th value
        t[low] = np.partition(S[low], n - p, axis=1)[:, n - p]
        mask[low] = S[low] >= t[low, None]
        count[low] = mask[low].sum(axis=1)
    flat = np.flatnonzero(mask)  # by row, then by id
    r = np.repeat(np.arange(m), count)
    slot = np.arange(len(flat)) - np.repeat(np.cumsum(count) - count, count)
    V = np.full((m, int(count.max())), -np.inf, np.float32)
    ids = np.zeros(V.shape, np.int64)
    V[r, slot] = S.ravel()[flat]
    ids[r, slot] = flat - r * n
    # the p: every value above the row's p-th, and of those equal to it the lower ids (exactly p a row)
    kth = -np.partition(-V, p - 1, axis=1)[:, p - 1]
    above = V > kth[:, None]
    tie = V == kth[:, None]
    take = above | (tie & (np.cumsum(tie, axis=1) <= (p - above.sum(axis=1))[:, None]))
    chosen = ids[take].reshape(m, p)  # by id
    rows = np.arange(m)
    nearest = ids[rows, np.argmax(V, axis=1)]  # the first of equal maxima: the lower id
    at = np.argmax(chosen == nearest[:, None], axis=1)
    chosen[rows, at] = chosen[:, 0]
    chosen[:, 0] = nearest
    return chosen
