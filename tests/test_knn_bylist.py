"""The by-list IVF scan (bitextmine.knn.bylist): pruned by each query's nearest list, float32 or
bf16 products, the same neighbours as brute force over the probed lists, whatever the threads."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from bitextmine.knn import bylist, ivf, knn_pair
from bitextmine.knn.int8 import int8_ready
from bitextmine.knn.sources import ArrayBlocks

INT8 = pytest.mark.skipif(not int8_ready(), reason="no exact int8 matrix products on this CPU (no VNNI / AMX)")


def _shared_mean(n: int, d: int, seed: int) -> np.ndarray:
    """Unit rows with a large shared direction (as multilingual embeddings have): bf16 products of
    them round by far more than those of centred rows."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d)
    c = rng.standard_normal((30, d))
    a = 1.5 * mu / np.linalg.norm(mu) + c[rng.integers(0, 30, n)] / np.sqrt(d) + 0.6 * rng.standard_normal((n, d)) / np.sqrt(d)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _built(spec: str, y: np.ndarray, nprobe: int) -> tuple[faiss.Index, faiss.IndexIVF]:
    """(the filled index, the IVF inside it): keep the first referenced while the second is used."""
    index = ivf._new_index(spec, y.shape[1])
    ivf._train(index, spec, [ArrayBlocks(y)], 1500, 0, 1024, False)
    built, _ = ivf._fill(index, spec, ArrayBlocks(y), nprobe, False, 1024)
    return built, bylist._ivf_of(built)


def _brute_over_probes(x: np.ndarray, index: faiss.IndexIVF, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, I): each query's k best among the stored (decoded) vectors of the lists it probes, float64, ties by id."""
    reader = bylist._ListReader(index)
    vecs, ids, lists = [], [], []
    for l in range(index.nlist):
        xb, i = reader.read(l)
        vecs.append(xb)
        ids.append(i)
        lists.append(np.full(len(i), l))
    vecs, ids, lists = np.concatenate(vecs), np.concatenate(ids), np.concatenate(lists)
    S = x.astype(np.float64) @ vecs.astype(np.float64).T
    allowed = (lists[None, :, None] == probes[:, None, :]).any(axis=2)
    S[~allowed] = -np.inf
    order = np.lexsort((np.broadcast_to(ids, S.shape), -S), axis=1)[:, :k]
    D = np.take_along_axis(S, order, 1)
    I = np.where(np.isfinite(D), ids[order], -1)
    return D, I


