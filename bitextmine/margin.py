"""Margin-based scoring and pair selection over k-nearest-neighbour lists (plain numpy).

This follows the semantics of LASER's ``mine_bitexts.py`` (Artetxe & Schwenk, 2019):

* embeddings are L2-normalised, so the similarity of two sentences is the inner
  product ``cos(x_i, y_j)``;
* ``x2y_mean[i]`` is the mean similarity of source ``i`` to its ``k`` nearest targets,
  ``y2x_mean[j]`` the mean similarity of target ``j`` to its ``k`` nearest sources;
* the score of a candidate pair is ``margin(cos(x_i, y_j), (x2y_mean[i] + y2x_mean[j]) / 2)``
  with ``ratio: a / b``, ``distance: a - b`` or ``absolute: a``;
* a strategy turns the scored candidate lists into pairs (see :class:`Strategy`).

Determinism rules (everything below is exact and reproducible; tests rely on it):

* Means are computed in float64, summing the valid neighbour similarities left to right
  (column order) and dividing by their number.
* Scores are float64; ``b = (x_mean[i] + y_mean[j]) / 2`` and IEEE division, so a zero
  denominator gives ``±inf`` (or NaN for ``0 / 0``), exactly as numpy would.
* A neighbour column whose id is ``-1`` (FAISS pads result lists that way when an
  approximate index finds fewer than ``k`` hits) is ignored everywhere: it does not count
  in the mean and is never a candidate. A row with no valid neighbour has mean NaN.
  A candidate whose score is NaN is ignored like a padding column.
* Best candidate of a row: the highest score; equal scores go to the smallest id.
* Output order: score descending, by a stable sort of the strategy's natural order, so
  equal scores keep that order: source index for ``forward`` and ``intersect``, target
  index for ``backward``, and for ``max`` the pool order (all forward-best pairs by source
  index, then all backward-best pairs by target index), which is also the greedy order.

This module is plain numpy: the search that produces the k-NN lists is :mod:`bitextmine.knn`, and
the pipeline that joins the two is :mod:`bitextmine.mining`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
import numpy as np

from .errors import InputError

__all__ = [
    "Candidates",
    "Margin",
    "Strategy",
    "apply_margin",
    "knn_means",
    "parse_margin",
    "parse_strategy",
    "score_candidates",
    "select",
]


class Margin(str, Enum):
    """How a similarity ``a`` is compared with the neighbourhood mean ``b``."""

    RATIO = "ratio"  # a / b
    DISTANCE = "distance"  # a - b
    ABSOLUTE = "absolute"  # a

    @classmethod
    def _missing_(cls, value: object) -> Margin | None:
        if isinstance(value, str):
            for m in cls:
                if m.value == value.lower():
                    return m
        return None


class Strategy(str, Enum):
    """How candidate lists become pairs.

    forward:   for each source, its best target.
    backward:  for each target, its best source.
    intersect: pairs that are both the forward best of their source and the backward best of their target.
    max:       the forward-best and backward-best pairs pooled, sorted by score, accepted greedily
               while neither side of a pair has been used (one-to-one output).
    """

    FORWARD = "forward"
    BACKWARD = "backward"
    INTERSECT = "intersect"
    MAX = "max"

    @classmethod
    def _missing_(cls, value: object) -> Strategy | None:
        if isinstance(value, str):
            v = {"fwd": "forward", "bwd": "backward"}.get(value.lower(), value.lower())  # LASER's names
            for s in cls:
                if s.value == v:
                    return s
        return None


def parse_margin(value: Margin | str) -> Margin:
    """A :class:`Margin` from its name (any case); InputError naming the choices otherwise."""
    try:
        return Margin(value)
    except ValueError:
        raise InputError(f"unknown {{param}} {value!r}; choose one of: {', '.join(m.value for m in Margin)}", param="margin") from None


def parse_strategy(value: Strategy | str) -> Strategy:
    """A :class:`Strategy` from its name (any case, LASER's fwd/bwd too); InputError otherwise."""
    try:
        return Strategy(value)
    except ValueError:
        raise InputError(
            f"unknown {{param}} {value!r}; choose one of: {', '.join(s.value for s in Strategy)}", param="strategy"
        ) from None


@dataclass
class Candidates:
    """Mined pairs, sorted by score descending.

    src:   (n,) int64 source row indices.
    tgt:   (n,) int64 target row indices.
    score: (n,) float64 margin scores (unit depends on the margin: a ratio, a cosine difference or a cosine).
    """

    src: np.ndarray
    tgt: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.src)

    def above(self, threshold: float) -> Candidates:
        """The pairs whose score is ``>= threshold`` (order kept)."""
        keep = self.score >= threshold
        return Candidates(self.src[keep], self.tgt[keep], self.score[keep])

    def head(self, n: int) -> Candidates:
        """The ``n`` best pairs (candidates are sorted best first)."""
        return Candidates(self.src[:n], self.tgt[:n], self.score[:n])

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


