"""Which index, with which parameters: the ``"auto"`` rule and the defaults of user-given indexes.

Every number the search chooses by itself is set here, from the database size and a memory
budget: exact search below :data:`AUTO_FLAT_BELOW` rows, else IVF lists, lists probed, training
sample and codes (:func:`auto_index`), and the query block size of the by-list IVF search
(:func:`_ivf_query_rows`). A caller's explicit ``nprobe`` and ``train_size`` always win (:func:`_resolve`).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile

from ..errors import InputError, MismatchError
from ..fs import remove_dead_process_files
from .sources import BlockSource

#: ``auto`` uses exact search below this many database vectors.
AUTO_FLAT_BELOW = 100_000
#: ``auto``'s memory budget for the index (codes and ids) when none is given: this fraction of physical memory.
AUTO_MEMORY_FRACTION = 0.25
#: ... or this many bytes where the physical memory cannot be read.
AUTO_MEMORY_BUDGET = 4 * 2**30
#: Bytes an IVF index keeps per vector besides its code: the 64-bit id in its inverted list.
ID_BYTES = 8
#: Product-quantiser sizes (bytes a vector) ``auto`` tries, largest first; each must divide the dimension.
PQ_SIZES = (64, 48, 32, 16, 8)
#: IVF lists probed by ``auto``: this fraction of the lists up to AUTO_NPROBE_FLOOR of them, then
#: AUTO_NPROBE_FLOOR or AUTO_NPROBE_LARGE of the lists, whichever is more, within the bounds below
#: (:func:`_auto_nprobe`). Measured on the structured 1M x 1M set (IVF4096, centred probing, 2,000
#: sampled queries each way): the exact nearest neighbour lies in the 64 nearest lists for 98.5% of
#: the queries (99.1% at 128, 99.5% at 256 probes: 4x the scan), against 98.1% with 64 of 1,024
#: lists at 100k, where 64 probes keep 99.4% of exact search's true pairs.
AUTO_NPROBE_FRACTION = 1 / 16
AUTO_NPROBE_FLOOR = 64
AUTO_NPROBE_LARGE = 1 / 64
AUTO_NPROBE_MIN, AUTO_NPROBE_MAX = 16, 256
#: Query rows per block on the by-list IVF path: block_rows times this, but at most
#: IVF_PROBES_PER_BLOCK / nprobe rows (bounds the (rows x nprobe) assignment arrays, ~30 bytes an entry:
#: 65,536 rows at 64 probes, 16,384 at 256) and at most IVF_QUERY_BYTES of float32 queries (a block's
#: working set holds a few arrays of the block's size: at 8 probes the block and probe bounds allowed
#: 262,144 rows, ~1.5 GiB at 384-d in the 10M run). Results do not depend on the block size.
IVF_QUERY_BLOCKS = 4
IVF_PROBES_PER_BLOCK = 1 << 22
IVF_QUERY_BYTES = 128 << 20
#: Near-threshold rows (:mod:`bitextmine.refine`) are searched again probing this many times the lists
#: the search probed, when that is at most a quarter of the lists (REFINE_SHARE_MAX); else exactly.
#: At 1M (IVF4096, structured set, ``benchmarks/results/mine-probe-rank-1m.json``) the exact nearest
#: neighbour lies in the 64 nearest lists for 98.5% of the queries, in the 256 nearest for 99.5%.
REFINE_PROBES = 8
REFINE_SHARE_MAX = 0.25
#: A factory string ending in this keeps its inverted lists (codes and ids) in a memory-mapped file in the
#: temporary folder (``TMPDIR``) instead of memory: ``auto``'s last tier, or a user's ``"IVF65536,PQ64,ondisk"``.
ON_DISK = ",ondisk"
#: Name start of on-disk lists' files in the temporary folder: ``bitextmine-lists-PID@HOST-RANDOM.ivfdata``.
LISTS_PREFIX = "bitextmine-lists-"
#: Disk an on-disk index may take, as a multiple of its codes and ids. FAISS's on-disk lists grow by doubling:
#: a list's room is the power of two at or above its size (< 2x its codes), and each time it doubles its old
#: room is freed, to be reused by other lists or not (at most 1 + 2 + ... + room/2 < its room again): the
#: blocks ever written stay under 4x the codes and ids (the file's apparent size is larger still, but its
#: tail is a hole until written). Measured: 2.62x (50k rows, IVF64,PQ8), 3.26x (20k rows, IVF32,PQ8), 2.83x
#: (3M rows, OPQ64,IVF8192,PQ64); 2x, the bound before, let a folder pass the check and fill up mid-build.
ON_DISK_ROOM = 4


def split_on_disk(spec: str) -> tuple[str, bool]:
    """``(factory string, whether its lists go on disk)``: ``"OPQ64,IVF4096,PQ64,ondisk"`` -> ``("OPQ64,IVF4096,PQ64", True)``."""
    s = spec.strip()
    if s.lower().endswith(ON_DISK):
        return s[: -len(ON_DISK)].rstrip(), True
    return s, False


def check_disk(spec: str, n: int, dim: int, folder: str | None = None) -> None:
    """Refuse, before any work, an on-disk index whose file may not fit the free space of ``folder``
    (default: the temporary folder): up to :data:`ON_DISK_ROOM` times its codes and ids. Lists' files left
    there by killed jobs of this host are removed first (:func:`..fs.remove_dead_process_files`)."""
    bare, disk = split_on_disk(spec)
    per = code_bytes(bare, dim)
    if not disk or per is None:
        return
    folder = folder or tempfile.gettempdir()
    remove_dead_process_files(folder, LISTS_PREFIX)  # killed jobs' files: their room counts as free
    need, free = ON_DISK_ROOM * n * per, shutil.disk_usage(folder).free
    if need > free:
        raise InputError(f"the on-disk index {bare} of {n:,} vectors may need {need / 2**30:.1f} GiB in {folder}, "
                         f"which has {free / 2**30:.1f} GiB free: point TMPDIR at a larger disk, raise {{param}} "
                         "or split the search over machines (--engine ray)", param="memory_budget")


def _ivf_query_rows(block_rows: int, nprobe: int, dim: int) -> int:
    return max(1024, min(block_rows * IVF_QUERY_BLOCKS, IVF_PROBES_PER_BLOCK // max(1, nprobe),
                         IVF_QUERY_BYTES // (4 * max(1, dim))))


def default_memory_budget() -> int:
    """``auto``'s memory budget when none is given: :data:`AUTO_MEMORY_FRACTION` of physical memory."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * AUTO_MEMORY_FRACTION)
    except (ValueError, OSError, AttributeError):
        return AUTO_MEMORY_BUDGET


