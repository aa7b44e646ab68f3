"""Block sources (bitextmine.knn.sources): float16 arrays, memory maps, irregular blocks, lying lengths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from knn_cases import Ragged, assert_knn_equal, small_data

from bitextmine.errors import InputError
from bitextmine.knn import ArrayBlocks, BlockSource, knn


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return small_data()


def test_float16_and_memmap(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = (a.astype(np.float16) for a in data)
    mm = np.lib.format.open_memmap(tmp_path / "xb.npy", mode="w+", dtype=np.float16, shape=xb.shape)
    mm[:] = xb
    mm.flush()
    mm = np.load(tmp_path / "xb.npy", mmap_mode="r")
    for db in (xb, mm, ArrayBlocks(mm)):
        D, I = knn(xq, db, 6, block_rows=10)
        assert_knn_equal(D, I, xq.astype(np.float32), xb.astype(np.float32), 6)


def test_ragged_block_source(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    src: BlockSource = Ragged(xb, [3, 1, 11, 2])
    assert isinstance(src, BlockSource)
    for block_rows in (1, 4, 10, 100):
        D, I = knn(Ragged(xq, [5, 2]), src, 3, block_rows=block_rows)
        assert_knn_equal(D, I, xq, xb, 3)
    with pytest.raises(InputError, match="yielded"):
        knn(xq, Ragged(xb, [4], lie=2), 3, block_rows=8)
