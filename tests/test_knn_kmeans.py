"""k-means of centred probing on int8 estimates (bitextmine.knn.kmeans): Lloyd's iterations as FAISS runs them,
the same centroids for any number of threads, FAISS's split of empty centroids, unit centroids when spherical."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from bitextmine.knn.kmeans import kmeans


def _blobs(n: int = 6000, d: int = 32, centres: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centres, d)).astype(np.float32)
    x = mu[rng.integers(0, centres, n)] + 0.15 * rng.standard_normal((n, d)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), mu


def _objective(x: np.ndarray, c: np.ndarray) -> float:
    q = faiss.IndexFlatL2(x.shape[1])
    q.add(np.ascontiguousarray(c, dtype=np.float32))
    return float(q.search(x, 1)[0].sum())


def test_as_good_as_faiss_kmeans_and_the_same_for_any_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = _blobs()
    got = kmeans(x, 64, 3, False, None, 8)
    km = faiss.Kmeans(x.shape[1], 64, niter=8, seed=3, min_points_per_centroid=1, max_points_per_centroid=1 << 20)
    km.train(x)
    assert got.shape == (64, 32) and got.dtype == np.float32
    assert _objective(x, got) <= 1.05 * _objective(x, km.centroids)
    # one worker thread instead of two: the same bits (integer products, fixed slices, sums in row order)
    monkeypatch.setattr(faiss, "omp_get_max_threads", lambda: 1)
    np.testing.assert_array_equal(kmeans(x, 64, 3, False, None, 8), got)


def test_lloyd_steps_from_a_given_start_find_the_centres() -> None:
    x, mu = _blobs()
    start = mu + 0.5  # off every centre, one centroid near each
    got = kmeans(x, len(mu), 0, False, start, 6)
    np.testing.assert_allclose(got, mu, atol=0.05)


def test_an_empty_centroid_takes_half_of_a_large_one() -> None:
    x, mu = _blobs(centres=8)
    start = np.concatenate([mu, mu[:1]])  # the copy of centroid 0 gets no row (ties go to the lower id)
    got = kmeans(x, 9, 0, False, start, 1)
    assert len({tuple(r) for r in got.round(6).tolist()}) == 9  # the empty one was split off a large one
    q = faiss.IndexFlatL2(x.shape[1])
    q.add(got)
    assert np.bincount(q.search(x, 1)[1].ravel(), minlength=9).min() > 0


def test_spherical_centroids_are_unit_vectors_of_the_largest_inner_products() -> None:
    x, _ = _blobs()
    got = kmeans(x, 16, 1, True, None, 5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    km = faiss.Kmeans(x.shape[1], 16, niter=5, seed=1, spherical=True, min_points_per_centroid=1, max_points_per_centroid=1 << 20)
    km.train(x)
    inner = lambda c: float((x @ c.T).max(axis=1).sum())  # noqa: E731
    assert inner(got) >= 0.97 * inner(km.centroids)
