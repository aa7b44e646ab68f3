"""Int8 estimates straight from 8-bit scalar-quantised lists (``IVF...,SQ8``) for the by-list scan (:mod:`.bylist`).

An SQ8 list row is ``x = c_l + vmin + w * (a + 0.5)`` (codes ``a`` in 0..255, ``w = vdiff / 255`` a dimension,
``c_l`` the list's centroid where codes are residuals), so for a query q, with ``p = q * w`` and ``b = a - 128``
(int8)::

    q.x = q.(c_l + vmin) + 128.5 sum(p) + p.b

The last term is an integer product once p is quantised (p ~ s_p a_p, :func:`.int8.quantize`), and the lists'
codes serve as they are: nothing is decoded or quantised again at each visit. The generic int8 scan
(:mod:`.int8`) decodes each list to float32 and quantises it at every visit when the lists do not fit its cache
(10M vectors: every query block reads every list), which took ~60% of the scan in a profile of that shape
against ~17% for the products and their selection (``benchmarks/mine_sq8.py``).

The estimate's error is bounded without assumptions on the data: the query's quantisation error
``|p - s_p a_p| |b|`` (Cauchy-Schwarz, each list's largest |b|), the float32 rounding of FAISS's decoding
(three or four roundings a coordinate, each at most 2^-24 of a term no larger than |vmin_i|, |vdiff_i| or
|c_l,i| + the rest) and of the exact product (d 2^-24 |q| |x|), and the float64 arithmetic of the estimate.
Entries whose estimate plus the bound reaches their query's bound are computed again pair by pair in float32
from FAISS's own decoding of those rows only: the neighbours and similarities are those of the float32 scan,
bit for bit.
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from . import int8

#: Scalar quantisers whose codes are read as they are (8 bits a dimension, one affine map a dimension or for all).
DIRECT_TYPES = ("QT_8bit", "QT_8bit_uniform")
#: Relative margin of FAISS's float32 decoding of a coordinate: at most four roundings of terms bounded by
#: |vmin_i| + |vdiff_i| + |c_l,i| (module doc), with room to spare.
_DECODE = 4.1 * 2.0**-24
#: Query rows taken to float64 at once.
ROWS = 8192


def direct(reader: Any) -> bool:
    """Whether ``reader``'s lists (a :class:`.bylist._ListReader`) are 8-bit scalar codes this module reads as they are."""
    sq = reader.sq
    if sq is None or reader.ivf.metric_type != faiss.METRIC_INNER_PRODUCT or reader.d > int8.MAX_DIM:
        return False
    return any(sq.qtype == getattr(faiss.ScalarQuantizer, t, None) for t in DIRECT_TYPES)


class Sq8Queries:
    """A query block for :class:`Sq8Lists`: ``p = q * w`` as int8 codes (:class:`.int8.Int8Queries`) with sum(p) and |q|."""

    def __init__(self, xq: np.ndarray, w: np.ndarray, workers: Any) -> None:
        p32 = np.empty(xq.shape, np.float32)
        self.psum, self.qnorm = np.empty(len(xq)), np.empty(len(xq))
        for a in range(0, len(xq), ROWS):  # float64 a slice at a time: a block's memory stays ~2x its float32 queries
            q64 = xq[a : a + ROWS].astype(np.float64)
            self.qnorm[a : a + ROWS] = np.sqrt(np.einsum("ij,ij->i", q64, q64)) * (1 + 1e-12)
            p = q64 * w
            self.psum[a : a + ROWS] = p.sum(axis=1)
            p32[a : a + ROWS] = p
        self.codes = int8.Int8Queries(p32, workers)  # its .term bounds |p - s a|, float32's cast of p included


