"""Margin scoring and pair selection against an independent brute-force reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitextmine import margin as margin_mod
from bitextmine.errors import InputError
from bitextmine.mining import mine_embeddings  # the search + margin path, checked here against select
from bitextmine.margin import (
    Candidates,
    Margin,
    Strategy,
    knn_means,
    score_candidates,
    select,
)

# ----------------------------------------------------------------------------------------------
# reference: full similarity matrix, explicit loops, the documented tie rules


def ref_neighbours(S: np.ndarray, k: int) -> list[list[int]]:
    """For each row of S, the min(k, cols) best columns by (-sim, id)."""
    n, m = S.shape
    return [sorted(range(m), key=lambda j: (-float(S[i, j]), j))[: min(k, m)] for i in range(n)]


def ref_margin(a: float, b: float, margin: Margin) -> float:
    if margin is Margin.ABSOLUTE:
        return a
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b)) if margin is Margin.RATIO else a - b


def ref_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def ref_mine(
    S: np.ndarray, fwd: list[list[int]], bwd: list[list[int]], margin: Margin, strategy: Strategy
) -> list[tuple[int, int, float]]:
    """Pairs (src, tgt, score) in output order, from the sim matrix S and explicit neighbour lists."""
    n_src, n_tgt = S.shape
    x_mean = [ref_mean([float(S[i, j]) for j in fwd[i]]) for i in range(n_src)]
    y_mean = [ref_mean([float(S[i, j]) for i in bwd[j]]) for j in range(n_tgt)]

    def score(i: int, j: int) -> float:
        return ref_margin(float(S[i, j]), (x_mean[i] + y_mean[j]) / 2, margin)

    def best(cands: list[tuple[int, float]]) -> tuple[int, float] | None:
        out = None
        for cid, s in cands:
            if math.isnan(s):
                continue
            if out is None or s > out[1] or (s == out[1] and cid < out[0]):
                out = (cid, s)
        return out

    fwd_best = [best([(j, score(i, j)) for j in fwd[i]]) for i in range(n_src)]
    bwd_best = [best([(i, score(i, j)) for i in bwd[j]]) for j in range(n_tgt)]
    fwd_pairs = [(i, b[0], b[1]) for i, b in enumerate(fwd_best) if b is not None]
    bwd_pairs = [(b[0], j, b[1]) for j, b in enumerate(bwd_best) if b is not None]

    def by_score(pairs: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
        return sorted(pairs, key=lambda p: -p[2])  # stable

    if strategy is Strategy.FORWARD:
        return by_score(fwd_pairs)
    if strategy is Strategy.BACKWARD:
        return by_score(bwd_pairs)
    if strategy is Strategy.INTERSECT:
        return by_score([(i, j, s) for i, j, s in fwd_pairs if bwd_best[j] is not None and bwd_best[j][0] == i])
    out, used_s, used_t = [], set(), set()
    for i, j, s in by_score(fwd_pairs + bwd_pairs):
        if i not in used_s and j not in used_t:
            used_s.add(i)
            used_t.add(j)
            out.append((i, j, s))
    return out


def knn_arrays(S: np.ndarray, lists: list[list[int]], width: int, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, width) sims/ids arrays from neighbour lists, padded with (-inf, -1) like FAISS."""
    sims = np.full((len(lists), width), -np.inf, dtype=np.float32)
    ids = np.full((len(lists), width), -1, dtype=np.int64)
    for r, lst in enumerate(lists):
        for c, o in enumerate(lst):
            sims[r, c] = S[o, r] if transpose else S[r, o]
            ids[r, c] = o
    return sims, ids


def as_tuples(c: Candidates) -> list[tuple[int, int, float]]:
    return list(zip(c.src.tolist(), c.tgt.tolist(), c.score.tolist()))


def same(got: list[tuple[int, int, float]], want: list[tuple[int, int, float]]) -> bool:
    if [(i, j) for i, j, _ in got] != [(i, j) for i, j, _ in want]:
        return False
    return all(a == b or (math.isnan(a) and math.isnan(b)) for (_, _, a), (_, _, b) in zip(got, want))


# ----------------------------------------------------------------------------------------------
# random problems, with ties


