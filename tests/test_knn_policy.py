"""The ``"auto"`` rule (bitextmine.knn.policy): index, lists, probes and training sample by size."""
from __future__ import annotations

import numpy as np
import pytest
from knn_cases import assert_knn_equal, small_data

from bitextmine.knn import auto_index, knn


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return small_data()


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
