"""k-nearest-neighbour search by inner product (cosine on L2-normalised rows) with FAISS.

Two paths:

* ``index="flat"`` (exact): blocked brute force. On the CPU (:mod:`.pairwise`), the similarity
  matrix is computed tile by tile with BLAS (float32, or bf16 candidates re-scored in float32
  where the CPU has bf16 matrix units: :mod:`.tiles`) and :func:`knn_pair` takes BOTH directions
  from the same tiles (row-wise and column-wise top-k): half the work of two searches. On CUDA
  hosts, torch on every visible GPU (:mod:`.device`: the database sharded over them, bf16
  candidates re-scored in float32, exact) when the database fits in their memory, else FAISS's
  flat index on GPUs where faiss-gpu is installed (:mod:`.flat`). On the CPU the database is read
  one block of ``block_rows`` rows at a time and never held whole; peak memory is about two blocks
  plus the (n, k) results.
* any other string: a FAISS ``index_factory`` description with ``METRIC_INNER_PRODUCT``
  (``"IVF1024,Flat"``, ``"IVF4096,SQfp16"``, ``"IVF4096,PQ64"``, ``"HNSW32"``...), trained on a
  random sample of the database, filled block by block, then searched block by block (:mod:`.ivf`).
  ``"auto"`` picks exact search for small databases and an IVF index otherwise, with its
  parameters (lists, lists probed, training sample, codes) set by size: see :func:`auto_index`
  (:mod:`.policy`).

On the CPU, IVF indexes with flat or scalar-quantised codes (``"IVF{n},Flat"``,
``"IVF{n},SQfp16"``, ``"IVF{n},SQ8"``..., and what ``"auto"`` picks) differ from FAISS's own
in two ways, both measured in ``benchmarks/``: they are searched list by list (:mod:`.bylist`),
and probed with each side centred on its own mean (:mod:`.centred`). :func:`knn_pair` with an
approximate index pools the pairs found in both directions (:mod:`.fuse`), so that missed
neighbours bias the k-NN means (and the margin scores) less.

:func:`knn_pair` searches both directions (x against y, y against x), as margin mining does,
training one coarse quantizer for both indexes on a sample drawn from both sides. :func:`knn`
is one direction of the same dispatch (:func:`_one_way`).

Results are ``(D, I)``: (nq, k_eff) float32 similarities sorted descending and (nq, k_eff) int64
row indices into the database, with ``k_eff = min(k, len(database))``. Equal similarities are
listed by increasing id; when several rows tie for the last places, which of them make the cut
is the search's choice (it may depend on ``block_rows``; the CPU exact path keeps the lower
ids). Deduplicate sentences first if that matters. On the CPU, results do not depend on the
number of threads: work is cut into pieces of fixed size, each computed on one thread
(:mod:`.workers`). An approximate index may find fewer than ``k_eff`` hits for a query;
the missing entries are ``I = -1``, ``D = -inf`` (at the end of the row).

GPUs: ``use_gpu=None`` runs exact and ``"auto"`` searches on every CUDA device torch sees
(:mod:`.device`), FAISS indexes on every GPU FAISS sees (:mod:`.gpu`, sharded over them), and the
CPU when there is none; a :class:`GpuFallbackWarning` says when GPUs were wanted or present
but the search runs on the CPU. CPU searches run on worker threads (:mod:`.workers`).

``_centred_spec`` is looked up in this module at every call: ``benchmarks/mine_nprobe.py`` and
the tests replace it here to measure plain (uncentred) probing.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from . import device as _device
from . import rerank as _rerank
from .centred import _centred_spec, _Coarse
from .flat import _flat_knn
from .fuse import _fuse
from .gpu import GpuFallbackWarning, _use_gpus
from .ivf import _fill, _new_index, _search, _train
from .pairwise import _centre, exact_search

# Re-exported for code that reads them here; the search itself uses .policy's and .gpu's own
# (patch those modules, not this one, to change the auto rule or the GPU detection in a test).
from .policy import AUTO_FLAT_BELOW as AUTO_FLAT_BELOW
from .policy import AUTO_MEMORY_BUDGET as AUTO_MEMORY_BUDGET
from .policy import AUTO_NPROBE_FRACTION as AUTO_NPROBE_FRACTION
from .policy import AUTO_NPROBE_MAX as AUTO_NPROBE_MAX
from .policy import AUTO_NPROBE_MIN as AUTO_NPROBE_MIN
from .policy import _auto_nprobe, _check, _resolve, auto_index, code_bytes, default_memory_budget, describe, refine_probes
from .sources import ArrayBlocks, BlockSource, _as_source

__all__ = ["ArrayBlocks", "BlockSource", "GpuFallbackWarning", "SearchOptions", "auto_index", "code_bytes", "default_memory_budget",
           "describe", "index_used", "knn", "knn_pair", "Wider"]

Resolved = tuple[str, int | None, int | None]  # (factory string or "flat", nprobe, train_size) after _resolve


@dataclass(frozen=True)
class SearchOptions:
    """How :func:`knn` and :func:`knn_pair` search (the same options for both).

    index: ``"flat"`` (exact, blocked), ``"auto"`` (see :func:`auto_index`) or a FAISS factory string.
    block_rows: rows per query / database block (memory ~ 2 * block_rows * dim * 4 bytes on the flat
        path; the by-list IVF path reads up to ``4 * block_rows`` query rows at a time, at most 4M / nprobe
        and at most 128 MiB of float32 queries, ``policy.IVF_QUERY_BYTES``).
    nprobe: IVF lists probed (default: the auto rule's, :func:`.policy._auto_nprobe`: 64 from 1,024 to 4,096 lists); InputError if the index has none.
    train_size: training sample size (auto: ``min(nb, 32 * nlist)``; other factory strings
        ``min(nb, max(50_000, 39 * nlist))``); ``seed`` draws it.
    use_gpu: None = all GPUs FAISS sees, if any; False = CPU; True = GPUs (CPU with a
        :class:`GpuFallbackWarning` if FAISS sees none).
    memory_budget: bytes the ``auto`` index may hold (codes and ids; default a quarter of physical
        memory, :func:`~.policy.default_memory_budget`): it picks the codes (fp16, SQ8, OPQ+PQ, then
        OPQ+PQ with the lists in a file: ``",ondisk"``).
    rerank: candidates per query re-ranked by exact similarity from the database's stored vectors
        (:mod:`.rerank`): None = ``max(4 k, 16)`` for product codes (``PQm``), none for others;
        0 = off; N = the top N of any approximate index.
    """

    index: str = "flat"
    block_rows: int = 65536
    nprobe: int | None = None
    train_size: int | None = None
    use_gpu: bool | None = None
    seed: int = 0
    memory_budget: int | None = None
    rerank: int | None = None


def knn(
    queries: BlockSource | np.ndarray,
    database: BlockSource | np.ndarray,
    k: int,
    index: str = "flat",
    *,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """k most similar database rows (inner product) for every query row.

    queries:  (nq, dim) array of any float dtype, or a BlockSource.
    database: (nb, dim) likewise; rows are L2-normalised for cosine similarity.
    k: neighbours wanted; ``k_eff = min(k, nb)`` are returned.
    index and ``options``: the fields of :class:`SearchOptions`.
    progress: called after each query block with the number of query rows it completed (an increment).
    Returns ``(D, I)``: (nq, k_eff) float32 similarities, descending, and (nq, k_eff) int64 database rows.
    """
    o = SearchOptions(index, **options)
    qs = _as_source(queries, "queries")
    db = _as_source(database, "database")
    _check(qs, db, k, o.block_rows)
    devices = _device_plan(o.index, len(db), db.dim, o.use_gpu, o.block_rows)
    if devices:
        return _on_devices(qs, db, k, devices, o.block_rows, progress, _centre(qs, db, o.block_rows))
    gpu = _use_gpus(o.use_gpu)
    resolved = _resolve(o.index, len(db), db.dim, o.nprobe, o.train_size, o.memory_budget)
    return _one_way(qs, db, k, resolved, gpu, o.seed, o.block_rows, progress, rerank=o.rerank)


def knn_pair(
    x: BlockSource | np.ndarray,
    y: BlockSource | np.ndarray,
    k: int,
    index: str = "flat",
    *,
    progress: Callable[[int], None] | None = None,
    keep: dict | None = None,
    **options: Any,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Both directions at once: ``(knn(x, y, k), knn(y, x, k))`` with the same options.

    With ``"auto"`` each direction gets the index :func:`auto_index` picks for its own database.
    Where both directions use the same trainable index (the same factory string), it is trained
    once, on a sample drawn half from each side (``train_size`` in total), and used for the two
    databases; only one filled index is held at a time. With an approximate index, each pair
    found in one direction is also a neighbour candidate of the other direction's row (:mod:`.fuse`):
    fewer missed neighbours, k-NN means (and margin scores) closer to exact search's.
    ``keep``: a dict that receives ``keep["wider"]``, a :class:`Wider` to search rows of either side
    again with more lists probed, when the search used a centred IVF quantizer (CPU) with many lists.
    """
    o = SearchOptions(index, **options)
    index, block_rows, nprobe, train_size, seed = o.index, o.block_rows, o.nprobe, o.train_size, o.seed
    xs = _as_source(x, "x")
    ys = _as_source(y, "y")
    _check(xs, ys, k, block_rows)
    devices = _device_plan(index, max(len(xs), len(ys)), xs.dim, o.use_gpu, block_rows)
    if devices:  # exact on the GPUs, each direction on its own (the database sharded over them)
        mu = _centre(xs, ys, block_rows)
        return (_on_devices(xs, ys, k, devices, block_rows, progress, mu),
                _on_devices(ys, xs, k, devices, block_rows, progress, mu))
    gpu = _use_gpus(o.use_gpu)
    fwd_spec = _resolve(index, len(ys), ys.dim, nprobe, train_size, o.memory_budget)
    bwd_spec = _resolve(index, len(xs), xs.dim, nprobe, train_size, o.memory_budget)
    if not gpu and fwd_spec[0].lower() == bwd_spec[0].lower() == "flat" and len(xs) and len(ys):
        fwd, bwd = exact_search(xs, ys, k, block_rows, progress, both=True)
        return fwd, bwd  # type: ignore[return-value]
    shared = coarse = None
    if fwd_spec == bwd_spec and fwd_spec[0].lower() != "flat" and len(xs) and len(ys):
        if not gpu and _centred_spec(fwd_spec[0]) is not None:
            coarse = _Coarse.train(fwd_spec[0], [xs, ys], fwd_spec[2], seed, block_rows, fit=[0, 1])
            coarse.share = True  # each side is probed one way and filed the other: assign it once
        else:
            shared = _new_index(fwd_spec[0], xs.dim)
            _train(shared, fwd_spec[0], [xs, ys], fwd_spec[2], seed, block_rows, gpu)
    fwd = _one_way(xs, ys, k, fwd_spec, gpu, seed, block_rows, progress, coarse=coarse, sides=(0, 1), shared=shared, rerank=o.rerank)
    # y against x probes with y's mean (side 1), x's lists filed by x's mean (side 0); the same
    # source passed twice keeps side 0 for both, as a sample of it is side 0's.
    bwd = _one_way(ys, xs, k, bwd_spec, gpu, seed, block_rows, progress, coarse=coarse, sides=(0, 1) if ys is xs else (1, 0),
                   shared=shared, rerank=o.rerank)
    if fwd_spec[0].lower() != "flat" or bwd_spec[0].lower() != "flat":
        fwd, bwd = _fuse(fwd, bwd)  # approximate: pairs found either way count for both rows (.fuse)
    if keep is not None and coarse is not None:
        wider = Wider(coarse, xs, ys, fwd_spec[1], block_rows)
        if wider.probes is not None:
            keep["wider"] = wider
    return fwd, bwd


class Wider:
    """Rows of a :func:`knn_pair` search searched again probing more of the same lists
    (:func:`.policy.refine_probes`: 8 times as many, when that is at most a quarter of them): the same
    centred quantizer, each side filed as before. :mod:`bitextmine.refine` uses it for the rows of
    near-threshold pairs, whose k-NN means then miss fewer neighbours, at a fraction of an exact search's
    cost (1/8 of it at 1M vectors in 4,096 lists)."""

    def __init__(self, coarse: _Coarse, xs: BlockSource, ys: BlockSource, nprobe: int | None, block_rows: int) -> None:
        self.coarse, self.xs, self.ys, self.block_rows = coarse, xs, ys, block_rows
        self.nprobe = int(nprobe) if nprobe is not None else _auto_nprobe(coarse.nlist)
        self.probes = refine_probes(coarse.nlist, self.nprobe)

    def describe(self) -> str:
        return describe(self.coarse.spec, self.probes)

    def search(self, rows: np.ndarray, side: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours of ``rows`` (vectors of side ``side``: 0 = x, 1 = y) in the other side."""
        db = self.ys if side == 0 else self.xs
        sides = (0, 1) if side == 0 or self.ys is self.xs else (1, 0)  # as knn_pair searched them
        q = _as_source(np.ascontiguousarray(rows, dtype=np.float32), "queries")
        return self.coarse.search(q, sides[0], db, sides[1], min(k, len(db)), self.probes, self.block_rows, None)


def index_used(index: str, x_rows: int, y_rows: int, dim: int, *, nprobe: int | None = None, train_size: int | None = None,
               memory_budget: int | None = None, both: bool = True, use_gpu: bool | None = None, k: int = 4,
               rerank: int | None = None) -> str:
    """The index :func:`knn_pair` (``both``) or :func:`knn` (x against y) searches with, as reported in
    mining summaries and outputs: ``"IVF4096,SQfp16 (nprobe 256)"``, or ``"A / B"`` when the two
    directions' databases get different ones. Raises like the search would (e.g. a budget too small).
    ``use_gpu``: as the search's; with CUDA devices exact and ``"auto"`` searches that fit run exact there.
    ``k``, ``rerank``: as the search's, for the candidates re-ranked exactly (:mod:`.rerank`)."""
    if _device_plan(index, max(x_rows, y_rows) if both else y_rows, dim, use_gpu):
        return "flat"
    def one(nb: int) -> str:
        spec, probe, _ = _resolve(index, nb, dim, nprobe, train_size, memory_budget)
        if probe is None and spec.lower() != "flat" and "IVF" in spec:
            probe = _auto_nprobe_of(spec)
        return describe(spec, probe, _rerank.depth(spec, min(k, nb), nb, rerank))

    fwd = one(y_rows)
    if not both:
        return fwd
    bwd = one(x_rows)
    return fwd if fwd == bwd else f"{fwd} / {bwd}"


def _auto_nprobe_of(spec: str) -> int | None:
    import re

    from .policy import _auto_nprobe

    m = re.search(r"IVF(\d+)", spec)
    return _auto_nprobe(int(m.group(1))) if m else None


def _device_plan(index: str, db_rows: int, dim: int, use_gpu: bool | None, block_rows: int = 65536) -> list | None:
    """The CUDA devices an exact search runs on (:mod:`.device`), or None for the FAISS / CPU paths.

    Exact search (``"flat"``) and ``"auto"`` run exact on every CUDA device torch sees, unless
    ``use_gpu`` is False or the database (float32 + bf16, split over the devices) does not fit in
    their free memory: then ``"flat"`` runs as without CUDA and ``"auto"`` picks its index as on the
    CPU. On an H200 exact search of 1M x 1M takes seconds, less than training an IVF index.
    Other FAISS factory strings keep FAISS (its GPU build when installed, else the CPU).
    """
    if use_gpu is False or index.strip().lower() not in ("flat", "auto"):
        return None
    devices = _device.cuda_devices()
    if not devices or not _device.fits(db_rows, dim, devices, block_rows):
        return None
    return devices


def _on_devices(qs: BlockSource, db: BlockSource, k: int, devices: list, block_rows: int,
                progress: Callable[[int], None] | None, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k_eff = min(k, len(db))
    nothing = _nothing_to_search(len(qs), k_eff, progress)
    if nothing is not None:
        return nothing
    return _device.device_search(qs, db, k_eff, block_rows, progress, devices, mu)


def _nothing_to_search(nq: int, k_eff: int, progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The empty (nq, k_eff) result when there are no queries or no neighbours to find (progress told), else None."""
    if nq and k_eff:
        return None
    if progress and nq:
        progress(nq)
    return np.empty((nq, k_eff), np.float32), np.empty((nq, k_eff), np.int64)


def _one_way(
    qs: BlockSource,
    db: BlockSource,
    k: int,
    resolved: Resolved,
    gpu: bool,
    seed: int,
    block_rows: int,
    progress: Callable[[int], None] | None,
    *,
    coarse: _Coarse | None = None,
    sides: tuple[int, int] = (0, 1),
    shared: faiss.Index | None = None,
    rerank: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One direction, queries ``qs`` against database ``db``, on the path its resolved spec picks.

    ``coarse``: a centred quantizer trained for both sides (``sides`` = (query side, database
    side) in it); ``shared``: an index trained for both sides, cloned and filled with ``db``.
    Without either, the index is trained on ``db`` alone. The filled index is dropped on return.
    ``rerank``: as :class:`SearchOptions`' (an approximate search's top candidates re-ranked exactly).
    """
    spec = resolved[0]
    k_eff = min(k, len(db))
    nothing = _nothing_to_search(len(qs), k_eff, progress)
    if nothing is not None:
        return nothing
    if spec.lower() == "flat":
        if not gpu:
            return exact_search(qs, db, k_eff, block_rows, progress, both=False)[0]
        return _flat_knn(qs, db, k_eff, block_rows, gpu, progress)
    deep = _rerank.plan(spec, k_eff, db, rerank)
    D, I = _approximate(qs, db, deep or k_eff, resolved, gpu, seed, block_rows, progress, coarse, sides, shared)
    return _rerank.rerank(qs, db, I, k_eff) if deep else (D, I)


def _approximate(qs: BlockSource, db: BlockSource, k: int, resolved: Resolved, gpu: bool, seed: int, block_rows: int,
                 progress: Callable[[int], None] | None, coarse: _Coarse | None, sides: tuple[int, int],
                 shared: faiss.Index | None) -> tuple[np.ndarray, np.ndarray]:
    spec, nprobe, train_size = resolved
    if coarse is not None:
        return coarse.search(qs, sides[0], db, sides[1], k, nprobe, block_rows, progress)
    if not gpu and _centred_spec(spec) is not None:
        one = _Coarse.train(spec, [qs, db], train_size, seed, block_rows, fit=[1])
        return one.search(qs, 0, db, 1, k, nprobe, block_rows, progress)
    if shared is not None:
        empty = faiss.clone_index(shared)
    else:
        empty = _new_index(spec, db.dim)
        _train(empty, spec, [db], train_size, seed, block_rows, gpu)
    built, on_gpu = _fill(empty, spec, db, nprobe, gpu, block_rows)
    return _search(built, on_gpu, qs, k, block_rows, progress)
