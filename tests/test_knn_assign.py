"""The coarse assignment without a heap (bitextmine.knn.assign): each row's nprobe largest x.c (inner
product) or x.c - |c|^2/2 (L2), ties by list id, the largest first; the same lists as FAISS's quantizer."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from bitextmine.knn.assign import _assign, _nearest
from bitextmine.knn.workers import _Workers


def _same(got: np.ndarray, want: np.ndarray) -> None:
    """The same lists a row (in any order) and the same nearest list."""
    np.testing.assert_array_equal(got[:, 0], want[:, 0])
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))


def _want(x: np.ndarray, c: np.ndarray, p: int, l2: bool) -> np.ndarray:
    S = x @ c.T - (0.5 * np.einsum("ij,ij->i", c, c)[None, :] if l2 else 0)
    order = np.lexsort((np.broadcast_to(np.arange(len(c)), S.shape), -S), axis=1)[:, :p]
    return np.concatenate([order, np.full((len(x), max(0, p - len(c))), -1)], axis=1)


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("n,p", [(1024, 64), (4096, 64), (100, 7), (300, 256), (12, 12), (12, 20)])
def test_the_p_largest_in_order_as_a_full_sort_gives_them(l2: bool, n: int, p: int) -> None:
    rng = np.random.default_rng(n + p)
    x = rng.standard_normal((700, 24)).astype(np.float32)
    c = rng.standard_normal((n, 24)).astype(np.float32)
    c[5::9] = c[4::9][: len(c[5::9])]  # equal centroids: equal values, listed by id
    got = _nearest(x, c, 0.5 * np.einsum("ij,ij->i", c, c) if l2 else None, p)
    _same(got, _want(x, c, p, l2))


def test_rows_whose_sampled_columns_hold_their_best_values_fall_back_to_the_exact_cut() -> None:
    """The first threshold comes from every 4th column: where those hold a row's best values, fewer than
    p values reach it and the row takes its exact p-th value instead."""
    rng = np.random.default_rng(3)
    n, p = 1024, 64
    c = 0.01 * rng.standard_normal((n, 16)).astype(np.float32)
    c[::4, 0] += 1.0  # the sampled columns: far ahead for queries along e_0
    x = 0.01 * rng.standard_normal((50, 16)).astype(np.float32)
    x[:, 0] += 1.0
    _same(_nearest(x, c, None, p), _want(x, c, p, False))


@pytest.mark.parametrize("metric", [faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2])
def test_same_lists_as_the_faiss_quantizer(metric: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9000, 32)).astype(np.float32)  # more than one slice of rows
    c = rng.standard_normal((512, 32)).astype(np.float32)
    q = faiss.IndexFlat(32, metric)
    q.add(c)
    with _Workers(2) as workers:
        got = _assign(q, x, 32, workers)
        one = _assign(q, x, 1, workers)  # one list: FAISS's own search
    want = q.search(x, 32)[1]
    # float32 products from two BLAS builds: they may order a near tie (1e-5 apart) differently, nothing else
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    S = x64 @ c64.T - (0.5 * (c64**2).sum(1) if metric == faiss.METRIC_L2 else 0)
    odd = np.flatnonzero((got[:, 0] != want[:, 0]) | (np.sort(got, 1) != np.sort(want, 1)).any(axis=1))
    assert len(odd) <= 4
    for r in odd:  # the lists that differ score within 1e-4 of the p-th (or of the nearest)
        a, b = set(got[r]) ^ set(want[r]), S[r, want[r]]
        assert all(abs(S[r, j] - b.min()) < 1e-4 for j in a) and abs(S[r, got[r, 0]] - b.max()) < 1e-4
    keep = np.setdiff1d(np.arange(len(x)), odd)
    _same(got[keep], want[keep])
    np.testing.assert_array_equal(one[:, 0], want[:, 0])
    x[3, 2] = np.nan  # a row FAISS must judge: all of the block goes to FAISS's search
    with _Workers(2) as workers:
        np.testing.assert_array_equal(_assign(q, x, 32, workers)[4:], want[4:])  # FAISS's own order


def test_int8_estimates_rank_the_lists_of_centred_probing() -> None:
    """With the centroids as int8 codes (centred probing) the lists are the p largest int8 estimates (ties by id, the
    largest first), within the codes' error of float32's ranking, the same through int8 or float32 products of the
    codes (every machine), for one list (filing) as for the nearest of p (probing), on any number of threads."""
    from bitextmine.knn.assign import Int8Centroids

    rng = np.random.default_rng(11)
    c = (0.3 * rng.standard_normal((700, 48))).astype(np.float32)
    x = (c[rng.integers(0, 700, 5000)] + 0.2 * rng.standard_normal((5000, 48))).astype(np.float32)
    half = 0.5 * np.einsum("ij,ij->i", c, c)
    q = faiss.IndexFlatL2(48)
    q.add(c)
    coded = Int8Centroids(c)
    est = coded.products(x)
    # the estimates of x.c: within the int8 codes' error (|x - x~| |c| + |x~| |c - c~|, each under half a step a coordinate)
    err = np.abs(est - x @ c.T)
    step_x, step_c = np.abs(x).max(1) / 127, np.abs(c).max(1) / 127
    limit = 0.5 * np.sqrt(48) * (step_x[:, None] * np.linalg.norm(c, axis=1)[None, :] + step_c[None, :] * np.linalg.norm(x, axis=1)[:, None])
    assert (err <= limit * 1.01 + 1e-6).all() and err.max() > 0
    coded.int8 = not coded.int8  # the other product of the same codes: the same bits
    np.testing.assert_array_equal(coded.products(x), est)
    coded.int8 = not coded.int8
    with _Workers(2) as two, _Workers(1) as one:
        got = _assign(q, x, 40, two, coded)
        np.testing.assert_array_equal(_assign(q, x, 40, one, coded), got)
        filed = _assign(q, x, 1, two, coded)
    S = est - half[None, :]
    order = np.lexsort((np.broadcast_to(np.arange(len(c)), S.shape), -S), axis=1)[:, :40]
    _same(got, order)
    np.testing.assert_array_equal(filed[:, 0], got[:, 0])
    exact = x @ c.T - half[None, :]  # float32's ranking: the lists that differ score within the error of its 40th
    kth = -np.partition(-exact, 39, axis=1)[:, 39]
    differ = np.sort(got, axis=1) != np.sort(np.argsort(-exact, axis=1, kind="stable")[:, :40], axis=1)
    assert 0 < differ.any(axis=1).mean() < 0.5
    chosen = np.take_along_axis(exact, got, axis=1)
    assert (chosen >= kth[:, None] - 2 * limit.max(axis=1)[:, None]).all()
