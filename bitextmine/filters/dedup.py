"""Duplicate pairs and per-sentence caps in bounded, stated memory: 64-bit hashes in flat tables.

A Python ``set`` of 64-bit ints costs about 70-90 bytes an entry (the int object plus the set
slot). :class:`HashTable` stores the hashes themselves in a numpy array with open addressing
(linear probing, grown ×2 at 3/4 full, rehashed vectorised), plus a small value per key:

* pair dedup: 8-byte key + 4-byte tag per slot → **16-32 bytes per distinct kept pair**
  (100M kept pairs: 1.6-3.2 GB);
* each per-sentence cap: 8-byte key + 2-byte count per slot → **13-27 bytes per distinct kept
  sentence** of that side.

Only kept pairs are stored (a pair another filter drops costs nothing), and nothing grows with the
input otherwise: the filter streams. Keys are BLAKE2b-64 hashes; two different pairs get the same
key with probability ~n²/2⁶⁵ over n pairs (3·10⁻⁴ for 100M), and then the later one is dropped
as a duplicate. The tag (the low 32 bits of the exact pair's hash) tells an exact duplicate of the
kept pair from one that is equal only after normalisation.
"""
from __future__ import annotations

import hashlib
from array import array

import numpy as np

_MAX_LOAD = 0.75


def hash64(text: str) -> int:
    """A stable 64-bit hash of ``text`` (never 0: 0 marks an empty slot)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") or 1


def pair_text(src: str, tgt: str) -> str:
    """One string for a pair, unambiguous whatever the texts contain."""
    return f"{len(src)}:{src}{tgt}"


class HashTable:
    """64-bit keys → small unsigned values, in two flat arrays (``array.array``: 8 bytes a key, no
    Python object per entry; probing reads plain Python ints, growing is vectorised with numpy)."""

    def __init__(self, value_dtype: type = np.uint32, capacity: int = 1 << 12) -> None:
        cap = 1 << max(4, (capacity - 1).bit_length())
        self._vtype = np.dtype(value_dtype)
        self._keys = array("Q", bytes(8 * cap))
        self._vals = array(self._vtype.char, bytes(self._vtype.itemsize * cap))
        self._mask = cap - 1
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return len(self._keys) * 8 + len(self._vals) * self._vals.itemsize

    def _find(self, key: int) -> tuple[int, bool]:
        keys, mask = self._keys, self._mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                return i, True
            if k == 0:
                return i, False
            i = (i + 1) & mask

    def get(self, key: int) -> int | None:
        i, found = self._find(key)
        return self._vals[i] if found else None

    def put(self, key: int, value: int) -> None:
        i, found = self._find(key)
        if not found:
            if (self._n + 1) > _MAX_LOAD * len(self._keys):
                self._grow()
                i, _ = self._find(key)
            self._keys[i] = key
            self._n += 1
        self._vals[i] = value

    def _grow(self) -> None:
        old_keys = np.frombuffer(self._keys, dtype=np.uint64)
        used = old_keys != 0
        old_k, old_v = old_keys[used], np.frombuffer(self._vals, dtype=self._vtype)[used]
        cap = 2 * len(old_keys)
        mask = np.uint64(cap - 1)
        keys = np.zeros(cap, dtype=np.uint64)
        vals = np.zeros(cap, dtype=self._vtype)
        pos = (old_k & mask).astype(np.int64)
        pending = np.arange(len(old_k))
        while pending.size:
            p = pos[pending]
            free = keys[p] == 0
            slots, first = np.unique(p[free], return_index=True)
            winners = pending[free][first]
            keys[slots], vals[slots] = old_k[winners], old_v[winners]
            placed = np.zeros(len(old_k), dtype=bool)
            placed[winners] = True
            pending = pending[~placed[pending]]
            pos[pending] = (pos[pending] + 1) & (cap - 1)
        self._keys, self._vals, self._mask = array("Q", keys.tobytes()), array(self._vtype.char, vals.tobytes()), cap - 1


class PairDedup:
    """Pairs already kept, exactly or after normalisation (``normalised``)."""

    def __init__(self, normalised: bool = True) -> None:
        self.normalised = normalised
        self.table = HashTable(np.uint32)

    def keys(self, src: str, tgt: str, norm_src: str, norm_tgt: str) -> tuple[int, int]:
        exact = hash64(pair_text(src, tgt))
        key = hash64(pair_text(norm_src, norm_tgt)) if self.normalised else exact
        return key, exact & 0xFFFFFFFF

    def seen(self, key: int, tag: int) -> str | None:
        """``"duplicate"`` (the same pair was kept), ``"near_duplicate"`` (equal after normalisation), or None."""
        v = self.table.get(key)
        if v is None:
            return None
        return "duplicate" if v == tag else "near_duplicate"

    def add(self, key: int, tag: int) -> None:
        self.table.put(key, tag)


class SentenceCap:
    """How many kept pairs each sentence of one side is in; at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.table = HashTable(np.uint16)

    def full(self, key: int) -> bool:
        return (self.table.get(key) or 0) >= self.limit

    def add(self, key: int) -> None:
        self.table.put(key, min((self.table.get(key) or 0) + 1, 0xFFFF))