@pytest.mark.parametrize("prec", ["fp32", "bf16", pytest.param("int8", marks=INT8)])
@pytest.mark.parametrize("spec", ["IVF24,Flat", "IVF24,SQfp16", "IVF24,SQ8", "IVF24,PQ8"])
@pytest.mark.parametrize("merge_at", [None, 1])
def test_by_list_scan_equals_brute_force_over_the_probed_lists(prec: str, spec: str, merge_at: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same neighbours as brute force over the probed lists; ``merge_at`` = 1: the running bounds
    (:mod:`bitextmine.knn.running`) raised after every list, as tight as they get."""
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", prec)
    if merge_at is not None:
        monkeypatch.setattr(bylist, "MERGE_AT", merge_at)
    x, y = _shared_mean(1500, 48, 0), _shared_mean(2000, 48, 1)
    y[1::97] = y[0::97][: len(y[1::97])]  # exact duplicates: equal similarities listed by id
    k, nprobe = 7, 5
    _keep, index = _built(spec, y, nprobe)
    probes = index.quantizer.search(x, nprobe)[1]
    probes[::50] = -1  # queries probing nothing: padding
    probes[1::50, 0] = -1  # queries whose nearest list is missing: nothing bounds them first
    probes[2::50, 1:] = -1  # queries with one list only (fewer than k entries in it, some of them)
    examined, kept = [], []
    real_scan, real_top = bylist._scan, bylist._top

    def scan(workers, sizes, lists, fn, k=None, running=None):
        examined.append(int(sizes[lists[lists >= 0]].sum()))
        return real_scan(workers, sizes, lists, fn, k, running)

    def top(found, m, k_):
        kept.append(sum(len(f[0]) for f in found))
        return real_top(found, m, k_)

    monkeypatch.setattr(bylist, "_scan", scan)
    monkeypatch.setattr(bylist, "_top", top)
    D, I = bylist._search_ivf_by_list(index, ArrayBlocks(x), k, 1000, None, probe=lambda q0, xq, w: probes[q0 : q0 + len(xq)])
    Dr, Ir = _brute_over_probes(x, index, probes, k)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == (len(x), k)
    assert (I[::50] == -1).all() and np.isneginf(D[::50]).all()
    np.testing.assert_array_equal(I < 0, Ir < 0)
    np.testing.assert_allclose(np.where(I < 0, 0, D), np.where(Ir < 0, 0, Dr), atol=1e-5)
    with np.errstate(invalid="ignore"):  # -inf - -inf in padded rows
        gaps = np.diff(np.concatenate([Dr, np.full((len(x), 1), -np.inf)], axis=1), axis=1)
    clear = ((gaps < -1e-5) | ~np.isfinite(gaps)).all(axis=1)
    np.testing.assert_array_equal(I[clear], Ir[clear])
    ties = ~clear & (Ir >= 0).all(axis=1)
    assert all((np.diff(I[r][D[r] == D[r][0]]) > 0).all() for r in np.nonzero(ties)[0])  # equal sims: by id
    # pruned: the nearest lists' bounds leave a small part of the compared pairs to be sorted
    assert sum(kept) < 0.25 * sum(examined)


@pytest.mark.parametrize("prec", ["fp32", "bf16", pytest.param("int8", marks=INT8)])
def test_by_list_scan_is_bit_identical_with_one_and_two_threads(prec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", prec)
    x, y = _shared_mean(3000, 64, 2), _shared_mean(2500, 64, 3)
    before = faiss.omp_get_max_threads()
    out = []
    try:
        for n in (1, 2):
            faiss.omp_set_num_threads(n)
            out.append(knn_pair(x, y, 4, index="IVF16,SQfp16", nprobe=4, block_rows=1000, train_size=2000))
    finally:
        faiss.omp_set_num_threads(before)
    for a, b in zip(out[0], out[1]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_float32_estimates_through_torch_or_numpy_give_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan's float32 products go through torch (MKL) while torch keeps them IEEE float32, numpy's
    BLAS once a user lowers torch's float32 matmul precision (bf16 / tf32 would break the error bound);
    every returned similarity is re-computed pair by pair, so both give the same neighbours, bit for bit."""
    import torch

    from bitextmine.knn import tiles

    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "fp32")
    x, y = _shared_mean(2000, 64, 4), _shared_mean(1800, 64, 5)
    calls = {"torch": 0}
    real_mm = torch.mm

    def counted(*a, **kw):
        calls["torch"] += 1
        return real_mm(*a, **kw)

    monkeypatch.setattr(torch, "mm", counted)
    assert tiles.torch_fp32()
    via_torch = knn_pair(x, y, 4, index="IVF16,Flat", nprobe=4, block_rows=700, train_size=1500)
    assert calls["torch"] > 0
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert not tiles.torch_fp32()
        calls["torch"] = 0
        via_numpy = knn_pair(x, y, 4, index="IVF16,Flat", nprobe=4, block_rows=700, train_size=1500)
        assert calls["torch"] == 0
    finally:
        torch.set_float32_matmul_precision(before)
    for a, b in zip(via_torch, via_numpy):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("spec", ["IVF16,PQ8", "IVF16,PQ12x4", "OPQ8,IVF16,PQ8", "PCA24,IVF16,Flat", "OPQ8,IVF16,SQ8"])
