"""Exact search on the CPU, both directions from ONE pass over the similarity matrix.

Margin mining needs the k nearest neighbours of x in y and of y in x; both are the row-wise and
the column-wise top-k of the same matrix X·Yᵀ. It is computed once, tile by tile
(:data:`TILE_ROWS` x :data:`TILE_COLS`, :mod:`.tiles`): half the multiply-adds of two searches.
X and Y are read in blocks of ``block_rows`` rows (Y again for every X block unless it fits in
one), so memory stays at about two blocks, the tiles in flight and the (n, k) results.

Each worker thread sweeps a strip of :data:`TILE_ROWS` rows across a Y block, tile by tile, with a
single-threaded BLAS, keeping the strip's running top lists; the column lists are merged after
every wave of strips (one strip a worker). Every tile keeps only the entries that reach the k-th
value of their row's or column's running list (:func:`.tiles.candidates`), so once the lists fill
a tile costs its product and one comparison pass, not a selection. The kept entries are merged
with ties broken by the lower id; what is pruned could never enter a top-k list, so the results
do not depend on the order of the merges, and are bit-identical for any number of threads (tiles
have fixed shapes and positions). Precision: float32, or bf16 candidates re-scored in float32
where the CPU multiplies bf16 faster (:func:`.tiles.precision`); either way the neighbours and
similarities are those of float32 exact search.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .sources import ArrayBlocks, BlockSource, _blocks
from .tiles import BF16_EXTRA, bf16_slack, candidates, norm4, precision, product, rescore, top_of_segments
from .workers import _canonical, _single_blas, _torch_single, _Workers

#: query rows x database rows of one tile (float32: 16 MiB a tile in flight).
TILE_ROWS = 1024
TILE_COLS = 4096
#: bf16 path: rows whose candidates are re-scored at a time.
RESCORE_ROWS = 64
#: bf16 path: centre the vectors where the squared mean is at least this share of the mean squared norm.
CENTRE_MIN = 0.05
_IMAX = np.iinfo(np.int64).max


class _Block:
    """A block of rows as float32, plus, on the bf16 path, the rows centred on ``mu`` as a bfloat16
    torch tensor, their 4-norms and 2-norms, and their offsets (x.mu; for the database side
    y.mu - mu.mu), so that x.y = (x - mu).(y - mu) + offsets (:func:`.tiles.product`)."""

    def __init__(self, a: np.ndarray, prec: str, mu: np.ndarray | None = None, db: bool = False) -> None:
        self.a = a
        self.t = self.n4 = self.n2 = self.off = None
        self.centred = False  # bf16 path with a non-zero centre: the tiles add the offsets
        if prec == "bf16":
            import torch

            c = a - mu
            self.t = torch.from_numpy(c).bfloat16()
            self.n4 = norm4(c)
            self.n2 = np.sqrt(np.einsum("ij,ij->i", c, c)).astype(np.float64) * (1 + 1e-4)
            self.off = (a @ mu - (float(mu @ mu) if db else 0.0)).astype(np.float32)
            self.centred = bool(mu.any())

    def __len__(self) -> int:
        return len(self.a)

    def tensor(self, a: int, b: int):
        return None if self.t is None else self.t[a:b]

    def offsets(self, a: int, b: int):
        return self.off[a:b] if self.off is not None and self.centred else None


class _Side:
    """One direction's running top lists, ``c`` candidates a row in (-value, id) order: values D
    (bf16 estimates on the bf16 path), ids I (-1: none yet), and on the bf16 path the float32
    re-scores E (NaN: not yet re-scored; -inf: provably outside the top-k) and the rows' centred
    norms and offsets (:class:`_Block`)."""

    def __init__(self, n: int, c: int, bf16: bool) -> None:
        self.c = c
        self.D = np.full((n, c), -np.inf, np.float32)
        self.I = np.full((n, c), -1, np.int64)
        self.E = np.full((n, c), -np.inf, np.float32) if bf16 else None
        self.n4, self.n2, self.off = (np.zeros(n), np.zeros(n), np.zeros(n, np.float32)) if bf16 else (None, None, None)

    def note(self, a: int, block: _Block) -> None:
        """Keep a bf16 block's norms and offsets (rows a..)."""
        if self.n4 is not None:
            b = a + len(block)
            self.n4[a:b], self.n2[a:b], self.off[a:b] = block.n4, block.n2, block.off

    def bound(self, lo: int, hi: int) -> np.ndarray:
        """The c-th value of rows lo..hi: no entry below it can enter their lists (-inf: not full)."""
        return self.D[lo:hi, self.c - 1]

    def merge(self, who: np.ndarray, ids: np.ndarray, vals: np.ndarray) -> None:
        """Merge candidates (row ``who``, ``ids``, ``vals``) into the lists, in place. For every row the
        candidates come in increasing id, all above the ids it holds, so the stable sort by
        (row, -value) keeps equal values in increasing id."""
        if not len(who):
            return
        rows, seg = np.unique(who, return_inverse=True)
        c, t = self.c, len(rows)
        allseg = np.concatenate([np.repeat(np.arange(t), c), seg])
        allv = np.concatenate([self.D[rows].ravel(), vals])
        take = top_of_segments(allseg, allv, t, c)
        self.D[rows] = allv[take]
        self.I[rows] = np.concatenate([self.I[rows].ravel(), ids])[take]
        if self.E is not None:
            self.E[rows] = np.concatenate([self.E[rows].ravel(), np.full(len(vals), np.nan, np.float32)])[take]

    def rescore(self, lo: int, hi: int, q: np.ndarray, db: np.ndarray, db0: int, other: _Side, k: int) -> None:
        """bf16 path: re-score in float32 the new entries of rows lo..hi (queries ``q``; their ids
        are rows ``db0 + j`` of ``db``) that may reach the top-k; the others can never (E = -inf).

        Each of the k best entries by bf16 estimate lies at least its estimate minus its bound, so
        the k-th float32 score is at least the smallest of these; an entry whose estimate plus its
        bound stays below that is out, now and after any later merge (the bound only rises)."""
        D, I, E = self.D[lo:hi], self.I[lo:hi], self.E[lo:hi]
        new = np.isnan(E)
        if not new.any():
            return
        j = np.maximum(I, 0)
        centred = D.astype(np.float64) - self.off[lo:hi, None] - other.off[j]
        slack = bf16_slack(np.where(np.isfinite(centred), centred, 0.0), self.n4[lo:hi, None] * other.n4[j])
        low = (D - slack)[:, :k].min(axis=1)
        need = new & (D + slack >= low[:, None])
        rows = np.flatnonzero(need.any(axis=1))
        for a in range(0, len(rows), RESCORE_ROWS):  # candidates' vectors in memory: RESCORE_ROWS x c x dim floats
            r = rows[a : a + RESCORE_ROWS]
            cand = db[np.clip(I[r] - db0, 0, len(db) - 1)]  # ids of earlier blocks: already scored, not used
            E[r] = np.where(need[r], rescore(q[r], cand), E[r])
        E[new & ~need] = -np.inf

    def left_out(self, other: _Side) -> np.ndarray:
        """bf16 path: the most an entry left out of a row's candidates may score in float32: its
        estimate is at most the c-th, and its centred product at most the product of the centred
        norms (or the c-th minus the offsets)."""
        last = self.D[:, -1].astype(np.float64)
        centred = np.minimum(self.n2 * other.n2.max(), np.abs(last - self.off) + np.abs(other.off).max())
        return last + bf16_slack(centred, self.n4 * other.n4.max())


