"""Language identification of one side of a pair: offline, with weights inside a registry package.

The identifier is py3langid (BSD-3-Clause; a 4.5 MB naive Bayes model over byte n-grams, 140
labels, shipped inside the wheel, nothing downloaded). ``benchmarks/filter.py lid`` measured it
against heliport (GPL-3.0, 220 labels) on the Flores sentences of the 36 training languages and
English: heliport has no Javanese, and its top-1 label keeps < 99% of the Indonesian, Chinese and
Thai sentences, while py3langid, with the rule below, keeps ≥ 99.8% of every language and accepts
a sentence of another of those languages as the expected one in ≤ 0.5% of cases (Bulgarian taken
for Russian), on average 0.001% (``benchmarks/results/filter-lid.md``).

The rule: the probabilities of the labels of a group (a macrolanguage: see
:mod:`bitextmine.filters.langs`) are summed; a side passes when its expected group holds the top
label or has probability ≥ ``threshold`` (default :data:`DEFAULT_THRESHOLD`, tuned on Flores so
that every language keeps ≥ 99%: the probabilities are tempered by the square root of the text's
length in bytes, so a short sentence's distribution is flat and the top-label clause keeps it).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from bitextmine.filters.langs import LABELS, group_of

#: Accept a side whose expected group has at least this probability (or holds the top label).
DEFAULT_THRESHOLD = 0.3


@dataclass(frozen=True)
class Verdict:
    top: str  # the group of the most probable label
    prob: float  # probability of the expected group (or of ``top`` without one)


class LanguageID:
    """``LanguageID().verdict(text, "deu")``; the model loads on first use (about a second)."""

    def __init__(self) -> None:
        self._model = None
        self._groups: list[str] = []
        self._gid = None  # label column → group index

    def _load(self):
        if self._model is None:
            import numpy as np
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            model = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            labels = list(model.nb_classes)
            # a label this table lacks (a newer model) is a group of its own
            self._groups = sorted({group_of(lab) if lab in LABELS else lab for lab in labels})
            index = {g: i for i, g in enumerate(self._groups)}
            self._gid = np.asarray([index[group_of(lab) if lab in LABELS else lab] for lab in labels], dtype=np.int64)
            self._model = model
        return self._model

    @property
    def groups(self) -> list[str]:
        self._load()
        return list(self._groups)

    def group_probs(self, text: str):
        """Probability of every group (numpy array in the order of :attr:`groups`) and the top label's group."""
        import numpy as np

        model = self._load()
        probs = model._decide(text) if hasattr(model, "_decide") else _probs_from_rank(model, text)
        gp = np.bincount(self._gid, weights=probs, minlength=len(self._groups))
        return gp, self._groups[int(self._gid[int(np.argmax(probs))])]

    def verdict(self, text: str, group: str | None = None) -> Verdict:
        gp, top = self.group_probs(text)
        if group is None:
            return Verdict(top, float(gp[self._groups.index(top)]))
        try:
            p = float(gp[self._groups.index(group)])
        except ValueError:
            p = 0.0
        return Verdict(top, p)

    def accepts(self, text: str, group: str, threshold: float = DEFAULT_THRESHOLD) -> tuple[bool, Verdict]:
        v = self.verdict(text, group)
        return (v.top == group or v.prob >= threshold), v

    def majority(self, texts: Iterable[str]) -> tuple[str | None, float, int]:
        """The most frequent top group over ``texts`` (sentences of no language skipped): (group, share, n)."""
        c: Counter[str] = Counter()
        for t in texts:
            top = self.group_probs(t)[1]
            if top != "zxx":
                c[top] += 1
        n = sum(c.values())
        if not n:
            return None, 0.0, 0
        group, k = c.most_common(1)[0]
        return group, k / n, n


def _probs_from_rank(model, text: str):
    """Fallback for a py3langid without ``_decide``: the public ``rank`` in model column order."""
    import numpy as np

    probs = dict(model.rank(text))
    seen: set[str] = set()
    out = []
    for lab in model.nb_classes:  # an aliased label's probability goes to its first column only
        out.append(0.0 if lab in seen else probs.get(lab, 0.0))
        seen.add(lab)
    return np.asarray(out, dtype=np.float64)


_SHARED: LanguageID | None = None


def shared_identifier() -> LanguageID:
    """One identifier per process (the model is read once)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = LanguageID()
    return _SHARED
