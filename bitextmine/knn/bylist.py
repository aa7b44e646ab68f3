"""IVF search list by list (CPU, IVF indexes with flat, scalar-quantised or product codes).

FAISS's own IVF search walks the lists query by query, re-reading a list's vectors for every
query that probes it. Here the queries of a block are grouped by the lists they probe and each
list is compared with all its queries in one matrix product: each list is read once per query
block and the work runs at matrix-multiply speed (``benchmarks/mine.py``).

No selection per list: each query's nearest list is scanned first (float32), and the k-th value
it gives the query is a lower bound of the query's final k-th; every list then keeps only the
entries that may reach it, a comparison instead of a heap (:func:`_entries`). Those products are
estimates (:func:`.tiles.scan_precision`: int8 where the CPU has int8 matrix units, :mod:`.int8`,
SQ8 lists' own codes, :mod:`.sq8`;
else bf16 where it multiplies bf16 faster; else float32); the entries whose estimate plus its error
bound (:func:`.int8.slack`, :func:`.tiles.bf16_slack`) reaches the bound are computed again pair by
pair in float32. Nothing that can enter a top-k is pruned: for a given
assignment of queries to lists the neighbours are FAISS's (similarities equal up to float32
summation order), and each similarity is the same bits however the lists are split.

An IVF behind linear pre-transforms (``OPQ64,IVF4096,PQ64``, ``PCA128,IVF1024,Flat``) is searched
the same way in the transformed space: the queries go through the transforms (composed into one
map, applied in float64: the same bits for any block shape, :class:`_Transformed`), the lists'
codes are decoded (product codes: the centroid plus the decoded residual), as FAISS scores them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from . import int8, sq8
from .assign import _assign
from .running import MERGE_AT, Running
from .sources import BlockSource, _blocks
from .tiles import bf16_slack, estimate32, norm4, precision, ranked, scan_precision, torch_fp32
from .workers import SHARES, _canonical, _single_blas, _torch_single, _Workers, release_free_memory


def _ivf_of(index: Any) -> Any:
    """The IVF index inside ``index`` as its concrete class (IndexIVFFlat, ...), or None."""
    ivf = faiss.try_extract_index_ivf(index)
    return faiss.downcast_index(ivf) if ivf is not None else None


def _decodable(ivf: faiss.IndexIVF) -> bool:
    """Lists whose codes decode to the vectors FAISS scores (flat, scalar-quantised or product codes)."""
    kinds = isinstance(ivf, (faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer)) or type(ivf) is faiss.IndexIVFPQ
    return kinds and ivf.metric_type == faiss.METRIC_INNER_PRODUCT


def _by_list(index: Any) -> tuple[faiss.IndexIVF, tuple[np.ndarray, np.ndarray] | None] | None:
    """``(ivf, transform)`` when ``index`` (a CPU index) is searched list by list: a decodable IVF,
    alone or behind linear pre-transforms only; ``transform`` is their composition ``(A, b)`` in
    float64 (queries map to ``x A^T + b``), None without pre-transforms. None for anything else."""
    top = faiss.downcast_index(index)
    ivf = _ivf_of(index)
    if ivf is None or not _decodable(ivf):
        return None
    if top.this == ivf.this:
        return ivf, None
    if not isinstance(top, faiss.IndexPreTransform) or faiss.downcast_index(top.index).this != ivf.this:
        return None
    d_in = int(top.chain.at(0).d_in) if top.chain.size() else int(ivf.d)
    A, b = np.eye(d_in), np.zeros(d_in)
    for i in range(top.chain.size()):
        vt = faiss.downcast_VectorTransform(top.chain.at(i))
        if not isinstance(vt, faiss.LinearTransform):
            return None
        Ai = faiss.vector_to_array(vt.A).astype(np.float64).reshape(int(vt.d_out), int(vt.d_in))
        bi = faiss.vector_to_array(vt.b).astype(np.float64) if vt.have_bias else np.zeros(int(vt.d_out))
        A, b = Ai @ A, Ai @ b + bi
    return ivf, (A, b)


class _Transformed:
    """A query source through an IVF's linear pre-transforms (a :class:`.sources.BlockSource`)."""

    def __init__(self, qs: BlockSource, transform: tuple[np.ndarray, np.ndarray]) -> None:
        self.qs, (self.A, self.b) = qs, transform

    def __len__(self) -> int:
        return len(self.qs)

    @property
    def dim(self) -> int:
        return int(self.A.shape[0])

    def iter_blocks(self, rows: int):
        for x in self.qs.iter_blocks(rows):
            yield np.ascontiguousarray((x.astype(np.float64) @ self.A.T + self.b).astype(np.float32))


