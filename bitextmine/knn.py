"""k-nearest-neighbour search by inner product (cosine on L2-normalised rows) with FAISS.

Two paths:

* ``index="flat"`` (exact): blocked brute force. The database is read one block of
  ``block_rows`` rows at a time and never held whole; queries are processed in blocks of
  ``block_rows`` too. For each query block, every database block is searched with FAISS's
  exhaustive inner-product kernel (BLAS GEMM + heap, the same kernel ``IndexFlatIP.search``
  runs) and the per-block top-k lists are merged in a :class:`faiss.ResultHeap`. Peak memory
  is about two blocks plus the (nq, k) result, whatever the sizes. The result equals one
  unblocked search up to ties and the last bits of float32 rounding.
* any other string: a FAISS ``index_factory`` description with ``METRIC_INNER_PRODUCT``
  (``"IVF1024,Flat"``, ``"IVF4096,SQfp16"``, ``"IVF4096,PQ64"``, ``"HNSW32"``...), trained on a
  random sample of the database, filled block by block, then searched block by block.
  ``"auto"`` picks exact search for small databases and an IVF index otherwise, with its
  parameters (lists, lists probed, training sample, codes) set by size: see :func:`auto_index`.

On the CPU, IVF indexes with flat or scalar-quantised codes (``"IVF{n},Flat"``,
``"IVF{n},SQfp16"``, ``"IVF{n},SQ8"``..., and what ``"auto"`` picks) differ from FAISS's own
in two ways, both measured in ``benchmarks/``:

* **Search list by list** (:func:`_search_ivf_by_list`): the queries of a block are grouped by
  the lists they probe, and each list is compared with all its queries in one matrix product.
  FAISS's own search walks the lists query by query, re-reading list vectors for every query;
  by list, each list is read once per query block and the work runs at matrix-multiply speed.
  For a given assignment of queries to lists the neighbours are the same as FAISS's.
* **Centred probing** (:class:`_Coarse`): each side is centred on its own mean before vectors
  are assigned to lists (k-means, filing and probing all use centred vectors, with L2), while
  the lists store the original vectors and every score is the exact inner product of the
  original vectors. Two languages' embeddings are offset from each other; centring puts a
  sentence and its translation in nearby lists (on the mining benchmark at 100k, 64 probes
  recover 99.4% of exact search's true pairs centred, 95.0% uncentred).

:func:`knn_pair` searches both directions (x against y, y against x), as margin mining does,
training one coarse quantizer for both indexes on a sample drawn from both sides.

Results are ``(D, I)``: (nq, k_eff) float32 similarities sorted descending and (nq, k_eff) int64
row indices into the database, with ``k_eff = min(k, len(database))``. Equal similarities are
listed by increasing id; when several rows tie for the last places, which of them make the cut
is FAISS's heap choice (it may depend on ``block_rows``). Deduplicate sentences first if that
matters. An approximate index may find fewer than ``k_eff`` hits for a query;
the missing entries are ``I = -1``, ``D = -inf`` (at the end of the row).

GPUs: ``use_gpu=None`` uses every GPU FAISS sees (indexes sharded over them) and the CPU when
there is none, so CPU-only FAISS builds never fail. When GPUs were asked for (``use_gpu=True``)
or a GPU is present but this FAISS build cannot use it, or an index type has no GPU version,
search falls back to the CPU with a :class:`GpuFallbackWarning`. FAISS thread counts are left
to the caller: on the CPU, searches run on ``faiss.omp_get_max_threads()`` Python worker
threads, each with single-threaded FAISS on its own share of the queries (or lists). FAISS
releases the GIL; independent workers need no OpenMP barrier after every small operation,
which is 1.5x faster for exact search and over 10x for the by-list IVF search on a 2-core
machine shared with other jobs (``benchmarks/mine.py``).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from .errors import InputError, MismatchError

__all__ = ["ArrayBlocks", "BlockSource", "GpuFallbackWarning", "auto_index", "knn", "knn_pair"]

#: ``auto`` uses exact search below this many database vectors.
AUTO_FLAT_BELOW = 100_000
#: ``auto`` keeps the index's vector codes under this many bytes (fp16, else SQ8, else PQ).
AUTO_MEMORY_BUDGET = 4 * 2**30
#: IVF lists probed by ``auto``, as a fraction of the lists, within the bounds below.
AUTO_NPROBE_FRACTION = 1 / 16
AUTO_NPROBE_MIN, AUTO_NPROBE_MAX = 16, 256
#: Query rows per block on the by-list IVF path: block_rows times this, but at most
#: IVF_PROBES_PER_BLOCK / nprobe rows (bounds the (rows x nprobe) assignment arrays, ~24 bytes an entry).
IVF_QUERY_BLOCKS = 4
IVF_PROBES_PER_BLOCK = 1 << 24


def _ivf_query_rows(block_rows: int, nprobe: int) -> int:
    return max(1024, min(block_rows * IVF_QUERY_BLOCKS, IVF_PROBES_PER_BLOCK // max(1, nprobe)))


class GpuFallbackWarning(UserWarning):
    """GPU search was wanted or possible but runs on the CPU (no faiss-gpu, no GPU, or no GPU version of the index)."""


@runtime_checkable
class BlockSource(Protocol):
    """Row-addressable embeddings, possibly memory-mapped and too big to load at once.

    Optionally a source may also offer ``embeddings(indices) -> (len(indices), dim) float32``
    for random row access (used to sample training vectors without a full pass).
    """

    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive float32 C-contiguous blocks of at most ``rows`` rows, in row order."""
        ...


