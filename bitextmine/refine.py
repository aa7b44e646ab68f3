"""New neighbourhoods for the pairs an approximate index leaves close to the threshold (issue 14).

An approximate index (IVF) misses some true neighbours; a missed neighbour lowers the row's k-NN
mean, which the ratio (or distance) margin divides by (subtracts), so a pair's approximate score is
never below its exact score but may be above it: a threshold tuned with exact search (``bench bucc``,
a model's saved threshold) then lets in pairs that exact search would have cut. Only the pairs whose
approximate score lies in a band just above the threshold can cross it.

:func:`refine` searches again the sources and targets of the selected pairs scoring in
``[threshold - tiny, threshold + band·|threshold|]``, replaces those rows' k-NN lists with the new
ones and selects again. The band widens (doubling) while a refined pair's score moved by more than
half of it, so a pair above the band is unlikely to have an error that large; the rows searched and
the final band are reported. The caller's ``exact_knn`` does the search: ``bitextmine.mining`` passes
an exact search (``index="flat"``: the refined scores and candidates are then exact search's) while
8 times the mining's probes would still cover over a quarter of the lists, else the mining's own
lists probed 8 times as widely (:class:`bitextmine.knn.Wider`): an exact search of the band's rows
costs (rows x the other side), more than the mining itself at 1M on crowded scores, where the wider
search costs an eighth of that or less and misses few neighbours.

Nothing to do for an exact index or the absolute margin.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .margin import Candidates, Margin, select

#: The band's lower edge sits this far (relative) below the threshold: codes (fp16, SQ8) perturb a
#: similarity in its last bits, so an approximate score can also sit a hair below the exact one.
_BELOW = 1e-3
#: The band never grows past this share of the threshold's magnitude.
_MAX_BAND = 0.5
#: The band doubles while more than this share of the pairs it re-scored moved by over half of it.
_TAIL = 1e-3
#: Re-selections at most (each searches only rows not searched before).
_MAX_ROUNDS = 12


@dataclass
class Refined:
    """What :func:`refine` did: the final band (relative to ``|threshold|``), rows searched exactly per
    side, pairs re-scored, the largest relative score change seen, and seconds."""

    band: float
    src_rows: int = 0
    tgt_rows: int = 0
    pairs: int = 0
    max_change: float = 0.0
    seconds: float = 0.0
    rounds: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"band": self.band, "src_rows": self.src_rows, "tgt_rows": self.tgt_rows, "pairs": self.pairs,
                "max_relative_change": self.max_change, "seconds": round(self.seconds, 3)}


Knn = tuple[np.ndarray, np.ndarray]


def refine(xs: Any, ys: Any, fwd: Knn, bwd: Knn, cand: Candidates, threshold: float, *, margin: Margin,
           strategy: Any, band: float, exact_knn: Callable[[Any, Any, int], Knn],
           take_rows: Callable[[Any, np.ndarray], np.ndarray]) -> tuple[Candidates, Refined]:
    """``cand`` (selected from approximate ``fwd``/``bwd``) with the near-threshold pairs re-scored exactly.

    exact_knn(queries_array, database_source, k) -> (D, I): a one-way search, exact or wider than the mining's.
    take_rows(source, sorted_rows) -> float32 array of those rows.
    Returns the pairs selected again (all of them, not yet cut at the threshold) and a :class:`Refined`.
    """
    import time

    t0 = time.perf_counter()
    info = Refined(band=band)
    if band <= 0 or margin is Margin.ABSOLUTE or not len(cand) or not np.isfinite(threshold):
        return cand, info
    fd, fi = (a.copy() for a in fwd)
    bd, bi = (a.copy() for a in bwd)
    done_x = np.zeros(len(fd), bool)
    done_y = np.zeros(len(bd), bool)
    scale = abs(threshold) or 1.0
    before = dict(zip(zip(cand.src.tolist(), cand.tgt.tolist()), cand.score.tolist()))
    while True:
        near = (cand.score >= threshold - _BELOW * scale) & (cand.score < threshold + band * scale)
        rx = np.setdiff1d(cand.src[near], np.nonzero(done_x)[0])
        ry = np.setdiff1d(cand.tgt[near], np.nonzero(done_y)[0])
        if len(rx) and fd.shape[1]:
            fd[rx], fi[rx] = exact_knn(take_rows(xs, rx), ys, fd.shape[1])
        if len(ry) and bd.shape[1]:
            bd[ry], bi[ry] = exact_knn(take_rows(ys, ry), xs, bd.shape[1])
        done_x[rx] = True
        done_y[ry] = True
        if len(rx) or len(ry):
            cand = select(fd, fi, bd, bi, margin=margin, strategy=strategy)
        exact = done_x[cand.src] & done_y[cand.tgt]
        moved = [abs(before[p] - s) / scale for p, s in zip(zip(cand.src[exact].tolist(), cand.tgt[exact].tolist()),
                                                            cand.score[exact].tolist()) if p in before]
        change = max(moved, default=0.0)
        far = sum(m > band / 2 for m in moved)
        info.rounds.append({"band": band, "src_rows": int(len(rx)), "tgt_rows": int(len(ry)), "max_relative_change": change,
                            "moved_over_half_band": int(far)})
        info.max_change = max(info.max_change, change)
        if far > _TAIL * len(moved) and band < _MAX_BAND:
            band = min(2 * band, _MAX_BAND)  # errors this large may sit above the band too
        elif not (len(rx) or len(ry)) or len(info.rounds) >= _MAX_ROUNDS:
            break  # (a round that searched rows may have moved new pairs into the band: look again)
    info.band = band
    info.src_rows, info.tgt_rows = int(done_x.sum()), int(done_y.sum())
    info.pairs = int((done_x[cand.src] & done_y[cand.tgt]).sum())
    info.seconds = time.perf_counter() - t0
    return cand, info
