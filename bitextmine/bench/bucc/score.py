"""Scoring mined candidates against BUCC gold: texts back to ids, the F1 sweep, the threshold.

Computed like LASER's ``tasks/bucc/bucc.py`` (in float64): a text repeated on a side maps to no
id; a repeated (src_id, tgt_id) pair keeps its best score; the threshold is the midpoint between
the last candidate of the best-F1 cut and the next one. Pure numpy, no files.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bitextmine.bench.bucc.data import Pair
from bitextmine.errors import InputError


def unique_sentence_ids(ids: Iterable[str], texts: Iterable[str]) -> dict[str, str]:
    """``{text: id}`` for the texts that occur exactly once on a side (compared after strip).

    A sentence repeated under several ids cannot be mapped back to one id, so it is dropped, as
    LASER's ``bucc.py`` does.
    """
    sent2id: dict[str, str] = {}
    repeated: set[str] = set()
    for i, t in zip(ids, texts):
        t = t.strip()
        if t in sent2id:
            repeated.add(t)
        else:
            sent2id[t] = i
    for t in repeated:
        del sent2id[t]
    return sent2id


@dataclass
class IdPairs:
    """Candidate pairs by id, sorted by score descending (ties keep the candidates' order).

    The id-level counterpart of :class:`bitextmine.margin.Candidates` (which holds row indices).
    """

    src: list[str]
    tgt: list[str]
    score: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.src)

    def keys(self) -> list[Pair]:
        return list(zip(self.src, self.tgt))

    def above(self, threshold: float) -> IdPairs:
        """The pairs whose score is ``>= threshold`` (order kept), as :meth:`Candidates.above <bitextmine.margin.Candidates.above>`."""
        keep = self.score >= threshold
        return IdPairs([s for s, k in zip(self.src, keep) if k], [t for t, k in zip(self.tgt, keep) if k], self.score[keep])

    @classmethod
    def from_scores(cls, scores: Mapping[Pair, float] | Iterable[tuple[Pair, float]]) -> IdPairs:
        """From ``{(src_id, tgt_id): score}`` (LASER's ``candidate2score``) or ``((src_id, tgt_id), score)`` items."""
        items = list(scores.items()) if isinstance(scores, Mapping) else list(scores)
        sc = np.array([float(s) for _, s in items], dtype=np.float64)
        order = np.argsort(-sc, kind="stable")
        return cls([items[i][0][0] for i in order], [items[i][0][1] for i in order], sc[order])


def candidates_to_ids(
    src_texts: Iterable[str],
    tgt_texts: Iterable[str],
    scores: Iterable[float],
    src_sent2id: Mapping[str, str],
    tgt_sent2id: Mapping[str, str],
) -> IdPairs:
    """Map mined candidates (texts and margin scores) to id pairs.

    Candidates whose source or target text has no id (unknown or repeated; see
    :func:`unique_sentence_ids`) are dropped; a (src_id, tgt_id) pair met several times keeps its
    highest score (at the position it was first met). Returns the pairs sorted by score, best
    first, ties in candidate order.
    """
    best: dict[Pair, float] = {}
    for s, t, sc in zip(src_texts, tgt_texts, scores):
        s, t = s.strip(), t.strip()
        sid, tid = src_sent2id.get(s), tgt_sent2id.get(t)
        if sid is None or tid is None:
            continue
        key = (sid, tid)
        sc = float(sc)
        old = best.get(key)
        if old is None or sc > old:
            best[key] = sc
    return IdPairs.from_scores(best)


def _as_pairs(scored: IdPairs | Mapping[Pair, float] | Iterable[tuple[Pair, float]]) -> IdPairs:
    if isinstance(scored, IdPairs):
        return scored
    return IdPairs.from_scores(scored)


class Sweep(NamedTuple):
    """Precision, recall and F1 when the ``i+1`` best candidates are extracted, for every ``i``."""

    score: np.ndarray  # (n,) candidate scores, descending
    is_gold: np.ndarray  # (n,) bool
    precision: np.ndarray  # (n,)
    recall: np.ndarray
    f1: np.ndarray  # 0 where nothing is correct yet
    gold: int  # size of the gold set


def sweep(scored: IdPairs | Mapping[Pair, float], gold: set[Pair]) -> Sweep:
    """Cumulative precision/recall/F1 down the ranked candidates (computed like LASER, in float64)."""
    if not gold:
        raise InputError("the gold set is empty; recall is undefined")
    pairs = _as_pairs(scored)
    is_gold = np.fromiter(((s, t) in gold for s, t in zip(pairs.src, pairs.tgt)), dtype=bool, count=len(pairs))
    correct = np.cumsum(is_gold, dtype=np.int64)
    extracted = np.arange(1, len(pairs) + 1, dtype=np.int64)
    precision = correct / extracted
    recall = correct / len(gold)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where(correct > 0, f1, 0.0)
    return Sweep(pairs.score, is_gold, precision, recall, f1, len(gold))


class ThresholdChoice(NamedTuple):
    """A threshold and the precision, recall and F1 of extracting the candidates scoring at least it."""

    threshold: float
    precision: float
    recall: float
    f1: float


@dataclass
class Evaluation:
    threshold: float
    precision: float
    recall: float
    f1: float
    extracted: int  # candidates with score >= threshold
    correct: int  # of them in gold
    gold: int  # size of the gold set


def evaluate_at(threshold: float, scored: IdPairs | Mapping[Pair, float], gold: set[Pair]) -> Evaluation:
    """Extract the candidates scoring at least ``threshold`` and score them against ``gold``.

    precision = correct / extracted and recall = correct / len(gold); all three are 0 when nothing
    correct is extracted (as LASER reports it).
    """
    if not gold:
        raise InputError("the gold set is empty; recall is undefined")
    kept = _as_pairs(scored).above(threshold)
    extracted = len(kept)
    correct = sum(1 for key in zip(kept.src, kept.tgt) if key in gold)
    if correct > 0:
        p = correct / extracted
        r = correct / len(gold)
        f1 = 2 * p * r / (p + r)
    else:
        p = r = f1 = 0.0
    return Evaluation(float(threshold), p, r, f1, extracted, correct, len(gold))


def optimize_threshold(scored: IdPairs | Mapping[Pair, float], gold: set[Pair]) -> ThresholdChoice:
    """The threshold with the best F1 on ``gold`` (LASER's ``BuccOptimize``), and its P/R/F1.

    Candidates are ranked by score (ties in their given order); after each one the F1 of extracting
    everything so far is computed and the first maximum is kept; the threshold is the midpoint
    between that candidate's score and the next one's. Precision, recall and F1 are then those of
    extracting every candidate scoring at least the threshold (what LASER prints; they differ from
    the sweep's only when candidates tie at the cut). Differences from LASER's script, at its
    edges only: when the best cut is the last candidate the threshold is that candidate's score
    (LASER fails with an IndexError), and when no candidate is correct the threshold is +inf
    (nothing extracted; LASER returns 0).
    """
    sw = sweep(scored, gold)
    if len(sw.f1) == 0 or not sw.is_gold.any():
        return ThresholdChoice(math.inf, 0.0, 0.0, 0.0)
    i = int(np.argmax(sw.f1))  # the first maximum, like LASER's strict ">"
    s = sw.score
    threshold = float((s[i] + s[i + 1]) / 2) if i + 1 < len(s) else float(s[i])
    ev = evaluate_at(threshold, _as_pairs(scored), gold)
    return ThresholdChoice(threshold, ev.precision, ev.recall, ev.f1)


def extract(scored: IdPairs, threshold: float) -> list[Pair]:
    """The id pairs scoring at least ``threshold``, best first."""
    return scored.above(threshold).keys()
