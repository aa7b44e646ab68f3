"""A mining-style dev set: can the encoder pick true translations out of near-misses of its own domain?

Retrieval p@1 on clean aligned pairs (Flores, the held-out split) saturates after a few hundred
steps and cannot see a model that learned "same domain, similar words" instead of "translation":
it only ranks true partners against other true partners. This set is laid out like BUCC instead.
For each language, the held-out pairs (never trained on) are cut in three: the first quarter are gold
pairs; the xx sides of the next three eighths and the English sides of the last three eighths are
distractors whose translations are absent, so their nearest neighbours are same-domain near-misses
(near-duplicates kept), and they outnumber the gold pairs as in BUCC. Optionally clean Flores pairs
join as more gold (as many as the held-out gold pairs), from another domain: a model that scores
its training domain's near-misses above true pairs of another domain loses precision here.
Both sides are margin-mined (ratio margin, k=4, max strategy, exact search, as ``bench bucc``
does) and scored by the best-threshold F1 (BUCC's oracle F1). The score of a checkpoint is the
mean F1 over the languages; the mean of the languages' best thresholds is a margin threshold
tuned on data that is no evaluation set, which the export stores in the model's recipe
(:func:`tuned_threshold`).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bitextmine.training.data.devsets import DevSet
from bitextmine.training.data.tokens import PreparedData

MIN_HELD_OUT = 8  # held-out pairs a language needs to get a mining set


@dataclass
class MiningDevSet:
    name: str  # "mining"
    lang: str
    src: list[str]  # gold xx sentences then xx distractors
    tgt: list[str]  # English: gold partners and distractors, shuffled
    gold: set[tuple[int, int]]  # (row in src, row in tgt)


def mining_dev(data: PreparedData, langs: list[str], max_pairs: int, flores: list[DevSet] = (), seed: int = 0) -> list[MiningDevSet]:
    """One mining set per language of ``langs`` with at least :data:`MIN_HELD_OUT` held-out pairs."""
    by_lang = {s.lang: s for s in flores}
    out = []
    for lang in langs:
        held = data.langs[lang].dev[:max_pairs] if lang in data.langs else []
        if len(held) < MIN_HELD_OUT:
            continue
        n_gold = len(held) // 4
        n_src = (len(held) - n_gold) // 2
        gold_pairs = list(held[:n_gold])
        if lang in by_lang:
            f = by_lang[lang]
            gold_pairs += list(zip(f.src, f.tgt))[: max(1, n_gold)]
        src = [p[0] for p in gold_pairs] + [p[0] for p in held[n_gold : n_gold + n_src]]
        tgt_rows = [p[1] for p in gold_pairs] + [p[1] for p in held[n_gold + n_src :]]
        order = list(range(len(tgt_rows)))
        random.Random(f"{seed}:{lang}").shuffle(order)
        where = {old: new for new, old in enumerate(order)}
        out.append(MiningDevSet("mining", lang, src, [tgt_rows[i] for i in order], {(i, where[i]) for i in range(len(gold_pairs))}))
    return out


def mining_f1(s: MiningDevSet, embed: Callable[[list[str]], np.ndarray]) -> tuple[float, float]:
    """(F1, threshold): the best-threshold F1 of margin mining ``s`` with embeddings from ``embed``,
    and the ratio-margin threshold that gives it (inf when nothing correct is found)."""
    from bitextmine.bench.bucc.score import optimize_threshold
    from bitextmine.mining import mine_embeddings

    cand = mine_embeddings(embed(s.src), embed(s.tgt), k=4, margin="ratio", strategy="max", index="flat")
    scored = {(int(a), int(b)): float(c) for a, b, c in zip(cand.src, cand.tgt, cand.score)}
    best = optimize_threshold(scored, s.gold)
    return float(best.f1), float(best.threshold)


def tuned_threshold(best_info: dict | None) -> float | None:
    """The mining threshold of a best checkpoint's ``info.json`` (selected on the mining set), else None."""
    mining = ((best_info or {}).get("eval") or {}).get("mining") or {}
    thr = mining.get("threshold")
    return float(thr) if isinstance(thr, (int, float)) and np.isfinite(thr) else None
