"""Blocked exact search (bitextmine.knn.flat) against brute force and FAISS's unblocked search."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
from knn_cases import D_, NB, NQ, assert_knn_equal, small_data

from bitextmine.knn import knn


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return small_data()


@pytest.mark.parametrize("block_rows", [1, 7, NB - 1, NB, NB + 5, 65536])
@pytest.mark.parametrize("k", [1, 4, NB, NB + 10])
def test_blocked_flat_equals_brute_force(data: tuple[np.ndarray, np.ndarray], block_rows: int, k: int) -> None:
    xq, xb = data
    D, I = knn(xq, xb, k, block_rows=block_rows)
    assert D.shape == (NQ, min(k, NB))
    assert_knn_equal(D, I, xq, xb, k)
    assert (np.diff(D, axis=1) <= 0).all()


def test_blocked_flat_equals_unblocked_faiss(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    index = faiss.IndexFlatIP(D_)
    index.add(xb)
    D0, I0 = index.search(xq, 5)
    D1, I1 = knn(xq, xb, 5, block_rows=7)
    np.testing.assert_allclose(D1, D0, atol=1e-6)
    np.testing.assert_array_equal(I1, I0)


def test_ties_listed_by_increasing_id() -> None:
    """Equal similarities are listed by increasing id; which tied rows make the k-th cut is FAISS's choice."""
    xb = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    xq = np.array([[1, 0], [0, 1]], dtype=np.float32)
    for block_rows in (1, 2, 3, 5):
        D, I = knn(xq, xb, 4, block_rows=block_rows)
        np.testing.assert_array_equal(D, [[1, 1, 1, 0], [1, 1, 0, 0]])
        np.testing.assert_array_equal(I[0, :3], [0, 2, 3])
        assert I[0, 3] in (1, 4)
        np.testing.assert_array_equal(I[1, :2], [1, 4])
        assert I[1, 2] < I[1, 3] and {I[1, 2], I[1, 3]} <= {0, 2, 3}
