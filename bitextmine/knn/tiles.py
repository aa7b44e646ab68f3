"""One tile of the exact search: the similarity block of some queries and some database rows,
reduced to the top-k of its rows and, for :func:`knn_pair`, of its columns too.

Selection without a full sort: the rows of the tile are cut into groups and the k-th largest
group maximum of a column is a lower bound of that column's k-th largest value (the k groups
with the largest maxima hold k distinct values at least that large); the same for the rows with
column groups. Both bounds cost a reduction that numpy vectorises along the contiguous axis; the
few entries at or above either bound (about 3 a row and a column on embeddings) are then sorted
by (row or column, -similarity, id), so equal similarities keep the lower id, whatever the tile.

Precision (:func:`precision`): ``"fp32"`` computes tiles with numpy's BLAS (float32 throughout).
``"bf16"`` computes them with torch in bfloat16 (oneDNN runs this on AMX / AVX512-BF16 units,
several times the fp32 rate), keeps ``BF16_EXTRA`` more candidates a row and a column, and
re-scores them exactly in float32, so the neighbours and similarities are those of fp32 search.
An excluded entry could beat the final k-th neighbour only if its bf16 score were within the
rounding bound of it (:func:`_bf16_slack`); such rows and columns are recomputed in float32
at the end of the search (``pairwise.exact_search``).
``"auto"`` picks bf16 where the CPU has bf16 matrix units and a short measurement confirms it is
faster (so not on AVX2-only machines, where bf16 is emulated and slower than fp32); the choice
can be forced with the environment variable ``BITEXTMINE_KNN_PRECISION`` or :data:`PRECISION`.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

#: "auto", "fp32" or "bf16" (the environment variable BITEXTMINE_KNN_PRECISION wins when set).
PRECISION = "auto"
#: candidates kept beyond k per row and column on the bf16 path, re-scored in float32.
BF16_EXTRA = 8
#: rows of a row group / columns of a column group for the selection bounds.
GROUP = 32
BF16_FLAGS = ("amx_bf16", "avx512_bf16")

_chosen: dict[str, str] = {}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def precision() -> str:
    """The precision of exact tiles on this machine: "fp32" or "bf16" (measured once a process)."""
    want = os.environ.get("BITEXTMINE_KNN_PRECISION", PRECISION).strip().lower()
    if want in ("fp32", "bf16"):
        return want
    if "auto" not in _chosen:
        _chosen["auto"] = _measure() if set(BF16_FLAGS) & cpu_flags() else "fp32"
    return _chosen["auto"]


def _measure() -> str:
    """bf16 if a torch bf16 product runs at least 1.5x numpy's fp32 one (one thread, best of 3)."""
    try:
        import torch
    except ImportError:
        return "fp32"
    from .workers import _single_blas

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1024, 384), dtype=np.float32), rng.standard_normal((2048, 384), dtype=np.float32)
    ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()

    def best(f) -> float:
        f()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    with _single_blas():
        fp32 = best(lambda: a @ b.T)
        bf16 = best(lambda: torch.mm(ta, tb.T))
    return "bf16" if bf16 * 1.5 <= fp32 else "fp32"


