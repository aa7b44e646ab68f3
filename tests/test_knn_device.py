"""Exact search on torch devices (bitextmine.knn.device): bf16 candidates re-scored in float32, the
database sharded over the devices. Run here on the CPU as two "devices" (CI has no GPU); the same
code runs on CUDA, where tests/test_gpu.py checks it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from knn_cases import Ragged, assert_knn_equal, unit

import bitextmine.knn as knn_mod
import bitextmine.knn.device as dev
from bitextmine.knn import index_used, knn, knn_pair
from bitextmine.knn.pairwise import _centre
from bitextmine.knn.sources import ArrayBlocks

CPU2 = [torch.device("cpu")] * 2


def _embedding_like(rng: np.random.Generator, n: int, d: int, mean: float = 2.0) -> np.ndarray:
    """Unit vectors sharing a large mean direction (as sentence embeddings do): neighbours within bf16 rounding."""
    x = rng.standard_normal((n, d)).astype(np.float32) + mean * np.ones(d, np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("extra", [0, 16])
@pytest.mark.parametrize("kind", ["isotropic", "embedding-like"])
def test_device_search_equals_float32_brute_force(kind: str, extra: int) -> None:
    rng = np.random.default_rng(3)
    make = unit if kind == "isotropic" else _embedding_like
    xq, xb = make(rng, 700, 48), make(rng, 1100, 48)
    stats: dict = {}
    mu = _centre(ArrayBlocks(xq), ArrayBlocks(xb), 4096)
    assert (kind == "embedding-like") == bool(mu.any())  # centred where the data have a mean
    D, I = dev.device_search(ArrayBlocks(xq), Ragged(xb, [300, 17, 500, 283]), 4, 256, None, CPU2, mu,
                             extra=extra, query_rows=128, db_rows=200, stats=stats)
    assert_knn_equal(D, I, xq, xb, 4)
    assert (np.diff(D, axis=1) <= 0).all()
    if extra == 0:  # no candidates beyond k: the bound cannot prove most rows, which are searched again in fp32
        assert stats["fallback_rows"] > 100
    else:
        assert stats["fallback_rows"] < 0.2 * len(xq)


@pytest.mark.parametrize("n_dev", [1, 3])
def test_shards_cover_the_database_once_whatever_the_blocks(n_dev: int) -> None:
    rng = np.random.default_rng(4)
    xb = unit(rng, 1000, 16)
    mu = np.zeros(16, np.float32)
    for block_rows in (7, 333, 1000, 4096):
        shards = dev._shards(ArrayBlocks(xb), [torch.device("cpu")] * n_dev, mu, block_rows)
        assert [s.offset for s in shards] == [1000 * i // n_dev for i in range(n_dev)]
        np.testing.assert_array_equal(np.concatenate([s.y32.numpy() for s in shards]), xb)


def test_ties_keep_the_lower_ids_and_a_tiny_database() -> None:
    xb = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    xq = np.array([[1, 0], [0, 1]], dtype=np.float32)
    D, I = dev.device_search(ArrayBlocks(xq), ArrayBlocks(xb), 2, 64, None, CPU2)
    np.testing.assert_array_equal(I, [[0, 2], [1, 4]])
    np.testing.assert_array_equal(D, [[1, 1], [1, 1]])


@pytest.fixture
def two_devices(monkeypatch):
    """The search's CUDA device list replaced by two CPU "devices"."""
    monkeypatch.setattr(dev, "cuda_devices", lambda: CPU2)


@pytest.mark.parametrize("index", ["flat", "auto"])
def test_knn_pair_runs_exact_on_the_devices(two_devices, monkeypatch, index: str) -> None:
    rng = np.random.default_rng(5)
    x, y = _embedding_like(rng, 900, 32), _embedding_like(rng, 600, 32)
    monkeypatch.setattr(knn_mod, "exact_search", None)  # the CPU exact path must not run
    (fd, fi), (bd, bi) = knn_pair(x, y, 4, index=index, block_rows=256)
    assert_knn_equal(fd, fi, x, y, 4)
    assert_knn_equal(bd, bi, y, x, 4)
    D, I = knn(x, y, 3, index=index, block_rows=256)
    assert_knn_equal(D, I, x, y, 3)
    assert index_used(index, 900, 600, 32) == "flat"


