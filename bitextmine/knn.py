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
  (``"IVF1024,Flat"``, ``"IVF4096,PQ64"``, ``"HNSW32"``...), trained on a random sample of the
  database, filled block by block, then searched block by block. ``"auto"`` picks one with
  :func:`auto_index`.

Results are ``(D, I)``: (nq, k_eff) float32 similarities sorted descending and (nq, k_eff) int64
row indices into the database, with ``k_eff = min(k, len(database))``. Equal similarities are
listed by increasing id; when several rows tie for the last places, which of them make the cut
is FAISS's heap choice (it may depend on ``block_rows``). Deduplicate sentences first if that
matters. An approximate index may find fewer than ``k_eff`` hits for a query;
the missing entries are ``I = -1``, ``D = -inf`` (at the end of the row).

GPUs: ``use_gpu=None`` uses every GPU FAISS sees (indexes sharded over them) and the CPU when
there is none, so CPU-only FAISS builds never fail. FAISS thread counts are left to the caller.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from .errors import InputError, MismatchError

__all__ = ["ArrayBlocks", "BlockSource", "auto_index", "knn"]

#: ``auto`` uses exact search below this many database vectors.
AUTO_FLAT_BELOW = 100_000
#: ``auto`` keeps the index's vector codes under this many bytes (full float32, else SQ8, else PQ).
AUTO_MEMORY_BUDGET = 16 * 2**30


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

    Rule:
    * ``n < AUTO_FLAT_BELOW`` (100k): ``"flat"`` (exact, blocked), no parameters.
    * otherwise IVF with ``nlist = 2 ** round(log2(4 * sqrt(n)))`` lists, probing
      ``nprobe = min(nlist, max(64, nlist // 16))`` of them (about 6%), with codes chosen to keep
      the stored vectors under ``memory_budget`` bytes: ``Flat`` (4·dim bytes a vector) if that
      fits, else ``SQ8`` (dim bytes), else ``PQ{m}`` with the largest m in (64, 48, 32, 16, 8)
      that divides dim and fits (8 if none fits).
    Returns ``(factory_string, {"nprobe": ...})`` (empty params for flat).
    """
    if n < AUTO_FLAT_BELOW:
        return "flat", {}
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    if n * dim * 4 <= memory_budget:
        codes = "Flat"
    elif n * dim <= memory_budget:
        codes = "SQ8"
    else:
        ms = [m for m in (64, 48, 32, 16, 8) if dim % m == 0]
        fit = [m for m in ms if n * m <= memory_budget]
        codes = f"PQ{fit[0] if fit else (ms[-1] if ms else 8)}"
    return f"IVF{nlist},{codes}", {"nprobe": _default_nprobe(nlist)}


def _default_nprobe(nlist: int) -> int:
    return min(nlist, max(64, nlist // 16))


def _default_train_size(n: int, nlist: int) -> int:
    """min(n, max(50k, 39 * nlist)): FAISS wants >= 39 points per centroid; PQ codebooks want ~10k+."""
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
    block_rows: rows per query / database block (memory ~ 2 * block_rows * dim * 4 bytes on the flat path).
    nprobe: IVF lists probed (default: ``min(nlist, max(64, nlist // 16))``); InputError if the index has none.
    train_size: training sample size (default ``min(nb, max(50_000, 39 * nlist))``); ``seed`` draws it.
    use_gpu: None = all GPUs FAISS sees, if any; False = CPU; True = GPUs if any (CPU otherwise).
    progress: called after each query block with the number of query rows it completed (an increment).
    Returns ``(D, I)``: (nq, k_eff) float32 similarities, descending, and (nq, k_eff) int64 database rows.
    """
    qs = _as_source(queries, "queries")
    db = _as_source(database, "database")
    if qs.dim != db.dim:
        raise MismatchError(f"queries have dimension {qs.dim} but the database has {db.dim}")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if block_rows < 1:
        raise InputError(f"block_rows must be at least 1, got {block_rows}")
    gpu = _num_gpus() > 0 if use_gpu is None else bool(use_gpu) and _num_gpus() > 0
    nq, nb = len(qs), len(db)
    k_eff = min(k, nb)
    if nq == 0 or k_eff == 0:
        if progress and nq:
            progress(nq)
        return np.empty((nq, k_eff), np.float32), np.empty((nq, k_eff), np.int64)

    spec = index.strip()
    if spec.lower() == "auto":
        spec, params = auto_index(nb, db.dim)
        if nprobe is None:
            nprobe = params.get("nprobe")
    if spec.lower() == "flat":
        return _flat_knn(qs, db, k_eff, block_rows, gpu, progress)
    built = _build_index(db, spec, nprobe, train_size, gpu, seed, block_rows)
    return _search_blocks(built, qs, k_eff, block_rows, progress)


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

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(len(xq), k) sims and global ids of this block's top-k for each query."""
        if self.index is not None:
            D, I = self.index.search(xq, k)
        else:
            D, I = faiss.knn(xq, self.xb, k, metric=faiss.METRIC_INNER_PRODUCT)
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
    for xq in _blocks(qs, block_rows):
        q1 = q0 + len(xq)
        parts = cached if cached is not None else _flat_blocks(db, block_rows, gpu)
        if cached is not None and len(cached) == 1:
            D[q0:q1], I[q0:q1] = cached[0].search(xq, k)
        else:
            heap = faiss.ResultHeap(len(xq), k, keep_max=True)
            for part in parts:
                Db, Ib = part.search(xq, min(k, part.n))
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


def _build_index(
    db: BlockSource,
    spec: str,
    nprobe: int | None,
    train_size: int | None,
    gpu: bool,
    seed: int,
    block_rows: int,
) -> faiss.Index:
    """Build, train and fill the index described by ``spec``; set nprobe."""
    d, nb = db.dim, len(db)
    try:
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    except (RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"bad FAISS index {spec!r} for dimension {d}: {_one_line(e)}") from None
    ivf = faiss.try_extract_index_ivf(index)
    nlist = int(ivf.nlist) if ivf is not None else 0
    if nprobe is None and ivf is not None:
        nprobe = _default_nprobe(nlist)
    if nprobe is not None and nprobe < 1:
        raise InputError(f"nprobe must be at least 1, got {nprobe}")

    if not index.is_trained:
        size = train_size if train_size is not None else _default_train_size(nb, nlist)
        sample = _sample_rows(db, max(1, min(size, nb)), seed, block_rows)
        clustering = None  # kept referenced: FAISS does not own it
        if gpu and ivf is not None:  # k-means assignment on the GPUs, index trained on the CPU
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
        del sample, clustering

    on_gpu = False
    if gpu:
        try:
            index = _to_gpus(index)
            on_gpu = True
        except RuntimeError:  # index type without a GPU version (e.g. HNSW): stay on the CPU
            pass
    for xb in _blocks(db, block_rows):
        index.add(xb)
    if nprobe is not None:
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        try:
            space.set_index_parameter(index, "nprobe", int(nprobe))
        except RuntimeError:
            raise InputError(f"nprobe does not apply to FAISS index {spec!r} (it has no inverted lists)") from None
    return index


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
