"""Each filter rule on hand-made pairs: the pair it must drop, the pair it must keep, its counter."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitextmine.errors import InputError
from bitextmine.filters import REASONS, FilterOptions, FilterReport, PairFilter, filter_pairs, parse_language
from bitextmine.filters.rules import length_ratio, normalise, numbers, overlap, overlap_reaches, urls

DE = "Der Hund bellt jeden Morgen laut im Garten."
EN = "The dog barks loudly in the garden every morning."

#: every rule off: each test turns on the one it checks
OFF = dict(lid=False, min_length=None, max_length=None, max_ratio=None, max_overlap=None, numbers=False, urls=False,
           dedup="none", max_per_src=None, max_per_tgt=None, min_score=None)


def run(rows, **opts):
    o = FilterOptions(**{**OFF, **opts})
    rep = FilterReport()
    out = [(r, d) for r, d in filter_pairs(rows, o, report=rep)]
    return [d.reason for _, d in out], rep


def test_everything_off_keeps_everything():
    reasons, rep = run([(0.1, "", ""), (1.0, DE, DE)])
    assert reasons == [None, None] and rep.kept == 2 and sum(rep.dropped.values()) == 0
    assert set(rep.dropped) == set(REASONS)


def test_min_score():
    reasons, rep = run([(1.2, DE, EN), (1.05, DE, EN), (float("nan"), DE, EN)], min_score=1.1)
    assert reasons == [None, "score", "score"] and rep.dropped["score"] == 2


def test_min_and_max_length_scaled_by_language():
    rows = [(1.0, "", EN), (1.0, "   ", EN), (1.0, "a" * 1051, "b" * 1000), (1.0, DE, EN)]
    reasons, rep = run(rows, min_length=1, max_length=1050)
    assert reasons == ["min_length", "min_length", "max_length", None]
    # 400 Chinese characters are ~1190 English-equivalent characters (factor 2.975): too long
    zh = "狗" * 400
    reasons, _ = run([(1.0, zh, "x" * 1000)], src_lang="zho", tgt_lang="eng", max_length=1050)
    assert reasons == ["max_length"]
    reasons, _ = run([(1.0, zh, "x" * 1000)], max_length=1050, length_factors={})  # no factors: characters as they are
    assert reasons == [None]
    reasons, rep = run([(1.0, zh, "x" * 1000)], max_length=1050)  # not given: inferred for the factors, even without lid
    assert reasons == ["max_length"] and rep.src_lang.group == "zho" and rep.src_lang.inferred


def test_length_ratio_uses_language_factors():
    # 10 Chinese characters ≈ 30 English ones: a ratio of 1, not 3
    zh, en = "我们明天早上去北京吧", "We will go to Beijing tomorrow"
    assert run([(1.0, zh, en)], src_lang="zho", tgt_lang="eng", max_ratio=2.0)[0] == [None]
    assert run([(1.0, zh, en)], max_ratio=2.0, length_factors={})[0] == ["ratio"]
    assert run([(1.0, zh, en)], max_ratio=2.0)[0] == [None]  # languages inferred
    assert run([(1.0, "Ja.", EN)], src_lang="deu", tgt_lang="eng", max_ratio=3.0)[0] == ["ratio"]
    assert length_ratio(0, 5) == 5 and length_ratio(10, 5) == 2


def test_identical_and_near_identical_sides():
    rows = [(1.0, "Barack Obama", "Barack Obama"), (1.0, "Hello, World!", "hello world"), (1.0, EN, EN.replace("barks", "barked")),
            (1.0, DE, EN), (1.0, "...", "!!!")]
    reasons, rep = run(rows, max_overlap=0.8)
    assert reasons == ["identical", "identical", "identical", None, "identical"]
    assert rep.dropped["identical"] == 4
    assert overlap(normalise(DE), normalise(EN)) < 0.3


def test_numbers_that_disagree():
    rows = [
        (1.0, "Im Jahr 2010 lebten 5.000 Menschen dort.", "In 2011, 6,000 people lived there."),  # each side has its own
        (1.0, "Im Jahr 2010 lebten 5.000 Menschen dort.", "In 2010, 5,000 people lived there."),  # separators differ
        (1.0, "2010年9月，5000人住在那里。", "In September 2010, 5000 people lived there."),  # one side adds a month
        (1.0, "Fünf Menschen lebten dort.", "5 people lived there."),  # a number written as a word
        (1.0, "Um 11.00 Uhr", "At 11:00"),
        (1.0, "800 000 Soldaten", "800 thousand soldiers"),
        (1.0, "到20世纪90年代末，利率几乎为零。", "By the late 1990s, rates were near zero."),  # 20th century, 90s
        (1.0, "1990年代，有5个人。", "In the 1980s, there were 6 people."),
    ]
    reasons, rep = run(rows, numbers=True)
    assert reasons == ["numbers", None, None, None, None, None, None, "numbers"]
    assert numbers("٣ und ๕ und 3") == {"3", "5"}  # Arabic-Indic and Thai digits read as digits


def test_urls_that_disagree():
    rows = [(1.0, "Siehe https://example.org/a.", "See https://example.com/b."),
            (1.0, "Siehe HTTPS://Example.org/a.", "See https://example.org/a"),
            (1.0, "Schreib an a@b.de", "Write to c@d.org"),
            (1.0, "Siehe die Seite.", "See www.example.org")]
    reasons, _ = run(rows, urls=True)
    assert reasons == ["urls", None, "urls", None]
    assert urls("mail x@y.org or www.a.b/c!") == {"x@y.org", "www.a.b/c"}


def test_exact_and_normalised_dedup():
    rows = [(1.0, DE, EN), (1.0, DE, EN), (0.9, DE.upper(), EN + "!!"), (0.9, DE.replace("Morgen", "Abend"), EN)]
    reasons, rep = run(rows, dedup="normalised")
    assert reasons == [None, "duplicate", "near_duplicate", None]
    reasons, _ = run(rows, dedup="exact")
    assert reasons == [None, "duplicate", None, None]
    # digits count as the same digit after normalisation: a number change is a near duplicate
    reasons, _ = run([(1.0, "Seite 12", "Page 12"), (1.0, "Seite 13", "Page 13")], dedup="normalised")
    assert reasons == [None, "near_duplicate"]


def test_caps_on_each_side_count_kept_pairs_only():
    rows = [(1.0, DE, f"target {i}") for i in range(5)] + [(1.0, f"quelle {i}", EN) for i in range(4)]
    reasons, rep = run(rows, max_per_src=2, max_per_tgt=3)
    assert reasons == [None, None, "src_cap", "src_cap", "src_cap", None, None, None, "tgt_cap"]
    # a pair dropped by another rule does not use up the cap
    rows = [(0.5, DE, "t1"), (0.5, DE, "t2"), (1.5, DE, "t3"), (1.5, DE, "t4"), (1.5, DE, "t5")]
    reasons, _ = run(rows, max_per_src=2, min_score=1.0)
    assert reasons == ["score", "score", None, None, "src_cap"]
    # the cap sees sentences after normalisation
    reasons, _ = run([(1.0, "Hallo!", "a"), (1.0, "hallo", "b")], max_per_src=1, dedup="normalised")
    assert reasons == [None, "src_cap"]


def test_language_identification_of_both_sides():
    rows = [(1.0, DE, EN), (1.0, "Le chien aboie fort dans le jardin.", EN), (1.0, DE, "Le chien aboie fort dans le jardin."),
            (1.0, EN, DE)]
    reasons, rep = run(rows, lid=True, src_lang="deu", tgt_lang="eng")
    assert reasons == [None, "src_lid", "tgt_lid", "src_lid"]
    assert rep.dropped["src_lid"] == 2 and rep.dropped["tgt_lid"] == 1


def test_first_failing_rule_is_the_reason():
    o = FilterOptions(src_lang="deu", tgt_lang="eng")
    pf = PairFilter(o, parse_language("deu"), parse_language("eng"))
    d = pf.decide(1.0, "Hallo 1", "Hallo 2")  # identical (after normalisation) beats numbers
    assert (d.kept, d.reason) == (False, "identical")
    d = pf.decide(1.0, "Le chien aboie.", "x" * 100)  # ratio comes before lid
    assert d.reason == "ratio" and "> 3" in d.detail


@pytest.mark.parametrize("kw, param", [
    (dict(src_lang="xx"), "src_lang"), (dict(tgt_lang="klingon"), "tgt_lang"), (dict(lid_threshold=1.5), "lid_threshold"),
    (dict(max_ratio=0.5), "max_ratio"), (dict(max_overlap=0.0), "max_overlap"), (dict(dedup="fuzzy"), "dedup"),
    (dict(max_per_src=0), "max_per_src"), (dict(min_length=10, max_length=5), "min_length"), (dict(infer_lines=0), "infer_lines"),
    (dict(min_score=float("nan")), "min_score"),
])
def test_bad_options_are_one_line_errors_naming_the_option(kw, param):
    with pytest.raises(InputError) as e:
        FilterOptions(**kw)
    assert e.value.param == param and "\n" not in str(e.value)


def test_normalise():
    assert normalise("  Hello,   WORLD! 123 — «ok»\u200b ") == "hello world 000 ok"
    assert normalise("ＡＢＣ１２３") == "abc000"
    assert normalise("नमस्ते दुनिया।") == "नमस्ते दुनिया"  # combining vowel signs stay, the danda goes


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="abcde ", max_size=30), st.text(alphabet="abcde ", max_size=30), st.sampled_from([0.1, 0.5, 0.8, 1.0]))
def test_overlap_reaches_is_overlap_above_the_limit(a, b, limit):
    """The early-exit test answers exactly like computing the overlap and comparing."""
    full = overlap(a, b)
    got = overlap_reaches(a, b, limit)
    assert got == (full if full >= limit else None)