class ArrayBlocks:
    """An (n, dim) array of any float dtype (float16 memmaps included) as a :class:`BlockSource`.

    Blocks are converted to float32 one at a time; a float32 C-contiguous array is served as views.
    """

    def __init__(self, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise InputError(f"embeddings must be a 2-D array (rows, dim), got {getattr(array, 'shape', type(array))}")
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"embeddings must be floating point, got dtype {array.dtype}")
        self.array = array

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def dim(self) -> int:
        return self.array.shape[1]

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), rows):
            yield np.ascontiguousarray(self.array[start : start + rows], dtype=np.float32)

    def embeddings(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), dim) float32 rows at the given indices."""
        return np.ascontiguousarray(self.array[np.asarray(indices, dtype=np.int64)], dtype=np.float32)


def _as_source(x: BlockSource | np.ndarray, what: str) -> BlockSource:
    if isinstance(x, np.ndarray):
        return ArrayBlocks(x)
    if not all(hasattr(x, a) for a in ("__len__", "dim", "iter_blocks")):
        raise InputError(f"{what}: expected an array or a BlockSource, got {type(x).__name__}")
    return x


def _blocks(source: BlockSource, rows: int) -> Iterator[np.ndarray]:
    """The source's rows as float32 C-contiguous blocks of exactly ``rows`` rows (the last may be shorter).

    Short blocks (e.g. at shard boundaries) are coalesced so that the GEMM tiles stay large;
    full-size blocks pass through without a copy.
    """
    n, dim = len(source), source.dim
    buf: list[np.ndarray] = []
    have = got = 0
    for block in source.iter_blocks(rows):
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != dim:
            raise InputError(f"block source yielded a block of shape {block.shape}, expected (rows, {dim})")
        got += len(block)
        while len(block):
            if not buf and len(block) >= rows:
                yield block[:rows]
                block = block[rows:]
                continue
            take = min(rows - have, len(block))
            buf.append(block[:take])
            have += take
            block = block[take:]
            if have == rows:
                yield np.concatenate(buf)
                buf, have = [], 0
    if buf:
        yield np.concatenate(buf)
    if got != n:
        raise InputError(f"block source yielded {got} rows but reports {n}")


def _num_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:  # CPU-only builds without the symbol or without a driver
        return 0


def _gpu_device_present() -> bool:
    """An NVIDIA driver is loaded (whether or not FAISS was built with GPU support)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, GpuFallbackWarning, stacklevel=3)


