"""Exact re-ranking of an approximate search's candidates from the database's own vectors.

Product codes (``…,PQm``: auto's last tiers, 64 bytes for a 384-d vector) keep a rough copy of
each vector: similarities computed from them err by a few hundredths, enough to swap a sentence's
translation with a near miss and to move the k-NN means the margin divides by. At 1M x 1M
(synthetic, 2,000 clusters) OPQ64,IVF4096,PQ64 found 61% of all true pairs against SQ8's 78%.
The database is still on disk (an embedding store, memory-mapped): :func:`rerank` takes each
query's ``depth`` best candidates by the codes, computes their similarities again from the stored
vectors (float32, pair by pair: the same bits as exact search's re-score), and keeps the k best.
The margin then sees exact similarities for every neighbour it gets, as with exact search, and
misses only the neighbours that were not among the candidates. Measured at 1M x 1M (64 probes): 92.1%
of exact search's true pairs against 77.5% on the codes alone, for 21% more time
(``benchmarks/results/mine-tiers-1m-rerank.json``).

It is a pure function of the queries, the candidate ids and the database rows, so a Ray search
(whose per-part top-``depth`` lists merge into the same candidates) re-ranks to the same result.
Cost: ``depth`` stored rows read per query (random reads, ``depth x dim x 2`` bytes from a float16
store) and as many ``dim``-long inner products, against the scan's ``nprobe / nlist x nb`` code
comparisons per query.
"""
from __future__ import annotations

import re
import warnings

import numpy as np

from ..errors import InputError
from .sources import BlockSource, _blocks

#: Candidates kept per neighbour wanted where the codes are product codes and no depth is given.
FACTOR = 4
#: ... and at least this many.
MIN_DEPTH = 16
#: Candidate rows read at once (query rows per block = this / depth): ~100 MiB of float32 rows at 384-d.
ROWS_AT_ONCE = 1 << 16

_PRODUCT = re.compile(r"(^|,)\s*PQ\d", re.IGNORECASE)
_REFINED = re.compile(r"(^|,)\s*(RFlat|Refine)", re.IGNORECASE)


def product_coded(spec: str) -> bool:
    """Whether a factory string stores product codes (``PQm``) without FAISS's own refinement."""
    return bool(_PRODUCT.search(spec)) and not _REFINED.search(spec)


def readable(db: BlockSource) -> bool:
    """Whether ``db`` offers random row reads (``embeddings(rows)``: arrays and embedding stores do)."""
    return callable(getattr(db, "embeddings", None))


def depth(spec: str, k: int, nb: int, rerank: int | None = None) -> int | None:
    """Candidates to search for and re-rank for ``k`` neighbours in ``nb`` rows, or None for none.

    ``rerank``: None = automatic (``max(FACTOR k, MIN_DEPTH)`` for product codes, nothing for
    other codes, whose similarities err in their last bits only); 0 = off; N = the top N of any
    approximate index (at least k)."""
    if rerank is not None and rerank < 0:
        raise InputError(f"{{param}} must be 0 (off) or a number of candidates, got {rerank}", param="rerank")
    if spec.strip().lower() == "flat" or rerank == 0 or (rerank is None and not product_coded(spec)):
        return None
    want = max(FACTOR * k, MIN_DEPTH) if rerank is None else max(int(rerank), k)
    return min(nb, max(k, want))


def plan(spec: str, k: int, db: BlockSource, rerank: int | None = None) -> int | None:
    """:func:`depth` for a search of ``db``; None, with a warning, where ``db`` cannot be read row by row."""
    deep = depth(spec, k, len(db), rerank)
    if deep is not None and not readable(db):
        warnings.warn(f"{spec}: the database offers no random row reads (embeddings(rows)): its candidates are "
                      "not re-ranked from the stored vectors", stacklevel=3)
        return None
    return deep


def rerank(qs: BlockSource, db: BlockSource, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` (nq, k): each query's k most similar of its candidate rows ``I`` (nq, depth; -1 =
    none), by float32 similarities of the query and stored database rows, equal ones by increasing
    id; -inf / -1 where a query had fewer than k candidates. ``db`` must offer ``embeddings(rows)``
    (random row reads: :func:`readable`)."""
    from .bylist import _exact

    nq, width = I.shape
    D_out = np.full((nq, k), -np.inf, np.float32)
    I_out = np.full((nq, k), -1, np.int64)
    if not nq or not width or not k:
        return D_out, I_out
    step = max(1, ROWS_AT_ONCE // width)
    q0 = 0
    for xq in _blocks(qs, step):
        m = len(xq)
        cand = I[q0 : q0 + m]
        rows, slot = np.nonzero(cand >= 0)  # by query, then candidate
        ids = cand[rows, slot]
        if len(ids):
            uniq, col = np.unique(ids, return_inverse=True)
            _, _, v = _exact(xq, np.ascontiguousarray(db.embeddings(uniq), dtype=np.float32), rows, col)
            S = np.full((m, width), -np.inf, np.float32)
            S[rows, slot] = v
            order = _best(S, np.where(cand >= 0, cand, np.iinfo(np.int64).max), k)  # no candidate: last
            best = np.take_along_axis(S, order, axis=1)
            got = np.take_along_axis(cand, order, axis=1)
            D_out[q0 : q0 + m, : order.shape[1]] = best
            I_out[q0 : q0 + m, : order.shape[1]] = np.where(np.isfinite(best), got, -1)
        q0 += m
    return D_out, I_out


def _best(S: np.ndarray, C: np.ndarray, k: int) -> np.ndarray:
    """Column order of each row's k largest ``S``, equal values by increasing ``C``: (m, min(k, w))."""
    m, w = S.shape
    row = np.repeat(np.arange(m), w)
    order = np.lexsort((C.ravel(), -S.ravel(), row)).reshape(m, w) - (np.arange(m) * w)[:, None]
    return order[:, :k]
