"""Exact re-ranking of product-code candidates from the stored vectors (bitextmine.knn.rerank)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from bitextmine.errors import InputError
from bitextmine.knn import ArrayBlocks, index_used, knn, knn_pair
from bitextmine.knn.rerank import MIN_DEPTH, depth, product_coded, rerank


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sources in 20 clusters, targets noisy copies (cosine ~0.9): close calls for coarse codes."""
    rng = np.random.default_rng(seed)
    c = unit(rng.standard_normal((20, d)))
    x = unit(c[rng.integers(0, 20, n)] + 0.6 * unit(rng.standard_normal((n, d))))
    y = unit(x + 0.45 * unit(rng.standard_normal((n, d))))
    return x, y


def test_depth_by_codes_and_option() -> None:
    assert product_coded("IVF64,PQ8") and product_coded("OPQ64,IVF4096,PQ64,ondisk") and product_coded("PQ16")
    assert not product_coded("IVF64,SQ8") and not product_coded("IVF64,Flat") and not product_coded("IVF64,PQ8,RFlat")
    assert not product_coded("OPQ16,IVF64,SQfp16")  # the rotation is not the codes
    assert depth("IVF64,PQ8", 4, 10_000) == max(16, MIN_DEPTH) and depth("IVF64,PQ8", 10, 10_000) == 40
    assert depth("IVF64,PQ8", 4, 9) == 9 and depth("IVF64,PQ8", 4, 3) == 3  # never past the database
    assert depth("IVF64,SQ8", 4, 10_000) is None and depth("IVF64,PQ8", 4, 10_000, 0) is None
    assert depth("IVF64,SQ8", 4, 10_000, 8) == 8 and depth("IVF64,SQ8", 4, 10_000, 2) == 4  # at least k
    assert depth("flat", 4, 10_000, 8) is None
    with pytest.raises(InputError, match="rerank"):
        depth("IVF64,PQ8", 4, 10_000, -1)


def test_rerank_keeps_the_exact_best_of_the_candidates() -> None:
    """Against a float64 brute force over each query's candidates: ids, order (ties by id), values, -1 candidates."""
    rng = np.random.default_rng(1)
    q, db = unit(rng.standard_normal((300, 16))), unit(rng.standard_normal((500, 16)))
    db[7] = db[3]  # an exact tie: the lower id first
    cand = np.stack([rng.permutation(500)[:12] for _ in range(300)])
    cand[:, :2] = [7, 3]  # the tied pair in reverse: the lower id must still come first
    cand[::5, -4:] = -1  # fewer candidates
    cand[1, 3:] = -1  # fewer than k
    k = 4
    D, I = rerank(ArrayBlocks(q), ArrayBlocks(db), cand, k)
    for r in range(300):
        c = cand[r][cand[r] >= 0]
        s = (q[r].astype(np.float64) @ db[c].T.astype(np.float64))
        want = c[np.lexsort((c, -np.round(s, 6)))][:k]
        got = I[r][I[r] >= 0]
        assert np.array_equal(got, want), r
        assert np.allclose(D[r][: len(got)], q[r] @ db[got].T, atol=1e-6)
        assert np.all(np.isneginf(D[r][len(got) :])) and np.all(I[r][len(got) :] == -1)
    assert len(I[1][I[1] >= 0]) == 3


def test_product_codes_return_exact_similarities_and_find_more_true_pairs() -> None:
    """PQ candidates re-ranked: every similarity is the float32 one of the stored rows, and the sources'
    top-1 is the exact search's more often than on the codes alone (on clustered data with close calls)."""
    x, y = clustered(4000)
    spec = "IVF16,PQ4"
    D0, I0 = knn(x, y, 4, spec, nprobe=16, rerank=0)
    D1, I1 = knn(x, y, 4, spec, nprobe=16)  # default: the top 16 re-ranked
    De, Ie = knn(x, y, 4, "flat")
    exact_sims = np.einsum("ij,ikj->ik", x, y[I1])
    assert np.allclose(D1, exact_sims, atol=2e-6)
    assert not np.allclose(D0, np.einsum("ij,ikj->ik", x, y[I0]), atol=1e-3)  # the codes' own similarities
    assert np.all(np.diff(D1, axis=1) <= 0)
    hit0, hit1 = (I0[:, 0] == Ie[:, 0]).mean(), (I1[:, 0] == Ie[:, 0]).mean()
    assert hit1 > hit0 + 0.3 and hit1 > 0.85, (hit0, hit1)  # 0.39 -> 0.90 when written
    # a depth of the whole database re-ranks everything probed: every list probed, the exact search's neighbours
    Dall, Iall = knn(x[:200], y, 4, spec, nprobe=16, rerank=len(y))
    assert np.array_equal(Iall, Ie[:200]) and np.allclose(Dall, De[:200], atol=2e-6)


