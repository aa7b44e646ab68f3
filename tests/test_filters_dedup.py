"""The flat hash tables behind dedup and caps: same answers as a dict, stated memory, growth."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bitextmine.filters import FilterOptions, FilterReport, filter_pairs
from bitextmine.filters.dedup import HashTable, PairDedup, SentenceCap, hash64, pair_text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**64 - 1), st.integers(0, 2**32 - 1)), max_size=400),
       st.integers(0, 10))
def test_hash_table_agrees_with_a_dict(items, low_bits):
    # keys sharing their low bits collide in the table: probing must still find each one
    t = HashTable(np.uint32, capacity=16)
    ref: dict[int, int] = {}
    for k, v in items:
        k = (k >> low_bits) << low_bits or 1
        t.put(k, v)
        ref[k] = v
    assert len(t) == len(ref)
    assert all(t.get(k) == v for k, v in ref.items())
    assert all(t.get(k ^ (1 << 63)) == ref.get(k ^ (1 << 63)) for k in list(ref)[:20])


def test_growth_keeps_every_key_and_the_load_below_three_quarters():
    t = HashTable(np.uint16, capacity=16)
    keys = [hash64(str(i)) for i in range(50_000)]
    for i, k in enumerate(keys):
        t.put(k, i & 0xFFFF)
    assert len(t) == 50_000 and all(t.get(keys[i]) == i & 0xFFFF for i in range(0, 50_000, 97))
    slots = len(t._keys)
    assert 50_000 / slots <= 0.75 and 50_000 / slots > 0.75 / 2
    assert t.nbytes == slots * (8 + 2)  # 10 bytes a slot: 13-27 bytes per key


def test_pair_dedup_tells_exact_from_normalised_duplicates():
    d = PairDedup(normalised=True)
    k1, t1 = d.keys("Hallo Welt", "Hello world", "hallo welt", "hello world")
    assert d.seen(k1, t1) is None
    d.add(k1, t1)
    assert d.seen(*d.keys("Hallo Welt", "Hello world", "hallo welt", "hello world")) == "duplicate"
    assert d.seen(*d.keys("hallo Welt!", "Hello world", "hallo welt", "hello world")) == "near_duplicate"
    assert pair_text("ab", "c") != pair_text("a", "bc")  # the pair key cannot be fooled by moving text across


def test_sentence_cap_counts_to_its_limit():
    c = SentenceCap(3)
    k = hash64("x")
    for _ in range(3):
        assert not c.full(k)
        c.add(k)
    assert c.full(k) and not c.full(hash64("y"))


def test_only_kept_pairs_take_memory():
    """A stream of 30,000 copies of one pair, or of pairs all dropped by another rule, leaves the
    tables at their initial size: memory grows with distinct kept pairs, not with the input."""
    opts = FilterOptions(lid=False, max_per_src=2, max_per_tgt=2)
    rep = FilterReport()
    for _ in filter_pairs(((1.0, "Ein Satz.", "A sentence.") for _ in range(30_000)), opts, report=rep):
        pass
    base = rep.dedup_bytes
    assert rep.kept == 1 and rep.dropped["duplicate"] == 29_999
    rep2 = FilterReport()
    rows = ((1.0, f"Satz {i}", f"Sentence {i} " + "x" * 100) for i in range(30_000))  # all dropped by the ratio
    for _ in filter_pairs(rows, opts, report=rep2):
        pass
    assert rep2.kept == 0 and rep2.dedup_bytes == base
    rep3 = FilterReport()
    rows = ((1.0, f"Satz Nummer {i:x}", f"Sentence number {i:x}") for i in range(30_000))
    for _ in filter_pairs(rows, FilterOptions(lid=False, numbers=False, dedup="exact"), report=rep3):
        pass
    assert rep3.kept == 30_000
    assert rep3.dedup_bytes <= 30_000 * (32 + 2 * 27)  # the stated bytes per kept pair and sentence


def test_streaming_memory_does_not_grow_with_the_input(tmp_path):
    """filter_file over 4k and over 40k lines of the same 50 pairs: the same peak of traced memory
    (rows are read, decided and written one at a time; the tables hold the 50 kept pairs)."""
    import tracemalloc

    from bitextmine.filters import filter_file

    rows = [f"1.0\tDas ist Satz Nummer {chr(65 + i % 26)}{chr(97 + i // 26)}.\tThis is sentence number {chr(65 + i % 26)}{chr(97 + i // 26)}.\n"
            for i in range(50)]
    peaks = []
    for n in (4_000, 40_000):
        p = tmp_path / f"p{n}.tsv"
        with open(p, "w", encoding="utf-8") as fh:
            for k in range(n // 50):
                fh.writelines(rows)
        tracemalloc.start()
        rep = filter_file(p, tmp_path / f"c{n}.tsv", FilterOptions(lid=False))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert rep.total == n and rep.kept == 50
    assert peaks[1] < peaks[0] * 1.5 + 256 * 1024, peaks
