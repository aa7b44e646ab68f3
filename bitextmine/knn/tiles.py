"""One tile of the exact search: the similarity block of some query rows and some database rows,
and the entries of it that may still belong to the top-k of their row or of their column.

Pruning without a full sort (:func:`candidates`): an entry is kept only if it reaches a lower bound
of its row's (column's) final k-th value. The bounds come from the tiles already merged (the k-th
value of the running top-k lists, :mod:`.pairwise`) or, where a row or column has none yet, from the
tile itself: the rows are cut into groups and the k-th largest group maximum of a column is a lower
bound of that column's k-th largest value (the k groups with the largest maxima hold k distinct
values at least that large); the same for the rows with column groups. Once the running lists are
full, few entries of a tile pass (a handful a row over a whole sweep), so a tile costs its product
plus one comparison pass. The kept entries are merged by (row or column, -similarity, id)
(:func:`top_of_segments`), so equal similarities keep the lower id, whatever the tile.

Precision (:func:`precision`): ``"fp32"`` computes tiles with numpy's BLAS (float32 throughout).
``"bf16"`` computes them with torch in bfloat16 (oneDNN runs this on AMX / AVX512-BF16 units, about
twice the fp32 rate on AVX512-BF16, several times on AMX) and keeps ``BF16_EXTRA`` more candidates a
row and a column; the candidates that may reach the top-k are re-scored exactly in float32
(:func:`rescore`, bounded by :func:`bf16_slack`), so the neighbours are those of fp32 search and the
similarities agree with it to float32 rounding (the re-score sums in another order: a margin score can
differ in its sixth decimal). An entry left out of the candidates could beat the final k-th neighbour only if its
bf16 score were within the rounding bound of it; such rows and columns are recomputed in float32 at
the end of the search (``pairwise.exact_search``).
``"auto"`` picks bf16 where the CPU has bf16 matrix units (AVX512-BF16 or AMX: 1.7x and ~5x the
fp32 rate) and fp32 elsewhere (on AVX2-only machines bf16 is emulated and slower), from the CPU
flags alone: the two paths can differ in the last float32 bits of a score, and a choice timed at
run time could flip under load and give one machine two different outputs for the same input. The
choice can be forced with the environment variable ``BITEXTMINE_KNN_PRECISION`` or :data:`PRECISION`.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

# torch's bf16 products go through oneDNN, which keeps a compiled primitive (with its buffers) for
# each distinct shape, 1,024 by default; the by-list scan multiplies lists of ever-changing sizes, so
# that cache grew the scan's resident memory without bound (200k x 200k: peak 3.5 GiB, 2.8 with 64). A few dozen cover the tiles' fixed shapes and an
# encoder batch's. Read by oneDNN at its first use: an earlier use in the process, or the user's own
# setting, wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

#: "auto", "fp32", "bf16" or "int8" (the environment variable BITEXTMINE_KNN_PRECISION wins when set);
#: "int8" applies to the by-list scan's estimates (:func:`scan_precision`), the exact tiles then take "auto".
PRECISION = "auto"
#: candidates kept beyond k per row and column on the bf16 path, re-scored in float32.
BF16_EXTRA = 16
#: rows of a row group / columns of a column group for the tile's own bounds.
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


def _wanted() -> str:
    return os.environ.get("BITEXTMINE_KNN_PRECISION", PRECISION).strip().lower()


def precision() -> str:
    """The precision of exact tiles on this machine: "fp32" or "bf16" (from the CPU flags, the same in every process)."""
    want = _wanted()
    if want in ("fp32", "bf16"):
        return want
    if "auto" not in _chosen:
        _chosen["auto"] = "bf16" if set(BF16_FLAGS) & cpu_flags() and _has_torch() else "fp32"
    return _chosen["auto"]


def scan_precision() -> str:
    """The precision of the by-list scan's estimates: "int8" where the CPU has int8 matrix units
    (:data:`.int8.INT8_FLAGS`: twice the bf16 rate) and torch multiplies int8, else :func:`precision`.
    Every entry that may enter a top-k is computed again in float32, so the choice changes the speed only,
    never a neighbour or a bit of a similarity; ``BITEXTMINE_KNN_PRECISION`` = fp32 / bf16 / int8 forces it, and
    ``BITEXTMINE_KNN_SCAN_PRECISION`` (auto / fp32 / bf16 / int8) the scan alone, whatever the tiles take."""
    from .int8 import INT8_FLAGS, int8_ready

    want = os.environ.get("BITEXTMINE_KNN_SCAN_PRECISION", "").strip().lower() or _wanted()
    if want in ("fp32", "bf16"):
        return want
    if want == "int8" or set(INT8_FLAGS) & cpu_flags():
        return "int8" if int8_ready() else precision()  # never int8 products that are not exact
    return precision()


def torch_fp32() -> bool:
    """Whether float32 estimate products go through torch (MKL / oneDNN): when torch's float32
    matrix products are IEEE float32 (not lowered to bf16 / tf32 by ``set_float32_matmul_precision``
    or ``torch.backends.mkldnn.matmul.fp32_precision``), so :func:`.bylist._fp32_slack` bounds their error."""
    try:
        import torch
    except ImportError:
        return False
    mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    lowered = getattr(mkldnn, "fp32_precision", "none") not in ("none", "ieee")
    return torch.get_float32_matmul_precision() == "highest" and not lowered


def estimate32(a: np.ndarray, b: np.ndarray, via_torch: bool) -> np.ndarray:
    """``a @ b.T`` in float32, for estimates that are re-scored pair by pair (the by-list scan), through
    torch when ``via_torch`` (the caller's :func:`torch_fp32`, decided once a search), else numpy. On the
    AVX2 EPYC, one thread, the scan's shapes (thousands of query rows against a list of 64-256 rows) run
    31-35 GFLOP/s in torch's BLAS (MKL) against 12-29 in numpy's OpenBLAS in a fresh process
    (``benchmarks/scan_blas.py``)."""
    if not (via_torch and a.flags.writeable and b.flags.writeable):  # torch wraps writable arrays only
        return a @ b.T
    import torch

    return torch.mm(torch.from_numpy(a), torch.from_numpy(b).T).numpy()


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def product(xa: np.ndarray, ya: np.ndarray, xt: Any = None, yt: Any = None, xoff: Any = None, yoff: Any = None) -> np.ndarray:
    """The tile ``xa @ ya.T`` as float32: numpy's BLAS, or on the bf16 path its estimate from the
    centred bf16 tensors ``xt``, ``yt`` (x - mu, y - mu) plus the rows' and columns' float32
    offsets (x.mu, y.mu - mu.mu): x.y = (x - mu).(y - mu) + x.mu + y.mu - mu.mu."""
    if xt is None:
        return xa @ ya.T
    import torch

    S = torch.mm(xt, yt.T).float().numpy()
    if xoff is not None:  # None: not centred (mu = 0)
        S += xoff[:, None]
        S += yoff[None, :]
    return S


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


def _own_bound(S: np.ndarray, bound: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``bound`` (running lower bounds of the k-th values), raised by the tile's own where any is unset (-inf)."""
    if k < 1 or not np.isneginf(bound).any():
        return bound
    own = _group_bound(S, k, axis)
    return bound if own is None else np.maximum(bound, own)


def candidates(S: np.ndarray, rows: np.ndarray, cols: np.ndarray | None, kr: int, kc: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """The entries of tile ``S`` that may be in the top-``kr`` of their row or the top-``kc`` of their column.

    ``rows`` (m,), ``cols`` (n,) or None: lower bounds of the rows' / columns' final k-th values
    from earlier tiles (-inf where there is none yet: the tile's own bound is used). Returns
    ``((r, c, v) for the rows, (r, c, v) for the columns or None)``, each in row-major order.
    """
    rows = _own_bound(S, rows, kr, 1)
    mask = S >= rows[:, None]
    if cols is not None:
        cols = _own_bound(S, cols, kc, 0)
        mask |= S >= cols[None, :]
    flat = np.flatnonzero(mask)
    r, c = np.divmod(flat, S.shape[1])
    v = S.ravel()[flat]
    fr = v >= rows[r]
    if cols is None:
        return (r[fr], c[fr], v[fr]), None
    fc = v >= cols[c]
    return (r[fr], c[fr], v[fr]), (r[fc], c[fc], v[fc])


def _sort_key(seg: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """int64 keys ordering entries by (segment, -value): segment in the high 32 bits, the float32
    bits of -value mapped to an order-preserving integer in the low 32."""
    f = (0.0 - vals.astype(np.float32)).view(np.int32).astype(np.int64)  # 0.0 - v: no -0.0 for v = 0
    f = np.where(f < 0, f ^ 0x7FFFFFFF, f) + 2**31  # order-preserving, in [0, 2^32)
    return (seg.astype(np.int64) << 32) | f


def ranked(seg: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries sorted by (segment, -value), equal keys in their given order: ``(order, sorted segments,
    rank of each sorted entry within its segment)``."""
    order = np.argsort(_sort_key(seg, vals), kind="stable")
    seg = seg[order]
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if len(seg) else np.zeros(0, np.int64)
    rank = np.arange(len(seg), dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, len(seg)]))
    return order, seg, rank


def top_of_segments(seg: np.ndarray, vals: np.ndarray, n: int, k: int) -> np.ndarray:
    """(n, k) positions of the top-k entries of each of n segments by (-vals, position); every
    segment has >= k entries (a stable sort keeps equal values in their given order)."""
    order = np.argsort(_sort_key(seg, vals), kind="stable")
    counts = np.bincount(seg, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order[starts[:, None] + np.arange(k)[None, :]]


def norm4(x: np.ndarray) -> np.ndarray:
    """Each row's 4-norm, rounded up (float32 sums of at most a few thousand terms err by < 1e-4
    relative): the input-rounding term of :func:`bf16_slack`."""
    x2 = x * x
    return np.sqrt(np.sqrt(np.einsum("ij,ij->i", x2, x2))).astype(np.float64) * (1 + 1e-4)


def bf16_slack(centred: np.ndarray, n4_product: np.ndarray) -> np.ndarray:
    """How far from its bf16 estimate an fp32 inner product may lie, given the centred product
    (x - mu).(y - mu) (or a bound of its size) and the product of the centred vectors' 4-norms.

    Output rounding of the centred product: at most 2^-8 of its size. Input rounding: a sum of
    per-coordinate errors bounded by 2^-7 |x_i y_i| (centred coordinates); by Hoeffding it exceeds
    8 * 2^-7 * sqrt(sum x_i^2 y_i^2) with probability below 2e^-32, and sqrt(sum x_i^2 y_i^2)
    <= ||x||_4 ||y||_4 (Cauchy-Schwarz). Plus 1e-6 for the float32 sums and offsets. The estimate
    plus its slack grows with the estimate (for fixed offsets).
    """
    return 2.0**-8 * abs(centred) + 8 * 2.0**-7 * n4_product + 1e-6  # abs(): numpy arrays and torch tensors


def rescore(q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """(r, c) float32 inner products of each query row q[i] (r, d) with its candidates cand[i] (r, c, d)."""
    return np.einsum("rd,rcd->rc", q, cand)
