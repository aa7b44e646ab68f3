"""From mined candidates to clean bitext: language identification, lengths, copies, numbers and URLs,
duplicates and per-sentence caps, margin threshold — each rule counted, each configurable.

Library first::

    from bitextmine.filters import FilterOptions, filter_pairs, filter_file
    for row, decision in filter_pairs(rows, FilterOptions(src_lang="deu", tgt_lang="eng")):
        ...
    report = filter_file("pairs.tsv", "clean.tsv", FilterOptions(), rejects="rejects.tsv")

``bitextmine filter`` is a thin layer over :func:`filter_file`. The rules, their order and
defaults are in :mod:`bitextmine.filters.pipeline`; the language identifier in
:mod:`bitextmine.filters.lid`; the memory of dedup in :mod:`bitextmine.filters.dedup`.
"""
from __future__ import annotations

from bitextmine.filters.io import filter_file, read_pairs
from bitextmine.filters.langs import Language, language_table, parse_language
from bitextmine.filters.pipeline import (REASONS, Decision, Dedup, FilterOptions, FilterReport, PairFilter, PairRow,
                                         filter_pairs, resolve_languages)

__all__ = ["REASONS", "Decision", "Dedup", "FilterOptions", "FilterReport", "Language", "PairFilter", "PairRow",
           "filter_file", "filter_pairs", "language_table", "parse_language", "read_pairs", "resolve_languages"]
