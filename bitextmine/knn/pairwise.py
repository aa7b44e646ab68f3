"""Exact search on the CPU, both directions from ONE pass over the similarity matrix.

Margin mining needs the k nearest neighbours of x in y and of y in x; both are the row-wise and
the column-wise top-k of the same matrix X·Yᵀ. It is computed once, tile by tile
(:data:`TILE_ROWS` x :data:`TILE_COLS`, :mod:`.tiles`), and every tile yields the top-k of its
rows and of its columns: half the multiply-adds of two searches. X and Y are read in blocks of
``block_rows`` rows (Y again for every X block unless it fits in one), so memory stays at about
two blocks, the tiles in flight and the (n, k) results.

The tiles are dealt to the worker threads (:mod:`.workers`), each computing its tile with a
single-threaded BLAS; tile results are merged in a fixed order with ties broken by the lower
id. Tiles have fixed shapes and positions, so the results are bit-identical for any number of
threads. Precision: float32, or bf16 candidates re-scored in float32 where the CPU multiplies
bf16 faster (:func:`.tiles.precision`); either way the neighbours and similarities are those
of float32 exact search.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .sources import ArrayBlocks, BlockSource, _blocks
from .tiles import precision, tile_bf16, tile_fp32
from .workers import _canonical, _single_blas, _Workers

#: query rows x database rows of one tile (float32: 16 MiB a tile in flight).
TILE_ROWS = 1024
TILE_COLS = 4096
_IMAX = np.iinfo(np.int64).max


class _Block:
    """A block of rows as float32, plus its bfloat16 torch tensor on the bf16 path."""

    def __init__(self, a: np.ndarray, prec: str) -> None:
        self.a = a
        self.t = None
        if prec == "bf16":
            import torch

            self.t = torch.from_numpy(a).bfloat16()

    def __len__(self) -> int:
        return len(self.a)


@contextlib.contextmanager
def _torch_single(prec: str) -> Iterator[None]:
    """torch's intra-op pool on one thread for the duration (bf16 path only: fp32 needs no torch)."""
    if prec != "bf16":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _merge(parts_v: list[np.ndarray], parts_i: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the concatenated candidate lists by (-similarity, id); padding (id -1) last."""
    v = np.concatenate(parts_v, axis=1)
    i = np.concatenate(parts_i, axis=1)
    order = np.lexsort((np.where(i < 0, _IMAX, i), -v), axis=1)[:, :k]
    return np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)


def _tile(xb: _Block, yb: _Block, r0: int, c0: int, kf: int, kb: int, prec: str) -> tuple[Any, Any]:
    r1, c1 = min(r0 + TILE_ROWS, len(xb)), min(c0 + TILE_COLS, len(yb))
    kr, kc = min(kf, c1 - c0), min(kb, r1 - r0)
    if prec == "bf16":
        return tile_bf16(xb.a[r0:r1], yb.a[c0:c1], xb.t[r0:r1], yb.t[c0:c1], kr, kc)
    return tile_fp32(xb.a[r0:r1], yb.a[c0:c1], kr, kc)


def exact_search(
    xs: BlockSource,
    ys: BlockSource,
    k: int,
    block_rows: int,
    progress: Callable[[int], None] | None,
    both: bool = True,
    prec: str | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """``(knn(x, y, k), knn(y, x, k))`` exactly, from one pass over X·Yᵀ (only the first if not ``both``).

    progress: called with query rows completed, x's and y's together (nx + ny in all; nx alone if not both).
    """
    nx, ny = len(xs), len(ys)
    kf, kb = min(k, ny), (min(k, nx) if both else 0)
    prec = prec or precision()
    FD, FI = np.full((nx, kf), -np.inf, np.float32), np.full((nx, kf), -1, np.int64)
    BD, BI = np.full((ny, kb), -np.inf, np.float32), np.full((ny, kb), -1, np.int64)
    # bf16: per row / column, the most an entry left out of a tile's candidates may score
    UF, UB = np.full(nx, -np.inf), np.full(ny, -np.inf)
    reported_b = 0
    with _Workers() as workers, _single_blas(), _torch_single(prec):
        cache = [_Block(b, prec) for b in _blocks(ys, block_rows)] if ny <= block_rows else None
        x0 = 0
        for xa in _blocks(xs, block_rows):
            xb = _Block(xa, prec)
            y0 = 0
            for yb in cache if cache is not None else (_Block(b, prec) for b in _blocks(ys, block_rows)):
                tiles = [(r0, c0) for r0 in range(0, len(xb), TILE_ROWS) for c0 in range(0, len(yb), TILE_COLS)]
                res = workers.map(lambda t, xb=xb, yb=yb: _tile(xb, yb, t[0], t[1], kf, kb, prec), tiles)
                _merge_in(FD, FI, x0, y0, tiles, [r[0] for r in res], kf, key=0)
                if kb:
                    _merge_in(BD, BI, y0, x0, tiles, [r[1] for r in res], kb, key=1)
                for (r0, c0), r in zip(tiles, res):
                    if r[2] is not None:
                        np.maximum(UF[x0 + r0 : x0 + r0 + len(r[2])], r[2], out=UF[x0 + r0 : x0 + r0 + len(r[2])])
                    if r[3] is not None:
                        np.maximum(UB[y0 + c0 : y0 + c0 + len(r[3])], r[3], out=UB[y0 + c0 : y0 + c0 + len(r[3])])
                y0 += len(yb)
                del res
            x0 += len(xb)
            if progress:
                b_now = ny * x0 // nx if both else 0
                progress(len(xb) + b_now - reported_b)
                reported_b = b_now
    if prec == "bf16":  # rows / columns where a left-out entry might beat the k-th: fp32 again
        _redo(xs, ys, FD, FI, UF, kf, block_rows)
        if kb:
            _redo(ys, xs, BD, BI, UB, kb, block_rows)
    _canonical(FD, FI)
    if both:
        _canonical(BD, BI)
        return (FD, FI), (BD, BI)
    return (FD, FI), None


def _redo(qs: BlockSource, db: BlockSource, D: np.ndarray, I: np.ndarray, bound: np.ndarray, k: int, block_rows: int) -> None:
    """Exact fp32 search again for the query rows whose left-out bound reaches their k-th similarity."""
    if not k:
        return
    rows = np.flatnonzero(bound >= D[:, k - 1])
    if len(rows):
        q = _take_rows(qs, rows, block_rows)
        (D[rows], I[rows]), _ = exact_search(ArrayBlocks(q), db, k, block_rows, None, both=False, prec="fp32")


def _take_rows(src: BlockSource, rows: np.ndarray, block_rows: int) -> np.ndarray:
    """(len(rows), dim) float32: the given rows (sorted) of a block source."""
    take = getattr(src, "embeddings", None)
    if callable(take):
        return np.ascontiguousarray(take(rows), dtype=np.float32)
    out, start = [], 0
    for b in _blocks(src, block_rows):
        lo, hi = np.searchsorted(rows, [start, start + len(b)])
        out.append(b[rows[lo:hi] - start])
        start += len(b)
    return np.concatenate(out) if out else np.empty((0, src.dim), np.float32)


def _merge_in(D: np.ndarray, I: np.ndarray, own0: int, other0: int, tiles: list[tuple[int, int]],
              res: list[tuple[np.ndarray, np.ndarray]], k: int, key: int) -> None:
    """Merge tile results into the running (D, I) of one side, tile order fixed.

    key=0: the rows side (tiles grouped by their row offset, ids offset by the column offset);
    key=1: the columns side (grouped by column offset, ids offset by the row offset).
    """
    groups: dict[int, list[int]] = {}
    for j, t in enumerate(tiles):
        groups.setdefault(t[key], []).append(j)
    for start, members in groups.items():
        n = len(res[members[0]][0])
        a, b = own0 + start, own0 + start + n
        vs, ids = [D[a:b]], [I[a:b]]
        for j in members:
            v, i = res[j]
            vs.append(v)
            ids.append(i + (other0 + tiles[j][1 - key]))
        D[a:b], I[a:b] = _merge(vs, ids, k)
