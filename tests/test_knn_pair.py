"""Exact search of both directions from one pass (bitextmine.knn.pairwise, .tiles): equal to brute
force and to two FAISS IndexFlatIP searches, bf16 candidates re-scored to fp32 results, ties by
increasing id, progress, and results bit-identical whatever the number of threads."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
from knn_cases import assert_knn_equal, structured_data, unit

from bitextmine.knn import knn, knn_pair, tiles
from bitextmine.knn.pairwise import exact_search
from bitextmine.knn.sources import ArrayBlocks
from bitextmine.margin import select

SHAPES = [(37, 53, 24, 4, 1000), (3000, 5000, 32, 4, 1000), (5000, 3000, 64, 10, 2048), (10, 3, 8, 5, 4), (2500, 2600, 16, 1, 700)]


@pytest.fixture
def threads():
    before = faiss.omp_get_max_threads()
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_both_directions_equal_brute_force(shape, prec) -> None:
    nx, ny, d, k, block_rows = shape
    rng = np.random.default_rng(nx)
    x, y = unit(rng, nx, d), unit(rng, ny, d)
    (fd, fi), (bd, bi) = exact_search(ArrayBlocks(x), ArrayBlocks(y), k, block_rows, None, prec=prec)
    assert_knn_equal(fd, fi, x, y, k)
    assert_knn_equal(bd, bi, y, x, k)


def _structured(n: int, d: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like: a shared mean direction (all cosines high), topics, translations of half the rows."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d).astype(np.float32)
    topics = rng.standard_normal((50, d)).astype(np.float32)
    meaning = topics[rng.integers(0, 50, n)] + rng.standard_normal((n, d)).astype(np.float32)

    def emit(m: np.ndarray) -> np.ndarray:
        e = 3 * mu * np.sqrt(d) / np.linalg.norm(mu) + m + 0.8 * rng.standard_normal(m.shape).astype(np.float32)
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    x = emit(meaning)
    y_meaning = meaning.copy()
    y_meaning[n // 2 :] = topics[rng.integers(0, 50, n - n // 2)] + rng.standard_normal((n - n // 2, d)).astype(np.float32)
    y = emit(y_meaning)[rng.permutation(n)]
    return x, y


@pytest.mark.parametrize("data", ["structured", "isotropic"])
def test_bf16_candidates_give_fp32_pairs_and_scores(data) -> None:
    """Same neighbours as float32 search, similarities within 1e-4, same mined pairs."""
    if data == "structured":
        x, y = _structured(1500)
    else:
        rng = np.random.default_rng(5)
        centres = unit(rng, 200, 384)
        x = unit(rng, 1500, 384)
        x = 0.6 * centres[rng.integers(0, 200, 1500)] + 0.8 * x
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y = x + 0.75 * unit(rng, 1500, 384)
        y = (y / np.linalg.norm(y, axis=1, keepdims=True))[rng.permutation(1500)].astype(np.float32)
    ref = exact_search(ArrayBlocks(x), ArrayBlocks(y), 4, 65536, None, prec="fp32")
    got = exact_search(ArrayBlocks(x), ArrayBlocks(y), 4, 65536, None, prec="bf16")
    for (rd, ri), (gd, gi) in zip(ref, got):
        np.testing.assert_array_equal(np.sort(gi, axis=1), np.sort(ri, axis=1))  # the same neighbours
        clear = (np.diff(rd, axis=1) < -1e-6).all(axis=1)  # and the same order but for float32 near-ties
        np.testing.assert_array_equal(gi[clear], ri[clear])
        np.testing.assert_allclose(gd, rd, atol=1e-4)
    _same_pairs(select(*ref[0], *ref[1]), select(*got[0], *got[1]))


def _same_pairs(a, b) -> None:
    """The same (src, tgt) pairs with scores within 1e-4 (pairs whose scores differ by float
    rounding may be listed in either order)."""
    oa, ob = np.lexsort((a.tgt, a.src)), np.lexsort((b.tgt, b.src))
    np.testing.assert_array_equal(a.src[oa], b.src[ob])
    np.testing.assert_array_equal(a.tgt[oa], b.tgt[ob])
    np.testing.assert_allclose(a.score[oa], b.score[ob], atol=1e-4)


def test_pair_equals_two_faiss_flat_searches_and_mines_the_same_pairs() -> None:
    """The LASER procedure (IndexFlatIP both ways) and knn_pair(index="flat") select the same pairs."""
    x, y = _structured(2500, d=64, seed=3)
    ix, iy = faiss.IndexFlatIP(64), faiss.IndexFlatIP(64)
    ix.add(x)
    iy.add(y)
    ref_f, ref_b = iy.search(x, 4), ix.search(y, 4)
    fwd, bwd = knn_pair(x, y, 4, index="flat", block_rows=1000)
    np.testing.assert_allclose(fwd[0], ref_f[0], atol=1e-5)
    np.testing.assert_allclose(bwd[0], ref_b[0], atol=1e-5)
    _same_pairs(select(*ref_f, *ref_b), select(*fwd, *bwd))


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_ties_keep_the_lower_ids_even_at_the_cut(prec) -> None:
    """Duplicated database rows: equal similarities listed by increasing id, lower ids make the cut.
    (Rows of four 1/2s: every product is exact, so duplicates tie exactly in any BLAS kernel.)"""
    import itertools

    combos = list(itertools.combinations(range(16), 4))
    pick = np.random.default_rng(2).choice(len(combos), 300, replace=False)
    base = np.zeros((300, 16), np.float32)
    for r, j in enumerate(pick):
        base[r, list(combos[j])] = 0.5  # unit rows; a row scores 1 with itself, at most 0.75 with others
    y = np.concatenate([base, base, base])  # row j, j+300, j+600 identical
    x = base[:50]
    (_, fi), (_, bi) = exact_search(ArrayBlocks(x), ArrayBlocks(y), 2, 128, None, prec=prec)
    np.testing.assert_array_equal(fi, np.stack([np.arange(50), np.arange(50) + 300], 1))
    # every y row's best source is its own base row; y rows of equal value list their lower ids first
    assert (bi[:50, 0] == np.arange(50)).all()
    np.testing.assert_array_equal(bi[:50], bi[300:350])


def test_k_beyond_the_sides_and_progress() -> None:
    x, y = structured_data()[:2]
    seen: list[int] = []
    fwd, bwd = knn_pair(x[:7], y[:5], 9, index="flat", block_rows=3, progress=seen.append)
    assert fwd[1].shape == (7, 5) and bwd[1].shape == (5, 7)
    assert (fwd[1] >= 0).all() and (bwd[1] >= 0).all()
    assert sum(seen) == 12 and all(s >= 0 for s in seen)
    assert_knn_equal(*fwd, x[:7], y[:5], 9)


@pytest.mark.parametrize("index", ["flat", "IVF16,Flat", "IVF16,SQfp16", "HNSW16"])
def test_one_and_two_threads_give_identical_bits(index, threads) -> None:
    """Work is cut in fixed pieces: D and I are bit-identical with 1 and 2 worker threads."""
    x, y = _structured(6000, d=64, seed=4)
    out = []
    for n in (1, 2):
        faiss.omp_set_num_threads(n)
        # blocks of 5000 rows: FAISS paths cut them into query slices of 4096 + 904 rows
        out.append(knn_pair(x, y, 4, index=index, block_rows=5000, train_size=2000 if index != "flat" else None))
        out.append(knn(y, x, 4, index=index, block_rows=5000, train_size=2000 if index != "flat" else None))
    for a, b in zip(out[:2], out[2:]):
        for da, db in zip(a if isinstance(a[0], tuple) else [a], b if isinstance(b[0], tuple) else [b]):
            np.testing.assert_array_equal(da[0], db[0])
            np.testing.assert_array_equal(da[1], db[1])


def test_precision_choice(monkeypatch) -> None:
    """fp32 without bf16 matrix units, bf16 with them, from the flags alone (no timing: a choice measured
    under load could flip a run's output bytes); an environment setting forces either."""
    monkeypatch.delenv("BITEXTMINE_KNN_PRECISION", raising=False)
    monkeypatch.setattr(tiles, "_chosen", {})
    monkeypatch.setattr(tiles, "cpu_flags", lambda: {"avx2", "fma"})
    assert tiles.precision() == "fp32"
    for flag in ("amx_bf16", "avx512_bf16"):
        monkeypatch.setattr(tiles, "_chosen", {})
        monkeypatch.setattr(tiles, "cpu_flags", lambda: {"avx2", flag})
        assert tiles.precision() == "bf16"
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "fp32")
    assert tiles.precision() == "fp32"


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_small_tiles_prune_by_running_lists_and_stay_exact(prec, monkeypatch, threads) -> None:
    """Many strips, waves and tiles a sweep (tiles of 64 x 96, blocks of 700 rows): the pruning by
    the running lists' k-th values keeps every entry that belongs to a top-k, both ways, bit-identical
    with 1 and 2 threads."""
    from bitextmine.knn import pairwise

    monkeypatch.setattr(pairwise, "TILE_ROWS", 64)
    monkeypatch.setattr(pairwise, "TILE_COLS", 96)
    x, y = _structured(1500, d=48, seed=6)
    out = []
    for n in (1, 2):
        faiss.omp_set_num_threads(n)
        out.append(exact_search(ArrayBlocks(x), ArrayBlocks(y[:1300]), 5, 700, None, prec=prec))
    (fd, fi), (bd, bi) = out[0]
    assert_knn_equal(fd, fi, x, y[:1300], 5)
    assert_knn_equal(bd, bi, y[:1300], x, 5)
    for a, b in zip(out[0], out[1]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_bf16_rows_whose_left_out_entries_might_win_are_searched_again(monkeypatch) -> None:
    """With no extra candidates (k = 4 kept by bf16 estimate), rows where an entry left out could
    beat the 4th are searched again in float32: the results equal the float32 search's."""
    from bitextmine.knn import pairwise

    monkeypatch.setattr(pairwise, "BF16_EXTRA", 0)
    again: list[int] = []
    real = pairwise.exact_search

    def spy(xs, ys, k, block_rows, progress, both=True, prec=None):
        if prec == "fp32":
            again.append(len(xs))
        return real(xs, ys, k, block_rows, progress, both, prec)

    monkeypatch.setattr(pairwise, "exact_search", spy)
    x, y = _structured(1200)
    ref = real(ArrayBlocks(x), ArrayBlocks(y), 4, 65536, None, prec="fp32")
    again.clear()
    got = real(ArrayBlocks(x), ArrayBlocks(y), 4, 65536, None, prec="bf16")
    assert again  # rows were searched again
    for (rd, ri), (gd, gi) in zip(ref, got):
        np.testing.assert_array_equal(np.sort(gi, axis=1), np.sort(ri, axis=1))
        np.testing.assert_allclose(gd, rd, atol=1e-4)


def test_bf16_centres_embeddings_with_a_shared_direction_only() -> None:
    """Embeddings with a large shared mean are centred before the bf16 product; near-isotropic ones are not."""
    from bitextmine.knn.pairwise import _centre

    x, y = _structured(800)
    assert np.linalg.norm(_centre(ArrayBlocks(x), ArrayBlocks(y), 65536)) > 0.5
    rng = np.random.default_rng(1)
    u, v = unit(rng, 800, 384), unit(rng, 800, 384)
    assert not _centre(ArrayBlocks(u), ArrayBlocks(v), 65536).any()
