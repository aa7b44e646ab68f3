"""Where the vectors come from: row-addressable embeddings read block by block.

The search never holds a database or query set whole: it reads a :class:`BlockSource` (an
array, a memory-mapped file, a sharded embedding store) in blocks of ``block_rows`` rows,
converted to float32 one block at a time. :func:`_blocks` evens out the sources' own block
sizes (shards end mid-block) so that the matrix products stay large; :func:`_sample_rows` draws
the training samples of the approximate indexes without a full pass where the source allows it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError


@runtime_checkable
class BlockSource(Protocol):
    """Row-addressable embeddings, possibly memory-mapped and too big to load at once.

    Optionally a source may also offer ``embeddings(indices) -> (len(indices), dim) float32``
    for random row access (used to sample training vectors without a full pass).
    """

    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive float32 C-contiguous blocks of at most ``rows`` rows, in row order."""
        ...


class ArrayBlocks:
    """An (n, dim) array of any float dtype (float16 memmaps included) as a :class:`BlockSource`.

    Blocks are converted to float32 one at a time; a float32 C-contiguous array is served as views.
    """

    def __init__(self, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise InputError(f"embeddings must be a 2-D array (rows, dim), got {getattr(array, 'shape', type(array))}")
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"embeddings must be floating point, got dtype {array.dtype}")
        self.array = array

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def dim(self) -> int:
        return self.array.shape[1]

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), rows):
            yield np.ascontiguousarray(self.array[start : start + rows], dtype=np.float32)

    def embeddings(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), dim) float32 rows at the given indices."""
        return np.ascontiguousarray(self.array[np.asarray(indices, dtype=np.int64)], dtype=np.float32)


def _as_source(x: BlockSource | np.ndarray, what: str) -> BlockSource:
    if isinstance(x, np.ndarray):
        return ArrayBlocks(x)
    if not all(hasattr(x, a) for a in ("__len__", "dim", "iter_blocks")):
        raise InputError(f"{what}: expected an array or a BlockSource, got {type(x).__name__}")
    return x


def _blocks(source: BlockSource, rows: int) -> Iterator[np.ndarray]:
    """The source's rows as float32 C-contiguous blocks of exactly ``rows`` rows (the last may be shorter).

    Short blocks (e.g. at shard boundaries) are coalesced so that the GEMM tiles stay large;
    full-size blocks pass through without a copy.
    """
    n, dim = len(source), source.dim
    buf: list[np.ndarray] = []
    have = got = 0
    for block in source.iter_blocks(rows):
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != dim:
            raise InputError(f"block source yielded a block of shape {block.shape}, expected (rows, {dim})")
        got += len(block)
        while len(block):
            if not buf and len(block) >= rows:
                yield block[:rows]
                block = block[rows:]
                continue
            take = min(rows - have, len(block))
            buf.append(block[:take])
            have += take
            block = block[take:]
            if have == rows:
                yield np.concatenate(buf)
                buf, have = [], 0
    if buf:
        yield np.concatenate(buf)
    if got != n:
        raise InputError(f"block source yielded {got} rows but reports {n}")


def _sample_rows(source: BlockSource, size: int, seed: int, block_rows: int) -> np.ndarray:
    """(size, dim) float32: rows drawn uniformly without replacement (in row order)."""
    n = len(source)
    rng = np.random.default_rng(seed)
    idx = np.arange(n) if size >= n else np.sort(rng.choice(n, size=size, replace=False))
    take = getattr(source, "embeddings", None)
    if callable(take):
        return np.ascontiguousarray(take(idx), dtype=np.float32)
    out = np.empty((len(idx), source.dim), dtype=np.float32)
    start = filled = 0
    for block in _blocks(source, block_rows):
        stop = start + len(block)
        hi = np.searchsorted(idx, stop)
        out[filled:hi] = block[idx[filled:hi] - start]
        filled, start = hi, stop
    return out