class _ListReader:
    """Decoded vectors (float32) and ids of an IVF index's inverted lists; with ``cache`` a dict, each
    list is decoded once and kept there (the search reads a list up to three times a query block)."""

    def __init__(self, ivf: faiss.IndexIVF) -> None:
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
        self.ivf = ivf
        self.invlists = ivf.invlists
        self.code_size = int(self.invlists.code_size)
        self.d = int(ivf.d)
        self.sq = ivf.sq if isinstance(ivf, faiss.IndexIVFScalarQuantizer) else None
        self.pq = ivf.pq if isinstance(ivf, faiss.IndexIVFPQ) else None
        self.fp16 = self.sq is not None and self.sq.qtype == faiss.ScalarQuantizer.QT_fp16
        self.residual = (self.sq is not None or self.pq is not None) and bool(ivf.by_residual)

    def size(self, l: int) -> int:
        return int(self.invlists.list_size(l))

    def read(self, l: int) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, ids) of list ``l`` (read-only: cached lists are shared)."""
        got = self.cache.get(l) if self.cache is not None else None
        if got is None:
            got = self._decode(l)
            if self.cache is not None:
                self.cache[l] = got
        return got

    def _decode(self, l: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.size(l)
        inv = self.invlists
        codes_ptr, ids_ptr = inv.get_codes(l), inv.get_ids(l)
        codes = faiss.rev_swig_ptr(codes_ptr, n * self.code_size).copy()
        ids = faiss.rev_swig_ptr(ids_ptr, n).copy()
        inv.release_codes(l, codes_ptr)
        inv.release_ids(l, ids_ptr)
        if self.pq is not None:
            xb = self.pq.decode(codes.reshape(n, self.code_size))
        elif self.sq is None:
            xb = codes.view(np.float32).reshape(n, self.d)
        elif self.fp16:
            xb = _widen(codes.view(np.float16).reshape(n, self.d))
        else:
            xb = self.sq.decode(codes.reshape(n, self.code_size))
        if self.residual:
            xb = xb + self.ivf.quantizer.reconstruct(l)[None, :]
        return np.ascontiguousarray(xb, dtype=np.float32), ids.astype(np.int64, copy=False)


def _widen(half: np.ndarray) -> np.ndarray:
    """float16 rows as float32 (exact): torch's conversion where torch is present (16x numpy's on a
    list of 250 x 384: 10 against 160 microseconds, AVX512 EPYC, one thread)."""
    try:
        import torch
    except ImportError:
        return half.astype(np.float32)
    return torch.from_numpy(half).float().numpy()


def reserve_lists(ivf: faiss.IndexIVF, filed: np.ndarray) -> None:
    """Each inverted list of ``ivf`` (in memory) given room for exactly the rows ``filed`` under it.
    Lists filled block by block grow by doubling and end up to twice their size (11% over the codes
    at 1M vectors in 4,096 lists); sized once, they hold the codes and ids and nothing more."""
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.ArrayInvertedLists):
        return
    if ivf.ntotal:
        raise ValueError("reserve_lists sizes the lists of an empty index")
    counts = np.bincount(filed[filed >= 0], minlength=int(ivf.nlist))
    for l in np.flatnonzero(counts).tolist():
        lists.resize(l, int(counts[l]))  # from empty: capacity = size
        lists.resize(l, 0)  # keeps the capacity


def _search_ivf_by_list(
    ivf: faiss.IndexIVF, qs: BlockSource, k: int, query_rows: int, progress: Callable[[int], None] | None,
    shift: np.ndarray | None = None, probe: Callable[[int, np.ndarray, _Workers], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IVF search organised by list: for each query block, assign the queries to their ``nprobe``
    nearest lists (one product with the centroids), then compare every list with all the queries
    that probe it in one product, keeping the entries that reach their query's bound
    (:func:`_scan`, :func:`_entries`), and take each query's top-k of them; the bounds rise as the
    scan finds better entries (:mod:`.running`). Same probed lists (up to float32 near ties:
    :mod:`.assign`) and neighbours as ``ivf.search``; each list is read once per query block (twice
    for the queries' nearest lists). The lists are dealt into ``SHARES`` fixed shares on the worker threads, and every
    similarity returned is computed pair by pair (:func:`_exact`): results are the same for any
    number of workers, and for any split of the database into shards (``ray_mine``).
    ``shift``: subtracted from the queries for the list assignment only (centred probing);
    ``probe(first_row, block, workers)``: the block's (rows, nprobe) lists, given by the caller instead."""
    nq = len(qs)
    nlist, nprobe = int(ivf.nlist), min(int(ivf.nprobe), int(ivf.nlist))
    reader = _ListReader(ivf)
    sizes = np.array([reader.size(l) for l in range(nlist)], dtype=np.int64)
    if int(sizes.sum()) * (4 * reader.d + 8) <= DECODED_CACHE_BYTES:
        reader.cache = {}  # small index: each list decoded once a search
    prec = scan_precision()
    if prec == "int8" and int(ivf.d) > int8.MAX_DIM:  # int32 sums would overflow
        prec = precision()
    torch32 = prec == "fp32" and torch_fp32()  # float32 estimates through torch: decided once a search
    coded = None
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    q0 = 0
    with _Workers() as workers, _single_blas(), _torch_single(prec != "fp32" or torch32):
        if prec == "int8":
            # SQ8 codes read as they are; other lists quantised once for every query block
            coded = sq8.Sq8Lists(reader) if sq8.direct(reader) else int8.Int8Lists(reader, sizes, workers)
        for xq in _blocks(qs, query_rows):
            m = len(xq)
            if probe is not None:
                lists = probe(q0, xq, workers)
            else:
                lists = _assign(ivf.quantizer, xq if shift is None else xq - shift, nprobe, workers)  # -1 = no list
            lists = np.asarray(lists, dtype=np.int32).reshape(m, -1)
            q = _Queries(xq, prec, torch32, workers, coded)
            thr = np.full(m, -np.inf, np.float32)

            def bound(who: np.ndarray, l: int) -> None:
                """Each query's nearest list (one a query: disjoint ``who``): its k-th value, less the
                float32 error bound, is a lower bound of the query's final k-th."""
                if sizes[l] >= k and isinstance(coded, sq8.Sq8Lists):
                    thr[who] = coded.lower_kth(q, who, l, k)
                elif sizes[l] >= k:
                    xb = reader.read(l)[0]
                    S = estimate32(q.a[who], xb, q.torch32)
                    kth = np.partition(S, len(xb) - k, axis=1)[:, len(xb) - k]
                    thr[who] = kth - _fp32_slack(q.n2[who], xb)

            def scan(who: np.ndarray, l: int) -> Found | None:
                if coded is not None:
                    return coded.entries(q, who, l, thr[who], _exact)
                return _entries(q, who, *reader.read(l), thr[who])

            _scan(workers, sizes, lists[:, :1], bound)
            found = _scan(workers, sizes, lists, scan, k, Running(thr, k))
            D[q0 : q0 + m], I[q0 : q0 + m] = _top(found, m, k)
            if progress:
                progress(m)
            q0 += m
            del lists, q, found
            release_free_memory()
    return D, I


