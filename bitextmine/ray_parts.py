"""Parts of an embedding folder as the Ray mine workers read them (:mod:`bitextmine.ray_mine`).

A :class:`Part` names rows ``[a, b)`` of one side by folder path (what travels to a worker); the
worker reads them from the memory-mapped store as a BlockSource (:func:`part_blocks`), block by
block or row by row (the exact re-rank's random reads, :mod:`bitextmine.knn.rerank`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitextmine.errors import InputError
from bitextmine.store import SubsetBlocks


@dataclass(frozen=True)
class Part:
    """Rows ``[a, b)`` of one side, read by a worker from the folder (``rows``: the store rows after de-duplication)."""

    folder: str
    a: int
    b: int
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return self.b - self.a


def part_blocks(store: Any, part: Part) -> SubsetBlocks:
    """A :class:`Part` of ``store`` as a BlockSource (blocks read from the memory-mapped store, as float32)."""
    return SubsetBlocks(store, part.rows if part.rows is not None else range(part.a, part.b))


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
