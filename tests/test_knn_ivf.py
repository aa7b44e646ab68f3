"""FAISS factory indexes (bitextmine.knn.ivf, .centred, .bylist): errors on one line, HNSW, and
approximate search selecting the same pairs as exact search."""
from __future__ import annotations

import numpy as np
import pytest
from knn_cases import NQ, Ragged, assert_knn_equal, brute, small_data, structured_data

from bitextmine.errors import InputError
from bitextmine.knn import knn
from bitextmine.mining import mine_embeddings


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return small_data()


@pytest.fixture(scope="module")
def structured() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return structured_data()


@pytest.mark.parametrize("spec", ["IVF1x,Flat", "nonsense", "PQ7", "IVF8,PQ5"])
def test_bad_factory_string(data: tuple[np.ndarray, np.ndarray], spec: str) -> None:
    xq, xb = data
    with pytest.raises(InputError) as err:
        knn(xq, xb, 2, index=spec)
    msg = str(err.value)
    assert "\n" not in msg and spec in msg and "Error in" not in msg


def test_factory_errors_are_one_line(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    with pytest.raises(InputError, match="nprobe"):
        knn(xq, xb, 2, index="HNSW8", nprobe=4)
    with pytest.raises(InputError) as err:  # more lists than training vectors
        knn(xq, xb, 2, index="IVF64,Flat")
    assert "\n" not in str(err.value)


def test_hnsw_runs(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    D, I = knn(xq, xb, 3, index="HNSW16")
    Dr, _, _ = brute(xq, xb, 3)
    assert D.shape == (NQ, 3) and (np.abs(D[:, 0] - Dr[:, 0]) < 1e-5).mean() > 0.9


def test_ivf_selects_same_pairs_as_exact(structured: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, y, truth = structured
    exact = mine_embeddings(x, y, k=4)
    approx = mine_embeddings(x, y, k=4, index="IVF8,Flat", nprobe=2)
    assert sorted(zip(exact.src.tolist(), exact.tgt.tolist())) == [(i, int(truth[i])) for i in range(400)]
    assert sorted(zip(approx.src.tolist(), approx.tgt.tolist())) == sorted(zip(exact.src.tolist(), exact.tgt.tolist()))
    # (scores differ a little: an approximate search finds slightly different neighbourhoods)


def test_ivf_train_sample_from_block_source(structured: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """A source without random access is sampled in one pass; results match the array path."""
    x, y, _ = structured
    D0, I0 = knn(x, y, 2, index="IVF8,Flat", nprobe=8, train_size=500, seed=3)
    D1, I1 = knn(x, Ragged(y, [300, 77]), 2, index="IVF8,Flat", nprobe=8, train_size=500, seed=3, block_rows=256)
    np.testing.assert_array_equal(I0, I1)
    assert_knn_equal(D0, I0, x, y, 2)  # nprobe = nlist: exhaustive


def test_ivf_behind_a_pre_transform_searches_in_the_transformed_space() -> None:
    """``PCA16,IVF8,Flat`` once crashed (the by-list path read the IVF's codes without the PCA step);
    the queries now go through the PCA before the lists are scanned."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    D, I = knn(x, x, 3, index="PCA16,IVF8,Flat", nprobe=8)
    assert D.shape == (400, 3) and (I[:, 0] == np.arange(400)).mean() > 0.95  # each vector finds itself
