"""FAISS factory indexes (``"IVF1024,Flat"``, ``"IVF4096,PQ64"``, ``"HNSW32"``...): build, train, fill, search.

An index is made from its factory string with ``METRIC_INNER_PRODUCT`` (:func:`_new_index`),
trained on a random sample of the database (:func:`_train`; split evenly over both sides when
:func:`knn_pair` trains one index for both directions), filled block by block (:func:`_fill`) and
searched block by block (:func:`_search`). On the CPU, IVF indexes with flat, scalar-quantised or
product codes, alone or behind linear pre-transforms such as OPQ, are filled with the worker threads'
own list assignment into lists sized beforehand in memory (:func:`_fill_lists`) and searched list by list
(:mod:`.bylist`); everything else, GPU indexes included, runs FAISS's own ``add`` and ``search``.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import faiss
import numpy as np

from ..errors import InputError
from ..fs import process_tag, remove_dead_process_files
from .bylist import _assign, _by_list, _ivf_of, _search_ivf_by_list, _Transformed, reserve_lists
from .gpu import _to_gpus, _warn_once
from .policy import LISTS_PREFIX, _auto_nprobe, _default_train_size, _ivf_query_rows, split_on_disk
from .sources import BlockSource, _blocks, _sample_rows
from .workers import _canonical, _Workers, release_free_memory


def _one_line(err: BaseException) -> str:
    """FAISS's exception text on one line, without the C++ location and assertion prefixes."""
    lines = str(err).strip().splitlines()
    msg = lines[0] if lines else type(err).__name__
    msg = re.sub(r"^Error in .*? at \S+:\d+: ", "", msg)
    msg = re.sub(r"^Error: '.*?' failed: ", "", msg)
    return msg.strip()[:200]


def _new_index(spec: str, d: int) -> faiss.Index:
    """An empty index from a factory string (inner product; a trailing ``,ondisk`` is :func:`_fill`'s).
    Scalar-quantised IVF stores vectors, not residuals."""
    try:
        index = faiss.index_factory(d, split_on_disk(spec)[0], faiss.METRIC_INNER_PRODUCT)
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
        nprobe = _auto_nprobe(int(ivf.nlist))
    if nprobe is not None and nprobe < 1:
        raise InputError(f"{{param}} must be at least 1, got {nprobe}", param="nprobe")
    if nprobe is not None and ivf is None:
        raise InputError(f"{{param}} does not apply to FAISS index {spec!r} (it has no inverted lists)", param="nprobe")
    on_gpu, disk = False, split_on_disk(spec)[1] and ivf is not None
    if disk:
        _lists_on_disk(index)
    elif gpu:
        try:
            index = _to_gpus(index)
            on_gpu = True
        except RuntimeError:
            _warn_once(f"type:{spec}", f"FAISS index {spec!r} has no GPU version; searching on the CPU")
    target = None if on_gpu else _by_list(index)
    with _quiet_stdout() if disk else contextlib.nullcontext():
        if target is not None:  # an IVF searched by list (behind linear pre-transforms or not): our own assignment
            _fill_lists(index, target[0], db, block_rows)
        else:
            for xb in _blocks(db, block_rows):
                index.add(xb)
    if nprobe is not None:
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        try:
            space.set_index_parameter(index, "nprobe", int(nprobe))
        except RuntimeError:
            raise InputError(f"{{param}} does not apply to FAISS index {spec!r} (it has no inverted lists)", param="nprobe") from None
    return index, on_gpu


def _fill_lists(index: faiss.Index, ivf: faiss.IndexIVF, db: BlockSource, block_rows: int) -> None:
    """The database into ``ivf``'s inverted lists; ``index`` is ``ivf`` itself or ``ivf`` behind linear
    pre-transforms (OPQ, PCA), applied to each block as FAISS's ``add`` applies them. The worker threads
    assign each row to its list. Lists in memory are sized once beforehand (:func:`.bylist.reserve_lists`:
    a first pass over the database assigns every row, 4 bytes each, the second stores the codes): filled
    block by block, they grow by doubling and end up to twice the codes (product-code indexes, the tier
    for the largest sets, included). On-disk lists are filled in one pass."""
    top = faiss.downcast_index(index)
    chain = [top.chain.at(i) for i in range(top.chain.size())] if top.this != ivf.this else []

    def transformed(xb: np.ndarray) -> np.ndarray:
        for vt in chain:
            xb = vt.apply(xb)
        return np.ascontiguousarray(xb, dtype=np.float32)

    sized = isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists)
    filed = None
    with _Workers() as workers:
        if sized:
            parts = [_assign(ivf.quantizer, transformed(xb), 1, workers).ravel().astype(np.int32) for xb in _blocks(db, block_rows)]
            filed = np.concatenate(parts) if parts else np.zeros(0, np.int32)
            del parts
            reserve_lists(ivf, filed)
        r0 = 0
        for xb in _blocks(db, block_rows):
            xt = transformed(xb)
            r1 = r0 + len(xt)
            lists = filed[r0:r1].astype(np.int64) if filed is not None else _assign(ivf.quantizer, xt, 1, workers).ravel()
            ivf.add_core(len(xt), faiss.swig_ptr(xt), None, faiss.swig_ptr(lists))
            r0 = r1
    if chain:
        top.ntotal = ivf.ntotal
    release_free_memory()


def _lists_on_disk(index: faiss.Index) -> None:
    """Give ``index``'s IVF (empty) inverted lists in a memory-mapped file in the temporary folder,
    removed when ``index`` is dropped. The lists are read as from memory (:mod:`.bylist`). A job killed
    before that (SIGTERM, SIGKILL) leaves its file: the next on-disk index on the host removes the files
    of processes that are gone."""
    ivf = faiss.extract_index_ivf(index)
    remove_dead_process_files(tempfile.gettempdir(), LISTS_PREFIX)  # files of killed jobs (no finaliser ran)
    fd, path = tempfile.mkstemp(prefix=f"{LISTS_PREFIX}{process_tag()}-", suffix=".ivfdata")
    os.close(fd)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, path)
    lists.this.disown()  # the index owns it from here
    ivf.replace_invlists(lists, True)
    weakref.finalize(index, _remove, path)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """File descriptor 1 sent to /dev/null: FAISS's on-disk lists print a line to stdout each time their
    file grows, which would land in ``mine --out -``'s pairs."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _search(index: Any, on_gpu: bool, qs: BlockSource, k: int, block_rows: int, progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Search every query: by list on CPU IVF indexes with decodable codes (behind linear
    pre-transforms too: the queries are transformed first), else FAISS's own search."""
    target = None if on_gpu else _by_list(index)
    if target is not None:
        ivf, transform = target
        src = qs if transform is None else _Transformed(qs, transform)
        rows = _ivf_query_rows(block_rows, int(ivf.nprobe), max(qs.dim, src.dim))  # a pre-transform may widen the rows
        return _search_ivf_by_list(ivf, src, k, rows, progress)
    return _search_blocks(index, qs, k, block_rows, progress)


def _search_blocks(
    index: Any, qs: BlockSource, k: int, block_rows: int, progress: Callable[[int], None] | None
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's own ``index.search``, one query block at a time, results in canonical order."""
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
