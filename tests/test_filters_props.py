"""Properties: the per-pair rules give the same verdicts in any order; dedup and the caps keep the
first copies, so *which* copy survives depends on the order but the distinct pairs kept (dedup) and
the number kept per sentence (one cap) do not; streaming a file equals filtering a list in memory,
and the filter reads no further ahead than it must."""
from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from bitextmine.filters import FilterOptions, FilterReport, filter_file, filter_pairs
from bitextmine.filters.rules import normalise

SRC = ["Der Hund bellt laut.", "der Hund bellt laut!", "Die Katze schläft auf dem Sofa.", "Wir fahren 2010 nach Berlin.",
       "Le chat dort sur le canapé.", "Ja.", "Hallo Welt", "Das Haus ist alt und groß.", "Siehe www.example.org", ""]
TGT = ["The dog barks loudly.", "The dog barks loudly", "The cat sleeps on the sofa.", "We go to Berlin in 2011.",
       "Hallo Welt", "The house is old and big, and it has a very large garden behind it.", "See www.example.com",
       "El perro ladra.", "Yes."]

rows_st = st.lists(st.tuples(st.sampled_from([0.9, 1.0, 1.1, 1.2]), st.sampled_from(SRC), st.sampled_from(TGT)), max_size=40)
LANGS = dict(src_lang="deu", tgt_lang="eng")
PER_ROW = FilterOptions(**LANGS, dedup="none", max_per_src=None, max_per_tgt=None, min_score=1.0)


def kept(rows, opts):
    return [r for r, d in filter_pairs(rows, opts) if d.kept]


def verdicts(rows, opts):
    return [(r, d.reason) for r, d in filter_pairs(rows, opts)]


@settings(max_examples=40, deadline=None)
@given(rows_st, st.randoms(use_true_random=False))
def test_per_pair_rules_do_not_depend_on_order(rows, rnd):
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    assert Counter(verdicts(rows, PER_ROW)) == Counter(verdicts(shuffled, PER_ROW))


@settings(max_examples=40, deadline=None)
@given(rows_st, st.randoms(use_true_random=False))
def test_dedup_keeps_the_same_distinct_pairs_in_any_order(rows, rnd):
    opts = FilterOptions(**LANGS, max_per_src=None, max_per_tgt=None)
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    key = lambda r: (normalise(r[1]), normalise(r[2]))  # noqa: E731
    a, b = kept(rows, opts), kept(shuffled, opts)
    assert len(a) == len(b) and {key(r) for r in a} == {key(r) for r in b}
    assert len({key(r) for r in a}) == len(a)  # no two kept pairs are the same after normalisation


@settings(max_examples=40, deadline=None)
@given(rows_st, st.randoms(use_true_random=False), st.integers(1, 3))
def test_one_cap_keeps_the_same_number_per_sentence_in_any_order(rows, rnd, cap):
    opts = FilterOptions(**LANGS, dedup="none", max_per_src=cap, max_per_tgt=None)
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    per_src = lambda ks: Counter(r[1] for r in ks)  # noqa: E731  (without dedup the cap sees the text as is)
    assert per_src(kept(rows, opts)) == per_src(kept(shuffled, opts))
    assert all(n <= cap for n in per_src(kept(rows, opts)).values())


@settings(max_examples=25, deadline=None)
@given(rows_st, st.sampled_from(["tsv", "jsonl"]), st.booleans())
def test_streaming_a_file_equals_filtering_in_memory(tmp_path_factory, rows, fmt, given_langs):
    import json

    d = tmp_path_factory.mktemp("s")
    p = d / f"pairs.{fmt}"
    lines = [json.dumps({"score": s, "src": a, "tgt": b}, ensure_ascii=False) if fmt == "jsonl" else f"{s:.6f}\t{a}\t{b}"
             for s, a, b in rows]
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    opts = FilterOptions(**(LANGS if given_langs else {}), infer_lines=7)
    mem_rep = FilterReport()
    mem = [(line, dec) for line, (_, dec) in zip(lines, filter_pairs(rows, opts, report=mem_rep))]
    if not rows:
        assert mem == []
    rep = filter_file(p, d / "out", opts, rejects=d / "rej")
    out = (d / "out").read_text(encoding="utf-8").splitlines()
    assert out == [line for line, dec in mem if dec.kept]
    assert len((d / "rej").read_text(encoding="utf-8").splitlines()) == len(rows) - len(out)
    assert (rep.total, rep.kept, rep.dropped) == (mem_rep.total, mem_rep.kept, mem_rep.dropped)


class Counting:
    def __init__(self, n):
        self.n, self.read = n, 0

    def __iter__(self):
        for i in range(self.n):
            self.read += 1
            yield (1.0, f"Satz {i}", f"Sentence {i}")


def test_reads_ahead_only_to_infer_languages():
    src = Counting(50)
    it = filter_pairs(src, FilterOptions(**LANGS))
    next(it)
    assert src.read == 1  # languages given: one row in, one decision out
    src = Counting(50)
    it = filter_pairs(src, FilterOptions(infer_lines=10))
    next(it)
    assert src.read == 10  # the sample for inference, then streaming
    assert sum(1 for _ in it) == 49 and src.read == 50
