"""IVF search list by list (CPU, IVF indexes with flat or scalar-quantised codes).

FAISS's own IVF search walks the lists query by query, re-reading a list's vectors for every
query that probes it. Here the queries of a block are grouped by the lists they probe and each
list is compared with all its queries in one matrix product: each list is read once per query
block and the work runs at matrix-multiply speed (``benchmarks/mine.py``). For a given
assignment of queries to lists the neighbours are the same as FAISS's.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from .sources import BlockSource, _blocks
from .workers import SHARES, _canonical, _Workers


def _ivf_of(index: Any) -> Any:
    """The IVF index inside ``index`` as its concrete class (IndexIVFFlat, ...), or None."""
    ivf = faiss.try_extract_index_ivf(index)
    return faiss.downcast_index(ivf) if ivf is not None else None


def _decodable(ivf: faiss.IndexIVF) -> bool:
    """Lists whose codes decode to the vectors FAISS scores (flat or scalar-quantised codes)."""
    return isinstance(ivf, (faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer)) and ivf.metric_type == faiss.METRIC_INNER_PRODUCT


class _ListReader:
    """Decoded vectors (float32) and ids of an IVF index's inverted lists."""

    def __init__(self, ivf: faiss.IndexIVF) -> None:
        self.ivf = ivf
        self.invlists = ivf.invlists
        self.code_size = int(self.invlists.code_size)
        self.d = int(ivf.d)
        self.sq = ivf.sq if isinstance(ivf, faiss.IndexIVFScalarQuantizer) else None
        self.fp16 = self.sq is not None and self.sq.qtype == faiss.ScalarQuantizer.QT_fp16
        self.residual = self.sq is not None and bool(ivf.by_residual)

    def size(self, l: int) -> int:
        return int(self.invlists.list_size(l))

    def read(self, l: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.size(l)
        inv = self.invlists
        codes_ptr, ids_ptr = inv.get_codes(l), inv.get_ids(l)
        codes = faiss.rev_swig_ptr(codes_ptr, n * self.code_size).copy()
        ids = faiss.rev_swig_ptr(ids_ptr, n).copy()
        inv.release_codes(l, codes_ptr)
        inv.release_ids(l, ids_ptr)
        if self.sq is None:
            xb = codes.view(np.float32).reshape(n, self.d)
        elif self.fp16:
            xb = codes.view(np.float16).reshape(n, self.d).astype(np.float32)
        else:
            xb = self.sq.decode(codes.reshape(n, self.code_size))
        if self.residual:
            xb = xb + self.ivf.quantizer.reconstruct(l)[None, :]
        return np.ascontiguousarray(xb, dtype=np.float32), ids.astype(np.int64, copy=False)


def _assign(quantizer: faiss.Index, x: np.ndarray, nprobe: int, workers: _Workers) -> np.ndarray:
    """(len(x), nprobe) int64: each row's ``nprobe`` nearest lists (the IVF's coarse assignment)."""
    parts = workers.map(lambda sl: quantizer.search(x[sl], nprobe)[1], workers.slices(len(x)))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _search_ivf_by_list(
    ivf: faiss.IndexIVF, qs: BlockSource, k: int, query_rows: int, progress: Callable[[int], None] | None,
    shift: np.ndarray | None = None, probe: Callable[[int, np.ndarray, _Workers], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IVF search organised by list: for each query block, assign the queries to their ``nprobe``
    nearest lists (one product with the centroids), then compare every list with all the
    queries that probe it in one product, merging the per-list top-k into per-query heaps.
    Same probed lists and scores as ``ivf.search``; each list is read once per query block.
    The lists are dealt into ``SHARES`` fixed shares, each filling its own heap on a worker thread,
    merged in share order at the end (the same for any number of workers).
    ``shift``: subtracted from the queries for the list assignment only (centred probing);
    ``probe(first_row, block, workers)``: the block's (rows, nprobe) lists, given by the caller instead."""
    nq = len(qs)
    nlist, nprobe = int(ivf.nlist), min(int(ivf.nprobe), int(ivf.nlist))
    reader = _ListReader(ivf)
    sizes = np.array([reader.size(l) for l in range(nlist)], dtype=np.int64)
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    q0 = 0
    with _Workers() as workers:
        for xq in _blocks(qs, query_rows):
            m = len(xq)
            if probe is not None:
                lists = probe(q0, xq, workers).ravel().astype(np.int32)
            else:
                lists = _assign(ivf.quantizer, xq if shift is None else xq - shift, nprobe, workers).ravel().astype(np.int32)  # -1 = no list
            owners = np.repeat(np.arange(m, dtype=np.int32), nprobe)
            keep = lists >= 0
            lists, owners = lists[keep], owners[keep]
            order = np.argsort(lists, kind="stable")
            lists, owners = lists[order], owners[order]
            bounds = np.searchsorted(lists, np.arange(nlist + 1, dtype=np.int32))
            del order, keep
            active = np.nonzero((bounds[1:] > bounds[:-1]) & (sizes > 0))[0]
            work = (bounds[active + 1] - bounds[active]) * sizes[active]
            active = active[np.argsort(-work, kind="stable")]  # biggest first, dealt round-robin
            shares = [active[w::SHARES] for w in range(SHARES)]  # fixed shares: results independent of the workers

            def scan(share: np.ndarray, xq=xq, m=m, lists=lists, owners=owners, bounds=bounds) -> faiss.ResultHeap:
                heap = faiss.ResultHeap(m, k, keep_max=True)
                for l in share.tolist():
                    who = owners[bounds[l] : bounds[l + 1]]
                    xb, ids = reader.read(l)
                    Dl, Il = faiss.knn(xq[who], xb, min(k, len(xb)), metric=faiss.METRIC_INNER_PRODUCT)
                    heap.add_result_subset(who, Dl, ids[Il])
                heap.finalize()
                return heap

            heaps = workers.map(scan, [sh for sh in shares if len(sh)])
            if len(heaps) == 1:
                heap = heaps[0]
            else:
                heap = faiss.ResultHeap(m, k, keep_max=True)
                for h in heaps:
                    heap.add_result(h.D, h.I)
                heap.finalize()
            D[q0 : q0 + m], I[q0 : q0 + m] = heap.D, heap.I
            _canonical(D[q0 : q0 + m], I[q0 : q0 + m])
            if progress:
                progress(m)
            q0 += m
            del heaps, heap, lists, owners
    return D, I