def test_knn_pair_reranks_both_directions_and_reports_it() -> None:
    x, y = clustered(3000, seed=2)
    (fd, fi), (bd, bi) = knn_pair(x, y, 4, "IVF16,PQ4", nprobe=8)
    assert np.allclose(fd, np.einsum("ij,ikj->ik", x, y[fi]), atol=2e-6)
    assert np.allclose(bd, np.einsum("ij,ikj->ik", y, x[bi]), atol=2e-6)
    assert index_used("IVF16,PQ4", 3000, 3000, 32, nprobe=8) == "IVF16,PQ4 (nprobe 8, top 16 re-ranked exactly)"
    assert index_used("IVF16,PQ4", 3000, 3000, 32, nprobe=8, rerank=0) == "IVF16,PQ4 (nprobe 8)"
    assert index_used("IVF16,SQ8", 3000, 3000, 32, nprobe=8, k=8, rerank=40) == "IVF16,SQ8 (nprobe 8, top 40 re-ranked exactly)"


class _NoRandomReads:
    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __len__(self) -> int:
        return len(self.a)

    @property
    def dim(self) -> int:
        return self.a.shape[1]

    def iter_blocks(self, rows: int):
        for s in range(0, len(self.a), rows):
            yield self.a[s : s + rows]


def test_a_database_without_random_reads_is_searched_on_its_codes_with_a_warning() -> None:
    x, y = clustered(1000, seed=3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        D, I = knn(x, _NoRandomReads(y), 4, "IVF8,PQ4", nprobe=8)
    assert any("re-ranked" in str(m.message) for m in w)
    D0, I0 = knn(x, y, 4, "IVF8,PQ4", nprobe=8, rerank=0)
    assert np.array_equal(I, I0) and np.array_equal(D, D0)


def test_mine_cli_reranks_product_codes_and_says_so(tmp_path) -> None:
    """From embedding folders (random reads of the store): the summary names the re-rank, the scores are exact
    similarities' margins (as exact search's for the pairs both find), and --rerank 0 / -1 behave."""
    from test_scale import write_store
    from typer.testing import CliRunner

    from bitextmine.cli import app
    from bitextmine.mining import MineOptions, mine_stores
    from bitextmine.store import EmbeddingStore
    from conftest import one_line_error

    x, y = clustered(3000, seed=4)
    write_store(tmp_path / "x", x, [1000, 2000])
    write_store(tmp_path / "y", y, [3000])
    args = ["mine", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path / "p.tsv"), "--index", "IVF16,PQ4", "--nprobe", "16"]
    res = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["index"] == "IVF16,PQ4 (nprobe 16, top 16 re-ranked exactly)"
    assert "re-ranked" in res.output
    off = CliRunner().invoke(app, [*args, "--rerank", "0"])
    assert off.exit_code == 0 and "re-ranked" not in off.output
    one_line_error(CliRunner().invoke(app, [*args, "--rerank", "-1"]))
    xs, ys = EmbeddingStore(tmp_path / "x"), EmbeddingStore(tmp_path / "y")
    ex = mine_stores(xs, ys, MineOptions(index="flat"))
    exact = dict(zip(zip(ex.pairs.src.tolist(), ex.pairs.tgt.tolist()), ex.pairs.score.tolist()))

    def errors(rerank: int | None) -> tuple[float, np.ndarray]:
        got = mine_stores(xs, ys, MineOptions(index="IVF16,PQ4", nprobe=16, rerank=rerank)).pairs
        both = [(p, s) for p, s in zip(zip(got.src.tolist(), got.tgt.tolist()), got.score.tolist()) if p in exact]
        return len(both) / len(exact), np.array([abs(s - exact[p]) / abs(exact[p]) for p, s in both])

    (found, err), (found0, err0) = errors(None), errors(0)
    assert found > found0 + 0.1  # exact's pairs found: 0.99 against 0.81 when written
    assert np.percentile(err, 90) < np.percentile(err0, 90) / 4  # score error p90: 1.3% against 8.1%


def test_ray_parts_read_rows_at_random_through_their_row_map(tmp_path) -> None:
    """What the Ray actors re-rank from: a part's row i is the store's row ``rows[i]`` (after --dedup) or ``a + i``."""
    from test_scale import write_store

    from bitextmine.mining import SubsetBlocks
    from bitextmine.ray_parts import Part, part_blocks, whole

    x, _ = clustered(500, seed=5)
    store = write_store(tmp_path / "x", x, [200])
    idx = np.array([0, 3, 17, 99])
    plain = part_blocks(store, Part(str(store.folder), 100, 300))
    np.testing.assert_array_equal(plain.embeddings(idx), store.embeddings(100 + idx))
    rows = np.arange(0, 500, 3)  # a de-duplicated side: every third row kept
    mapped = part_blocks(store, whole(SubsetBlocks(store, rows)))
    np.testing.assert_array_equal(mapped.embeddings(idx), store.embeddings(rows[idx]))
    assert len(mapped) == len(rows)
    blocks = np.concatenate(list(plain.iter_blocks(64)))  # blocks of a contiguous part: its rows in order
    np.testing.assert_array_equal(blocks, store.embeddings(np.arange(100, 300)))
    np.testing.assert_array_equal(np.concatenate(list(mapped.iter_blocks(50))), store.embeddings(rows))

