"""Exact search with FAISS, blocked: the database is read one block at a time and never held whole.

Used on GPUs (FAISS flat indexes sharded over them); exact search on the CPU goes through
:mod:`.pairwise` (one pass for both directions, thread-count independent results).

Queries are processed in blocks of ``block_rows`` rows too. For each query block, every database
block is searched with FAISS's exhaustive inner-product kernel (BLAS GEMM + heap, the same kernel
``IndexFlatIP.search`` runs) and the per-block top-k lists are merged in a
:class:`faiss.ResultHeap`. Peak memory is about two blocks plus the (nq, k) result, whatever the
sizes. The result equals one unblocked search up to ties and the last bits of float32 rounding.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import faiss
import numpy as np

from .gpu import _to_gpus
from .sources import BlockSource, _blocks
from .workers import _canonical, _Workers


class _FlatBlock:
    """One database block ready to be searched: a float32 array (CPU) or a GPU index."""

    def __init__(self, xb: np.ndarray, offset: int, gpu: bool) -> None:
        self.n, self.offset = len(xb), offset
        self.xb: np.ndarray | None = xb
        self.index: faiss.Index | None = None
        if gpu:
            cpu = faiss.IndexFlatIP(xb.shape[1])
            self.index = _to_gpus(cpu)
            self.index.add(xb)
            self.xb = None

    def search(self, xq: np.ndarray, k: int, workers: _Workers) -> tuple[np.ndarray, np.ndarray]:
        """(len(xq), k) sims and global ids of this block's top-k for each query."""
        if self.index is not None:
            D, I = self.index.search(xq, k)
        else:
            xb = self.xb
            parts = workers.map(lambda sl: faiss.knn(xq[sl], xb, k, metric=faiss.METRIC_INNER_PRODUCT), workers.slices(len(xq)))
            D = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            I = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        if self.offset:
            I += self.offset
        return D, I


def _flat_blocks(db: BlockSource, block_rows: int, gpu: bool) -> Iterator[_FlatBlock]:
    offset = 0
    for xb in _blocks(db, block_rows):
        yield _FlatBlock(xb, offset, gpu)
        offset += len(xb)


def _flat_knn(
    qs: BlockSource,
    db: BlockSource,
    k: int,
    block_rows: int,
    gpu: bool,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product; queries outer, database blocks inner, per-block top-k merged."""
    nq = len(qs)
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    # A database that fits in one block is read (and uploaded) once, not once per query block.
    cached = list(_flat_blocks(db, block_rows, gpu)) if len(db) <= block_rows else None
    q0 = 0
    with _Workers(1 if gpu else None) as workers:
        for xq in _blocks(qs, block_rows):
            q1 = q0 + len(xq)
            parts = cached if cached is not None else _flat_blocks(db, block_rows, gpu)
            if cached is not None and len(cached) == 1:
                D[q0:q1], I[q0:q1] = cached[0].search(xq, k, workers)
            else:
                heap = faiss.ResultHeap(len(xq), k, keep_max=True)
                for part in parts:
                    Db, Ib = part.search(xq, min(k, part.n), workers)
                    heap.add_result(Db, Ib)
                heap.finalize()
                D[q0:q1], I[q0:q1] = heap.D, heap.I
            _canonical(D[q0:q1], I[q0:q1])
            if progress:
                progress(q1 - q0)
            q0 = q1
    return D, I