def _merge(parts_v: list[np.ndarray], parts_i: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the concatenated candidate lists by (-similarity, id); padding (id -1) last."""
    v = np.concatenate(parts_v, axis=1)
    i = np.concatenate(parts_i, axis=1)
    order = np.lexsort((np.where(i < 0, _IMAX, i), -v), axis=1)[:, :k]
    return np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)


def _strip(xb: _Block, yb: _Block, r0: int, x0: int, y0: int, F: _Side, B: _Side, cbound: np.ndarray | None, kf: int):
    """Rows r0.. (one strip) of the X block against the whole Y block, tile by tile: the strip's
    rows merged into F in place (no other worker holds them), and the entries kept for the
    columns returned as (column, row, value) within the blocks, for the caller to merge."""
    r1 = min(r0 + TILE_ROWS, len(xb))
    lo, hi = x0 + r0, x0 + r1
    xa, xt = xb.a[r0:r1], xb.tensor(r0, r1)
    cols: list[tuple[np.ndarray, ...]] = []
    for c0 in range(0, len(yb), TILE_COLS):
        c1 = min(c0 + TILE_COLS, len(yb))
        S = product(xa, yb.a[c0:c1], xt, yb.tensor(c0, c1), xb.offsets(r0, r1), yb.offsets(c0, c1))
        (r, c, v), for_cols = candidates(S, F.bound(lo, hi), None if cbound is None else cbound[c0:c1],
                                         min(F.c, c1 - c0), min(B.c, r1 - r0))
        del S
        F.merge(r + lo, c + (y0 + c0), v)
        if for_cols is not None:
            r, c, v = for_cols
            cols.append((c + c0, r + r0, v))
    if F.E is not None:
        F.rescore(lo, hi, xa, yb.a, y0, B, kf)
    if not cols:
        return None
    return tuple(np.concatenate(p) for p in zip(*cols))


def _pair(workers: _Workers, xb: _Block, yb: _Block, x0: int, y0: int, F: _Side, B: _Side, kf: int, kb: int) -> None:
    """One X block against one Y block: waves of strips (one a worker), the columns merged after each wave."""
    strips = list(range(0, len(xb), TILE_ROWS))
    y1 = y0 + len(yb)
    for w in range(0, len(strips), workers.n):
        wave = strips[w : w + workers.n]
        cbound = B.bound(y0, y1).copy() if kb else None
        done = workers.map(lambda r0: _strip(xb, yb, r0, x0, y0, F, B, cbound, kf), wave)
        done = [d for d in done if d is not None]
        if kb and done:
            c, r, v = (np.concatenate(p) for p in zip(*done))
            B.merge(c + y0, r + x0, v)
    if kb and B.E is not None:
        cuts = [(a, min(a + TILE_ROWS, len(yb))) for a in range(0, len(yb), TILE_ROWS)]
        workers.map(lambda t: B.rescore(y0 + t[0], y0 + t[1], yb.a[t[0] : t[1]], xb.a, x0, F, kb), cuts)


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
    bf16 = prec == "bf16"
    extra = BF16_EXTRA if bf16 else 0
    F = _Side(nx, min(kf + extra, ny), bf16)
    B = _Side(ny, min(kb + extra, nx) if kb else 0, bf16)
    reported_b = 0
    mu = _centre(xs, ys, block_rows) if bf16 else None
    with _Workers() as workers, _single_blas(), _torch_single(prec == "bf16"):
        cache = [_Block(b, prec, mu, db=True) for b in _blocks(ys, block_rows)] if ny <= block_rows else None
        x0 = 0
        for xa in _blocks(xs, block_rows):
            xb = _Block(xa, prec, mu)
            F.note(x0, xb)
            y0 = 0
            for yb in cache if cache is not None else (_Block(b, prec, mu, db=True) for b in _blocks(ys, block_rows)):
                B.note(y0, yb)
                _pair(workers, xb, yb, x0, y0, F, B, kf, kb)
                y0 += len(yb)
            x0 += len(xb)
            if progress:
                b_now = ny * x0 // nx if both else 0
                progress(len(xb) + b_now - reported_b)
                reported_b = b_now
    fwd = _final(F, B, kf, ny, xs, ys, block_rows) if bf16 else (F.D, F.I)
    bwd = (_final(B, F, kb, nx, ys, xs, block_rows) if bf16 else (B.D, B.I)) if both else None
    _canonical(*fwd)
    if bwd is not None:
        _canonical(*bwd)
    return fwd, bwd


def _centre(xs: BlockSource, ys: BlockSource, block_rows: int) -> np.ndarray:
    """The bf16 path's centre: the mean of the first block of each side (embeddings share a large
    mean direction; the bf16 product of centred vectors is smaller, and so is its rounding).
    Where the mean is small (its square under :data:`CENTRE_MIN` of the mean square norm: nearly
    isotropic data) centring gains nothing and the offsets are left out: the centre is zero."""
    if not len(xs) or not len(ys):
        return np.zeros(xs.dim, np.float32)
    firsts = [next(iter(_blocks(s, block_rows))) for s in (xs, ys)]
    mu = 0.5 * (firsts[0].mean(axis=0, dtype=np.float64) + firsts[1].mean(axis=0, dtype=np.float64))
    square = 0.5 * sum(float(np.einsum("ij,ij->", f, f, dtype=np.float64)) / max(len(f), 1) for f in firsts)
    return (mu if mu @ mu >= CENTRE_MIN * square else np.zeros_like(mu)).astype(np.float32)


def _final(side: _Side, other: _Side, k: int, n_other: int, qs: BlockSource, db: BlockSource,
           block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """bf16 path: each row's top-k by float32 re-score (ties: lower id), and float32 search again for
    the rows where an entry left out of the candidates might reach the k-th."""
    if not k:
        return side.D[:, :0], side.I[:, :0]
    D, I = np.empty((len(side.I), k), np.float32), np.empty((len(side.I), k), np.int64)
    for a in range(0, len(I), 16384):  # in slices: the sort's temporaries stay small
        e, i = side.E[a : a + 16384], side.I[a : a + 16384]
        order = np.lexsort((np.where(i < 0, _IMAX, i), -e), axis=1)[:, :k]
        D[a : a + len(e)], I[a : a + len(e)] = np.take_along_axis(e, order, 1), np.take_along_axis(i, order, 1)
    if side.c < n_other:  # some entries were left out of the candidates
        again = np.flatnonzero(side.left_out(other) >= D[:, k - 1])
        for a in range(0, len(again), block_rows):  # a block of query rows at a time
            rows = again[a : a + block_rows]
            q = _take_rows(qs, rows, block_rows)
            (D[rows], I[rows]), _ = exact_search(ArrayBlocks(q), db, k, block_rows, None, both=False, prec="fp32")
    return D, I


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
