"""CPU execution shared by every search path: worker threads and the order of results.

On the CPU, searches run on ``faiss.omp_get_max_threads()`` Python worker threads, each with
single-threaded FAISS on its own share of the queries (or lists). FAISS releases the GIL;
independent workers need no OpenMP barrier after every small operation, which is 1.5x faster
for exact search and over 10x for the by-list IVF search on a 2-core machine shared with other
jobs (``benchmarks/mine.py``). FAISS thread counts themselves are left to the caller.

Work is cut into pieces of a FIXED size (:data:`SLICE_ROWS` query rows, :data:`SHARES` list
shares), never into one piece per worker: every piece is computed the same way by a single-threaded
BLAS whatever the number of workers, and merged in a fixed order, so results are bit-identical
for any thread count (BLAS products of different shapes or thread counts differ in the last bits).
The exact search's own matrix products run on numpy's BLAS held to one thread per worker
(:func:`_single_blas`, with threadpoolctl; without it numpy's BLAS keeps its own threads and
the last bits may depend on their number).

Every path then puts its results in one canonical order (:func:`_canonical`), so that exact and
approximate searches, blocked or not, list equal similarities the same way.
"""
from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

#: query rows of one piece of work (FAISS's own exhaustive search block): independent of the thread count.
SLICE_ROWS = 4096
#: shares the lists of a by-list IVF block are dealt into, each with its own heap (merged in order).
SHARES = 8


def _glibc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library, another system)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _glibc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; nothing elsewhere).

    A search frees and allocates arrays of many sizes block after block (query blocks, list
    products, candidate entries); glibc keeps freed pages in its heaps for reuse, and through
    fragmentation the resident memory crept up block after block: at 300k x 300k (IVF2048,SQfp16) the
    peak anonymous memory was 1,473 MiB, and 1,157 MiB with this called between query blocks and after
    each index is built (lists sized beforehand too); memory now falls back between the two directions.
    Cheap next to a query block's search."""
    if _TRIM is not None:
        _TRIM(0)


@contextlib.contextmanager
def _single_blas() -> Iterator[None]:
    """numpy's BLAS (and other BLAS libraries threadpoolctl finds) on one thread for the duration."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@contextlib.contextmanager
def _torch_single(used: bool) -> Iterator[None]:
    """torch's intra-op pool on one thread for the duration, when the worker threads each run torch
    products (``used``: bf16 tiles, the by-list scan's float32 estimates); otherwise torch is not imported."""
    if not used:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Workers:
    """CPU worker threads with single-threaded FAISS (OpenMP settings are per thread); ``map`` runs inline for one."""

    def __init__(self, n: int | None = None) -> None:
        self.n = max(1, int(n if n is not None else faiss.omp_get_max_threads()))
        self._pool = ThreadPoolExecutor(self.n, initializer=faiss.omp_set_num_threads, initargs=(1,)) if self.n > 1 else None

    def map(self, fn: Callable, items: list) -> list:
        """``fn`` of every item, in order; always on the worker threads when there are several
        (the calling thread may run FAISS with more OpenMP threads, which changes the last bits)."""
        if self._pool is None:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def slices(self, n: int, size: int = SLICE_ROWS) -> list[slice]:
        """``n`` rows cut into consecutive slices of ``size`` rows (the last shorter), whatever the workers."""
        return [slice(a, min(a + size, n)) for a in range(0, n, size)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> _Workers:
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