class _Queries:
    """A query block as float32 with its rows' 2-norms, on the bf16 path as bf16 bits (uint16,
    for fast row gathers) with their 4-norms, on the int8 path as int8 codes (:class:`.int8.Int8Queries`);
    ``torch32``: float32 estimates through torch (:func:`.tiles.estimate32`)."""

    def __init__(self, xq: np.ndarray, prec: str, torch32: bool = False, workers: _Workers | None = None, coded: Any = None) -> None:
        self.torch32 = torch32
        self.a = np.ascontiguousarray(xq, dtype=np.float32)
        self.n2 = np.sqrt(np.einsum("ij,ij->i", self.a, self.a))
        self.bits = self.n4 = self.int8 = None
        if prec == "int8":
            self.int8 = (coded or int8.Int8Lists).queries(self.a, workers or _Workers(1))
        elif prec == "bf16":
            import torch

            self.bits = torch.from_numpy(self.a).bfloat16().view(torch.int16).numpy()
            self.n4 = norm4(self.a)


def _fp32_slack(n2: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """How far two float32 computations of the same inner products (rows of norms ``n2`` with the
    rows of ``xb``) may differ: each errs by at most d 2^-24 |q| |x| (summation), plus 1e-7."""
    d = xb.shape[1]
    return (2 * d * 2.0**-24 * 1.01) * n2 * float(np.sqrt(np.einsum("ij,ij->i", xb, xb).max())) + 1e-7


def _reach(thr: np.ndarray, n4_product: np.ndarray) -> np.ndarray:
    """The smallest bf16 estimate e whose fp32 value may reach ``thr``: e + bf16_slack(e) >= thr
    (:func:`.tiles.bf16_slack`: 2^-8 |e| plus a part that does not depend on e), solved for e, rounded down."""
    u = thr.astype(np.float64) - bf16_slack(np.zeros(len(thr)), n4_product)
    e = np.where(u >= 0, u / (1 + 2.0**-8), u / (1 - 2.0**-8))
    return np.nextafter(e.astype(np.float32), np.float32(-np.inf))


#: Indexes whose decoded lists (float32 vectors and ids) fit this are decoded once a search (100k x 384: 154 MiB).
DECODED_CACHE_BYTES = 256 << 20
Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # (query rows, database ids, similarities)
#: Entries a worker holds before cutting them to its queries' k best (~16 bytes each, ~50 while cut).
REDUCE_AT = 1 << 21


def _scan(workers: _Workers, sizes: np.ndarray, lists: np.ndarray,
          fn: Callable[[np.ndarray, int], Found | None], k: int | None = None, running: Running | None = None) -> list[Found]:
    """``fn(who, list)`` for every list and the queries ``who`` that probe it (``lists``:
    (m, p) list ids, -1 = none), on the worker threads; the results other than None in a fixed order.
    With ``k``, each share's results are cut to its queries' k best (:func:`_reduce`) whenever they
    pass :data:`REDUCE_AT` entries and at its end: memory stays bounded whatever the bounds let through.
    ``running``: the similarities found are merged into it every :data:`.running.MERGE_AT` entries (and at
    the end of each share), raising the bounds of the lists scanned after (:mod:`.running`)."""
    m, p = lists.shape
    flat = lists.ravel()
    keep = flat >= 0
    if len(sizes) < 1 << 16:  # list ids as uint16: a radix sort
        flat = flat.astype(np.uint16)
    owners = np.repeat(np.arange(m, dtype=np.int32), p)[keep]
    flat = flat[keep]
    order = np.argsort(flat, kind="stable")
    flat, owners = flat[order], owners[order]
    bounds = np.searchsorted(flat, np.arange(len(sizes) + 1))
    del order, keep, flat
    active = np.nonzero((bounds[1:] > bounds[:-1]) & (sizes > 0))[0]
    work = (bounds[active + 1] - bounds[active]) * sizes[active]
    active = active[np.argsort(-work, kind="stable")]  # biggest first, dealt round-robin
    shares = [active[w::SHARES] for w in range(SHARES)]  # fixed shares: results independent of the workers

    def merge(pending: list[Found]) -> None:
        if running is not None and pending:
            running.add(np.concatenate([f[0] for f in pending]), np.concatenate([f[2] for f in pending]))

    def scan(share: np.ndarray) -> list:
        out, held, pending, fresh = [], 0, [], 0
        for l in share.tolist():
            r = fn(owners[bounds[l] : bounds[l + 1]], l)
            if r is None:
                continue
            out.append(r)
            held += len(r[0])
            if running is not None:
                pending.append(r)
                fresh += len(r[0])
                if fresh >= MERGE_AT:  # the next lists of every share see the raised bounds
                    merge(pending)
                    pending, fresh = [], 0
            if k is not None and held > REDUCE_AT:  # memory: only what may still be in a top-k
                out = [_reduce(out, k)]
                held = len(out[0][0])
        merge(pending)
        return [_reduce(out, k)] if k is not None and len(out) > 1 else out

    return [r for part in workers.map(scan, [sh for sh in shares if len(sh)]) for r in part]


def _entries(q: _Queries, who: np.ndarray, xb: np.ndarray, ids: np.ndarray, thr: np.ndarray) -> Found | None:
    """The entries of q[who] . xb^T at or above their query's bound ``thr`` (query rows, ids,
    similarities). The product is an estimate in bf16 or float32 (the int8 scan: :func:`.int8.entries`);
    the entries whose estimate plus its error bound reaches the bound are computed again pair by pair
    (:func:`_exact`)."""
    if q.bits is not None:
        import torch

        tau = _reach(thr, q.n4[who] * float(norm4(xb).max()))
        gathered = torch.from_numpy(np.take(q.bits, who, axis=0)).view(torch.bfloat16)
        est = torch.mm(torch.from_numpy(xb).bfloat16(), gathered.T)  # (list, queries): max over a list is a fast reduction
        cols = np.flatnonzero(est.amax(dim=0).float().numpy() >= tau)
        if not len(cols):
            return None
        sub = est[:, torch.from_numpy(cols)].float().numpy().T  # (queries kept, list)
    else:
        tau = thr - _fp32_slack(q.n2[who], xb)
        est = estimate32(q.a[who], xb, q.torch32)  # (queries, list)
        cols = np.flatnonzero(est.max(axis=1) >= tau)
        if not len(cols):
            return None
        sub = est[cols]
    j, c = np.divmod(np.flatnonzero(sub >= tau[cols][:, None]), len(ids))  # by query, then id
    rows, cand, v = _exact(q.a[who[cols]], xb, j, c)
    ok = v >= thr[cols[rows]]
    return who[cols[rows[ok]]], ids[cand[ok]], v[ok]


def _exact(xq: np.ndarray, xb: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float32 inner products xq[rows] . xb[cols] (``rows`` in increasing order), each computed on
    its own by FAISS (the same bits whatever else is computed with it): (rows, cols, values)."""
    counts = np.bincount(rows, minlength=len(xq))
    width = int(counts.max())
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    idx = np.full((len(xq), width), -1, np.int64)
    idx[rows, slot] = cols
    out = np.empty((len(xq), width), np.float32)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(xq), faiss.swig_ptr(xb), faiss.swig_ptr(idx),
                                     xq.shape[1], len(xq), width)
    return rows, cols, out[rows, slot]


def _ranked(found: list[Found]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries of ``found`` (concatenated) sorted by (query, -similarity), equal keys in their given
    order: ``(order, sorted query rows, rank of each sorted entry within its query)``."""
    return ranked(np.concatenate([f[0] for f in found]), np.concatenate([f[2] for f in found]))


def _reduce(found: list[Found], k: int) -> Found:
    """The entries of ``found`` among their query's k best, in their given order: a subsequence
    that :func:`_top` turns into the same result as the whole (ties keep the earlier entry)."""
    order, _, rank = _ranked(found)
    keep = np.sort(order[rank < k])
    return tuple(np.concatenate([f[i] for f in found])[keep] for i in range(3))  # type: ignore[return-value]


def _top(found: list[Found], m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) best (similarity, id) of each query among the kept entries, in canonical order; -inf / -1 padding."""
    D = np.full((m, k), -np.inf, dtype=np.float32)
    I = np.full((m, k), -1, dtype=np.int64)
    if not found:
        return D, I
    order, rows, rank = _ranked(found)
    keep = np.flatnonzero(rank < k)
    take = order[keep]
    rows, rank = rows[keep], rank[keep]
    D[rows, rank] = np.concatenate([f[2] for f in found])[take]
    I[rows, rank] = np.concatenate([f[1] for f in found]).astype(np.int64, copy=False)[take]
    _canonical(D, I)  # equal similarities by increasing id
    return D, I
