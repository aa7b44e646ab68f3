"""Blocked exact search, FAISS factory indexes and the auto rule."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

import bitextmine.knn as knn_mod
from bitextmine.errors import InputError, MismatchError
from bitextmine.knn import ArrayBlocks, BlockSource, GpuFallbackWarning, auto_index, knn
from bitextmine.margin import mine_embeddings, select


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference: (sims sorted desc, ids by (-sim, id), full float64 sim matrix)."""
    S = xq.astype(np.float64) @ xb.astype(np.float64).T
    I = np.argsort(-S, axis=1, kind="stable")[:, : min(k, xb.shape[0])]
    return np.take_along_axis(S, I, 1), I, S


def assert_knn_equal(D: np.ndarray, I: np.ndarray, xq: np.ndarray, xb: np.ndarray, k: int) -> None:
    """Equal to brute force up to float32 rounding; ids exactly equal wherever there is no near tie."""
    Dr, Ir, S = brute(xq, xb, k)
    assert D.shape == I.shape == Dr.shape
    assert D.dtype == np.float32 and I.dtype == np.int64
    np.testing.assert_allclose(D, Dr, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(S, I, 1), Dr, atol=1e-5)  # the ids carry those sims
    assert all(len(set(row)) == len(row) for row in I.tolist())
    if Dr.shape[1]:
        srt = -np.sort(-S, axis=1)[:, : Dr.shape[1] + 1]
        clear = (np.diff(srt, axis=1) < -1e-4).all(axis=1) if srt.shape[1] > 1 else np.ones(len(S), bool)
        np.testing.assert_array_equal(I[clear], Ir[clear])


NQ, NB, D_ = 37, 53, 24


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return unit(rng, NQ, D_), unit(rng, NB, D_)


@pytest.mark.parametrize("block_rows", [1, 7, NB - 1, NB, NB + 5, 65536])
@pytest.mark.parametrize("k", [1, 4, NB, NB + 10])
def test_blocked_flat_equals_brute_force(data: tuple[np.ndarray, np.ndarray], block_rows: int, k: int) -> None:
    xq, xb = data
    D, I = knn(xq, xb, k, block_rows=block_rows)
    assert D.shape == (NQ, min(k, NB))
    assert_knn_equal(D, I, xq, xb, k)
    assert (np.diff(D, axis=1) <= 0).all()


def test_blocked_flat_equals_unblocked_faiss(data: tuple[np.ndarray, np.ndarray]) -> None:
    import faiss

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


def test_float16_and_memmap(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = (a.astype(np.float16) for a in data)
    mm = np.lib.format.open_memmap(tmp_path / "xb.npy", mode="w+", dtype=np.float16, shape=xb.shape)
    mm[:] = xb
    mm.flush()
    mm = np.load(tmp_path / "xb.npy", mmap_mode="r")
    for db in (xb, mm, ArrayBlocks(mm)):
        D, I = knn(xq, db, 6, block_rows=10)
        assert_knn_equal(D, I, xq.astype(np.float32), xb.astype(np.float32), 6)


class Ragged:
    """A BlockSource that yields short, irregular blocks (like shards ending mid-block)."""

    def __init__(self, array: np.ndarray, sizes: list[int], lie: int = 0) -> None:
        self.array, self.sizes, self.lie = array, sizes, lie

    def __len__(self) -> int:
        return len(self.array) + self.lie

    @property
    def dim(self) -> int:
        return self.array.shape[1]

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        start, i = 0, 0
        while start < len(self.array):
            n = min(self.sizes[i % len(self.sizes)], rows)
            yield np.ascontiguousarray(self.array[start : start + n], dtype=np.float32)
            start, i = start + n, i + 1


def test_ragged_block_source(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    src: BlockSource = Ragged(xb, [3, 1, 11, 2])
    assert isinstance(src, BlockSource)
    for block_rows in (1, 4, 10, 100):
        D, I = knn(Ragged(xq, [5, 2]), src, 3, block_rows=block_rows)
        assert_knn_equal(D, I, xq, xb, 3)
    with pytest.raises(InputError, match="yielded"):
        knn(xq, Ragged(xb, [4], lie=2), 3, block_rows=8)


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
        knn_mod._warned.clear()
        with pytest.warns(GpuFallbackWarning):  # no GPU for FAISS: falls back to the CPU, says so
            D, I = knn(xq, xb, 3, use_gpu=True)
        assert_knn_equal(D, I, xq, xb, 3)


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


@pytest.fixture(scope="module")
def structured() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 sources; targets hold a noisy copy of each source among 1600 unrelated vectors (shuffled)."""
    rng = np.random.default_rng(1)
    d = 32
    x = unit(rng, 400, d)
    copies = x + 0.15 * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(d)
    y = np.concatenate([copies / np.linalg.norm(copies, axis=1, keepdims=True), unit(rng, 1600, d)])
    perm = rng.permutation(len(y))
    y = y[perm]
    truth = np.argsort(perm)[:400]  # target row of source i's copy
    return x, y, truth


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


def test_auto_index_rule() -> None:
    assert auto_index(1_000, 1024) == ("flat", {})
    assert auto_index(99_999, 1024) == ("flat", {})
    assert auto_index(100_000, 1024) == ("IVF1024,SQfp16", {"nprobe": 64, "train_size": 32_768})
    assert auto_index(1_000_000, 384) == ("IVF4096,SQfp16", {"nprobe": 256, "train_size": 131_072})
    assert auto_index(1_000_000, 1024) == ("IVF4096,SQfp16", {"nprobe": 256, "train_size": 131_072})
    assert auto_index(10_000_000, 384) == ("IVF16384,SQ8", {"nprobe": 256, "train_size": 524_288})
    assert auto_index(100_000_000, 1024) == ("IVF32768,PQ32", {"nprobe": 256, "train_size": 1_048_576})
    assert auto_index(1_000_000, 768, memory_budget=2**20)[0] == "IVF4096,PQ8"


def test_auto_small_is_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    D, I = knn(xq, xb, 3, index="auto")
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