def _group_bound(S: np.ndarray, k: int, axis: int) -> np.ndarray | None:
    """A lower bound of the k-th largest value of every row (axis=1) or column (axis=0), or None (take all)."""
    n = S.shape[axis]
    h = min(GROUP, n // k) if k else 0
    if h < 1 or k < 1:
        return None
    g = n // h
    if axis == 1:  # column groups {j, j+g, j+2g, ...}: reduce over the middle axis, contiguous inner
        part = S if g * h == n else np.ascontiguousarray(S[:, : g * h])
        gmax = part.reshape(S.shape[0], h, g).max(axis=1)
    else:
        part = S[: g * h]
        gmax = part.reshape(h, g, S.shape[1]).max(axis=0).T
    return np.partition(gmax, g - k, axis=1)[:, g - k]


def _sort_key(seg: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """int64 keys ordering entries by (segment, -value): segment in the high 32 bits, the float32
    bits of -value mapped to an order-preserving integer in the low 32."""
    f = (0.0 - vals.astype(np.float32)).view(np.int32).astype(np.int64)  # 0.0 - v: no -0.0 for v = 0
    f = np.where(f < 0, f ^ 0x7FFFFFFF, f) + 2**31  # order-preserving, in [0, 2^32)
    return (seg.astype(np.int64) << 32) | f


def _top_of_segments(seg: np.ndarray, vals: np.ndarray, ids: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each of n segments by (-vals, ids); every segment has >= k entries and, within a
    segment, the entries come in increasing id (a stable sort keeps that order among equal values)."""
    order = np.argsort(_sort_key(seg, vals), kind="stable")
    counts = np.bincount(seg, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    take = order[starts[:, None] + np.arange(k)[None, :]]
    return vals[take], ids[take]


def select(S: np.ndarray, kr: int, kc: int) -> tuple[Any, Any]:
    """Row top-``kr`` (values, column indices) and, if ``kc``, column top-``kc`` (values, row indices) of S.

    Ties are broken by the lower index. ``kr <= S.shape[1]`` and ``kc <= S.shape[0]``.
    """
    m, n = S.shape
    tr = _group_bound(S, kr, 1)
    tc = _group_bound(S, kc, 0) if kc else None
    if tr is None or (kc and tc is None):
        flat = np.arange(m * n)
    else:
        mask = S >= tr[:, None]
        if kc:
            mask |= S >= tc[None, :]
        flat = np.flatnonzero(mask)
    r, c = np.divmod(flat, n)
    v = S.ravel()[flat]
    keep = slice(None) if tr is None else v >= tr[r]
    rows = _top_of_segments(r[keep], v[keep], c[keep], m, kr)
    if not kc:
        return rows, None
    keep = slice(None) if tc is None else v >= tc[c]
    return rows, _top_of_segments(c[keep], v[keep], r[keep], n, kc)


def tile_fp32(xt: np.ndarray, yt: np.ndarray, kr: int, kc: int) -> tuple[Any, ...]:
    """:func:`select` of the float32 product ``xt @ yt.T`` (and no bounds: nothing left out)."""
    return (*select(xt @ yt.T, kr, kc), None, None)


def _norm4(x: np.ndarray) -> np.ndarray:
    x2 = x.astype(np.float64) ** 2
    return np.sqrt(np.sqrt((x2 * x2).sum(axis=1)))


def _bf16_slack(b: np.ndarray, n4_own: np.ndarray, n4_other: float) -> np.ndarray:
    """How far above its bf16 score ``b`` an fp32 inner product may lie (bf16 inputs, bf16 output).

    Output rounding: half a bf16 unit in the last place of b. Input rounding: a sum of
    per-coordinate errors bounded by 2^-7 |x_i y_i|; by Hoeffding it exceeds
    8 * 2^-7 * sqrt(sum x_i^2 y_i^2) with probability below 2e^-32, and sqrt(sum x_i^2 y_i^2)
    <= ||x||_4 ||y||_4 (Cauchy-Schwarz). Plus 1e-6 for the float32 sums. b + slack(b) grows with b.
    """
    _, e = np.frexp(b)
    return np.ldexp(1.0, e - 9) + 8 * 2.0**-7 * n4_own * n4_other + 1e-6


def _rescore(x: np.ndarray, y: np.ndarray, bv: np.ndarray, bi: np.ndarray, k: int, n4x: np.ndarray, n4y_max: float):
    """Candidates (bf16 scores ``bv``, indices ``bi`` into y) of each x row re-scored in fp32, top-k
    kept, and the most an entry left out may score (-inf when every entry was a candidate)."""
    exact = np.einsum("rcd,rd->rc", y[bi], x, dtype=np.float32, casting="same_kind").astype(np.float32)
    order = np.lexsort((bi, -exact), axis=1)[:, :k]
    ev, ei = np.take_along_axis(exact, order, 1), np.take_along_axis(bi, order, 1)
    if bv.shape[1] >= y.shape[0]:
        return ev, ei, np.full(len(x), -np.inf)
    last = bv[:, -1].astype(np.float64)
    return ev, ei, last + _bf16_slack(last, n4x, n4y_max)


def tile_bf16(xt: np.ndarray, yt: np.ndarray, xb: Any, yb: Any, kr: int, kc: int) -> tuple[Any, ...]:
    """Like :func:`tile_fp32` from a bf16 product, the candidates re-scored in fp32, plus for every
    row and column the most an entry left out may score (``exact_search`` recomputes in fp32 the
    rows and columns where that could beat the final k-th neighbour).

    ``xb``, ``yb``: the tile's rows as torch bfloat16 tensors (``xt``, ``yt`` as float32 arrays).
    """
    import torch

    m, n = len(xt), len(yt)
    S = torch.mm(xb, yb.T).float().numpy()
    er, ec = min(kr + BF16_EXTRA, n), (min(kc + BF16_EXTRA, m) if kc else 0)
    (rv, ri), cols = select(S, er, ec)
    del S
    n4x, n4y = _norm4(xt), _norm4(yt)
    rv, ri, rub = _rescore(xt, yt, rv, ri, kr, n4x, float(n4y.max()))
    if not kc:
        return (rv, ri), None, rub, None
    cv, ci, cub = _rescore(yt, xt, cols[0], cols[1], kc, n4y, float(n4x.max()))
    return (rv, ri), (cv, ci), rub, cub