@st.composite
def problems(draw: st.DrawFn) -> dict:
    n_src = draw(st.integers(1, 7))
    n_tgt = draw(st.integers(1, 7))
    dim = draw(st.integers(1, 4))
    k = draw(st.integers(1, 9))  # often larger than a side
    kind = draw(st.sampled_from(["grid", "gaussian", "duplicates"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "grid":  # low precision: exact sims, many equal sims and zero means
        x = rng.integers(-2, 3, (n_src, dim)).astype(np.float32) / 2
        y = rng.integers(-2, 3, (n_tgt, dim)).astype(np.float32) / 2
    else:
        x = rng.standard_normal((n_src, dim)).astype(np.float32)
        y = rng.standard_normal((n_tgt, dim)).astype(np.float32)
        if kind == "duplicates":  # repeated vectors on both sides (and across sides)
            x = x[rng.integers(0, max(1, n_src // 2), n_src)]
            y = np.concatenate([y, x])[rng.integers(0, n_tgt + n_src, n_tgt)]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
    return {"S": x @ y.T, "k": k}


margins = st.sampled_from(list(Margin))
strategies_ = st.sampled_from(list(Strategy))
fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(problems(), margins, strategies_)
def test_select_matches_reference(p: dict, margin: Margin, strategy: Strategy) -> None:
    S, k = p["S"], p["k"]
    fwd, bwd = ref_neighbours(S, k), ref_neighbours(S.T, k)
    fs, fi = knn_arrays(S, fwd, min(k, S.shape[1]), transpose=False)
    bs, bi = knn_arrays(S, bwd, min(k, S.shape[0]), transpose=True)
    got = as_tuples(select(fs, fi, bs, bi, margin, strategy))
    assert same(got, ref_mine(S, fwd, bwd, margin, strategy))


@fast
@given(problems(), margins, strategies_, st.integers(1, 5))
def test_select_scores_rows_a_chunk_at_a_time(p: dict, margin: Margin, strategy: Strategy, rows: int) -> None:
    """select scores SCORE_ROWS rows at a time (memory at 10M rows): any chunk size, the reference pairs."""
    S, k = p["S"], p["k"]
    fwd, bwd = ref_neighbours(S, k), ref_neighbours(S.T, k)
    fs, fi = knn_arrays(S, fwd, min(k, S.shape[1]), transpose=False)
    bs, bi = knn_arrays(S, bwd, min(k, S.shape[0]), transpose=True)
    before = margin_mod.SCORE_ROWS
    margin_mod.SCORE_ROWS = rows
    try:
        got = as_tuples(select(fs, fi, bs, bi, margin, strategy))
    finally:
        margin_mod.SCORE_ROWS = before
    assert same(got, ref_mine(S, fwd, bwd, margin, strategy))


@fast
@given(problems(), margins, strategies_, st.integers(0, 2**32 - 1))
def test_select_ignores_padding(p: dict, margin: Margin, strategy: Strategy, seed: int) -> None:
    """FAISS pads short result lists with id -1: the padded columns must count for nothing."""
    S, k = p["S"], p["k"]
    rng = np.random.default_rng(seed)
    fwd = [lst[: rng.integers(0, len(lst) + 1)] for lst in ref_neighbours(S, k)]
    bwd = [lst[: rng.integers(0, len(lst) + 1)] for lst in ref_neighbours(S.T, k)]
    fs, fi = knn_arrays(S, fwd, min(k, S.shape[1]), transpose=False)
    bs, bi = knn_arrays(S, bwd, min(k, S.shape[0]), transpose=True)
    got = as_tuples(select(fs, fi, bs, bi, margin, strategy))
    assert same(got, ref_mine(S, fwd, bwd, margin, strategy))


@fast
@given(problems(), margins)
def test_score_candidates_matches_reference(p: dict, margin: Margin) -> None:
    S, k = p["S"], p["k"]
    fwd, bwd = ref_neighbours(S, k), ref_neighbours(S.T, k)
    fs, fi = knn_arrays(S, fwd, min(k, S.shape[1]), transpose=False)
    bs, bi = knn_arrays(S, bwd, min(k, S.shape[0]), transpose=True)
    x_mean, y_mean = knn_means(fs, fi), knn_means(bs, bi)
    got = score_candidates(fs, fi, x_mean, y_mean, margin)
    assert got.shape == fs.shape and got.dtype == np.float64
    for i, lst in enumerate(fwd):
        xm = ref_mean([float(S[i, j]) for j in lst])
        assert x_mean[i] == xm
        for c, j in enumerate(lst):
            ym = ref_mean([float(S[o, j]) for o in bwd[j]])
            want = ref_margin(float(S[i, j]), (xm + ym) / 2, margin)
            assert got[i, c] == want or (math.isnan(got[i, c]) and math.isnan(want))


# ----------------------------------------------------------------------------------------------
# the greedy one-to-one pass (vectorised rounds + loop) against the plain loop


def plain_greedy(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    keep, used_s, used_t = np.zeros(len(src), bool), set(), set()
    for p, (s, t) in enumerate(zip(src.tolist(), tgt.tolist())):
        if s not in used_s and t not in used_t:
            used_s.add(s)
            used_t.add(t)
            keep[p] = True
    return keep


@pytest.mark.parametrize("loop_below, min_progress", [(2048, 0.25), (0, 0.0), (0, 0.9), (10, 0.25)])
@pytest.mark.parametrize("seed", range(4))
def test_greedy_rounds_equal_loop(monkeypatch: pytest.MonkeyPatch, loop_below: int, min_progress: float, seed: int) -> None:
    monkeypatch.setattr(margin_mod, "_GREEDY_LOOP_BELOW", loop_below)
    monkeypatch.setattr(margin_mod, "_GREEDY_MIN_PROGRESS", min_progress)
    rng = np.random.default_rng(seed)
    m, n_src, n_tgt = 6000, [50, 3000, 6000, 20][seed], [40, 3500, 10, 6000][seed]
    src, tgt = rng.integers(0, n_src, m), rng.integers(0, n_tgt, m)
    got = margin_mod._greedy_one_to_one(src, tgt, n_src, n_tgt)
    np.testing.assert_array_equal(got, plain_greedy(src, tgt))


# ----------------------------------------------------------------------------------------------
# hand-computed examples

# S = [[0.9, 0.8], [0.7, 0.2]], k = 2:
#   x_mean = [0.85, 0.45], y_mean = [0.8, 0.5]
#   ratio:    (0,0) 0.9/0.825 = 1.0909  (0,1) 0.8/0.675 = 1.1852  (1,0) 0.7/0.625 = 1.12  (1,1) 0.2/0.475 = 0.4211
#   absolute: the sims themselves; the hub target 0 is everybody's nearest.
HAND = np.array([[0.9, 0.8], [0.7, 0.2]], dtype=np.float64)


def hand_select(margin: Margin, strategy: Strategy) -> list[tuple[int, int, float]]:
    ids = np.array([[0, 1], [0, 1]])
    fs = np.take_along_axis(HAND, ids, 1)
    bs = np.take_along_axis(HAND.T, ids, 1)
    return as_tuples(select(fs, ids, bs, ids, margin, strategy))


def test_hand_ratio() -> None:
    r = pytest.approx
    assert hand_select(Margin.RATIO, Strategy.FORWARD) == [(0, 1, r(0.8 / 0.675)), (1, 0, r(0.7 / 0.625))]
    assert hand_select(Margin.RATIO, Strategy.BACKWARD) == [(0, 1, r(0.8 / 0.675)), (1, 0, r(0.7 / 0.625))]
    assert hand_select(Margin.RATIO, Strategy.INTERSECT) == [(0, 1, r(0.8 / 0.675)), (1, 0, r(0.7 / 0.625))]
    assert hand_select(Margin.RATIO, Strategy.MAX) == [(0, 1, r(0.8 / 0.675)), (1, 0, r(0.7 / 0.625))]


def test_hand_absolute_hub() -> None:
    r = pytest.approx
    assert hand_select(Margin.ABSOLUTE, Strategy.FORWARD) == [(0, 0, r(0.9)), (1, 0, r(0.7))]
    assert hand_select(Margin.ABSOLUTE, Strategy.BACKWARD) == [(0, 0, r(0.9)), (0, 1, r(0.8))]
    assert hand_select(Margin.ABSOLUTE, Strategy.INTERSECT) == [(0, 0, r(0.9))]
    assert hand_select(Margin.ABSOLUTE, Strategy.MAX) == [(0, 0, r(0.9))]


def test_hand_distance() -> None:
    got = hand_select(Margin.DISTANCE, Strategy.MAX)
    assert [(i, j) for i, j, _ in got] == [(0, 1), (1, 0)]
    assert got[0][2] == pytest.approx(0.8 - 0.675)
    assert got[1][2] == pytest.approx(0.7 - 0.625)


def test_mine_embeddings_hand_and_threshold() -> None:
    x = np.array([[1, 0], [0, 1]], dtype=np.float32)
    y = np.array([[0.6, 0.8], [0.8, 0.6]], dtype=np.float32)  # y1 ~ x0, y0 ~ x1
    c = mine_embeddings(x, y, k=1)
    assert as_tuples(c) == [(0, 1, 1.0), (1, 0, 1.0)]  # cos / cos = 1 exactly, ties in source order
    c = mine_embeddings(x, y, k=10, margin="absolute", strategy="fwd")  # k larger than either side
    assert [(i, j) for i, j, _ in as_tuples(c)] == [(0, 1), (1, 0)]
    c = mine_embeddings(x, y, k=2, threshold=1.1)  # ratio 0.8 / 0.7 = 1.143 kept
    assert [(i, j) for i, j, _ in as_tuples(c)] == [(0, 1), (1, 0)]
    assert len(mine_embeddings(x, y, k=2, threshold=1.2)) == 0


@pytest.mark.parametrize("strategy", list(Strategy))
def test_absolute_one_way_shortcut(strategy: Strategy) -> None:
    """mine_embeddings skips the unneeded search for absolute forward/backward: same result as select."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((9, 6)).astype(np.float32), rng.standard_normal((13, 6)).astype(np.float32)
    S = x @ y.T
    fs, fi = knn_arrays(S, ref_neighbours(S, 3), 3, transpose=False)
    bs, bi = knn_arrays(S, ref_neighbours(S.T, 3), 3, transpose=True)
    want = select(fs, fi, bs, bi, Margin.ABSOLUTE, strategy)
    got = mine_embeddings(x, y, k=3, margin=Margin.ABSOLUTE, strategy=strategy)
    assert [(i, j) for i, j, _ in as_tuples(got)] == [(i, j) for i, j, _ in as_tuples(want)]
    np.testing.assert_allclose(got.score, want.score, rtol=1e-6)


def test_ties_go_to_smallest_id_and_source_order() -> None:
    x = np.array([[1, 0], [1, 0]], dtype=np.float32)  # identical sources
    y = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # identical targets 0 and 1
    fwd = mine_embeddings(x, y, k=2, strategy=Strategy.FORWARD)
    assert [(i, j) for i, j, _ in as_tuples(fwd)] == [(0, 0), (1, 0)]
    mx = mine_embeddings(x, y, k=2, strategy=Strategy.MAX)
    # pool: fwd (0,0) (1,0), bwd (0,0) (0,1) (0,2); all but (0,2) score 1 -> (0,0) is accepted first and
    # blocks every other pooled pair ((1,1) would be free but is nobody's best: ties go to id 0).
    assert [(i, j) for i, j, _ in as_tuples(mx)] == [(0, 0)]


# ----------------------------------------------------------------------------------------------
# edges and parsing


def test_knn_means_padding_and_empty_rows() -> None:
    sims = np.array([[0.5, 0.25, -np.inf], [-np.inf, -np.inf, -np.inf], [1.0, 0.0, 0.5]], dtype=np.float32)
    ids = np.array([[3, 1, -1], [-1, -1, -1], [0, 1, 2]])
    got = knn_means(sims, ids)
    assert got[0] == 0.375 and math.isnan(got[1]) and got[2] == 0.5
    np.testing.assert_array_equal(knn_means(sims), got)  # padding recognised by value too
    assert knn_means(np.empty((0, 4), np.float32)).shape == (0,)


def test_empty_sides() -> None:
    for strategy in Strategy:
        c = select(np.empty((0, 0), np.float32), np.empty((0, 0), np.int64), np.empty((3, 0), np.float32),
                   np.empty((3, 0), np.int64), strategy=strategy)
        assert len(c) == 0 and c.src.dtype == np.int64
    assert len(mine_embeddings(np.empty((0, 4), np.float32), np.ones((3, 4), np.float32))) == 0


def test_enum_parsing() -> None:
    assert Margin("RATIO") is Margin.RATIO and Margin("distance") is Margin.DISTANCE
    assert Strategy("fwd") is Strategy.FORWARD and Strategy("bwd") is Strategy.BACKWARD
    assert Strategy("Intersect") is Strategy.INTERSECT and Strategy.MAX == "max"
    ids = np.zeros((1, 1), np.int64)
    sims = np.ones((1, 1), np.float32)
    with pytest.raises(InputError, match="unknown margin"):
        select(sims, ids, sims, ids, margin="nope")
    with pytest.raises(InputError, match="unknown strategy"):
        select(sims, ids, sims, ids, strategy="nope")


def test_out_of_range_ids_rejected() -> None:
    sims = np.ones((2, 1), np.float32)
    with pytest.raises(ValueError):
        select(sims, np.array([[5], [0]]), sims, np.array([[0], [1]]))