def code_bytes(spec: str, dim: int) -> int | None:
    """Bytes an index built from ``spec`` keeps per vector (code + id; ``4·dim`` for flat), None when unknown."""
    s = split_on_disk(spec)[0]
    if s.lower() == "flat":
        return 4 * dim
    last = s.split(",")[-1].strip()
    if last == "Flat":
        return 4 * dim + ID_BYTES
    if last == "SQfp16" or last == "SQbf16":
        return 2 * dim + ID_BYTES
    m = re.fullmatch(r"SQ(\d)", last)
    if m:
        return math.ceil(int(m.group(1)) * dim / 8) + ID_BYTES
    m = re.fullmatch(r"PQ(\d+)(?:x(\d+))?", last)
    if m:
        return math.ceil(int(m.group(1)) * int(m.group(2) or 8) / 8) + ID_BYTES
    return None


def auto_index(n: int, dim: int, *, memory_budget: int | None = None) -> tuple[str, dict[str, int]]:
    """The index ``knn(..., index="auto")`` uses for a database of ``n`` vectors of ``dim`` floats.

    Rule (by database size and memory, as stopes chooses its index by corpus size):

    * ``n < AUTO_FLAT_BELOW`` (100k): ``"flat"`` (exact, blocked), no parameters.
    * otherwise IVF with ``nlist = 2 ** round(log2(4 * sqrt(n)))`` lists (1,024 at 100k, 4,096 at
      1M, 16,384 at 10M), probing ``nprobe`` of them (:func:`_auto_nprobe`: 6% of the lists up
      to 1,024 lists, 64 up to 4,096 lists, then 1/64 of the lists up to 256: 64 at 100k and at 1M,
      256 at 10M; users may raise it), trained on
      ``train_size = min(n, 32 * nlist)`` vectors; the codes are the most faithful whose index
      (codes plus an 8-byte id a vector, :func:`code_bytes`) fits ``memory_budget`` bytes (default
      :func:`default_memory_budget`, a quarter of physical memory): ``IVF…,SQfp16`` (2·dim bytes:
      exact for embeddings stored as fp16, as bitextmine stores them), else ``IVF…,SQ8`` (dim bytes),
      else ``OPQm,IVF…,PQm`` (a rotation learned so that m-byte product codes lose least, as stopes
      and CCMatrix do at scale) with the largest m in :data:`PQ_SIZES` that divides dim and fits.
    * when not even the smallest product codes fit: the largest product codes with their inverted
      lists in a memory-mapped file in the temporary folder (``"OPQm,IVF…,PQm,ondisk"``,
      :data:`ON_DISK`); the search reads each list once per query block (:mod:`.bylist`), so
      the operating system streams the file rather than holding it. :func:`_resolve` refuses it
      before any work when the folder has not the room (:func:`check_disk`).

    Returns ``(factory_string, {"nprobe": ..., "train_size": ...})`` (empty params for flat).
    Every value can be overridden through :func:`knn`'s ``index``, ``nprobe`` and ``train_size``.
    """
    if n < AUTO_FLAT_BELOW:
        return "flat", {}
    budget = int(memory_budget) if memory_budget else default_memory_budget()
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    params = {"nprobe": _auto_nprobe(nlist), "train_size": _auto_train_size(n, nlist)}
    for codes in ("SQfp16", "SQ8"):
        if n * code_bytes(f"IVF{nlist},{codes}", dim) <= budget:
            return f"IVF{nlist},{codes}", params
    ms = [m for m in PQ_SIZES if dim % m == 0] or [8]
    for m in ms:
        if n * (m + ID_BYTES) <= budget:
            return f"OPQ{m},IVF{nlist},PQ{m}", params
    return f"OPQ{ms[0]},IVF{nlist},PQ{ms[0]}{ON_DISK}", params


