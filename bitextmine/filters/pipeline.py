"""The filter: every rule, in a fixed order, over a stream of scored pairs.

``filter_pairs(rows, FilterOptions(...))`` yields ``(row, Decision)`` for each row, in input order,
holding only the dedup tables and the first ``infer_lines`` rows (to infer languages) in memory.
A pair is counted under the first rule that drops it, in this order (:data:`REASONS`):

* ``score``: margin score < ``min_score``. Default off: ``mine`` already cuts at the model's
  tuned threshold.
* ``min_length`` / ``max_length``: a side shorter than 1 / longer than 1050 scaled characters
  (stopes' defaults).
* ``ratio``: longer / shorter side > ``max_ratio`` = 3.0 in scaled characters (stopes: 9; see below).
* ``identical``: the normalised sides share ≥ ``max_overlap`` = 0.8 of their character trigrams
  (copies; the largest overlap of a true Flores pair is 0.71).
* ``numbers`` / ``urls``: each side has a number / URL or e-mail the other lacks
  (:mod:`bitextmine.filters.rules`). On.
* ``duplicate`` / ``near_duplicate``: the same pair, exactly / after normalisation, was kept
  before (stopes, CCMatrix, WikiMatrix dedup pairs; stopes normalises). On (normalised).
* ``src_cap`` / ``tgt_cap``: the sentence is already in ``max_per_src`` / ``max_per_tgt`` = 2 kept
  pairs (one-sided dedup; stopes has the caps, off by default).
* ``src_lid`` / ``tgt_lid``: a side is not in its expected language (NLLB, CCMatrix and
  WikiMatrix all filter on language ID). On: expected group on top or p ≥ 0.3
  (:mod:`bitextmine.filters.lid`).

Scaled lengths: characters × the language's factor (:data:`bitextmine.filters.rules.LENGTH_FACTORS`,
measured on Flores), so Chinese is compared with English fairly. On Flores and on the l10n
human translations a ratio of 3 keeps ≥ 99.87% of the pairs of every language measured
(``benchmarks/results/filter-rules.md``); stopes' 9 never fires on such data.

Order: ``duplicate``, ``near_duplicate`` and the caps keep the *first* pairs that pass every other
rule (only kept pairs enter their tables), so which copy survives depends on the order, not how
many distinct pairs do. Inferring languages reads the first ``infer_lines`` rows. Every other rule
looks at one pair alone and gives the same verdict in any order.

Languages not given are inferred from the first ``infer_lines`` rows (the majority of each side)
when language ID or a length rule needs them: the length factors depend on the language.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Iterable, Iterator, Mapping, Sequence

from bitextmine.errors import InputError
from bitextmine.filters.langs import Language, language_of_group, parse_language
from bitextmine.filters.lid import DEFAULT_THRESHOLD, LanguageID, shared_identifier
from bitextmine.filters.rules import (disagree, length_factor, length_ratio, normalise, number_strings, numbers, numbers_disagree,
                                      overlap_reaches, urls)

REASONS = ("score", "min_length", "max_length", "ratio", "identical", "numbers", "urls", "duplicate",
           "near_duplicate", "src_cap", "tgt_cap", "src_lid", "tgt_lid")


class Dedup(str, Enum):
    NONE = "none"
    EXACT = "exact"
    NORMALISED = "normalised"


@dataclass
class FilterOptions:
    """Which rules run and their limits; ``None`` (or False) turns a rule off. See the module docstring."""

    src_lang: str | None = None  # ISO 639-3, ISO 639-1 or Flores code; None: inferred when a rule needs it
    tgt_lang: str | None = None
    lid: bool = True
    lid_threshold: float = DEFAULT_THRESHOLD
    infer_lines: int = 1000  # rows read to infer a missing language
    min_length: float | None = 1
    max_length: float | None = 1050
    max_ratio: float | None = 3.0
    length_factors: dict[str, float] | None = None  # language group → factor; None: the Flores table
    max_overlap: float | None = 0.8
    numbers: bool = True
    urls: bool = True
    dedup: Dedup = Dedup.NORMALISED
    max_per_src: int | None = 2
    max_per_tgt: int | None = 2
    min_score: float | None = None

    def __post_init__(self) -> None:
        try:
            self.dedup = Dedup(self.dedup)
        except ValueError:
            raise InputError("{param} must be one of " + ", ".join(d.value for d in Dedup), param="dedup") from None
        for name in ("src_lang", "tgt_lang"):
            if getattr(self, name) is not None:
                parse_language(getattr(self, name), name)  # unknown codes fail now
        if not 0.0 <= self.lid_threshold <= 1.0:
            raise InputError("{param} must be between 0 and 1", param="lid_threshold")
        if self.infer_lines < 1:
            raise InputError("{param} must be at least 1", param="infer_lines")
        for name in ("min_length", "max_length", "max_ratio", "max_overlap", "min_score"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or math.isnan(v)):
                raise InputError("{param} must be a number", param=name)
        if self.max_ratio is not None and self.max_ratio < 1:
            raise InputError("{param} must be at least 1", param="max_ratio")
        if self.max_overlap is not None and not 0.0 < self.max_overlap <= 1.0:
            raise InputError("{param} must be in (0, 1]", param="max_overlap")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise InputError("{min_length} must not exceed {max_length}", param=("min_length", "max_length"))
        for name in ("max_per_src", "max_per_tgt"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InputError("{param} must be at least 1 (None: no cap)", param=name)


@dataclass(frozen=True)
class Decision:
    kept: bool
    reason: str | None = None  # the first rule that dropped the pair (one of REASONS)
    detail: str = ""  # why, for people ("src is eng, p(deu)=0.01")


KEPT = Decision(True)


@dataclass
class PairRow:
    """A scored pair; ``fields`` carries any other columns through (lines, ids...)."""

    score: float
    src: str
    tgt: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class LanguageChoice:
    code: str
    group: str
    name: str
    inferred: bool = False
    share: float | None = None  # inferred: fraction of the sample in this language


@dataclass
class FilterReport:
    """Counts by rule; filled while ``filter_pairs`` runs."""

    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    src_lang: LanguageChoice | None = None
    tgt_lang: LanguageChoice | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dedup_bytes: int = 0  # memory of the dedup and cap tables at the end

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropped_total"] = self.total - self.kept
        return d


def _language(code: str | None, param: str) -> Language | None:
    return parse_language(code, param) if code is not None else None


class PairFilter:
    """The rules with their state (dedup tables, caps); ``decide`` one pair at a time.

    ``mine --filter`` can hold one of these and call :meth:`decide` on each mined pair, best first.
    """

    def __init__(self, opts: FilterOptions, src_lang: Language | None, tgt_lang: Language | None,
                 lid: LanguageID | None = None, report: FilterReport | None = None) -> None:
        from bitextmine.filters.dedup import PairDedup, SentenceCap

        self.opts = opts
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.lid = (lid or shared_identifier()) if opts.lid else None
        if self.lid is not None and (src_lang is None or tgt_lang is None):
            raise InputError("language identification needs both languages: give {src_lang} and {tgt_lang}",
                             param=("src_lang", "tgt_lang"))
        self.report = report if report is not None else FilterReport()
        self.report.options = {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(opts).items()}
        self.f_src = length_factor(src_lang.group if src_lang else None, opts.length_factors)
        self.f_tgt = length_factor(tgt_lang.group if tgt_lang else None, opts.length_factors)
        self.pairs = PairDedup(opts.dedup is Dedup.NORMALISED) if opts.dedup is not Dedup.NONE else None
        self.src_cap = SentenceCap(opts.max_per_src) if opts.max_per_src else None
        self.tgt_cap = SentenceCap(opts.max_per_tgt) if opts.max_per_tgt else None
        self._normalise = opts.max_overlap is not None or opts.dedup is Dedup.NORMALISED

    def decide(self, score: float, src: str, tgt: str) -> Decision:
        d = self._decide(score, src, tgt)
        r = self.report
        r.total += 1
        if d.kept:
            r.kept += 1
        else:
            r.dropped[d.reason] += 1
        return d

    def memory_bytes(self) -> int:
        return sum(t.table.nbytes for t in (self.pairs, self.src_cap, self.tgt_cap) if t is not None)

    def _decide(self, score: float, src: str, tgt: str) -> Decision:
        o = self.opts
        if o.min_score is not None and not score >= o.min_score:  # NaN fails too
            return Decision(False, "score", f"{score:g} < {o.min_score:g}")
        ls, lt = len(src.strip()) * self.f_src, len(tgt.strip()) * self.f_tgt
        if o.min_length is not None and min(ls, lt) < o.min_length:
            return Decision(False, "min_length", f"{min(ls, lt):.0f} < {o.min_length:g}")
        if o.max_length is not None and max(ls, lt) > o.max_length:
            return Decision(False, "max_length", f"{max(ls, lt):.0f} > {o.max_length:g}")
        if o.max_ratio is not None and (ratio := length_ratio(ls, lt)) > o.max_ratio:
            return Decision(False, "ratio", f"{ratio:.2f} > {o.max_ratio:g}")
        ns, nt = (normalise(src), normalise(tgt)) if self._normalise else (src, tgt)
        if o.max_overlap is not None and (ov := overlap_reaches(ns, nt, o.max_overlap)) is not None:
            return Decision(False, "identical", f"overlap {ov:.2f}")
        if o.numbers and numbers_disagree(numbers(src), numbers(tgt)):
            return Decision(False, "numbers", f"{' '.join(number_strings(src))} | {' '.join(number_strings(tgt))}")
        if o.urls and disagree(a := urls(src), b := urls(tgt)):
            return Decision(False, "urls", f"{' '.join(sorted(a - b))} | {' '.join(sorted(b - a))}")
        from bitextmine.filters.dedup import hash64

        if self.pairs is not None:
            key, tag = self.pairs.keys(src, tgt, ns, nt)
            if seen := self.pairs.seen(key, tag):
                return Decision(False, seen)
        cs, ct = (ns, nt) if self.opts.dedup is Dedup.NORMALISED else (src, tgt)  # caps see what dedup sees
        ks = hash64(cs) if self.src_cap is not None else 0
        kt = hash64(ct) if self.tgt_cap is not None else 0
        if self.src_cap is not None and self.src_cap.full(ks):
            return Decision(False, "src_cap", f"in {self.src_cap.limit} pairs already")
        if self.tgt_cap is not None and self.tgt_cap.full(kt):
            return Decision(False, "tgt_cap", f"in {self.tgt_cap.limit} pairs already")
        if self.lid is not None:
            for side, text, lang in (("src", src, self.src_lang), ("tgt", tgt, self.tgt_lang)):
                ok, v = self.lid.accepts(text, lang.group, o.lid_threshold)
                if not ok:
                    return Decision(False, f"{side}_lid", f"{side} looks like {v.top}, p({lang.group})={v.prob:.2f}")
        if self.pairs is not None:
            self.pairs.add(key, tag)
        if self.src_cap is not None:
            self.src_cap.add(ks)
        if self.tgt_cap is not None:
            self.tgt_cap.add(kt)
        return KEPT


def row_parts(row: Any) -> tuple[float, str, str]:
    """(score, src, tgt) of a row: an object with those attributes (:class:`PairRow`), a mapping with
    those keys, or a sequence starting with them."""
    if isinstance(row, PairRow) or (hasattr(row, "src") and hasattr(row, "tgt") and hasattr(row, "score")):
        return float(row.score), row.src, row.tgt
    if isinstance(row, Mapping):
        return float(row["score"]), row["src"], row["tgt"]
    if isinstance(row, Sequence) and not isinstance(row, str) and len(row) >= 3:
        return float(row[0]), row[1], row[2]
    raise TypeError(f"a pair row is a PairRow, a mapping or a (score, src, tgt, ...) sequence, not {type(row).__name__}")


def _needs_languages(opts: FilterOptions) -> bool:
    """Language ID needs both languages; the length rules use them for their factors."""
    return opts.lid or any(v is not None for v in (opts.min_length, opts.max_length, opts.max_ratio))


def resolve_languages(opts: FilterOptions, head: Sequence[Any], lid: LanguageID | None = None,
                      ) -> tuple[LanguageChoice | None, LanguageChoice | None]:
    """The expected languages: as given, or the majority of ``head``'s sides when a rule needs them
    (an error when language ID cannot do without; the length rules then count characters as English)."""
    out: list[LanguageChoice | None] = []
    for idx, name in ((1, "src_lang"), (2, "tgt_lang")):
        code = getattr(opts, name)
        if code is not None:
            lang = parse_language(code, name)
            out.append(LanguageChoice(code, lang.group, lang.name))
        elif _needs_languages(opts) and head:
            group, share, n = (lid or shared_identifier()).majority(row_parts(r)[idx] for r in head)
            if group is None and not opts.lid:
                out.append(None)
                continue
            if group is None:
                raise InputError(f"cannot infer the language of the {name[:3]} side from its first {len(head)} pairs "
                                 "(no text the identifier knows); give {param}", param=name)
            lang = language_of_group(group)
            out.append(LanguageChoice(group, group, lang.name, inferred=True, share=round(share, 4)))
        else:
            out.append(None)
    return out[0], out[1]


def filter_pairs(rows: Iterable[Any], opts: FilterOptions | None = None, *, report: FilterReport | None = None,
                 lid: LanguageID | None = None) -> Iterator[tuple[Any, Decision]]:
    """Yield ``(row, Decision)`` for every row, in order (rows: see :func:`row_parts`).

    Streams: memory holds the dedup tables and, when a language must be inferred, the first
    ``opts.infer_lines`` rows. ``report`` (a :class:`FilterReport`) is filled as rows go by.
    """
    opts = opts or FilterOptions()
    report = report if report is not None else FilterReport()
    it = iter(rows)
    head: list[Any] = []
    if _needs_languages(opts) and (opts.src_lang is None or opts.tgt_lang is None):
        for row in it:
            head.append(row)
            if len(head) >= opts.infer_lines:
                break
        if not head:
            return
    src, tgt = resolve_languages(opts, head, lid)
    report.src_lang, report.tgt_lang = src, tgt
    as_lang = lambda c: Language(c.code, c.group, c.name) if c is not None else None  # noqa: E731
    pf = PairFilter(opts, as_lang(src), as_lang(tgt), lid, report)
    try:
        for source in (head, it):
            for row in source:
                yield row, pf.decide(*row_parts(row))
    finally:
        report.dedup_bytes = pf.memory_bytes()
