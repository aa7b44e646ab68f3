"""Parts of an embedding folder as the Ray mine workers read them (:mod:`bitextmine.ray_mine`).

A :class:`Part` names rows ``[a, b)`` of one side by folder path (what travels to a worker); the
worker reads them from the memory-mapped store as a BlockSource (:class:`PartBlocks`), block by
block or row by row (the exact re-rank's random reads, :mod:`bitextmine.knn.rerank`).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitextmine.errors import InputError


@dataclass(frozen=True)
class Part:
    """Rows ``[a, b)`` of one side, read by a worker from the folder (``rows``: the store rows after de-duplication)."""

    folder: str
    a: int
    b: int
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return self.b - self.a


class PartBlocks:
    """A :class:`Part` as a BlockSource (blocks read from the memory-mapped store, as float32)."""

    def __init__(self, store: Any, part: Part) -> None:
        self.store, self.part = store, part

    def __len__(self) -> int:
        return len(self.part)

    @property
    def dim(self) -> int:
        return self.store.dim

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        p = self.part
        return p.rows[lo:hi] if p.rows is not None else np.arange(p.a + lo, p.a + hi, dtype=np.int64)

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        for s in range(0, len(self), rows):
            yield self.store.embeddings(self._rows(s, min(s + rows, len(self))))

    def embeddings(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), dim) float32: rows of the part (random reads)."""
        idx, p = np.asarray(indices, dtype=np.int64), self.part
        return self.store.embeddings(p.rows[idx] if p.rows is not None else p.a + idx)


def parts(source: Any, align: int) -> list[Part]:
    """``source`` (an EmbeddingStore, or the SubsetBlocks of one) cut at its shard ends rounded to multiples of ``align``."""
    store, rows = _side(source)
    ends = np.cumsum([e["rows"] for e in store.manifest["shards"]])
    if rows is not None:
        ends = np.searchsorted(rows, ends)
    n = len(source)
    cuts = sorted({0, n, *(min(n, round(e / align) * align) for e in ends.tolist())})
    return [Part(str(store.folder.resolve()), a, b, None if rows is None else rows[a:b]) for a, b in itertools.pairwise(cuts)]


def whole(source: Any) -> Part:
    """Every row of ``source`` (an EmbeddingStore, or the SubsetBlocks of one) as one part."""
    store, rows = _side(source)
    return Part(str(store.folder.resolve()), 0, len(source), rows)


def _side(source: Any) -> tuple[Any, np.ndarray | None]:
    store, rows = (source.store, source.rows) if hasattr(source, "rows") else (source, None)
    if not hasattr(store, "manifest"):
        raise InputError("{param} ray searches embedding folders only (the workers read them): use mine_stores or mine_files",
                         param="engine")
    return store, rows
