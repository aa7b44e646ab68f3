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