def test_devices_are_not_used_when_told_or_for_faiss_indexes(two_devices, monkeypatch) -> None:
    called = []
    monkeypatch.setattr(dev, "device_search", lambda *a, **kw: called.append(1))
    rng = np.random.default_rng(6)
    x, y = unit(rng, 300, 16), unit(rng, 300, 16)
    knn_pair(x, y, 4, index="flat", use_gpu=False)
    knn(x, y, 4, index="IVF4,Flat", nprobe=4)
    assert called == []
    assert index_used("auto", 10**6, 10**6, 384, use_gpu=False) != "flat"
    assert index_used("IVF4,Flat", 300, 300, 16) != "flat"


def test_auto_falls_back_to_an_index_when_the_database_does_not_fit(monkeypatch) -> None:
    monkeypatch.setattr(dev, "cuda_devices", lambda: [torch.device("cuda", 0)])
    monkeypatch.setattr(dev, "fits", lambda rows, dim, devices, block_rows=65536: rows < 10**6)
    assert index_used("auto", 10**5, 10**5, 384) == "flat"
    assert index_used("auto", 2 * 10**6, 2 * 10**6, 384).startswith("IVF")


def test_memory_need_counts_the_shard_and_the_tile() -> None:
    one = dev.device_bytes(10**6, 384, [0])
    two = dev.device_bytes(10**6, 384, [0, 1])
    per_row = 4 * 384 + 2 * 392  # float32 + bf16 (384 + 2 offset coordinates, rounded up to 8)
    assert one >= 10**6 * per_row
    assert one - two >= 10**6 // 2 * per_row  # half the shard on each of two


def test_mining_plans_the_index_its_search_will_use(two_devices) -> None:
    """Locally a CUDA host searches exact (no refinement needed); Ray workers search with the CPU rule,
    so a Ray mine plans (and reports, and refines) that index, not "flat"."""
    from bitextmine.mining import MineOptions, plan_index
    from bitextmine.ray_engine import RayOptions

    assert plan_index(MineOptions(index="auto"), 10**6, 10**6, 384) == "flat"
    assert plan_index(MineOptions(index="auto", engine=RayOptions()), 10**6, 10**6, 384).startswith("IVF")
    assert plan_index(MineOptions(index="auto", use_gpu=False), 10**6, 10**6, 384).startswith("IVF")


def test_the_search_leaves_torch_matmul_flags_as_it_found_them() -> None:
    m = torch.backends.cuda.matmul
    before = (m.allow_tf32, m.allow_bf16_reduced_precision_reduction)
    seen = []
    real = dev._Shard._sub

    def spy(self, *a):
        seen.append((m.allow_tf32, m.allow_bf16_reduced_precision_reduction))
        return real(self, *a)

    dev._Shard._sub = spy
    try:
        m.allow_tf32 = True
        rng = np.random.default_rng(7)
        dev.device_search(ArrayBlocks(unit(rng, 50, 8)), ArrayBlocks(unit(rng, 60, 8)), 3, 64, None, CPU2)
        assert seen and all(s == (False, False) for s in seen)  # IEEE float32 and float32 bf16 sums inside
        assert m.allow_tf32 is True
    finally:
        dev._Shard._sub = real
        m.allow_tf32, m.allow_bf16_reduced_precision_reduction = before


def test_duplicates_at_the_kth_place_keep_the_lower_ids() -> None:
    """Crawled text repeats sentences: equal rows tie at the k-th place. With no spare candidates
    (extra = 0) such a query is re-searched in float32; the lower ids are kept, as on the CPU. (On the
    CPU torch's top-k already prefers lower ids; CUDA's does not, which the re-search's spare
    candidates and (-value, id) sort cover.)"""
    rng = np.random.default_rng(8)
    xb = unit(rng, 400, 16)
    dup = [5, 90, 150, 260, 399]
    xb[dup] = xb[dup[0]]
    xq = xb[[dup[0]]] + 0.0
    stats: dict = {}
    D, I = dev.device_search(ArrayBlocks(xq), ArrayBlocks(xb), 3, 64, None, CPU2, extra=0, query_rows=8, db_rows=128, stats=stats)
    assert I.tolist() == [dup[:3]] and stats["fallback_rows"] >= 1  # re-searched on each shard holding ties
    D0, I0 = knn(xq, xb, 3, index="flat", use_gpu=False)
    np.testing.assert_array_equal(I, I0)
