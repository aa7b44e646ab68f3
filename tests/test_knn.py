"""The entry points of bitextmine.knn: progress, argument checks, GPU fallback, and margin mining on top."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
from knn_cases import NQ, assert_knn_equal, brute, small_data, structured_data

from bitextmine.errors import InputError, MismatchError
from bitextmine.knn import GpuFallbackWarning, gpu, knn
from bitextmine.margin import select
from bitextmine.mining import mine_embeddings


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return small_data()


@pytest.fixture(scope="module")
def structured() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return structured_data()


def test_progress_counts_query_rows(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    done: list[int] = []
    knn(xq, xb, 2, block_rows=10, progress=done.append)
    assert done == [10, 10, 10, 7]
    done.clear()
    knn(xq, xb, 2, index="IVF1,Flat", block_rows=16, progress=done.append)
    assert sum(done) == NQ


def test_argument_errors(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    with pytest.raises(MismatchError):
        knn(xq, xb[:, :5], 2)
    with pytest.raises(InputError):
        knn(xq, xb, 0)
    with pytest.raises(InputError):
        knn(xq, xb.astype(np.int32), 2)
    D, I = knn(xq, xb[:0], 3)
    assert D.shape == I.shape == (NQ, 0)
    D, I = knn(xq[:0], xb, 3)
    assert D.shape == I.shape == (0, 3)
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        gpu._warned.clear()
        with pytest.warns(GpuFallbackWarning):  # no GPU for FAISS: falls back to the CPU, says so
            D, I = knn(xq, xb, 3, use_gpu=True)
        assert_knn_equal(D, I, xq, xb, 3)


def test_mine_embeddings_equals_select_on_brute_force(structured: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, y, _ = structured
    x, y = x[:60], y[:90]
    fs, fi, _ = brute(x, y, 5)
    bs, bi, _ = brute(y, x, 5)
    want = select(fs.astype(np.float32), fi, bs.astype(np.float32), bi)
    got = mine_embeddings(x, y, k=5, block_rows=16)
    np.testing.assert_array_equal(got.src, want.src)
    np.testing.assert_array_equal(got.tgt, want.tgt)
    np.testing.assert_allclose(got.score, want.score, rtol=1e-5)
