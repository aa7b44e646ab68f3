"""Each query's bound raised while the by-list scan runs (:mod:`.bylist`).

The scan keeps, for each query, only the entries that may reach a lower bound of its final k-th
similarity. That bound starts as the k-th of the query's nearest list (:mod:`.bylist`'s first pass);
every entry the scan then keeps is an exact similarity (computed pair by pair, the final bits), and
the k-th largest of any k of a query's similarities is at most its final k-th. So as lists are
scanned, the k best similarities found so far for each query raise its bound, and the lists scanned
later let fewer entries through to the pair-by-pair re-score. With the perfect bound (the final k-th
itself) the 100k x 100k benchmark re-scores 33 candidates a query instead of 135 on the structured
data, 7 instead of 42 on the near-isotropic data (``benchmarks/mine_speed.py``, int8 scan).

The bound only prunes entries that cannot be in a top-k: the results do not depend on it, nor on
the order in which the worker threads raise it (each of them holds a valid bound at any moment).
"""
from __future__ import annotations

import threading

import numpy as np

from .tiles import ranked

#: Entries a worker gathers before it merges them into the running k best (one sort of these entries).
MERGE_AT = 1 << 15


class Running:
    """The k best similarities found so far for each of a block's queries, shared by the worker threads,
    and their bounds ``thr`` (raised in place to each query's running k-th)."""

    def __init__(self, thr: np.ndarray, k: int) -> None:
        self.thr, self.k = thr, k
        self.top = np.full((len(thr), k), -np.inf, np.float32)  # ascending: column 0 is the k-th best
        self.lock = threading.Lock()

    def add(self, rows: np.ndarray, vals: np.ndarray) -> None:
        """Merge the similarities ``vals`` found for the queries ``rows`` (no pair twice) and raise their bounds."""
        if not len(rows) or self.k < 1:
            return
        k = self.k
        order, rows, rank = ranked(rows, vals)  # by query, best first
        vals = vals[order]
        first = rank == 0
        queries = rows[first]
        keep = rank < k
        new = np.full((len(queries), k), -np.inf, np.float32)
        new[(np.cumsum(first) - 1)[keep], k - 1 - rank[keep]] = vals[keep]  # ascending
        with self.lock:
            both = np.concatenate([self.top[queries], new], axis=1)
            both.sort(axis=1)
            self.top[queries] = both[:, k:]
            self.thr[queries] = np.maximum(self.thr[queries], both[:, k])  # the k-th best (-inf: fewer than k)