def test_product_codes_and_linear_pre_transforms_are_searched_by_list_as_faiss_scores_them(
        spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto's smallest tier (OPQ rotation + product codes) and other linear pre-transforms go through
    the by-list scan (not FAISS's per-query scan), with FAISS's own neighbours and similarities."""
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "fp32")
    x, y = _shared_mean(600, 48, 4), _shared_mean(3000, 48, 5)
    built, _ = _built(spec, y, 6)
    assert bylist._by_list(built) is not None
    monkeypatch.setattr(ivf, "_search_blocks", lambda *a, **kw: pytest.fail("searched through FAISS"))
    D, I = ivf._search(built, False, ArrayBlocks(x), 5, 256, None)
    Df, If = built.search(x, 5)
    np.testing.assert_allclose(D, Df, atol=2e-5)
    assert (I == If).mean() > 0.99  # the rest: near-ties ordered by float32 rounding
    normed = faiss.index_factory(48, "L2norm,IVF16,Flat", faiss.METRIC_INNER_PRODUCT)  # not linear: FAISS's own scan
    assert bylist._by_list(normed) is None


def test_pre_transformed_queries_do_not_depend_on_the_block_shape() -> None:
    """The composed pre-transform runs in float64: a row's transformed bits are the same in any block
    (so Ray query parts give the local search's neighbours bit for bit)."""
    y = _shared_mean(3000, 48, 6)
    built, _ = _built("OPQ8,IVF16,PQ8", y, 4)
    _, transform = bylist._by_list(built)
    src = bylist._Transformed(ArrayBlocks(y), transform)
    whole = np.concatenate(list(src.iter_blocks(3000)))
    parts = np.concatenate(list(src.iter_blocks(7)))
    np.testing.assert_array_equal(whole, parts)
    rotated = faiss.downcast_index(built).apply_chain(len(y), faiss.swig_ptr(y))  # FAISS's float32 transform
    np.testing.assert_allclose(whole, faiss.rev_swig_ptr(rotated, y.size).reshape(y.shape), atol=1e-5)


@pytest.mark.parametrize("prec", ["fp32", "bf16", pytest.param("int8", marks=INT8)])
def test_cutting_held_entries_to_the_k_best_changes_no_bit(prec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker cuts the entries it holds to its queries' k best whenever they pass REDUCE_AT (the
    memory of a query block at 1M rows was GBs): the same neighbours and ties, bit for bit, as holding all."""
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", prec)
    x, y = _shared_mean(1200, 48, 7), _shared_mean(2500, 48, 8)
    y[1::53] = y[0::53][: len(y[1::53])]  # exact duplicates: ties at the cut
    _keep, index = _built("IVF24,SQfp16", y, 8)
    out, cuts = [], []
    real = bylist._reduce

    def reduce(found, k):
        cuts.append(sum(len(f[0]) for f in found))
        return real(found, k)

    monkeypatch.setattr(bylist, "_reduce", reduce)
    for at in (1 << 40, 50):
        monkeypatch.setattr(bylist, "REDUCE_AT", at)
        out.append(bylist._search_ivf_by_list(index, ArrayBlocks(x), 6, 1200, None))
    assert len(cuts) >= 8  # the small limit did cut, again and again
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("prec", ["fp32", pytest.param("int8", marks=INT8)])
def test_small_indexes_decode_each_list_once_and_give_the_same_bits(prec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded lists kept for the whole search when they fit DECODED_CACHE_BYTES: each list decoded once
    (not up to three times a query block, in several blocks), the same neighbours, bit for bit, as without."""
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", prec)
    x, y = _shared_mean(1500, 48, 9), _shared_mean(2500, 48, 10)
    _keep, index = _built("IVF24,SQfp16", y, 8)
    decoded: list[int] = []
    real = bylist._ListReader._decode

    def decode(self, l):
        decoded.append(l)
        return real(self, l)

    monkeypatch.setattr(bylist._ListReader, "_decode", decode)
    out = []
    for cache in (0, 1 << 30):
        monkeypatch.setattr(bylist, "DECODED_CACHE_BYTES", cache)
        decoded.clear()
        out.append(bylist._search_ivf_by_list(index, ArrayBlocks(x), 4, 500, None))  # three query blocks
        if cache:
            assert len(decoded) == len(set(decoded)) <= 24
        else:
            assert len(decoded) > 2 * len(set(decoded))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("spec,width", [("IVF16,SQfp16", 48), ("RR96,IVF16,Flat", 96)])
def test_query_blocks_are_bounded_by_bytes_whatever_the_probes(spec: str, width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Few probes allow long query blocks by the block and probe bounds (262,144 rows at 8 probes: ~1.5 GiB
    of block-sized arrays at 384-d in the 10M run); the byte bound cuts them, counted at the widest of the
    query rows and the rows searched (a pre-transform may widen them), and the neighbours do not change."""
    from bitextmine.knn import knn, policy

    x, y = _shared_mean(2500, 48, 7), _shared_mean(3000, 48, 8)
    seen: list[int] = []
    D0, I0 = knn(x, y, 4, index=spec, nprobe=2, block_rows=4096, progress=seen.append)
    assert seen == [2500]  # 4 x 4096 rows allowed by the block and probe bounds
    monkeypatch.setattr(policy, "IVF_QUERY_BYTES", 1500 * 4 * width)
    seen.clear()
    D1, I1 = knn(x, y, 4, index=spec, nprobe=2, block_rows=4096, progress=seen.append)
    assert seen == [1500, 1000]
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_array_equal(D0, D1)