class Sq8Lists:
    """The inverted lists of an SQ8 IVF index read as int8 codes (``b = a - 128``), with what bounds their estimates."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        ivf, d, sq = reader.ivf, reader.d, reader.sq
        trained = faiss.vector_to_array(sq.trained).astype(np.float64)
        vmin, vdiff = (np.full(d, trained[0]), np.full(d, trained[1])) if trained.size == 2 else (trained[:d], trained[d : 2 * d])
        self.w = vdiff / 255.0
        nlist = int(ivf.nlist)
        cent = ivf.quantizer.reconstruct_n(0, nlist).astype(np.float64) if reader.residual else np.zeros((1, d))
        base = cent + vmin  # (nlist or 1, d): q.x = q.base + 128.5 sum(p) + p.b
        self.base = base.astype(np.float32)  # q.base in float32: its rounding is bounded below
        self.centroids = cent.astype(np.float32)  # FAISS's own float32 centroids (exact)
        self.residual = reader.residual
        big = np.linalg.norm(np.abs(vdiff) + np.abs(vmin) + np.abs(cent), axis=1)  # bounds each coordinate's decoding terms
        base_norm = np.linalg.norm(base, axis=1)
        x_max = base_norm + np.linalg.norm(vdiff) * (255.5 / 255) + _DECODE * big  # >= any |x|
        # a query's factor |q|: decoding (|q| |e|), float32's products (d 2^-24 |q| |x| for the exact one, as
        # .int8.norm_term; (d + 2) 2^-24 |q| |base| for q.base, rounding of base included), float64's sums
        self.q_factor = (_DECODE * big + (2 * d * 2.0**-24 * 1.01) * x_max + ((d + 2) * 2.0**-24 * 1.01) * base_norm
                         + 2.0**-40 * x_max)
        self.b_max = np.full(nlist, np.nan)  # each list's largest |b|, found at its first visit

    def queries(self, xq: np.ndarray, workers: Any) -> Sq8Queries:
        return Sq8Queries(xq, self.w, workers)

    def _codes(self, l: int) -> tuple[Any, np.ndarray, float]:
        """``(b, ids, largest |b|)`` of list ``l``: b a torch int8 (rows, d) tensor of the codes less 128."""
        import torch

        inv, n, cs = self.reader.invlists, self.reader.size(l), self.reader.code_size
        codes_ptr, ids_ptr = inv.get_codes(l), inv.get_ids(l)
        b = np.bitwise_xor(faiss.rev_swig_ptr(codes_ptr, n * cs), np.uint8(0x80)).view(np.int8).reshape(n, cs)
        ids = faiss.rev_swig_ptr(ids_ptr, n).astype(np.int64)
        inv.release_codes(l, codes_ptr)
        inv.release_ids(l, ids_ptr)
        b = torch.from_numpy(b)
        if np.isnan(self.b_max[l]):  # two threads may both fill it: the same value (float32 norms, rounded up)
            self.b_max[l] = float(torch.linalg.vector_norm(b.float(), dim=1).max()) * (1 + cs * 2.0**-23 + 1e-6)
        return b, ids, float(self.b_max[l])

    def _estimates(self, q: Any, who: np.ndarray, l: int) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
        """``(A, b, ids, slack)``: the estimate of q[who] . x is ``A + s_p (a_p . b)``, within ``slack`` of the float32 product."""
        sq: Sq8Queries = q.int8
        b, ids, b_max = self._codes(l)
        i = l if self.residual else 0
        A = (q.a[who] @ self.base[i]).astype(np.float64) + 128.5 * sq.psum[who]
        slack = sq.codes.term[who] * b_max + sq.qnorm[who] * self.q_factor[i] + 1e-7
        return A, b, ids, slack

    def lower_kth(self, q: Any, who: np.ndarray, l: int, k: int) -> np.ndarray:
        """For the queries ``who`` whose nearest list is ``l`` (at least k rows): the k-th largest lower bound of
        their float32 products with the list's rows, a lower bound of each query's final k-th (float32, rounded down)."""
        import torch

        A, b, _, slack = self._estimates(q, who, l)
        prod = torch._int_mm(q.int8.codes.gather(who), b.T).numpy()
        low = (prod * q.int8.codes.scale[who][:, None] + (A - slack)[:, None])
        kth = np.partition(low, low.shape[1] - k, axis=1)[:, low.shape[1] - k]
        return np.nextafter(kth.astype(np.float32), np.float32(-np.inf))

    def entries(self, q: Any, who: np.ndarray, l: int, thr: np.ndarray, exact: Any) -> tuple[np.ndarray, ...] | None:
        """The entries of list ``l`` for the queries ``who`` (bounds ``thr``) whose estimate plus its slack reaches the
        bound, computed again pair by pair in float32 (``exact``) from FAISS's decoding of those rows: the ones that reach it."""
        import torch

        A, b, ids, slack = self._estimates(q, who, l)
        need = int8.integer_need(thr - A - slack, q.int8.codes.scale[who])
        prod = torch._int_mm(q.int8.codes.gather(who), b.T)
        cols = np.flatnonzero(prod.amax(dim=1).numpy() >= need)
        if not len(cols):
            return None
        sub = prod.numpy()[cols]
        j, c = np.divmod(np.flatnonzero(sub >= need[cols][:, None]), sub.shape[1])  # by query, then row
        rows_used, c = np.unique(c, return_inverse=True)
        xb = self._decode(l, b.numpy()[rows_used])
        rows, cand, v = exact(q.a[who[cols]], xb, j, c)
        ok = v >= thr[cols[rows]]
        return who[cols[rows[ok]]], ids[rows_used[cand[ok]]], v[ok]

    def _decode(self, l: int, b: np.ndarray) -> np.ndarray:
        """Rows of list ``l`` (as codes less 128) decoded as :class:`.bylist._ListReader` decodes the whole list: the same bits."""
        xb = self.reader.sq.decode(np.bitwise_xor(b.view(np.uint8), np.uint8(0x80)))
        if self.residual:
            xb = xb + self.centroids[l][None, :]
        return np.ascontiguousarray(xb, dtype=np.float32)
