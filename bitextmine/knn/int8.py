"""Int8 estimates for the by-list IVF scan (:mod:`.bylist`), on CPUs with int8 matrix units.

Every vector is stored as int8 codes ``a`` and a scale ``s`` (x ~ s a, ``s = max |x_i| / 127``):
each query row with its own scale, each inverted list with one scale for all its rows. The scan
estimates q.x by ``s_q s_l (a_q . a_x)``, an exact integer product (``torch._int_mm``: int32 sums
of d products of at most 127^2: exact below d = 133,000), which oneDNN runs on VNNI / AMX int8
units at about twice the bf16 rate (``benchmarks/mine_speed.py``; AVX512-VNNI EPYC, one thread, a
list of ~100 rows against 6,250 queries: 340-410 GOP/s against 180-210 GFLOP/s in bf16).

The estimate's error is bounded without any assumption on the data: with q~ = s_q a_q and
x~ = s_l a_x, q.x - q~.x~ = (q - q~).x + q~.(x - x~), so by Cauchy-Schwarz
|q.x - q~.x~| <= |q - q~| |x| + |q~| |x - x~| (:func:`slack`): each query's residual norm and the
norm of its codes, each list's largest row norm and largest residual norm, all rounded up. An entry
whose estimate plus that bound (and float32's own rounding of the exact value) stays below its
query's bound cannot enter the top-k; the others are computed again pair by pair in float32, so the
neighbours and similarities are those of the float32 scan, bit for bit.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: CPU flags of int8 matrix units: the scan uses int8 where one is present (:func:`.tiles.scan_precision`).
INT8_FLAGS = ("amx_int8", "avx512_vnni")
#: Quantised lists kept between query blocks, in bytes (one byte a coordinate): 1M x 384-d lists take 384 MB;
#: lists past it are quantised again at every visit.
LIST_CACHE_BYTES = 512 << 20
#: Lists quantised together (one pass over many small lists costs far less than a pass over each).
LISTS_AT_ONCE = 32
#: Relative margin added to every norm, beyond float32's own (:func:`quantize`).
_REL = 1e-6
#: int32 sums of d products of at most 127^2 are exact up to this dimension.
MAX_DIM = (2**31 - 1) // 127**2
#: ... and float32 sums of them (every partial sum an integer below 2^24) up to this one (1,040).
CODES_DIM = (2**24 - 1) // 127**2
_ready: dict[str, bool] = {}


def int8_ready() -> bool:
    """Whether torch multiplies int8 matrices exactly on this machine (checked once, on full-range codes):
    without VNNI / AMX, oneDNN's int8 kernels sum pairs of products in saturating 16-bit lanes and return
    wrong products for codes near +-127 (tested under ``ONEDNN_MAX_CPU_ISA=AVX2``), so int8 is refused there."""
    if "ok" not in _ready:
        try:
            import torch

            rng = np.random.default_rng(0)
            a = rng.integers(-127, 128, (80, 384), dtype=np.int8)
            b = rng.integers(-127, 128, (112, 384), dtype=np.int8)
            a[0], b[0] = 127, -127  # the extremes, where 16-bit sums saturate
            got = torch._int_mm(torch.from_numpy(a), torch.from_numpy(b).T).numpy()
            _ready["ok"] = bool(np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64).T))
        except Exception:  # no torch, or a build without int8 products
            _ready["ok"] = False
    return _ready["ok"]


def quantize(x: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """``x`` (n, d) float32 as int8 codes: ``(codes, scale, residual, coded_norm, norm)``: one scale a row,
    or one for each group of consecutive rows (``groups``: their sizes); ``scale`` a float64 array (one
    a row or a group), ``residual`` = |x - s a|, ``coded_norm`` = |s a|, ``norm`` = |x| float64 a row, rounded up.

    The norms are taken in float32 in code units (u = x / s, |u_i| <= 127: no square overflows), then scaled:
    u's rounding (2^-24 |u_i| a coordinate; the residual u - a is then exact), float32's sums (d 2^-23
    relative) and squares too small for float32 (rows far below their group's scale) are added; twice as fast
    as float64 norms. ``coded_norm`` is exact (integer sums)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    d = t.shape[1]
    top = own = t.abs().amax(dim=1)
    if groups is not None:  # the largest of each group's rows, for all of them
        top = torch.from_numpy(np.maximum.reduceat(own.numpy(), np.cumsum(groups) - groups))
    s = torch.where(top > 0, top / 127.0, torch.ones_like(top))
    rows = s if groups is None else torch.from_numpy(np.repeat(s.numpy(), groups))
    u = t / rows[:, None]
    codes = torch.round(u).clamp_(-127, 127)
    sums = 1 + d * 2.0**-23 + _REL  # float32 sums of d squares, rounded up
    lost = np.sqrt(d) * 2.0**-63 * (own.numpy() > 0)  # squares that underflow (a row far below its group's scale)
    norm = torch.linalg.vector_norm(u, dim=1).double().numpy() * sums + lost
    # u's own rounding (2^-24 |u_i| a coordinate) moves the residual by at most 2^-24 |u|
    resid = torch.linalg.vector_norm(u.sub_(codes), dim=1).double().numpy() * sums + 2.0**-23 * norm + lost
    coded = np.sqrt(_square_sums(codes)) * (1 + _REL)  # |a|^2 exact
    codes = codes.to(torch.int8)
    scale = rows.double().numpy()
    return codes.numpy(), s.double().numpy(), resid * scale, coded * scale, norm * scale


def _square_sums(codes: Any) -> np.ndarray:
    """Each row's sum of squares of integer-valued float32 ``codes`` (|a_i| <= 127), exactly, as float64: in
    float32 while every partial sum stays below 2^24 (d <= 1,040: exact whatever the order; 0.24 ms for a block
    of 4,096 x 384, one thread, against 13.7 for torch's int32 sum), else in float64."""
    if codes.shape[1] <= CODES_DIM:
        return (codes * codes).sum(dim=1).double().numpy()
    c = codes.double()
    return (c * c).sum(dim=1).numpy()


def norm_term(q_resid: np.ndarray, q_norm: np.ndarray, d: int) -> np.ndarray:
    """A query's factor of the list's largest row norm in :func:`slack`: its residual norm plus float32's
    rounding of the exact product (d 2^-24 |q| |x|)."""
    return q_resid + (2 * d * 2.0**-24 * 1.01) * q_norm


def slack(q_term: np.ndarray, q_coded: np.ndarray, x_norm: float, x_resid: float) -> np.ndarray:
    """How far the exact float32 inner product of a query with a list row may lie above its int8 estimate:
    the Cauchy-Schwarz bound (module doc) plus float32's rounding of the exact value (``q_term``: :func:`norm_term`), 1e-7."""
    return q_term * x_norm + q_coded * x_resid + 1e-7


class Int8Queries:
    """A query block's int8 codes (rows of 8-byte words, for fast row gathers) and their bounds' terms."""

    def __init__(self, xq: np.ndarray, workers: Any) -> None:
        parts = workers.map(lambda sl: quantize(xq[sl]), workers.slices(len(xq)))
        codes, self.scale, resid, self.coded, norm = (np.concatenate(p) for p in zip(*parts))
        self.d = codes.shape[1]
        self.term = norm_term(resid, norm, self.d)  # of every bound: computed once a block
        self.words = codes.view(np.uint64) if self.d % 8 == 0 else codes

    def gather(self, who: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.take(self.words, who, axis=0).view(np.int8))


class Int8Lists:
    """Each inverted list's int8 codes (torch, one scale a list) with its largest row and residual norms.
    Quantised at the start of a search, many lists at a time on the worker threads, when they fit
    :data:`LIST_CACHE_BYTES` (one byte a coordinate); else each list again at every visit."""

    def __init__(self, reader: Any, sizes: np.ndarray, workers: Any) -> None:
        self.reader = reader
        self.kept: dict[int, tuple[Any, float, float, float]] = {}
        if int(sizes.sum()) * int(reader.d) <= LIST_CACHE_BYTES:
            full = np.flatnonzero(sizes > 0)
            for part in workers.map(self._quantize, np.array_split(full, max(1, len(full) // LISTS_AT_ONCE))):
                self.kept.update(part)

    def _quantize(self, ls: np.ndarray) -> dict[int, tuple[Any, float, float, float]]:
        import torch

        ls = ls.tolist()
        if not ls:
            return {}
        vecs = [self.reader.read(l)[0] for l in ls]
        n = np.array([len(v) for v in vecs])
        codes, s, resid, _, norm = quantize(np.concatenate(vecs), groups=n)
        at = np.cumsum(n) - n
        big_norm, big_resid = np.maximum.reduceat(norm, at), np.maximum.reduceat(resid, at)
        codes = torch.from_numpy(codes)
        return {l: (codes[a : a + m], float(s[i]), float(big_norm[i]), float(big_resid[i]))
                for i, (l, a, m) in enumerate(zip(ls, at.tolist(), n.tolist()))}

    @staticmethod
    def queries(xq: np.ndarray, workers: Any) -> Int8Queries:
        return Int8Queries(xq, workers)

    def entries(self, q: Any, who: np.ndarray, l: int, thr: np.ndarray, exact: Any) -> tuple[np.ndarray, ...] | None:
        return entries(q, who, l, self, thr, exact)

    def get(self, l: int) -> tuple[Any, float, float, float]:
        """``(codes, scale, largest row norm, largest residual norm)`` of list ``l``."""
        got = self.kept.get(l)
        return got if got is not None else self._quantize(np.array([l]))[l]


def integer_need(bound: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The integer products p an entry needs for its estimate ``scale * p`` to reach ``bound`` (int32, a query):
    est >= bound  <=>  p >= bound / scale; one below the floor, for float rounding; NaN keeps all."""
    ratio = bound / scale
    np.floor(ratio, out=ratio)
    ratio[np.isnan(ratio)] = -np.inf
    return (np.clip(ratio, -2.0**31 + 2, 2.0**31 - 2, out=ratio) - 1).astype(np.int32)


def entries(q: Any, who: np.ndarray, l: int, lists: Int8Lists, thr: np.ndarray, exact: Any) -> tuple[np.ndarray, ...] | None:
    """The entries of list ``l`` for the queries ``who`` (bounds ``thr``) whose int8 estimate plus its
    :func:`slack` reaches the bound, computed again pair by pair (``exact``, :func:`.bylist._exact`), those
    that reach it: (query rows, ids, similarities), or None."""
    import torch

    iq: Int8Queries = q.int8
    codes, s_l, x_norm, x_resid = lists.get(l)
    need = integer_need(thr - slack(iq.term[who], iq.coded[who], x_norm, x_resid), s_l * iq.scale[who])
    prod = torch._int_mm(iq.gather(who), codes.T)  # (queries, list rows) int32: a query's row is contiguous
    cols = np.flatnonzero(prod.amax(dim=1).numpy() >= need)
    if not len(cols):
        return None
    sub = prod.numpy()[cols]  # (queries kept, list rows)
    j, c = np.divmod(np.flatnonzero(sub >= need[cols][:, None]), sub.shape[1])  # by query, then row
    xb, ids = lists.reader.read(l)
    rows, cand, v = exact(q.a[who[cols]], xb, j, c)
    ok = v >= thr[cols[rows]]
    return who[cols[rows[ok]]], ids[cand[ok]], v[ok]
