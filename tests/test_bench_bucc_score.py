"""bench bucc scoring: threshold sweep and F1 against hand-made and random candidates, the latter
checked against an independent LASER-style reference (tests/bucc_cases.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from bucc_cases import laser_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitextmine.bench.bucc import (
    IdPairs,
    candidates_to_ids,
    evaluate_at,
    extract,
    optimize_threshold,
    sweep,
    unique_sentence_ids,
)
from bitextmine.errors import InputError

# ---------------------------------------------------------------------------------------------
# hand-made candidates with known answers


def test_sweep_and_best_threshold_by_hand():
    # ranked: gold, gold, wrong, gold, wrong; one more gold pair is never a candidate
    cands = {("s1", "t1"): 1.30, ("s2", "t2"): 1.20, ("s3", "t9"): 1.10, ("s4", "t4"): 1.00, ("s5", "t8"): 0.90}
    gold = {("s1", "t1"), ("s2", "t2"), ("s4", "t4"), ("s6", "t6")}
    sw = sweep(cands, gold)
    assert list(sw.is_gold) == [True, True, False, True, False]
    assert np.allclose(sw.precision, [1, 1, 2 / 3, 3 / 4, 3 / 5])
    assert np.allclose(sw.recall, [1 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4])
    # F1 after each candidate: 0.4, 0.667, 0.571, 0.75, 0.667 -> best after the 4th candidate
    thr, p, r, f1 = optimize_threshold(cands, gold)
    assert thr == pytest.approx(0.95)  # midpoint between 1.00 and 0.90
    assert (p, r) == (0.75, 0.75) and f1 == pytest.approx(0.75)
    ev = evaluate_at(thr, cands, gold)
    assert (ev.extracted, ev.correct, ev.gold) == (4, 3, 4)
    # a stricter threshold: 2 extracted, both right
    ev = evaluate_at(1.15, cands, gold)
    assert (ev.extracted, ev.correct, ev.precision, ev.recall) == (2, 2, 1.0, 0.5)
    assert ev.f1 == pytest.approx(2 / 3)


def test_best_cut_at_the_first_candidate_and_at_the_last():
    gold = {("a", "b")}
    thr, p, r, f1 = optimize_threshold({("a", "b"): 2.0, ("c", "d"): 1.0}, gold)
    assert thr == 1.5 and (p, r, f1) == (1.0, 1.0, 1.0)
    # the best cut is the last candidate: no next score, so the threshold is its own score
    thr, p, r, f1 = optimize_threshold({("c", "d"): 2.0, ("a", "b"): 1.0}, gold)
    assert thr == 1.0 and (p, r) == (0.5, 1.0)


def test_no_correct_candidate():
    thr, p, r, f1 = optimize_threshold({("a", "x"): 1.2, ("b", "y"): 1.1}, {("a", "b")})
    assert math.isinf(thr) and (p, r, f1) == (0.0, 0.0, 0.0)
    ev = evaluate_at(thr, {("a", "x"): 1.2}, {("a", "b")})
    assert ev.extracted == 0
    assert optimize_threshold({}, {("a", "b")})[3] == 0.0


def test_ties_at_the_threshold_are_all_extracted():
    # the sweep's best cut falls inside a tie: extracting ">= threshold" takes both tied candidates
    cands = {("a", "a"): 1.5, ("b", "b"): 1.2, ("c", "x"): 1.2, ("d", "y"): 1.0}
    gold = {("a", "a"), ("b", "b")}
    thr, p, r, f1 = optimize_threshold(cands, gold)
    assert thr == 1.2  # midpoint of two equal scores
    assert (p, r) == (2 / 3, 1.0)  # what extracting at the threshold gives (as LASER prints)


def test_duplicate_texts_are_dropped_and_repeated_id_pairs_keep_the_best_score():
    src = unique_sentence_ids(["s1", "s2", "s3", "s4"], ["one", "two", "two ", "four"])
    # "two" occurs twice (after strip), under s2 and s3: it cannot be mapped to one id
    assert src == {"one": "s1", "four": "s4"}
    tgt = unique_sentence_ids(["t1", "t2", "t4"], ["uno", "dos", "cuatro"])
    pairs = candidates_to_ids(
        ["one", "two", "four", "one", "unknown"],
        ["uno", "dos", "cuatro", "uno", "dos"],
        [1.1, 1.4, 1.3, 1.2, 1.5],
        src, tgt,
    )
    # "two" and "unknown" have no id; ("s1", "t1") was met twice and keeps 1.2, its best; best first
    assert pairs.keys() == [("s4", "t4"), ("s1", "t1")]
    assert list(pairs.score) == [1.3, 1.2]
    # gold pairs involving the dropped sentence still count in recall
    gold = {("s1", "t1"), ("s2", "t2"), ("s4", "t4")}
    thr, p, r, f1 = optimize_threshold(pairs, gold)
    assert (p, r) == (1.0, 2 / 3) and thr == 1.2  # the best cut takes both: the last candidate


def test_candidates_absent_from_gold_lower_precision_only():
    cands = IdPairs.from_scores([(("a", "a"), 1.5), (("x", "y"), 1.4), (("b", "b"), 1.3)])
    gold = {("a", "a"), ("b", "b")}
    thr, p, r, f1 = optimize_threshold(cands, gold)
    assert thr == pytest.approx(1.3) and (p, r) == (2 / 3, 1.0)


def test_above_and_extract_keep_order_and_ties():
    pairs = IdPairs.from_scores({("a", "a"): 1.5, ("b", "b"): 1.2, ("c", "x"): 1.2, ("d", "y"): 1.0})
    kept = pairs.above(1.2)
    assert kept.keys() == [("a", "a"), ("b", "b"), ("c", "x")] and list(kept.score) == [1.5, 1.2, 1.2]
    assert extract(pairs, 1.2) == kept.keys()
    assert len(pairs.above(math.inf)) == 0 and extract(pairs, math.inf) == []
    assert pairs.above(-math.inf).keys() == pairs.keys()


def test_empty_gold_is_an_input_error():
    with pytest.raises(InputError, match="gold set is empty"):
        sweep({("a", "b"): 1.0}, set())
    with pytest.raises(InputError, match="gold set is empty"):
        evaluate_at(1.0, {("a", "b"): 1.0}, set())


# ---------------------------------------------------------------------------------------------
# against an independent, straightforward port of LASER's tasks/bucc/bucc.py


@st.composite
def bucc_case(draw):
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    n_src = draw(st.integers(1, 25))
    n_tgt = draw(st.integers(1, 25))
    src_texts = [draw(st.sampled_from(words)) + draw(st.sampled_from(["", " ", " x"])) for _ in range(n_src)]
    tgt_texts = [draw(st.sampled_from(words)).upper() + draw(st.sampled_from(["", " y"])) for _ in range(n_tgt)]
    src_ids = [f"xx-{i:06d}" for i in range(n_src)]
    tgt_ids = [f"en-{i:06d}" for i in range(n_tgt)]
    # scores on a coarse grid, so ties happen
    score = st.one_of(st.integers(80, 140).map(lambda v: v / 100), st.floats(0.5, 1.6, allow_nan=False))
    cands = draw(st.lists(st.tuples(st.integers(0, n_src - 1), st.integers(0, n_tgt - 1), score), max_size=40))
    gold = draw(st.sets(st.tuples(st.integers(0, n_src - 1), st.integers(0, n_tgt - 1)), min_size=1, max_size=15))
    return src_ids, src_texts, tgt_ids, tgt_texts, cands, gold


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bucc_case())
def test_matches_laser_reference(case):
    src_ids, src_texts, tgt_ids, tgt_texts, cands, gold_idx = case
    # candidates in any order (mine writes them best first; both sides handle any order alike)
    lines = [f"{sc!r}\t{src_texts[i]}\t{tgt_texts[j]}" for i, j, sc in cands]
    gold_lines = [f"{src_ids[i]}\t{tgt_ids[j]}\n" for i, j in gold_idx]
    ref = laser_reference(src_ids, src_texts, tgt_ids, tgt_texts, lines, gold_lines)

    pairs = candidates_to_ids([src_texts[i] for i, _, _ in cands], [tgt_texts[j] for _, j, _ in cands],
                              [sc for _, _, sc in cands],
                              unique_sentence_ids(src_ids, src_texts), unique_sentence_ids(tgt_ids, tgt_texts))
    gold = {(src_ids[i], tgt_ids[j]) for i, j in gold_idx}
    ours = optimize_threshold(pairs, gold)
    assert ours.f1 == ref[3] and ours.precision == ref[1] and ours.recall == ref[2]
    if ref[3] > 0:
        assert ours.threshold == ref[0]
    ev = evaluate_at(ours.threshold, pairs, gold)
    assert (ev.precision, ev.recall, ev.f1) == (ours.precision, ours.recall, ours.f1)
