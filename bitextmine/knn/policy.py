"""Which index, with which parameters: the ``"auto"`` rule and the defaults of user-given indexes.

Every number the search chooses by itself is set here, from the database size: exact search
below :data:`AUTO_FLAT_BELOW` rows, else IVF lists, lists probed, training sample and codes
(:func:`auto_index`), and the query block size of the by-list IVF search (:func:`_ivf_query_rows`).
A caller's explicit ``nprobe`` and ``train_size`` always win (:func:`_resolve`).
"""
from __future__ import annotations

import math

from ..errors import InputError, MismatchError
from .sources import BlockSource

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
    """Lists probed by ``auto``, and by a user-given IVF index without ``nprobe``: clamp(nlist / 16, 16, 256)."""
    return int(min(nlist, max(AUTO_NPROBE_MIN, min(AUTO_NPROBE_MAX, round(nlist * AUTO_NPROBE_FRACTION)))))


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


def _resolve(spec: str, nb: int, dim: int, nprobe: int | None, train_size: int | None) -> tuple[str, int | None, int | None]:
    """``"auto"`` replaced by :func:`auto_index`'s choice; explicit nprobe / train_size win."""
    spec = spec.strip()
    if spec.lower() == "auto":
        spec, params = auto_index(nb, dim)
        nprobe = params.get("nprobe") if nprobe is None else nprobe
        train_size = params.get("train_size") if train_size is None else train_size
    return spec, nprobe, train_size