class _Workers:
    """CPU worker threads with single-threaded FAISS (OpenMP settings are per thread); ``map`` runs inline for one."""

    def __init__(self, n: int | None = None) -> None:
        self.n = max(1, int(n if n is not None else faiss.omp_get_max_threads()))
        self._pool = ThreadPoolExecutor(self.n, initializer=faiss.omp_set_num_threads, initargs=(1,)) if self.n > 1 else None

    def map(self, fn: Callable, items: list) -> list:
        if self._pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def slices(self, n: int, minimum: int = 64) -> list[slice]:
        """``n`` rows cut into one contiguous slice per worker (fewer for small ``n``)."""
        parts = max(1, min(self.n, n // minimum))
        edges = np.linspace(0, n, parts + 1).astype(np.int64)
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _use_gpus(use_gpu: bool | None) -> bool:
    """Whether to search on GPUs; warns when GPUs were asked for or are present but FAISS cannot use them."""
    n = _num_gpus()
    if use_gpu is False:
        return False
    if n > 0:
        return True
    if use_gpu:
        _warn_once("asked", "GPU search was requested but FAISS sees no GPU (install faiss-gpu, check CUDA_VISIBLE_DEVICES); searching on the CPU")
    elif _gpu_device_present() and not hasattr(faiss, "StandardGpuResources"):
        _warn_once("cpu-build", "a GPU is present but this FAISS build has no GPU support (install faiss-gpu instead of faiss-cpu); searching on the CPU")
    return False


def _to_gpus(index: faiss.Index) -> faiss.Index:
    """Shard ``index`` over all GPUs; raises RuntimeError if FAISS cannot move this index type."""
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=co)


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


def auto_index(n: int, dim: int, *, memory_budget: int = AUTO_MEMORY_BUDGET) -> tuple[str, dict[str, int]]:
    """The index ``knn(..., index="auto")`` uses for a database of ``n`` vectors of ``dim`` floats.

    Rule (by database size, as stopes chooses its index by corpus size):

    * ``n < AUTO_FLAT_BELOW`` (100k): ``"flat"`` (exact, blocked), no parameters.
    * otherwise IVF with ``nlist = 2 ** round(log2(4 * sqrt(n)))`` lists (1,024 at 100k, 4,096 at
      1M, 16,384 at 10M), probing ``nprobe = clamp(nlist / 16, 16, 256)`` of them (6% of the
      lists up to 4,096 lists: 64 at 100k, 256 at 1M; 256 above, where users may raise it), trained on
      ``train_size = min(n, 32 * nlist)`` vectors; codes keep the stored vectors under
      ``memory_budget`` bytes (default 4 GiB): ``SQfp16`` (2·dim bytes a vector: exact for
      embeddings stored as fp16, as bitextmine stores them) if that fits, else ``SQ8`` (dim
      bytes), else ``PQ{m}`` with the largest m in (64, 48, 32, 16, 8) that divides dim and fits.

    Returns ``(factory_string, {"nprobe": ..., "train_size": ...})`` (empty params for flat).
    Every value can be overridden through :func:`knn`'s ``index``, ``nprobe`` and ``train_size``.
    """
    if n < AUTO_FLAT_BELOW:
        return "flat", {}
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    if n * dim * 2 <= memory_budget:
        codes = "SQfp16"
    elif n * dim <= memory_budget:
        codes = "SQ8"
    else:
        ms = [m for m in (64, 48, 32, 16, 8) if dim % m == 0]
        fit = [m for m in ms if n * m <= memory_budget]
        codes = f"PQ{fit[0] if fit else (ms[-1] if ms else 8)}"
    return f"IVF{nlist},{codes}", {"nprobe": _auto_nprobe(nlist), "train_size": _auto_train_size(n, nlist)}


def _auto_nprobe(nlist: int) -> int:
    return int(min(nlist, max(AUTO_NPROBE_MIN, min(AUTO_NPROBE_MAX, round(nlist * AUTO_NPROBE_FRACTION)))))


def _auto_train_size(n: int, nlist: int) -> int:
    return int(min(n, 32 * nlist))


def _default_nprobe(nlist: int) -> int:
    """nprobe for a user-given IVF factory string without ``nprobe``: the auto rule's."""
    return _auto_nprobe(nlist)


def _default_train_size(n: int, nlist: int) -> int:
    """min(n, max(50k, 39 * nlist)) for user-given indexes: FAISS wants >= 39 points per centroid; PQ codebooks ~10k+."""
    return min(n, max(50_000, 39 * nlist))


def _sample_rows(source: BlockSource, size: int, seed: int, block_rows: int) -> np.ndarray:
    """(size, dim) float32: rows drawn uniformly without replacement (in row order)."""
    n = len(source)
    rng = np.random.default_rng(seed)
    idx = np.arange(n) if size >= n else np.sort(rng.choice(n, size=size, replace=False))
    take = getattr(source, "embeddings", None)
    if callable(take):
        return np.ascontiguousarray(take(idx), dtype=np.float32)
    out = np.empty((len(idx), source.dim), dtype=np.float32)
    start = filled = 0
    for block in _blocks(source, block_rows):
        stop = start + len(block)
        hi = np.searchsorted(idx, stop)
        out[filled:hi] = block[idx[filled:hi] - start]
        filled, start = hi, stop
    return out


def _one_line(err: BaseException) -> str:
    """FAISS's exception text on one line, without the C++ location and assertion prefixes."""
    lines = str(err).strip().splitlines()
    msg = lines[0] if lines else type(err).__name__
    msg = re.sub(r"^Error in .*? at \S+:\d+: ", "", msg)
    msg = re.sub(r"^Error: '.*?' failed: ", "", msg)
    return msg.strip()[:200]


def _check(qs: BlockSource, db: BlockSource, k: int, block_rows: int) -> None:
    if qs.dim != db.dim:
        raise MismatchError(f"queries have dimension {qs.dim} but the database has {db.dim}")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if block_rows < 1:
        raise InputError(f"block_rows must be at least 1, got {block_rows}")


def _resolve(spec: str, nb: int, dim: int, nprobe: int | None, train_size: int | None) -> tuple[str, int | None, int | None]:
    """``"auto"`` replaced by :func:`auto_index`'s choice; explicit nprobe / train_size win."""
    spec = spec.strip()
    if spec.lower() == "auto":
        spec, params = auto_index(nb, dim)
        nprobe = params.get("nprobe") if nprobe is None else nprobe
        train_size = params.get("train_size") if train_size is None else train_size
    return spec, nprobe, train_size


def knn(
    queries: BlockSource | np.ndarray,
    database: BlockSource | np.ndarray,
    k: int,
    index: str = "flat",
    *,
    block_rows: int = 65536,
    nprobe: int | None = None,
    train_size: int | None = None,
    use_gpu: bool | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k most similar database rows (inner product) for every query row.

    queries:  (nq, dim) array of any float dtype, or a BlockSource.
    database: (nb, dim) likewise; rows are L2-normalised for cosine similarity.
    k: neighbours wanted; ``k_eff = min(k, nb)`` are returned.
    index: ``"flat"`` (exact, blocked), ``"auto"`` (see :func:`auto_index`) or a FAISS factory string.
    block_rows: rows per query / database block (memory ~ 2 * block_rows * dim * 4 bytes on the flat
        path; the by-list IVF path reads ``4 * block_rows`` query rows at a time).
    nprobe: IVF lists probed (default: the auto rule's, ``clamp(nlist / 16, 16, 256)``); InputError if the index has none.
    train_size: training sample size (auto: ``min(nb, 32 * nlist)``; other factory strings
        ``min(nb, max(50_000, 39 * nlist))``); ``seed`` draws it.
    use_gpu: None = all GPUs FAISS sees, if any; False = CPU; True = GPUs (CPU with a
        :class:`GpuFallbackWarning` if FAISS sees none).
    progress: called after each query block with the number of query rows it completed (an increment).
    Returns ``(D, I)``: (nq, k_eff) float32 similarities, descending, and (nq, k_eff) int64 database rows.
    """
    qs = _as_source(queries, "queries")
    db = _as_source(database, "database")
    _check(qs, db, k, block_rows)
    gpu = _use_gpus(use_gpu)
    nq, nb = len(qs), len(db)
    k_eff = min(k, nb)
    if nq == 0 or k_eff == 0:
        if progress and nq:
            progress(nq)
        return np.empty((nq, k_eff), np.float32), np.empty((nq, k_eff), np.int64)

    spec, nprobe, train_size = _resolve(index, nb, db.dim, nprobe, train_size)
    if spec.lower() == "flat":
        return _flat_knn(qs, db, k_eff, block_rows, gpu, progress)
    if not gpu and _centred_spec(spec) is not None:
        coarse = _Coarse.train(spec, [qs, db], train_size, seed, block_rows, fit=[1])
        return coarse.search(qs, 0, db, 1, k_eff, nprobe, block_rows, progress)
    empty = _new_index(spec, db.dim)
    _train(empty, spec, [db], train_size, seed, block_rows, gpu)
    built, on_gpu = _fill(empty, spec, db, nprobe, gpu, block_rows)
    return _search(built, on_gpu, qs, k_eff, block_rows, progress)


def knn_pair(
    x: BlockSource | np.ndarray,
    y: BlockSource | np.ndarray,
    k: int,
    index: str = "flat",
    *,
    block_rows: int = 65536,
    nprobe: int | None = None,
    train_size: int | None = None,
    use_gpu: bool | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Both directions at once: ``(knn(x, y, k), knn(y, x, k))`` with the same options.

    With ``"auto"`` each direction gets the index :func:`auto_index` picks for its own database.
    Where both directions use the same trainable index (the same factory string), it is trained
    once, on a sample drawn half from each side (``train_size`` in total), and used for the two
    databases; only one filled index is held at a time.
    """
    xs = _as_source(x, "x")
    ys = _as_source(y, "y")
    _check(xs, ys, k, block_rows)
    gpu = _use_gpus(use_gpu)
    fwd_spec = _resolve(index, len(ys), ys.dim, nprobe, train_size)
    bwd_spec = _resolve(index, len(xs), xs.dim, nprobe, train_size)
    shared = coarse = None
    if fwd_spec == bwd_spec and fwd_spec[0].lower() != "flat" and len(xs) and len(ys):
        if not gpu and _centred_spec(fwd_spec[0]) is not None:
            coarse = _Coarse.train(fwd_spec[0], [xs, ys], fwd_spec[2], seed, block_rows, fit=[0, 1])
        else:
            shared = _new_index(fwd_spec[0], xs.dim)
            _train(shared, fwd_spec[0], [xs, ys], fwd_spec[2], seed, block_rows, gpu)
    out = []
    for qs, db, (spec, npr, tsize) in ((xs, ys, fwd_spec), (ys, xs, bwd_spec)):
        nq, nb = len(qs), len(db)
        k_eff = min(k, nb)
        if nq == 0 or k_eff == 0:
            if progress and nq:
                progress(nq)
            out.append((np.empty((nq, k_eff), np.float32), np.empty((nq, k_eff), np.int64)))
        elif spec.lower() == "flat":
            out.append(_flat_knn(qs, db, k_eff, block_rows, gpu, progress))
        elif coarse is not None:
            q_side, d_side = (0, 1) if qs is xs else (1, 0)
            out.append(coarse.search(qs, q_side, db, d_side, k_eff, npr, block_rows, progress))
        elif not gpu and _centred_spec(spec) is not None:
            one = _Coarse.train(spec, [qs, db], tsize, seed, block_rows, fit=[1])
            out.append(one.search(qs, 0, db, 1, k_eff, npr, block_rows, progress))
        else:
            if shared is not None:
                empty = faiss.clone_index(shared)
            else:
                empty = _new_index(spec, db.dim)
                _train(empty, spec, [db], tsize, seed, block_rows, gpu)
            built, on_gpu = _fill(empty, spec, db, npr, gpu, block_rows)
            out.append(_search(built, on_gpu, qs, k_eff, block_rows, progress))
            del built, empty
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# exact blocked search


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

    def search(self, xq: np.ndarray, k: int, workers: "_Workers") -> tuple[np.ndarray, np.ndarray]:
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


# ---------------------------------------------------------------------------------------------
# FAISS factory indexes


def _new_index(spec: str, d: int) -> faiss.Index:
    """An empty index from a factory string (inner product). Scalar-quantised IVF stores vectors, not residuals."""
    try:
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    except (RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"bad FAISS index {spec!r} for dimension {d}: {_one_line(e)}") from None
    ivf = _ivf_of(index)
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer) and ivf.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
        ivf.by_residual = False  # fp16 codes of the vectors themselves: exact for fp16-stored embeddings
    return index


def _train(index: faiss.Index, spec: str, sources: list[BlockSource], train_size: int | None, seed: int, block_rows: int, gpu: bool) -> None:
    """Train ``index`` (if it needs it) on a sample split evenly over ``sources``."""
    if index.is_trained:
        return
    d = sources[0].dim
    ivf = faiss.try_extract_index_ivf(index)
    nlist = int(ivf.nlist) if ivf is not None else 0
    total = sum(len(s) for s in sources)
    size = train_size if train_size is not None else _default_train_size(total, nlist)
    size = max(1, min(int(size), total))
    parts = []
    for i, src in enumerate(sources):
        share = size // len(sources) + (1 if i < size % len(sources) else 0)
        share = min(share, len(src))
        if share:
            parts.append(_sample_rows(src, share, seed + i, block_rows))
    sample = np.concatenate(parts) if len(parts) > 1 else parts[0]
    clustering = None  # kept referenced: FAISS does not own it
    if ivf is not None:
        # Fewer than 39 points per list only draws a FAISS warning on stdout; the auto rule uses 32.
        ivf.cp.min_points_per_centroid = min(ivf.cp.min_points_per_centroid, max(1, len(sample) // max(nlist, 1)))
        if gpu:  # k-means assignment on the GPUs, index trained on the CPU
            try:
                clustering = _to_gpus(faiss.IndexFlat(d, ivf.metric_type))
                ivf.clustering_index = clustering
            except RuntimeError:
                clustering = None
    try:
        index.train(sample)
    except RuntimeError as e:
        raise InputError(f"cannot train FAISS index {spec!r} on {len(sample)} vectors: {_one_line(e)}") from None
    finally:
        if clustering is not None:
            ivf.clustering_index = None


def _fill(index: faiss.Index, spec: str, db: BlockSource, nprobe: int | None, gpu: bool, block_rows: int) -> tuple[Any, bool]:
    """Move ``index`` to the GPUs if wanted (and possible), add the database block by block, set nprobe."""
    ivf = faiss.try_extract_index_ivf(index)
    if nprobe is None and ivf is not None:
        nprobe = _default_nprobe(int(ivf.nlist))
    if nprobe is not None and nprobe < 1:
        raise InputError(f"nprobe must be at least 1, got {nprobe}")
    if nprobe is not None and ivf is None:
        raise InputError(f"nprobe does not apply to FAISS index {spec!r} (it has no inverted lists)")
    on_gpu = False
    if gpu:
        try:
            index = _to_gpus(index)
            on_gpu = True
        except RuntimeError:
            _warn_once(f"type:{spec}", f"FAISS index {spec!r} has no GPU version; searching on the CPU")
    ivf = None if on_gpu else _ivf_of(index)
    # the IVF itself (no pre-transform) with flat or scalar-quantised codes: fill with our own assignment
    direct = ivf is not None and _decodable(ivf) and faiss.downcast_index(index).this == ivf.this
    with _Workers(None if direct else 1) as workers:
        for xb in _blocks(db, block_rows):
            if direct:  # assign on the worker threads, then store with the assignment given
                lists = _assign(ivf.quantizer, xb, 1, workers).ravel()
                ivf.add_core(len(xb), faiss.swig_ptr(xb), None, faiss.swig_ptr(lists))
            else:
                index.add(xb)
    if nprobe is not None:
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        try:
            space.set_index_parameter(index, "nprobe", int(nprobe))
        except RuntimeError:
            raise InputError(f"nprobe does not apply to FAISS index {spec!r} (it has no inverted lists)") from None
    return index, on_gpu


def _search(index: Any, on_gpu: bool, qs: BlockSource, k: int, block_rows: int, progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Search every query: by list on CPU IVF indexes with decodable codes, else FAISS's own search."""
    ivf = None if on_gpu else _ivf_of(index)
    if ivf is not None and _decodable(ivf):
        return _search_ivf_by_list(ivf, qs, k, _ivf_query_rows(block_rows, int(ivf.nprobe)), progress)
    return _search_blocks(index, qs, k, block_rows, progress)


# ---------------------------------------------------------------------------------------------
# IVF with centred probing (CPU)

_CENTRED = re.compile(r"^IVF(\d+),(Flat|SQfp16|SQbf16|SQ8|SQ6|SQ4)$", re.IGNORECASE)
_SQ_TYPES = {"sqfp16": "QT_fp16", "sqbf16": "QT_bf16", "sq8": "QT_8bit", "sq6": "QT_6bit", "sq4": "QT_4bit"}


def _centred_spec(spec: str) -> tuple[int, str] | None:
    """(nlist, codes) for the IVF specs searched with centred probing on the CPU, else None."""
    m = _CENTRED.match(spec.replace(" ", ""))
    if m is None or int(m.group(1)) < 1:
        return None
    codes = m.group(2).lower()
    if codes != "flat" and not hasattr(faiss.ScalarQuantizer, _SQ_TYPES[codes]):
        return None
    return int(m.group(1)), codes


class _Coarse:
    """A coarse quantizer for IVF search between two sets whose distributions are offset.

    Each set (side) is centred on its own mean before it is assigned to lists: k-means runs on
    centred vectors (L2) from every side, database vectors are filed under the list of their
    centred value, and queries probe the lists nearest to their centred value. Embeddings of two
    languages differ by a language offset (about 0.2 in cosine units for multilingual-E5 on
    FLORES); without centring a sentence and its translation often fall in distant lists.
    Only the probing changes: the lists store the original vectors and every score is the
    inner product of the original query and database vectors.
    """

    def __init__(self, spec: str, d: int, centroids: np.ndarray, means: list[np.ndarray], samples: list[np.ndarray]) -> None:
        self.spec, self.d = spec, d
        self.nlist, self.codes = _centred_spec(spec)  # type: ignore[misc]
        self.quantizer = faiss.IndexFlatL2(d)
        self.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        self.means = means
        self.samples = samples  # per side (at most 32,768 rows), for training scalar quantizers

    @classmethod
    def train(cls, spec: str, sources: list[BlockSource], train_size: int | None, seed: int, block_rows: int, fit: list[int]) -> "_Coarse":
        """Means of every source (from a sample), k-means on the centred samples of the sources in ``fit``."""
        nlist, _ = _centred_spec(spec)  # type: ignore[misc]
        d = sources[0].dim
        total = sum(len(sources[i]) for i in fit)
        size = train_size if train_size is not None else _default_train_size(total, nlist)
        size = max(1, min(int(size), total))
        samples, means = [], []
        for i, src in enumerate(sources):
            share = size // len(fit) if i in fit else min(len(src), 16_384)
            share = max(1, min(share, len(src)))
            sample = _sample_rows(src, share, seed + i, block_rows) if len(src) else np.zeros((1, d), np.float32)
            samples.append(sample)
            means.append(sample.mean(axis=0).astype(np.float32))
        train = np.concatenate([samples[i] - means[i] for i in fit])
        if len(train) < nlist:
            raise InputError(f"cannot train FAISS index {spec!r}: {len(train)} training vectors for {nlist} lists")
        km = faiss.Kmeans(d, nlist, niter=10, seed=seed, min_points_per_centroid=1, max_points_per_centroid=1 << 20)
        km.train(np.ascontiguousarray(train, dtype=np.float32))
        del train
        return cls(spec, d, km.centroids, means, [np.ascontiguousarray(x[:32_768]) for x in samples])

    def build(self, db: BlockSource, side: int, nprobe: int, block_rows: int) -> faiss.IndexIVF:
        """The database of ``side`` filed into inverted lists (codes of the original vectors)."""
        metric = faiss.METRIC_INNER_PRODUCT
        if self.codes == "flat":
            ivf = faiss.IndexIVFFlat(self.quantizer, self.d, self.nlist, metric)
        else:
            qtype = getattr(faiss.ScalarQuantizer, _SQ_TYPES[self.codes])
            ivf = faiss.IndexIVFScalarQuantizer(self.quantizer, self.d, self.nlist, qtype, metric, False)
        ivf.train(self.samples[side])  # the quantizer is trained: this trains the codes only
        ivf.nprobe = nprobe
        with _Workers() as workers:
            for xb in _blocks(db, block_rows):
                lists = _assign(self.quantizer, xb - self.means[side], 1, workers).ravel()
                ivf.add_core(len(xb), faiss.swig_ptr(xb), None, faiss.swig_ptr(lists))
        return ivf

    def search(self, qs: BlockSource, q_side: int, db: BlockSource, d_side: int, k: int, nprobe: int | None,
               block_rows: int, progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
        nprobe = _default_nprobe(self.nlist) if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise InputError(f"nprobe must be at least 1, got {nprobe}")
        ivf = self.build(db, d_side, nprobe, block_rows)
        try:
            return _search_ivf_by_list(ivf, qs, k, _ivf_query_rows(block_rows, nprobe), progress, shift=self.means[q_side])
        finally:
            del ivf


# ---------------------------------------------------------------------------------------------
# IVF search list by list


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
    shift: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IVF search organised by list: for each query block, assign the queries to their ``nprobe``
    nearest lists (one product with the centroids), then compare every list with all the
    queries that probe it in one product, merging the per-list top-k into per-query heaps.
    Same probed lists and scores as ``ivf.search``; each list is read once per query block.
    The lists are shared out over the worker threads, each filling its own heaps, merged at the end.
    ``shift``: subtracted from the queries for the list assignment only (centred probing)."""
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
            probe = xq if shift is None else xq - shift
            lists = _assign(ivf.quantizer, probe, nprobe, workers).ravel().astype(np.int32)  # -1 = no list
            del probe
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
            shares = [active[w :: workers.n] for w in range(workers.n)]

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


def _search_blocks(
    index: Any, qs: BlockSource, k: int, block_rows: int, progress: Callable[[int], None] | None
) -> tuple[np.ndarray, np.ndarray]:
    nq = len(qs)
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    q0 = 0
    for xq in _blocks(qs, block_rows):
        q1 = q0 + len(xq)
        D[q0:q1], I[q0:q1] = index.search(xq, k)
        _canonical(D[q0:q1], I[q0:q1])
        if progress:
            progress(q1 - q0)
        q0 = q1
    return D, I
