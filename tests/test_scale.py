"""Speed and scale paths: approximate vs exact mining, blocked vs unblocked search, memory-mapped
shards read block by block, the by-list IVF search, shared training of both directions, GPU
fallback, and the encoder's unpadded forward and worker threads (against the model's own forward).
No wall-clock asserts: speed is measured in benchmarks/."""
from __future__ import annotations

import gc
import json
import tracemalloc
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

import bitextmine.knn as knn_mod
import bitextmine.knn.bylist as knn_bylist
import bitextmine.knn.gpu as knn_gpu
import bitextmine.knn.ivf as knn_ivf
import bitextmine.knn.policy as knn_policy
from bitextmine.encoder import ROW_BUCKET, Encoder, PackedForward
from bitextmine.knn import GpuFallbackWarning, auto_index, knn, knn_pair
from bitextmine.mining import MineOptions, mine_stores
from bitextmine.models.loader import load_model
from bitextmine.store import FORMAT, FORMAT_VERSION, EmbeddingStore, ShardWriter, schema, write_manifest
from bitextmine.knn.tiles import BF16_EXTRA, precision
from conftest import make_sentences

# ------------------------------------------------------------------------------------------ helpers


def structured(n: int, d: int = 48, paired: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered anisotropic unit vectors with a shared mean direction; the first ``paired * n``
    sources have a noisy translation hidden among the targets. Returns (x, y, truth (m, 2))."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    basis = (q * (np.arange(1, d + 1) ** -0.5)).astype(np.float32)
    basis /= np.sqrt((basis**2).sum() / d)
    mu = rng.standard_normal(d).astype(np.float32)
    mu /= np.linalg.norm(mu)
    centers = rng.standard_normal((max(4, n // 50), d)).astype(np.float32) @ basis.T * 0.25

    def meanings(m: int) -> np.ndarray:
        return centers[rng.integers(0, len(centers), m)] + 0.2 * rng.standard_normal((m, d)).astype(np.float32) @ basis.T

    def emit(m: np.ndarray) -> np.ndarray:
        e = 0.5 * mu + m + 0.05 * rng.standard_normal(m.shape).astype(np.float32) @ basis.T
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    npair = int(n * paired)
    m = meanings(n)
    x = emit(m)
    m_y = m.copy()
    m_y[npair:] = meanings(n - npair)
    perm = rng.permutation(n)
    y = np.empty_like(x)
    y[perm] = emit(m_y)
    return x, y, np.stack([np.arange(npair), perm[:npair]], 1)


def write_store(folder: Path, emb: np.ndarray, shard_rows: list[int], fingerprint: str = "test") -> EmbeddingStore:
    """An embedding folder in bitextmine's format with shards of the given sizes (cycled)."""
    folder.mkdir(parents=True)
    sch = schema(emb.shape[1], False, fingerprint)
    shards, start, i = [], 0, 0
    while start < len(emb):
        rows = min(shard_rows[i % len(shard_rows)], len(emb) - start)
        with ShardWriter(folder, len(shards), sch) as w:
            part = emb[start : start + rows]
            half = rows // 2  # two record batches per shard
            for a, b in ((0, half), (half, rows)):
                if b > a:
                    w.write(part[a:b], np.zeros(b - a, np.int16), np.arange(start + a, start + b) + 1, [f"s{j}" for j in range(start + a, start + b)])
            shards.append(w.close())
        start, i = start + rows, i + 1
    write_manifest(folder, {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint, "model": "test",
                                          "recipe": {}, "dim": emb.shape[1], "dtype": "float16", "inputs": [{"path": "x"}],
                                          "id_column": False, "complete": True, "shards": shards, "count": len(emb)})
    return EmbeddingStore(folder)


def pairs_of(res) -> set[tuple[int, int]]:
    return set(zip(res.pairs.src.tolist(), res.pairs.tgt.tolist()))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[EmbeddingStore, EmbeddingStore, np.ndarray]:
    x, y, truth = structured(6000)
    base = tmp_path_factory.mktemp("scale")
    return write_store(base / "x", x, [2500, 1700]), write_store(base / "y", y, [4000]), truth


# ------------------------------------------------------------------------------------------ mining


def test_approximate_and_exact_select_the_same_pairs(stores, monkeypatch) -> None:
    xs, ys, truth = stores
    exact = mine_stores(xs, ys, MineOptions(index="flat"))
    ivf = mine_stores(xs, ys, MineOptions(index="IVF64,SQfp16", nprobe=8))
    monkeypatch.setattr(knn_policy, "AUTO_FLAT_BELOW", 1000)  # make "auto" choose IVF at this size
    spec, params = knn_mod.auto_index(len(ys), ys.dim)
    assert spec.startswith("IVF") and spec.endswith("SQfp16")
    auto = mine_stores(xs, ys, MineOptions(index="auto"))
    assert exact.index == "flat" and auto.index == f"{spec} (nprobe {params['nprobe']})"  # what ran, not "auto"
    true_pairs = set(map(tuple, truth.tolist()))
    found = pairs_of(exact) & true_pairs
    assert len(found) >= 0.95 * len(true_pairs)  # the set is structured, not trivial, but mineable
    # The true pairs exact search recovers, the approximate paths recover too.
    assert len(pairs_of(ivf) & found) >= 0.995 * len(found)
    assert len(pairs_of(auto) & found) >= 0.995 * len(found)
    # and almost all pairs agree, true or not (the max strategy also pairs unrelated sentences)
    assert len(pairs_of(auto) & pairs_of(exact)) >= 0.97 * len(exact.pairs.src)


def test_blocked_exact_equals_unblocked_on_sharded_store(stores) -> None:
    xs, ys, _ = stores
    x = np.concatenate(list(xs.iter_blocks(1 << 20)))
    y = np.concatenate(list(ys.iter_blocks(1 << 20)))
    index = faiss.IndexFlatIP(y.shape[1])
    index.add(y)
    D0, I0 = index.search(x, 4)
    for rows in (333, 1024, 5000):  # blocks straddle the uneven shards and record batches
        D, I = knn(xs, ys, 4, block_rows=rows)
        np.testing.assert_allclose(D, D0, atol=1e-6)
        near_tie = np.abs(np.diff(np.sort(D0, axis=1), axis=1)).min(axis=1) < 1e-6
        np.testing.assert_array_equal(I[~near_tie], I0[~near_tie])
    blocked = mine_stores(xs, ys, MineOptions(index="flat", block_rows=777))
    whole = mine_stores(xs, ys, MineOptions(index="flat", block_rows=1 << 20))
    assert pairs_of(blocked) == pairs_of(whole)


def test_by_list_ivf_search_equals_faiss_search(stores) -> None:
    """The by-list CPU search visits the same lists and scores as FAISS's own IVF search."""
    xs, ys, _ = stores
    x = np.concatenate(list(xs.iter_blocks(1 << 20)))
    for spec in ("IVF32,Flat", "IVF32,SQfp16", "IVF32,SQ8"):
        index = knn_ivf._new_index(spec, ys.dim)
        knn_ivf._train(index, spec, [ys], 2000, 0, 1024, False)
        built, on_gpu = knn_ivf._fill(index, spec, ys, 5, False, 1024)
        ivf = knn_bylist._ivf_of(built)
        assert not on_gpu and knn_bylist._decodable(ivf)
        D0, I0 = built.search(x, 4)
        D, I = knn_bylist._search_ivf_by_list(ivf, knn_mod.ArrayBlocks(x), 4, 1500, None)
        np.testing.assert_allclose(D, D0, atol=1e-5)
        clear = (np.diff(D0, axis=1) < -1e-5).all(axis=1)
        np.testing.assert_array_equal(I[clear], I0[clear])


def test_knn_pair_equals_two_searches(stores) -> None:
    xs, ys, _ = stores
    (fd, fi), (bd, bi) = knn_pair(xs, ys, 3, block_rows=2048)
    fd0, fi0 = knn(xs, ys, 3, block_rows=2048)
    bd0, bi0 = knn(ys, xs, 3, block_rows=2048)
    np.testing.assert_array_equal(fi, fi0)
    np.testing.assert_array_equal(bi, bi0)
    np.testing.assert_array_equal(fd, fd0)
    # IVF: one training on both sides; with every list probed the search is exact
    (fd, fi), (bd, bi) = knn_pair(xs, ys, 3, index="IVF16,SQfp16", nprobe=16, train_size=1000)
    np.testing.assert_allclose(fd, fd0, atol=1e-5)
    np.testing.assert_allclose(bd, bd0, atol=1e-5)


def test_knn_pair_progress_counts_both_directions(stores) -> None:
    xs, ys, _ = stores
    seen: list[int] = []
    knn_pair(xs, ys, 2, index="IVF16,Flat", nprobe=4, block_rows=1000, progress=seen.append)
    assert sum(seen) == len(xs) + len(ys)


def test_store_blocks_are_views_of_the_memory_map(stores) -> None:
    xs, _, _ = stores
    for c in xs._chunks:
        assert not c.emb.flags.owndata and c.emb.dtype == np.float16  # zero-copy views into the mapped file


def test_mining_a_store_larger_than_the_memory_budget(tmp_path) -> None:
    """A 100 MB store of fp16 shards (200 MB as float32) is mined against a small one with
    block_rows=2048 while Python-side allocations (numpy arrays: tracemalloc) stay far below
    the store's size: the shards are read block by block from the memory map, never whole. (The
    exact search's fixed cost — one 1024 x 4096 similarity tile per worker and two blocks — is
    ~50 MB whatever the store's size; its running lists take 16 bytes a candidate, k a row, k + 16
    on the bf16 path.)"""
    n, m, d = 100_000, 2_000, 512
    rng = np.random.default_rng(5)
    big = rng.standard_normal((n, d)).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    xs = write_store(tmp_path / "x", big, [40_000])
    picked = rng.choice(n, size=m, replace=False)
    noisy = big[picked] + 0.05 * rng.standard_normal((m, d)).astype(np.float32) / np.sqrt(d)
    ys = write_store(tmp_path / "y", noisy / np.linalg.norm(noisy, axis=1, keepdims=True), [m])
    del big, noisy
    gc.collect()
    store_fp32 = n * d * 4
    tracemalloc.start()
    try:
        res = mine_stores(xs, ys, MineOptions(index="flat", block_rows=2048))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # plus the running candidate lists, a row each (id, value and, on the bf16 path, a float32 re-score)
    lists = n * (4 + (BF16_EXTRA if precision() == "bf16" else 0)) * 16
    assert peak < store_fp32 / 3 + lists, f"peak traced allocation {peak / 2**20:.1f} MiB for a {store_fp32 / 2**20:.0f} MiB (fp32) store"
    found = dict(zip(res.pairs.tgt.tolist(), res.pairs.src.tolist()))
    assert all(found.get(j) == int(picked[j]) for j in range(m))  # and every hidden pair is found


def test_gpu_requested_without_gpu_warns_and_falls_back(stores, monkeypatch) -> None:
    xs, ys, _ = stores
    monkeypatch.setattr(knn_gpu, "_num_gpus", lambda: 0)
    monkeypatch.setattr(knn_gpu, "_warned", set())
    with pytest.warns(GpuFallbackWarning, match="no GPU"):
        D, I = knn(xs, ys, 2, use_gpu=True)
    D0, I0 = knn(xs, ys, 2, use_gpu=False)
    np.testing.assert_array_equal(I, I0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no GPU asked for, none present: silent
        monkeypatch.setattr(knn_gpu, "_gpu_device_present", lambda: False)
        knn(xs, ys, 2)


def test_gpu_present_but_cpu_faiss_warns(stores, monkeypatch) -> None:
    xs, ys, _ = stores
    monkeypatch.setattr(knn_gpu, "_num_gpus", lambda: 0)
    monkeypatch.setattr(knn_gpu, "_gpu_device_present", lambda: True)
    monkeypatch.setattr(knn_gpu, "_warned", set())
    if hasattr(faiss, "StandardGpuResources"):
        pytest.skip("this FAISS build has GPU support")
    with pytest.warns(GpuFallbackWarning, match="faiss-gpu"):
        knn(xs, ys, 2)


def test_auto_rule_scales_lists_and_probes() -> None:
    prev = None
    for n in (100_000, 1_000_000, 10_000_000):
        spec, params = auto_index(n, 384)
        nlist = int(spec.split(",")[0][3:])
        assert params["train_size"] <= n and params["train_size"] >= 32 * min(nlist, n // 32)
        assert 1 <= params["nprobe"] <= nlist
        if prev:
            assert nlist > prev
        prev = nlist
    assert auto_index(1_000_000, 384, memory_budget=2**32)[0].endswith(",SQfp16")  # 0.77 GB of fp16 codes
    assert auto_index(10_000_000, 384, memory_budget=2**32)[0].endswith(",SQ8")  # fp16 would be 7.7 GB, over 4 GiB
    assert auto_index(1_000_000, 384, memory_budget=2**27)[0].endswith(",PQ64")


# ------------------------------------------------------------------------------------------ encoder


def _xlmr_tiny(folder: Path) -> Path:
    """A tiny XLM-R (positions start after the padding index) sharing the test tokenizer."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from conftest import build_tiny_model

    build_tiny_model(folder, recipe={"pooling": "cls", "prefix": "", "max_tokens": 32, "normalize": True, "name": "tiny-xlmr"})
    cfg = json.loads((folder / "config.json").read_text())
    torch.manual_seed(3)
    model = XLMRobertaModel(XLMRobertaConfig(vocab_size=cfg["vocab_size"], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=48, max_position_embeddings=40, pad_token_id=1, hidden_act="gelu_new"),
                            add_pooling_layer=False)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def xlmr_tiny(tmp_path_factory) -> Path:
    return _xlmr_tiny(tmp_path_factory.mktemp("xlmr"))


@pytest.mark.parametrize("which", ["bert", "xlmr"])
def test_packed_forward_equals_the_models_own_forward(which, tiny_model, xlmr_tiny) -> None:
    lm = load_model(str(tiny_model if which == "bert" else xlmr_tiny))
    texts = make_sentences(300, seed=4) + ["x", "der"]  # 1-token bodies: many sentences share an attention row
    own = Encoder(lm, precision="fp32", packed=False, token_budget=300).encode(texts)
    enc = Encoder(lm, precision="fp32", token_budget=300)
    assert enc.packed is not None
    got = enc.encode(texts)
    np.testing.assert_allclose(got, own, atol=2e-6)
    # no padding on the packed path beyond rounding each batch's rows up to ROW_BUCKET
    assert enc.stats.tokens <= enc.stats.padded_tokens < enc.stats.tokens + ROW_BUCKET * enc.stats.batches


def test_packed_bf16_stays_close_to_fp32(tiny_model) -> None:
    lm = load_model(str(tiny_model))
    texts = make_sentences(200, seed=5)
    ref = Encoder(lm, precision="fp32", packed=False).encode(texts)
    got = Encoder(lm, precision="bf16").encode(texts)
    assert (ref * got).sum(1).min() > 0.999
    assert next(lm.model.parameters()).dtype == torch.float32  # the caller's model is not cast


def test_workers_give_the_same_embeddings_in_order(tiny_model) -> None:
    lm = load_model(str(tiny_model))
    texts = make_sentences(500, seed=6)
    main_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference runs inline, single-threaded like each worker
    try:
        one = Encoder(lm, precision="fp32", workers=1, token_budget=64).encode(texts)
    finally:
        torch.set_num_threads(main_threads)
    enc = Encoder(lm, precision="fp32", workers=3, token_budget=64)
    many = enc.encode(texts)
    assert enc.stats.batches > 3
    np.testing.assert_array_equal(many, one)
    assert torch.get_num_threads() == main_threads  # worker threads keep their own settings
    assert enc._executor().submit(torch.get_num_threads).result() == enc.threads_per_worker
    enc.close()


def test_unsupported_architecture_uses_the_models_forward(tiny_model) -> None:
    lm = load_model(str(tiny_model))
    lm.model.config.position_embedding_type = "relative_key"
    try:
        assert PackedForward.build(lm.model) is None
    finally:
        lm.model.config.position_embedding_type = "absolute"
    assert PackedForward.build(torch.nn.Linear(2, 2)) is None


def test_packed_forward_uniform_lengths_skips_the_scatter(tiny_model) -> None:
    """Batches whose sentences all have the same length (common in large sorted chunks) take the no-scatter branch."""
    lm = load_model(str(tiny_model))
    texts = ["the cat dog house tree river", "der die das haus baum fluss", "le la les maison arbre ville"] * 7
    own = Encoder(lm, precision="fp32", packed=False).encode(texts)
    got = Encoder(lm, precision="fp32").encode(texts)
    np.testing.assert_allclose(got, own, atol=2e-6)


def test_centred_probing_crosses_a_language_offset() -> None:
    """Two sides offset by a constant vector: centred probing finds the translation in its list,
    plain IVF probing (FAISS's) often does not; both score with the original vectors."""
    rng = np.random.default_rng(11)
    d, n = 32, 4000
    centers = rng.standard_normal((200, d)).astype(np.float32)
    m = centers[rng.integers(0, 200, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    offset = 1.5 * rng.standard_normal(d).astype(np.float32)
    x = m + 0.05 * rng.standard_normal((n, d)).astype(np.float32)
    y = m + offset + 0.05 * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    (fd, fi), _ = knn_pair(x, y, 1, index="IVF64,Flat", nprobe=2, train_size=4000)
    centred = (fi[:, 0] == np.arange(n)).mean()
    np.testing.assert_allclose(fd[:, 0], (x * y[fi[:, 0]]).sum(1), atol=1e-5)  # exact scores of the original vectors
    plain_spec = knn_mod._centred_spec
    try:
        knn_mod._centred_spec = lambda spec: None
        (_, pi), _ = knn_pair(x, y, 1, index="IVF64,Flat", nprobe=2, train_size=4000)
    finally:
        knn_mod._centred_spec = plain_spec
    plain = (pi[:, 0] == np.arange(n)).mean()
    exact = (knn(x, y, 1)[1][:, 0] == np.arange(n)).mean()
    assert centred >= exact - 0.02 and centred > plain + 0.1, (centred, plain, exact)


def test_a_memory_budget_too_small_for_codes_in_memory_goes_on_disk(tmp_path, monkeypatch) -> None:
    """5k 32-d vectors (auto made to index from 1k rows) need >= 78 KiB even as 8-byte product codes and ids: with a
    50 KiB budget their lists go on disk (refused before any search when the temporary folder has not the room,
    naming the flag); a bad size is refused too; a budget between the SQ8 and the fp16 index picks SQ8, and the
    summary and report name the index that ran."""
    import json
    import shutil
    import tempfile

    from conftest import one_line_error
    from typer.testing import CliRunner

    from bitextmine.cli import app

    monkeypatch.setattr(knn_policy, "AUTO_FLAT_BELOW", 1000)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5_000, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    write_store(tmp_path / "x", emb, [3_000])
    run = CliRunner().invoke
    args = ["mine", str(tmp_path / "x"), str(tmp_path / "x"), "--out", str(tmp_path / "p.tsv")]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1000))
    line = one_line_error(run(app, [*args, "--memory-budget", "50K"]))  # on disk, and the disk is full
    assert "--memory-budget" in line and "on-disk index" in line and "--engine ray" in line and "TMPDIR" in line
    assert not (tmp_path / "p.tsv").exists()
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    res = run(app, [*args, "--memory-budget", "50K", "--top", "5", "--report", str(tmp_path / "d.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "d.json").read_text())["index"].startswith("OPQ32,IVF256,PQ32,ondisk")
    assert not list((tmp_path / "scratch").iterdir())  # the lists' file is gone
    line = one_line_error(run(app, [*args, "--memory-budget", "lots"]))
    assert "--memory-budget" in line and "not a size" in line
    res = run(app, [*args, "--memory-budget", "300K", "--top", "5", "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    used = json.loads((tmp_path / "r.json").read_text())["index"]
    assert used == "IVF256,SQ8 (nprobe 16)" and "IVF256,SQ8" in res.output  # 40 bytes a vector fit, fp16's 72 do not
