"""``mine --filter``: the filter over mined pairs in the same run, as they are written.

:func:`filter_candidates` reads the pairs' texts a batch at a time, gives every pair to
:func:`bitextmine.filters.filter_pairs` best first (the order of ``mine``'s output file) and writes
the kept pairs to the output and the dropped ones, with ``reason`` and ``detail``, to the rejects
output. Each pair is judged on the values its output file holds (a TSV or JSONL score rounded to 6
decimals, TSV texts with tabs and line ends as spaces), so the result is exactly that of ``mine``
followed by ``bitextmine filter`` with the same options: same kept file, same rejects, same counts.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from bitextmine.events import Listener, task
from bitextmine.filters.pipeline import FilterOptions, FilterReport, filter_pairs
from bitextmine.margin import Candidates
from bitextmine.output import Format, PairsOutput, pair_chunks, pair_names, writing

if TYPE_CHECKING:
    from bitextmine.filters.lid import LanguageID
    from bitextmine.store import EmbeddingStore


def filter_candidates(pairs: Candidates, src: EmbeddingStore, tgt: EmbeddingStore, opts: FilterOptions, *,
                      output: PairsOutput | None = None, rejects: PairsOutput | None = None,
                      lid: LanguageID | None = None, listener: Listener | None = None) -> tuple[Candidates, FilterReport]:
    """Filter mined ``pairs`` (best first); returns the kept pairs (order kept) and the counts.

    With ``output`` the kept pairs are written there, with ``rejects`` the dropped ones (each file
    atomically, in its format). Without ``output`` the decisions use the exact scores and texts.
    """
    report = FilterReport()
    shape = output or rejects
    names = pair_names(shape, src, tgt) if shape is not None else ["score", "src", "tgt"]
    fmt = output.format if output is not None else Format.PARQUET
    keep = np.zeros(len(pairs), dtype=bool)

    def rows():
        for cols in pair_chunks(pairs, src, tgt, names, fmt):
            for values in zip(*cols.values()):
                yield dict(zip(names, values))

    with contextlib.ExitStack() as stack:
        kept = stack.enter_context(writing(output, "pairs", names=names)) if output is not None else None
        rej = (stack.enter_context(writing(rejects, "rejects", rejects=True, names=[*names, "reason", "detail"]))
               if rejects is not None else None)
        adv = stack.enter_context(task(listener, "filtering", len(pairs), unit="pairs"))
        for i, (row, d) in enumerate(filter_pairs(rows(), opts, report=report, lid=lid)):
            keep[i] = d.kept
            if d.kept and kept is not None:
                kept.write(row)
            elif not d.kept and rej is not None:
                rej.write({**row, "reason": d.reason, "detail": d.detail})
            if adv is not None and (i + 1) % 10000 == 0:
                adv(10000)
        if adv is not None and len(pairs) % 10000:
            adv(len(pairs) % 10000)
    return Candidates(pairs.src[keep], pairs.tgt[keep], pairs.score[keep]), report
