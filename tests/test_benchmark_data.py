"""The benchmark scripts' data writers still work with the library they import (a renamed helper
once broke benchmarks/mine.py at its first step, unnoticed until a long run)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench_mine(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("mine", None)
    return importlib.import_module("mine")


def test_mine_benchmark_writes_embedding_folders_the_library_opens(bench_mine, tmp_path: Path) -> None:
    from bitextmine.store import EmbeddingStore

    src, tgt, truth = bench_mine.write_folders(3000, tmp_path, 0.5, 0, shard_size=1000)
    a, b = EmbeddingStore(src), EmbeddingStore(tgt)
    assert len(a) == len(b) == 3000 and a.dim == b.dim == bench_mine.DIM
    assert len(truth) == 1500 and truth.shape[1] == 2
    assert np.all(truth[:, 0] < 3000) and np.all(truth[:, 1] < 3000)
    again = bench_mine.write_folders(3000, tmp_path, 0.5, 0, shard_size=1000)  # reused, not rewritten
    np.testing.assert_array_equal(again[2], truth)


def test_ablation_table_gives_each_variant_mean_and_sd_over_its_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("train_ablation", None)
    abl = importlib.import_module("train_ablation")

    def run(variant: str, seed: int, f1: float, tat: float) -> tuple[dict, dict]:
        evals = [{"kind": "eval", "step": 0, "mining_f1": 0.90, "flores_p@1": 0.97},
                 {"kind": "eval", "step": 50, "mining_f1": f1, "flores_p@1": 0.99, "best_step": 50}]
        v = {"variant": variant, "seed": seed, "command": "x", "best": {"step": 50, "score": f1, "set": "mining"},
             "dev_evals": evals, "median_steps_per_s": 1.0}
        r = {"tatoeba_command": "t", "bucc_command": "b", "bucc": {"f1": 0.9, "precision": 0.9, "recall": 0.9},
             "tatoeba": {"mean_both": tat, "xx2eng": tat, "eng2xx": tat, "langs": {"deu": (tat, tat)}}}
        return v, r

    rec = {"benchmark": "train_ablation", "steps": 50, "seeds": [0, 1], "config": "c", "started": "now", "command": "cmd",
           "machine": {"cores": 2, "cpu_model": "cpu"}, "variants": {}, "results": {}}
    _, rec["results"]["base"] = run("base", 0, 0.9, 0.80)
    for name, (variant, seed, f1, tat) in {"tr-s0": ("tr", 0, 0.94, 0.88), "tr-s1": ("tr", 1, 0.96, 0.90),
                                            "dap-s0": ("dap", 0, 0.95, 0.89), "dap-s1": ("dap", 1, 0.95, 0.89)}.items():
        rec["variants"][name], rec["results"][name] = run(variant, seed, f1, tat)
    md = abl.markdown(rec)
    assert "| tr | 2 | 99.00 ± 0.00 | 95.00 ± 1.41 | 89.00 ± 1.41 | 90.00 ± 0.00 |" in md  # sd of 0.94, 0.96
    assert "| dap | 2 | 99.00 ± 0.00 | 95.00 ± 0.00 | 89.00 ± 0.00 |" in md
    assert "| base (step 0 of each run) | 4 | 97.00 ± 0.00 | 90.00 ± 0.00 | 80.00 | 90.00 |" in md


def test_default_vs_base_splits_tatoeba_by_the_training_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Training files named by gettext codes (2-letter, script-suffixed, 3-letter) claim Tatoeba's 3-letter codes,
    macrolanguages included (zh -> cmn), and nothing else."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("default_vs_base", None)
    dvb = importlib.import_module("default_vs_base")
    for code in ("de", "zh_Hant", "ia", "ast", "sr_Latn"):
        (tmp_path / f"{code}-en.tsv").write_text("x\ty\n")
    (tmp_path / "notes.txt").write_text("")
    groups = dvb.trained_groups(str(tmp_path))
    assert {x for x in ("deu", "cmn", "ina", "ast", "srp", "fra", "ile", "yid") if dvb._group(x) in groups} == {
        "deu", "cmn", "ina", "ast", "srp"}


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/status").is_file(), reason="Linux /proc only")
def test_a_pass_over_a_store_does_not_keep_its_file_pages_resident(bench_mine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a folder block by block leaves one chunk of it, not the whole memory map, in the
    process's resident memory (a 1M-row folder is 0.8 GiB); the blocks are the same bits each pass."""
    import bitextmine.store as st

    src, _, _ = bench_mine.write_folders(40_000, tmp_path, 0.5, 0, shard_size=10_000)  # 4 x 7.3 MiB of fp16
    store = st.EmbeddingStore(src)
    size_kib = len(store) * store.dim * 2 // 1024

    def one_pass() -> tuple[int, list[np.ndarray]]:
        before = _rss_file_kib()
        blocks = [b[:, :4].copy() for b in store.iter_blocks(4096)]
        return _rss_file_kib() - before, blocks

    grown, first = one_pass()
    assert grown < size_kib / 3, (grown, size_kib)
    grown_again, second = one_pass()
    assert grown_again < size_kib / 3
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(st, "_libc", None)  # without the release the pages stay: the check can fail
    grown_kept, third = one_pass()
    assert grown_kept > size_kib * 0.8, (grown_kept, size_kib)
    for a, b in zip(first, third):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/status").is_file(), reason="Linux /proc only")
def test_a_sample_drawn_across_a_store_does_not_keep_its_file_pages_resident(bench_mine, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Random rows from every part of a folder (an index's training sample touches nearly every page)
    leave the pages of one chunk at most in resident memory; the rows are the same either way."""
    import bitextmine.store as st

    src, _, _ = bench_mine.write_folders(40_000, tmp_path, 0.5, 0, shard_size=10_000)
    store = st.EmbeddingStore(src)
    size_kib = len(store) * store.dim * 2 // 1024
    rows = np.arange(0, len(store), 3)  # a row of every page

    def sample() -> tuple[int, np.ndarray]:
        before = _rss_file_kib()
        got = store.embeddings(rows)
        return _rss_file_kib() - before, got

    grown, first = sample()
    assert grown < size_kib / 3, (grown, size_kib)
    np.testing.assert_array_equal(first[:, :4], np.concatenate(list(store.iter_blocks(4096)))[rows, :4])
    monkeypatch.setattr(st, "_libc", None)  # without the release the pages stay: the check can fail
    grown_kept, kept = sample()
    assert grown_kept > size_kib * 0.8, (grown_kept, size_kib)
    np.testing.assert_array_equal(first, kept)
