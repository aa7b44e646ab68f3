"""How the centred IVF draws its lists (bitextmine.knn.centred): L2 k-means, spherical where L2
leaves hub lists, and list assignments shared between the two directions of knn_pair."""
from __future__ import annotations

import numpy as np
import pytest

from bitextmine.knn import centred, knn_pair
from bitextmine.knn.assign import _assign
from bitextmine.knn.fuse import _fuse
from bitextmine.knn.sources import ArrayBlocks
from bitextmine.knn.workers import _Workers


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def hubby(n: int = 10_000, d: int = 384, centres: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """benchmarks/mine_speed.py's near-isotropic data at 10k: L2 k-means on it leaves hub lists."""
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((centres, d)))
    x = _unit(0.6 * c[rng.integers(0, centres, n)] + 0.8 * _unit(rng.standard_normal((n, d))))
    y = _unit(x + 0.75 * _unit(rng.standard_normal((n, d))))
    return x, y[rng.permutation(n)]


def clustered(n: int = 10_000, d: int = 384, seed: int = 1, centres: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Many small clusters: L2 lists come out balanced (their probes scan 1.3-1.4x their share, FAISS's k-means or
    ours, seeds 1-3; with 40 clusters split over 128 lists, ~2x: at the ``centred.HUB_SCAN`` line)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    x = _unit(c[rng.integers(0, centres, n)] + 0.5 * rng.standard_normal((n, d)))
    y = _unit(x + 0.3 * rng.standard_normal((n, d)))
    return x, y


SPEC = "IVF128,SQfp16"


def _train(x: np.ndarray, y: np.ndarray) -> centred._Coarse:
    return centred._Coarse.train(SPEC, [ArrayBlocks(x), ArrayBlocks(y)], 16_384, 0, 65536, fit=[0, 1])


def _norms(coarse: centred._Coarse) -> np.ndarray:
    return np.linalg.norm(coarse.quantizer.reconstruct_n(0, coarse.nlist), axis=1)


def _ratio(coarse: centred._Coarse, x: np.ndarray, y: np.ndarray) -> float:
    train = np.concatenate([x - coarse.means[0], y - coarse.means[1]]).astype(np.float32)
    return centred._scan_ratio(coarse.quantizer.reconstruct_n(0, coarse.nlist), train, 16, 0)


def test_hub_lists_are_redrawn_spherical(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = hubby()
    monkeypatch.setattr(centred, "LISTS", "l2")
    l2 = _train(x, y)
    assert _ratio(l2, x, y) > centred.HUB_SCAN  # hubs: probes would scan over twice their share
    monkeypatch.setattr(centred, "LISTS", "auto")
    auto = _train(x, y)
    np.testing.assert_allclose(_norms(auto), 1.0, atol=1e-4)  # spherical: unit centroids
    assert _ratio(auto, x, y) < 0.6 * _ratio(l2, x, y)


def test_balanced_l2_lists_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = clustered()
    monkeypatch.setattr(centred, "LISTS", "l2")
    l2 = _train(x, y)
    monkeypatch.setattr(centred, "LISTS", "auto")
    auto = _train(x, y)
    assert _ratio(auto, x, y) <= centred.HUB_SCAN
    np.testing.assert_array_equal(_norms(auto), _norms(l2))  # the same L2 k-means, not redrawn


def test_auto_lists_find_exacts_neighbours_on_hub_data() -> None:
    x, y = hubby()
    (_, ei), _ = knn_pair(x, y, 4, index="flat", use_gpu=False)
    (_, ai), _ = knn_pair(x, y, 4, index=SPEC, nprobe=8, use_gpu=False)
    assert (ai[:, 0] == ei[:, 0]).mean() >= 0.99


@pytest.mark.parametrize("cache", [centred.PROBE_CACHE, 0])
def test_sharing_assignments_between_directions_changes_nothing(monkeypatch: pytest.MonkeyPatch, cache: int) -> None:
    """knn_pair assigns each side once (probes kept, or only the filed lists when over PROBE_CACHE):
    the same neighbours as two searches that each assign for themselves."""
    x, y = hubby(4000, 64, 100)
    monkeypatch.setattr(centred, "PROBE_CACHE", cache)
    got = knn_pair(x, y, 4, index="IVF64,SQfp16", nprobe=6, use_gpu=False, block_rows=1500)
    coarse = centred._Coarse.train("IVF64,SQfp16", [ArrayBlocks(x), ArrayBlocks(y)], None, 0, 1500, fit=[0, 1])
    assert not coarse.share
    fwd = coarse.search(ArrayBlocks(x), 0, ArrayBlocks(y), 1, 4, 6, 1500, None)
    bwd = coarse.search(ArrayBlocks(y), 1, ArrayBlocks(x), 0, 4, 6, 1500, None)
    want = _fuse(fwd, bwd)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("codes", ["SQfp16", "SQ8", "Flat"])
def test_lists_sized_beforehand_hold_what_adding_block_by_block_holds(codes: str) -> None:
    """_Coarse.build files every row first, sizes each list once (bylist.reserve_lists), then adds the codes:
    each list holds the same ids and codes, in the same order, as FAISS adding the blocks as they come."""
    import faiss

    x, y = hubby(3000, 32, 50)
    spec = f"IVF16,{codes}"
    coarse = centred._Coarse.train(spec, [ArrayBlocks(x), ArrayBlocks(y)], None, 0, 700, fit=[0, 1])
    built = coarse.build(ArrayBlocks(y), 1, 4, 700)
    plain = faiss.clone_index(built)
    plain.reset()
    with _Workers(2) as workers:  # the coarse quantizer's own filing (lists ranked by int8 estimates)
        lists = _assign(coarse.quantizer, np.ascontiguousarray(y - coarse.means[1]), 1, workers, coarse.coded).ravel()
    for a in range(0, len(y), 700):  # block by block, as before
        xb, lb = np.ascontiguousarray(y[a : a + 700]), np.ascontiguousarray(lists[a : a + 700], dtype=np.int64)
        plain.add_core(len(xb), faiss.swig_ptr(xb), None, faiss.swig_ptr(lb))
    assert built.ntotal == plain.ntotal == len(y)
    for l in range(16):
        n = built.invlists.list_size(l)
        assert n == plain.invlists.list_size(l) == int((lists == l).sum())
        ids = [faiss.rev_swig_ptr(ix.invlists.get_ids(l), n).copy() for ix in (built, plain)]
        codes_ = [faiss.rev_swig_ptr(ix.invlists.get_codes(l), n * ix.invlists.code_size).copy() for ix in (built, plain)]
        np.testing.assert_array_equal(ids[0], ids[1])
        np.testing.assert_array_equal(codes_[0], codes_[1])