def describe(spec: str, nprobe: int | None, reranked: int | None = None) -> str:
    """How a resolved index is reported (mining summaries, provenance): ``"IVF4096,SQfp16 (nprobe 256)"``,
    ``"OPQ64,IVF4096,PQ64 (nprobe 256, top 16 re-ranked exactly)"`` (``reranked``: :mod:`.rerank`'s depth)."""
    if spec.lower() == "flat":
        return spec
    notes = ([f"nprobe {nprobe}"] if nprobe is not None else []) + ([f"top {reranked} re-ranked exactly"] if reranked else [])
    return f"{spec} ({', '.join(notes)})" if notes else spec


def refine_probes(nlist: int, nprobe: int) -> int | None:
    """Lists the near-threshold rows are searched again with (:data:`REFINE_PROBES` times ``nprobe``),
    or None when that is over :data:`REFINE_SHARE_MAX` of the lists: an exact search then costs little more."""
    wide = REFINE_PROBES * max(1, int(nprobe))
    return wide if wide <= REFINE_SHARE_MAX * nlist else None


def _auto_nprobe(nlist: int) -> int:
    """Lists probed by ``auto``, and by a user-given IVF index without ``nprobe``:
    clamp(min(nlist / 16, max(64, nlist / 64)), 16, 256): 16 at 256 lists, 64 from 1,024 to 4,096
    lists, 128 at 8,192, 256 from 16,384 (see :data:`AUTO_NPROBE_FLOOR`)."""
    share = min(nlist * AUTO_NPROBE_FRACTION, max(AUTO_NPROBE_FLOOR, nlist * AUTO_NPROBE_LARGE))
    return int(min(nlist, max(AUTO_NPROBE_MIN, min(AUTO_NPROBE_MAX, round(share)))))


def _auto_train_size(n: int, nlist: int) -> int:
    return int(min(n, 32 * nlist))


def _default_train_size(n: int, nlist: int) -> int:
    """min(n, max(50k, 39 * nlist)) for user-given indexes: FAISS wants >= 39 points per centroid; PQ codebooks ~10k+."""
    return min(n, max(50_000, 39 * nlist))


def _check(qs: BlockSource, db: BlockSource, k: int, block_rows: int) -> None:
    if qs.dim != db.dim:
        raise MismatchError(f"queries have dimension {qs.dim} but the database has {db.dim}")
    if k < 1:
        raise InputError(f"{{param}} must be at least 1, got {k}", param="k")
    if block_rows < 1:
        raise InputError(f"{{param}} must be at least 1, got {block_rows}", param="block_rows")


def _resolve(spec: str, nb: int, dim: int, nprobe: int | None, train_size: int | None,
             memory_budget: int | None = None) -> tuple[str, int | None, int | None]:
    """``"auto"`` replaced by :func:`auto_index`'s choice; explicit nprobe / train_size win."""
    spec = spec.strip()
    if spec.lower() == "auto":
        spec, params = auto_index(nb, dim, memory_budget=memory_budget)
        nprobe = params.get("nprobe") if nprobe is None else nprobe
        train_size = params.get("train_size") if train_size is None else train_size
    check_disk(spec, nb, dim)
    return spec, nprobe, train_size
