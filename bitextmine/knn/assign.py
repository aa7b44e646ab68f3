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

Centred probing (:mod:`.centred`) ranks the lists by int8 estimates instead (:class:`Int8Centroids`): each
row and each centroid as int8 codes with its own scale, their products exact integers (``torch._int_mm`` on
CPUs with int8 matrix units, 2.5x the float32 rate at 1,024 lists; elsewhere a float32 product of the codes,
exact too up to :data:`.int8.CODES_DIM`), scaled back in float32: the same lists on every machine and for any threads
or block sizes; with them :func:`_nearest` beats FAISS's heap up to :data:`MAX_CODED_LISTS` lists. Which lists
a row probes is the search's own approximation, not a result to reproduce: the estimates may swap lists that
score within ~1e-3 |x| |c| of each other (at the p-th or the nearest).
100k x 100k (``benchmarks/mine_speed.py``'s two sets, IVF1024, 64 probes, AVX512-VNNI EPYC, 2 threads): the
assignments 1.6 -> 1.15 s; exact's true pairs found 99.402 -> 99.399% (structured), 99.962 -> 99.963% (near-isotropic).
"""
from __future__ import annotations

import faiss
import numpy as np

from .int8 import CODES_DIM, int8_ready
from .workers import _single_blas, _torch_single, _Workers

#: Lists up to which :func:`_nearest` selects faster than FAISS's heap (64 probes, one thread, 4,096 rows:
#: 68 against 80 ms at 1,024 lists, 209 against 195 ms at 4,096); FAISS's search past it.
MAX_LISTS = 2048
#: ... and up to which it does with int8 estimates (:class:`Int8Centroids`; 4,096 rows, one thread: 109 against
#: 208 ms at 4,096 lists and 64 probes, 394 against 734 at 16,384 lists and 256 probes, even at 65,536).
MAX_CODED_LISTS = 16384
#: Bytes of products :func:`_nearest` selects from at once (1,024 rows at 1,024 lists): its passes over them
#: then run in cache (AVX512 EPYC, one thread, 64 of 1,024 k-means lists of the structured benchmark data:
#: 55 against 60 ms for 4,096 rows at once).
CHUNK_BYTES = 4 << 20


def _assign(quantizer: faiss.Index, x: np.ndarray, nprobe: int, workers: _Workers, coded: Int8Centroids | None = None) -> np.ndarray:
    """(len(x), nprobe) int64: each row's ``nprobe`` nearest lists, the nearest first (-1: fewer lists); the
    order of the others differs between FAISS's search (by distance) and :func:`_nearest` (by id).
    ``coded``: the quantizer's centroids as int8 codes: lists ranked by int8 estimates (module doc), even for one list."""
    limit = MAX_LISTS if coded is None else MAX_CODED_LISTS
    flat = _flat(quantizer) if (1 < nprobe or coded is not None) and quantizer.ntotal <= limit else None
    if flat is None or not np.isfinite(x).all():
        parts = workers.map(lambda sl: quantizer.search(x[sl], nprobe)[1], workers.slices(len(x)))
    else:
        with _single_blas(), _torch_single(coded is not None):
            parts = workers.map(lambda sl: _nearest(x[sl], *flat, nprobe, coded), workers.slices(len(x)))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


class Int8Centroids:
    """A flat quantizer's centroids as int8 codes, one scale a centroid (torch), for :func:`_assign`."""

    def __init__(self, centroids: np.ndarray) -> None:
        self.codes, self.scale = _codes(centroids)
        self.int8 = int8_ready()  # else the codes' float32 product (exact: integer sums below 2^24)

    @staticmethod
    def exact(d: int) -> bool:
        """Whether the codes' products are exact in float32 (and int32) at dimension ``d``: the estimates then
        do not depend on the machine."""
        return d <= CODES_DIM

    def products(self, x: np.ndarray) -> np.ndarray:
        """x . c for every row and centroid, estimated: (len(x), lists) float32."""
        import torch

        codes, s = _codes(x)
        prod = torch._int_mm(codes, self.codes.T) if self.int8 else torch.mm(codes.float(), self.codes.float().T)
        return prod.float().mul_(self.scale[None, :]).mul_(s[:, None]).numpy()


def _codes(x: np.ndarray) -> tuple:
    """Rows of ``x`` as int8 codes (torch) and their scales (float32 tensor): x ~ scale * codes, |codes| <= 127."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    top = t.abs().amax(dim=1)
    s = torch.where(top > 0, top / 127.0, torch.ones_like(top))
    return torch.round(t / s[:, None]).clamp_(-127, 127).to(torch.int8), s


def _flat(quantizer: faiss.Index) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(centroids, |c|^2 / 2 or None)`` of a flat L2 / inner-product quantizer, else None."""
    q = faiss.downcast_index(quantizer)
    if not isinstance(q, faiss.IndexFlat) or q.ntotal < 1:
        return None
    c = np.ascontiguousarray(q.reconstruct_n(0, q.ntotal), dtype=np.float32)
    if q.metric_type == faiss.METRIC_L2:
        return c, 0.5 * np.einsum("ij,ij->i", c, c)
    return (c, None) if q.metric_type == faiss.METRIC_INNER_PRODUCT else None


def _nearest(x: np.ndarray, c: np.ndarray, half_norms: np.ndarray | None, p: int, coded: Int8Centroids | None = None) -> np.ndarray:
    """(len(x), p) ids of each row's p largest ``x.c`` (less ``half_norms``), ties by id: the largest first,
    the others by id (the scan needs the set and the nearest list only); ``x.c`` estimated by ``coded`` when
    given. Rows are taken :func:`_chunk_rows` at a time (from the first row: fixed chunks), so that the products stay in cache."""
    rows = _chunk_rows(len(c))
    parts = []
    for a in range(0, len(x), rows):
        S = x[a : a + rows] @ c.T if coded is None else coded.products(x[a : a + rows])
        parts.append(_largest(S, half_norms, p))
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


def _chunk_rows(lists: int) -> int:
    """Rows of :func:`_nearest` selected at once: products of :data:`CHUNK_BYTES` (at least 256 rows)."""
    return max(256, CHUNK_BYTES // (4 * max(1, lists)))


def _largest(S: np.ndarray, half_norms: np.ndarray | None, p: int) -> np.ndarray:
    """:func:`_nearest` of the products ``S`` (overwritten)."""
    if half_norms is not None:
        S -= half_norms[None, :]
    m, n = S.shape
    if p == 1 < n:
        return np.argmax(S, axis=1)[:, None]  # the first of equal maxima: the lower id
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
