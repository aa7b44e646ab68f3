"""Exact search on torch devices (CUDA GPUs): bf16 candidates, float32 re-score, sharded over the devices.

The database is split into one shard per device (rows ``[a, b)`` on device i), held there as
float32 and as a centred bf16 copy; query blocks are sent to every device. On each device a query
sub-block of :data:`QUERY_ROWS` rows is multiplied with chunks of :data:`DB_ROWS` database rows in
bf16 (tensor cores), each chunk's top ``k + EXTRA`` estimates are merged into running lists, and
the kept candidates are re-scored exactly in float32 (element-wise products summed, so no TF32 or
bf16 lowering of float32 matrix products can touch them). The shards' top-k lists are merged on
the host, equal similarities ordered by id.

Why the result is exact: every database row a query's list left out has a bf16 estimate no larger
than the smallest kept one, ``e_c``; its true value is at most ``e_c`` plus the rounding bound
:func:`.tiles.bf16_slack` (output rounding of the estimate, input rounding bounded with the 4-norms
of the centred vectors). Where that bound is not below the query's k-th re-scored value, the row is
searched again in float32 against its shard (IEEE float32 products, ``allow_tf32`` off for the
search). So the neighbours are those of float32 exact search and the similarities agree with it to
float32 rounding (a different summation order: the sixth decimal of a margin score can differ).

Centring (as on the CPU, :func:`.pairwise._centre`): both sides are centred on a shared mean ``mu``
where the data have one (sentence embeddings do); the database rows carry their offset
``y.mu - mu.mu`` as two extra bf16 coordinates (a high and a low part, so it is exact to ~2^-16)
against constant ones in the queries. The estimate is then of ``(x - mu).(y - mu) + y.mu - mu.mu``,
which orders a query's candidates as ``x.y`` does, is a few times smaller, and so is its rounding.

The same code runs on the CPU (``devices=[torch.device("cpu")] * 2`` in the tests: two shards,
the CPU's bf16 products) so the algorithm is tested where CI has no GPU.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .gpu import _gpu_device_present
from .sources import BlockSource, _blocks
from .tiles import bf16_slack

#: candidates kept beyond k per query and shard, re-scored in float32.
EXTRA = 16
#: query rows multiplied at once on a device, and database rows per product: a 1 GiB bf16 tile.
QUERY_ROWS = 8192
DB_ROWS = 65536
#: share of a device's free memory the shard, the tiles and the query block may take.
MEMORY_SHARE = 0.7


def _torch():
    import torch

    return torch


def cuda_devices() -> list:
    """Every CUDA device torch sees (``CUDA_VISIBLE_DEVICES`` applies), or [] without CUDA or torch.
    Where no NVIDIA driver is seen (nor WSL's GPU device) and torch is not loaded yet, torch is not
    imported for this (mining embedding folders needs no torch) and the answer is []."""
    if not (_gpu_device_present() or os.path.exists("/dev/dxg") or "torch" in sys.modules):
        return []
    try:
        torch = _torch()
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # no torch, no driver
        return []


def _padded_dim(dim: int) -> int:
    """The bf16 width: the dimensions, two offset coordinates, rounded up to 8 (tensor-core tiles)."""
    return -(-(dim + 2) // 8) * 8


def device_bytes(rows: int, dim: int, devices: Sequence, query_rows: int = QUERY_ROWS, db_rows: int = DB_ROWS,
                 block_rows: int = 65536, k: int = 64) -> int:
    """Bytes one device needs to search a database of ``rows`` rows split over ``devices``: its shard
    while it is built (float32, the centred copy, the 4-norm's temporaries, bf16: ~18 bytes a
    coordinate), the product tile with its top-k work space, the re-score's gathered candidates
    (``k + EXTRA`` rows of each query, twice) and a query block."""
    shard = -(-rows // max(len(devices), 1))
    tile = 3 * 2 * query_rows * min(db_rows, max(shard, 1))
    rescore = 2 * 4 * query_rows * (k + EXTRA) * dim
    return shard * (16 * dim + 2 * _padded_dim(dim)) + tile + rescore + 8 * block_rows * dim


def fits(rows: int, dim: int, devices: Sequence, block_rows: int = 65536) -> bool:
    """Whether a database of ``rows`` rows fits on ``devices`` (each within :data:`MEMORY_SHARE` of its free memory)."""
    if not devices:
        return False
    torch = _torch()
    need = device_bytes(rows, dim, devices, block_rows=block_rows)
    for d in devices:
        if d.type != "cuda":
            continue
        free, _ = torch.cuda.mem_get_info(d)
        if need > MEMORY_SHARE * free:
            return False
    return True


@contextmanager
def _ieee_fp32():
    """For the duration, on CUDA: float32 matrix products in IEEE float32 (the fallback's), and bf16
    products summed in float32 throughout (cuBLAS may otherwise add split-K partial sums in bf16, an
    error :func:`.tiles.bf16_slack` does not bound)."""
    m = _torch().backends.cuda.matmul
    old = m.allow_tf32, m.allow_bf16_reduced_precision_reduction
    m.allow_tf32 = m.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        m.allow_tf32, m.allow_bf16_reduced_precision_reduction = old


def _norm4(t):
    return (t * t).square().sum(1).sqrt().sqrt() * (1 + 1e-4)


class _Shard:
    """Database rows ``[offset, offset + n)`` on one device: float32, and centred bf16 with the offsets."""

    def __init__(self, rows: np.ndarray, offset: int, device, mu: np.ndarray) -> None:
        torch = _torch()
        self.device, self.offset, self.n = device, offset, len(rows)
        self.y32 = torch.from_numpy(rows).to(device)
        self.mu = torch.from_numpy(mu).to(device)
        d = rows.shape[1]
        c = self.y32 - self.mu
        off = self.y32 @ self.mu if self.mu.any() else torch.zeros(self.n, device=device)
        off = off - float(mu.astype(np.float64) @ mu.astype(np.float64))
        hi = off.bfloat16()
        self.yb = torch.zeros((self.n, _padded_dim(d)), dtype=torch.bfloat16, device=device)
        self.yb[:, :d] = c
        self.yb[:, d] = hi
        self.yb[:, d + 1] = off - hi.float()
        # the low part's rounding: at most 2^-9 of a part at most 2^-8 of the offset (2^-16 with margin)
        self.lo_err = 2.0**-16 * float(off.abs().max()) if self.n else 0.0
        self.n4max = float(_norm4(c).max()) if self.n else 0.0
        del c

    def search(self, xq: np.ndarray, k: int, extra: int, query_rows: int, db_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(len(xq), k) exact similarities and global ids of this shard's top-k, and how many queries fell back to float32."""
        torch = _torch()
        q32 = torch.from_numpy(xq).to(self.device, non_blocking=True)
        D = np.empty((len(xq), k), np.float32)
        I = np.empty((len(xq), k), np.int64)
        fell = 0
        for a in range(0, len(xq), query_rows):
            d_, i_, f = self._sub(q32[a : a + query_rows], k, extra, db_rows)
            D[a : a + len(d_)], I[a : a + len(d_)] = d_, i_
            fell += f
        I += self.offset
        return D, I, fell

    def _sub(self, q32, k: int, extra: int, db_rows: int):
        torch = _torch()
        d = q32.shape[1]
        c = min(k + extra, self.n)
        qc = q32 - self.mu
        qb = torch.zeros((len(q32), self.yb.shape[1]), dtype=torch.bfloat16, device=self.device)
        qb[:, :d] = qc
        qb[:, d : d + 2] = 1
        V, Ix = _running_top(lambda b: qb @ self.yb[b : b + db_rows].T, self.n, db_rows, c)
        E, Ix = self._rescore(q32, Ix, k)
        if c < self.n:  # rows left out: their estimates are at most the smallest kept one
            e_c = V.float().min(dim=1).values
            bound = e_c + bf16_slack(e_c, _norm4(qc) * self.n4max) + self.lo_err
            xoff = q32 @ self.mu if self.mu.any() else torch.zeros(len(q32), device=self.device)
            bad = torch.nonzero(E[:, k - 1] - xoff <= bound).flatten()
            if len(bad):
                E[bad], Ix[bad] = self._fp32(q32[bad], k, db_rows)
            fell = len(bad)
        else:
            fell = 0
        return E.cpu().numpy(), Ix.cpu().numpy(), fell

    def _fp32(self, q32, k: int, db_rows: int):
        """(m, k) top-k of ``q32`` against the whole shard in IEEE float32, by (-value, id). The products
        pick ``k + EXTRA`` candidates, re-scored as the bf16 path's are: equal similarities at the k-th
        place keep the lower ids (as the CPU's exact search does), and the products' own rounding does
        not decide the cut."""
        _, best_i = _running_top(lambda b: q32 @ self.y32[b : b + db_rows].T, self.n, db_rows, min(k + EXTRA, self.n))
        return self._rescore(q32, best_i, k)

    def _rescore(self, q32, Ix, k: int):
        """The top k of candidates ``Ix`` by exact float32 similarity (element-wise, no matrix-product
        lowering), by (-value, id): sorted by id, then stably by value."""
        Ix, o = Ix.sort(dim=1)
        E, o = (self.y32[Ix] * q32[:, None, :]).sum(-1).sort(dim=1, descending=True, stable=True)
        return E[:, :k], Ix.gather(1, o)[:, :k]


def _running_top(product, n: int, db_rows: int, c: int):
    """(values, ids) of the top ``c`` of each row of ``product(b)`` (the rows' products with database
    rows ``[b, b + db_rows)``) over ``b`` in ``range(0, n, db_rows)``, merged chunk by chunk, unsorted."""
    torch = _torch()
    V = Ix = None
    for b in range(0, n, db_rows):
        S = product(b)
        v, i = S.topk(min(c, S.shape[1]), dim=1, sorted=False)
        del S
        i += b
        if V is None:
            V, Ix = v, i
        else:
            V, j = torch.cat([V, v], 1).topk(c, dim=1, sorted=False)
            Ix = torch.cat([Ix, i], 1).gather(1, j)
    return V, Ix


def _shards(db: BlockSource, devices: Sequence, mu: np.ndarray, block_rows: int) -> list[_Shard]:
    """``db`` split into len(devices) contiguous shards of near-equal size, one per device."""
    n = len(db)
    bounds = [n * i // len(devices) for i in range(len(devices) + 1)]
    shards, parts, start, i = [], [], 0, 0
    for blk in _blocks(db, block_rows):
        parts.append(blk)
        start += len(blk)
        while i < len(devices) and start >= bounds[i + 1]:
            rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
            a = bounds[i] - (start - len(rows))  # rows of this shard in the gathered parts
            cut = bounds[i + 1] - (start - len(rows))
            shards.append(_Shard(np.ascontiguousarray(rows[a:cut]), bounds[i], devices[i], mu))
            parts = [rows[cut:]] if cut < len(rows) else []
            i += 1
    return [s for s in shards if s.n]


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the shards' lists by (-value, id)."""
    if len(parts) == 1:
        return parts[0]
    D = np.concatenate([p[0] for p in parts], 1)
    I = np.concatenate([p[1] for p in parts], 1)
    order = np.lexsort((I, -D), axis=1)[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def device_search(qs: BlockSource, db: BlockSource, k: int, block_rows: int, progress: Callable[[int], None] | None,
                  devices: Sequence, mu: np.ndarray | None = None, *, extra: int = EXTRA, query_rows: int = QUERY_ROWS,
                  db_rows: int = DB_ROWS, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``knn(qs, db, k)`` on ``devices``: (nq, k) float32 similarities, descending, and int64 ids.

    ``mu``: the centre (default: none, zeros); ``stats`` receives ``fallback_rows``, the queries
    whose candidates could not be proven complete and were searched again in float32.
    """
    nq, nb = len(qs), len(db)
    k = min(k, nb)
    mu = np.zeros(db.dim, np.float32) if mu is None else np.asarray(mu, np.float32)
    D = np.empty((nq, k), np.float32)
    I = np.empty((nq, k), np.int64)
    fell = 0
    torch = _torch()
    with torch.inference_mode(), _ieee_fp32():  # set here, once: the shards' threads share the flag
        shards = _shards(db, devices, mu, block_rows)
        pool = ThreadPoolExecutor(len(shards), thread_name_prefix="bitextmine-device") if len(shards) > 1 else None
        try:
            q0 = 0
            for xq in _blocks(qs, block_rows):
                if pool is None:
                    res = [shards[0].search(xq, k, extra, query_rows, db_rows)]
                else:
                    res = list(pool.map(lambda s: s.search(xq, min(k, s.n), extra, query_rows, db_rows), shards))
                fell += sum(r[2] for r in res)
                d_, i_ = _merge([(r[0], r[1]) for r in res], k)
                D[q0 : q0 + len(xq)], I[q0 : q0 + len(xq)] = d_, i_  # already by (-value, id)
                q0 += len(xq)
                if progress:
                    progress(len(xq))
        finally:
            if pool is not None:
                pool.shutdown()
            del shards
            if any(d.type == "cuda" for d in devices):  # give the cached blocks back: later plans read free memory
                torch.cuda.empty_cache()
    if stats is not None:
        stats["fallback_rows"] = stats.get("fallback_rows", 0) + fell
    return D, I