def apply_margin(a: np.ndarray, b: np.ndarray, margin: Margin | str = Margin.RATIO) -> np.ndarray:
    """Elementwise margin of similarities ``a`` against neighbourhood means ``b`` (broadcast, float64)."""
    m = parse_margin(margin)
    a = np.asarray(a, dtype=np.float64)
    if m is Margin.ABSOLUTE:
        return a + np.zeros_like(np.asarray(b, dtype=np.float64))  # keep the broadcast shape
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return a / b if m is Margin.RATIO else a - b


def knn_means(sims: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Mean similarity of each row's neighbours.

    sims: (n, k) similarities (cosines), best first (order only fixes the summation order).
    ids:  (n, k) neighbour ids; columns with id < 0 are FAISS padding and are skipped. Without
          ``ids``, padding is recognised by its value (-inf, -FLT_MAX or NaN).
    Returns (n,) float64; NaN for a row with no valid neighbour.
    """
    sims = np.asarray(sims)
    if sims.ndim != 2:
        raise ValueError(f"sims must be 2-D (n, k), got shape {sims.shape}")
    if ids is not None:
        ids = np.asarray(ids)
        if ids.shape != sims.shape:
            raise ValueError(f"ids shape {ids.shape} differs from sims shape {sims.shape}")
        valid = ids >= 0
    else:
        valid = sims > np.finfo(np.float32).min
    total = np.zeros(sims.shape[0], dtype=np.float64)
    for c in range(sims.shape[1]):  # left to right, vectorised over rows (k is small)
        total += np.where(valid[:, c], sims[:, c].astype(np.float64), 0.0)
    count = valid.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def score_candidates(
    sims: np.ndarray,
    ids: np.ndarray,
    x_mean: np.ndarray,
    y_mean: np.ndarray,
    margin: Margin | str = Margin.RATIO,
) -> np.ndarray:
    """Margin scores of each row's candidates.

    sims:   (n, k) similarity of row ``i`` to candidate ``ids[i, c]``.
    ids:    (n, k) int candidate ids into the other side; -1 = padding.
    x_mean: (n,) neighbourhood means of the rows (this side).
    y_mean: (m,) neighbourhood means of the other side, indexed by ``ids``.
    Returns (n, k) float64 ``margin(sims, (x_mean[i] + y_mean[ids]) / 2)``; NaN at padding.
    """
    sims = np.asarray(sims)
    ids = np.asarray(ids)
    if sims.shape != ids.shape or sims.ndim != 2:
        raise ValueError(f"sims {sims.shape} and ids {ids.shape} must be the same 2-D shape")
    x_mean = np.asarray(x_mean, dtype=np.float64)
    y_mean = np.asarray(y_mean, dtype=np.float64)
    valid = ids >= 0
    if sims.size and valid.any() and int(ids.max()) >= len(y_mean):
        raise ValueError(f"candidate id {int(ids.max())} out of range for {len(y_mean)} means")
    ym = y_mean[np.where(valid, ids, 0)] if len(y_mean) else np.full(ids.shape, np.nan)
    b = (x_mean[:, None] + ym) / 2
    scores = apply_margin(sims, b, margin)
    scores[~valid] = np.nan
    return scores


def _best(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best candidate of each row: (best id or -1, its score or NaN), both (n,).

    Highest score wins; equal scores go to the smallest id; NaN scores are not candidates.
    """
    n, k = scores.shape
    best = np.full(n, -1, dtype=np.int64)
    best_score = np.full(n, np.nan)
    if k == 0 or n == 0:
        return best, best_score
    valid = ~np.isnan(scores)
    row_max = np.where(valid, scores, -np.inf).max(axis=1)
    at_max = valid & (scores == row_max[:, None])
    big = np.iinfo(np.int64).max
    chosen = np.where(at_max, ids.astype(np.int64, copy=False), big).min(axis=1)
    has = valid.any(axis=1)
    best[has] = chosen[has]
    best_score[has] = row_max[has]
    return best, best_score


# The greedy one-to-one pass of the `max` strategy runs in vectorised rounds; it finishes with a
# plain loop once few pairs are left or when a round removes too small a share of them.
_GREEDY_LOOP_BELOW = 2048
_GREEDY_MIN_PROGRESS = 0.25


def _first_occurrence(values: np.ndarray, n: int) -> np.ndarray:
    """(m,) bool: True where ``values[p]`` does not occur at any earlier position."""
    pos = np.arange(len(values), dtype=np.int64)
    first = np.full(n, len(values), dtype=np.int64)
    np.minimum.at(first, values, pos)
    return first[values] == pos


def _greedy_one_to_one(src: np.ndarray, tgt: np.ndarray, n_src: int, n_tgt: int) -> np.ndarray:
    """Greedy matching in priority order: (m,) bool mask of accepted pairs.

    Pair ``p`` (in array order) is accepted when no earlier accepted pair uses ``src[p]`` or ``tgt[p]``.
    Each round accepts every remaining pair that is the first remaining occurrence of both its
    source and its target (greedy accepts exactly those), then drops the pairs they block;
    the result equals the sequential loop.
    """
    m = len(src)
    accepted = np.zeros(m, dtype=bool)
    used_s = np.zeros(n_src, dtype=bool)
    used_t = np.zeros(n_tgt, dtype=bool)
    alive = np.arange(m, dtype=np.int64)
    while len(alive) > _GREEDY_LOOP_BELOW:
        s, t = src[alive], tgt[alive]
        win = _first_occurrence(s, n_src) & _first_occurrence(t, n_tgt)
        accepted[alive[win]] = True
        used_s[s[win]] = True
        used_t[t[win]] = True
        left = alive[~(used_s[s] | used_t[t])]
        progress = len(alive) - len(left)
        alive = left
        if progress < _GREEDY_MIN_PROGRESS * (len(alive) + progress):
            break
    seen_s = set(np.nonzero(used_s)[0].tolist())
    seen_t = set(np.nonzero(used_t)[0].tolist())
    for p, s_, t_ in zip(alive.tolist(), src[alive].tolist(), tgt[alive].tolist()):
        if s_ not in seen_s and t_ not in seen_t:
            seen_s.add(s_)
            seen_t.add(t_)
            accepted[p] = True
    return accepted


#: Rows scored at a time by :func:`select` (memory: a few (rows, k) float64 arrays, ~0.2 GiB at k = 4).
SCORE_ROWS = 1 << 20


def _best_of_rows(sims: np.ndarray, ids: np.ndarray, x_mean: np.ndarray, y_mean: np.ndarray,
                  margin: Margin) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_best` of :func:`score_candidates`, :data:`SCORE_ROWS` rows at a time (each row is scored on its own)."""
    n, rows = len(sims), max(1, int(SCORE_ROWS))
    best, best_score = np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        best[a:b], best_score[a:b] = _best(score_candidates(sims[a:b], ids[a:b], x_mean[a:b], y_mean, margin), ids[a:b])
    return best, best_score


def _sorted(src: np.ndarray, tgt: np.ndarray, score: np.ndarray) -> Candidates:
    order = np.argsort(-score, kind="stable")
    return Candidates(src[order].astype(np.int64), tgt[order].astype(np.int64), score[order].astype(np.float64))


def _check_knn(sims: np.ndarray, ids: np.ndarray, name: str, n_other: int) -> tuple[np.ndarray, np.ndarray]:
    sims = np.asarray(sims)
    ids = np.asarray(ids)
    if sims.ndim != 2 or sims.shape != ids.shape:
        raise ValueError(f"{name}: sims {sims.shape} and ids {ids.shape} must be the same 2-D shape")
    if ids.size and int(ids.max()) >= n_other:
        raise ValueError(f"{name}: neighbour id {int(ids.max())} out of range for {n_other} rows on the other side")
    return sims, ids.astype(np.int64, copy=False)


def select(
    fwd_sims: np.ndarray,
    fwd_ids: np.ndarray,
    bwd_sims: np.ndarray,
    bwd_ids: np.ndarray,
    margin: Margin | str = Margin.RATIO,
    strategy: Strategy | str = Strategy.MAX,
) -> Candidates:
    """Score the k-NN candidates in both directions and select pairs.

    fwd_sims, fwd_ids: (n_src, k) from the source→target search (ids index targets; -1 = padding).
    bwd_sims, bwd_ids: (n_tgt, k') from the target→source search (ids index sources; -1 = padding).
    ``n_src``/``n_tgt`` are taken from the row counts; ``k`` and ``k'`` may differ and may be 0.
    Returns pairs sorted by score descending (see the module docstring for tie rules).
    """
    m = parse_margin(margin)
    st = parse_strategy(strategy)
    n_src, n_tgt = np.shape(fwd_sims)[0], np.shape(bwd_sims)[0]
    fwd_sims, fwd_ids = _check_knn(fwd_sims, fwd_ids, "forward", n_tgt)
    bwd_sims, bwd_ids = _check_knn(bwd_sims, bwd_ids, "backward", n_src)
    x_mean = knn_means(fwd_sims, fwd_ids)
    y_mean = knn_means(bwd_sims, bwd_ids)

    if st is not Strategy.BACKWARD:
        fwd_best, fwd_score = _best_of_rows(fwd_sims, fwd_ids, x_mean, y_mean, m)
        f_has = fwd_best >= 0
    if st is not Strategy.FORWARD:
        bwd_best, bwd_score = _best_of_rows(bwd_sims, bwd_ids, y_mean, x_mean, m)
        b_has = bwd_best >= 0

    src_all = np.arange(n_src, dtype=np.int64)
    tgt_all = np.arange(n_tgt, dtype=np.int64)
    if st is Strategy.FORWARD:
        return _sorted(src_all[f_has], fwd_best[f_has], fwd_score[f_has])
    if st is Strategy.BACKWARD:
        return _sorted(bwd_best[b_has], tgt_all[b_has], bwd_score[b_has])
    if st is Strategy.INTERSECT:
        mutual = f_has.copy()
        mutual[f_has] = bwd_best[fwd_best[f_has]] == src_all[f_has]
        return _sorted(src_all[mutual], fwd_best[mutual], fwd_score[mutual])

    # max: pool forward-best then backward-best pairs, stable sort by score, greedy one-to-one.
    src = np.concatenate([src_all[f_has], bwd_best[b_has]])
    tgt = np.concatenate([fwd_best[f_has], tgt_all[b_has]])
    score = np.concatenate([fwd_score[f_has], bwd_score[b_has]])
    order = np.argsort(-score, kind="stable")
    src, tgt, score = src[order], tgt[order], score[order]
    keep = _greedy_one_to_one(src, tgt, n_src, n_tgt)
    return Candidates(src[keep], tgt[keep], score[keep])
