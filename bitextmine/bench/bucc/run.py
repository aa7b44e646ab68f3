"""The BUCC benchmark run: embed and mine each split, tune the threshold on one, apply it to others.

:func:`run_bucc` is what ``bitextmine bench bucc`` calls; it returns :class:`PairResult` objects
(dataclasses, written to JSON as they are) and writes submission files and plots, nothing else.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bitextmine.bench.bucc.data import (
    SPLITS,
    BuccSplit,
    Pair,
    ids_present,
    read_gold,
    write_pairs_file,
)
from bitextmine.bench.bucc.score import (
    IdPairs,
    candidates_to_ids,
    evaluate_at,
    extract,
    optimize_threshold,
    sweep,
    unique_sentence_ids,
)
from bitextmine.bench.plots import plot_bucc_split
from bitextmine.errors import InputError
from bitextmine.events import Listener, emit
from bitextmine.margin import Margin, Strategy
from bitextmine.store import EmbeddingStore


@dataclass
class BuccOptions:
    k: int = 4
    margin: Margin = Margin.RATIO
    strategy: Strategy = Strategy.MAX
    index: str = "flat"  # exact search; a FAISS factory string or "auto" also work
    nprobe: int | None = None
    dedup: bool = True  # mine unique sentences (LASER's --unify)
    tune_on: str | None = None  # default: sample if it has gold, else training
    eval_on: list[str] | None = None  # default: training when tuning on sample, else the tuning split


@dataclass
class SplitResult:
    pair: str
    split: str
    tuned_on: str  # the split whose threshold was applied
    self_tuned: bool  # tuned_on == split: the threshold was tuned on the evaluated split itself
    sentences: tuple[int, int]  # (xx, en) sentences embedded
    candidates: int  # id pairs after mapping texts back to ids
    threshold: float  # the threshold applied (tuned on ``tuned_on``)
    extracted: int  # pairs at or above it
    gold: int | None = None
    correct: int | None = None
    precision: float | None = None  # None without gold
    recall: float | None = None
    f1: float | None = None
    best: dict | None = None  # best-threshold result on this split itself: threshold, precision, recall, f1, extracted
    gold_missing: int | None = None  # gold pairs naming an id absent from the split's files (misses whatever the model)
    submission: str | None = None  # mined pairs file, for splits without gold
    seconds: float = 0.0  # embedding (if not cached) + mining + scoring
    encode_seconds: float = 0.0
    mine_seconds: float = 0.0
    files: dict = field(default_factory=dict)  # the files read


@dataclass
class PairResult:
    pair: str
    tune: SplitResult  # the tuning split, scored at its own best threshold
    evals: list[SplitResult]
    seconds: float = 0.0
    plots: list[str] = field(default_factory=list)


@dataclass
class Mined:
    """A mined split: candidate id pairs and what is needed to report on it."""

    split: BuccSplit
    pairs: IdPairs
    sentences: tuple[int, int]
    encode_seconds: float
    mine_seconds: float
    gold: set[Pair] | None = None


Embedder = Callable[[Path], EmbeddingStore]


def _named(listener: Listener | None, what: str) -> Listener | None:
    """``listener`` with its task events relabelled ``what`` (the search calls its task "searching")."""
    if listener is None:
        return None
    return lambda e: listener(replace(e, what=what) if e.kind in ("start", "advance", "end") else e)


def mine_split(split: BuccSplit, embed: Embedder, opts: BuccOptions, *, listener: Listener | None = None,
               embedder_seconds: Callable[[], float] | None = None) -> Mined:
    """Embed (through ``embed``) and mine one split; map the candidates to ids.

    ``listener`` gets the search as a task "mining <pair> <split>" (in queries);
    ``embedder_seconds()`` reads the embedder's clock (time spent embedding), to tell embedding
    from mining time.
    """
    from bitextmine.mining import MineOptions, mine_stores

    t0 = time.perf_counter()
    enc0 = embedder_seconds() if embedder_seconds else 0.0
    src = embed(split.src)
    tgt = embed(split.tgt)
    for store, path in ((src, split.src), (tgt, split.tgt)):
        if not store.has_ids:
            raise InputError(f"{path}: embedded without ids; BUCC files are 'id<TAB>sentence'")
    t1 = time.perf_counter()
    enc = (embedder_seconds() - enc0) if embedder_seconds else t1 - t0
    mopts = MineOptions(k=opts.k, margin=opts.margin, strategy=opts.strategy, index=opts.index, nprobe=opts.nprobe, dedup=opts.dedup)
    cand = mine_stores(src, tgt, mopts, listener=_named(listener, f"mining {split.pair} {split.split}")).pairs
    src_map = unique_sentence_ids(src.iter_column("id"), src.iter_column("text"))
    tgt_map = unique_sentence_ids(tgt.iter_column("id"), tgt.iter_column("text"))
    pairs = candidates_to_ids(src.column("text", cand.src), tgt.column("text", cand.tgt), cand.score, src_map, tgt_map)
    gold = read_gold(split.gold) if split.gold else None
    return Mined(split, pairs, (len(src), len(tgt)), enc, time.perf_counter() - t1, gold)


@dataclass
class GoldCheck:
    """How many gold pairs of a split can be found at all: both ids occur in its files."""

    gold: int  # gold pairs
    present: int  # of them with both ids in the files

    @property
    def missing(self) -> int:
        return self.gold - self.present


def check_gold(split: BuccSplit) -> GoldCheck:
    """Read the split's gold and the ids of its files (nothing is embedded).

    Raises InputError when no gold pair has both ids in the files (the gold file of another pair
    or split: every F1 would be 0). Some pairs missing is allowed (they count as misses); the
    count is returned, for a warning.
    """
    if split.gold is None:
        raise InputError(f"{split.pair} {split.split}: no gold file")
    gold = read_gold(split.gold)
    src = ids_present(split.src, {s for s, _ in gold})
    tgt = ids_present(split.tgt, {t for _, t in gold})
    present = sum(1 for s, t in gold if s in src and t in tgt)
    if present == 0:
        raise InputError(f"{split.gold}: none of its {len(gold):,} gold pairs has both ids in {split.src} and {split.tgt}; "
                         "is it the gold file of another pair or split?")
    return GoldCheck(len(gold), present)


def _best_dict(m: Mined) -> dict:
    ch = optimize_threshold(m.pairs, m.gold)
    ev = evaluate_at(ch.threshold, m.pairs, m.gold)
    return {"threshold": ch.threshold, "precision": ch.precision, "recall": ch.recall, "f1": ch.f1,
            "extracted": ev.extracted, "correct": ev.correct}


def _split_result(m: Mined, threshold: float, tuned_on: str, out_dir: Path | None, checks: Mapping[tuple[str, str], GoldCheck]) -> SplitResult:
    sp = m.split
    r = SplitResult(sp.pair, sp.split, tuned_on, tuned_on == sp.split, m.sentences, len(m.pairs), threshold,
                    extracted=len(m.pairs.above(threshold)),
                    encode_seconds=m.encode_seconds, mine_seconds=m.mine_seconds,
                    seconds=m.encode_seconds + m.mine_seconds,
                    files={"src": str(sp.src), "tgt": str(sp.tgt), "gold": str(sp.gold) if sp.gold else None,
                           "archive": str(sp.archive) if sp.archive else None})
    if m.gold is not None:
        ev = evaluate_at(threshold, m.pairs, m.gold)
        r.gold, r.correct, r.precision, r.recall, r.f1 = ev.gold, ev.correct, ev.precision, ev.recall, ev.f1
        r.best = _best_dict(m)
        check = checks.get((sp.pair, sp.split))
        r.gold_missing = check.missing if check is not None else None
    else:
        folder = Path(out_dir) if out_dir is not None else Path.cwd()
        path = folder / f"{sp.pair}.{sp.split}.pairs.tsv"
        write_pairs_file(path, extract(m.pairs, threshold))
        r.submission = str(path)
    return r


def choose_splits(pair: str, splits: Mapping[str, BuccSplit], tune_on: str | None, eval_on: list[str] | None) -> tuple[str, list[str]]:
    """The tuning split and the evaluated splits for ``pair`` (defaults in :class:`BuccOptions`).

    Errors name the parameter they are about (``tune_on`` or ``eval_on``) in ``param``.
    """
    for param, names in (("tune_on", [tune_on]), ("eval_on", eval_on or [])):
        for name in names:
            if name is not None and name not in SPLITS:
                raise InputError(f"unknown split {name!r}; BUCC splits are {', '.join(SPLITS)}", param=param)
    have = ", ".join(s for s in SPLITS if s in splits)
    if tune_on is None:
        tune_on = next((s for s in ("sample", "training") if s in splits and splits[s].gold), None)
        if tune_on is None:
            raise InputError(f"{pair}: no split with a gold file to tune the threshold on (splits found: {have})")
    if tune_on not in splits:
        raise InputError(f"{pair}: no {tune_on} split found (splits found: {have})", param="tune_on")
    if splits[tune_on].gold is None:
        raise InputError(f"{pair}: cannot tune on {tune_on}: no gold file {pair}.{tune_on}.gold next to {splits[tune_on].src}",
                         param="tune_on")
    if not eval_on:
        eval_on = ["training"] if tune_on == "sample" and "training" in splits else [tune_on]
    for s in eval_on:
        if s not in splits:
            raise InputError(f"{pair}: no {s} split found (splits found: {have})", param="eval_on")
    return tune_on, list(dict.fromkeys(eval_on))


def run_bucc(
    found: Mapping[str, Mapping[str, BuccSplit]],
    embed: Embedder,
    opts: BuccOptions | None = None,
    *,
    out_dir: Path | None = None,
    plots_dir: Path | None = None,
    listener: Listener | None = None,
    embedder_seconds: Callable[[], float] | None = None,
    on_pair: Callable[[PairResult], None] | None = None,
) -> list[PairResult]:
    """Run the benchmark on every pair of ``found`` (from :func:`find_bucc`).

    ``embed(path)`` returns the embedding store of a text file (e.g. a :class:`CachedEmbedder`
    with ``id_column=True``). Splits without gold get ``<pair>.<split>.pairs.tsv`` in ``out_dir``
    (default: the current folder). ``plots_dir`` gets PNG plots per evaluated split with gold.
    ``listener`` and ``embedder_seconds`` are passed to :func:`mine_split`; before anything is
    embedded each gold file is checked against its split (:func:`check_gold`), and ``listener``
    gets a ``warning`` event (``data["message"]``) for a split whose gold names absent ids.
    ``on_pair`` is called after each pair (e.g. to print results as they come).
    """
    opts = opts or BuccOptions()
    plan = {pair: choose_splits(pair, splits, opts.tune_on, opts.eval_on) for pair, splits in found.items()}
    checks: dict[tuple[str, str], GoldCheck] = {}
    for pair, (tune_on, eval_on) in plan.items():  # every gold file against its data, before any embedding
        for s in dict.fromkeys([tune_on, *eval_on]):
            sp = found[pair][s]
            if sp.gold is None:
                continue
            c = checks[(pair, s)] = check_gold(sp)
            if c.missing:
                emit(listener, "warning", message=f"{pair} {s}: {c.missing:,} of {c.gold:,} gold pairs in {sp.gold} name an id "
                     f"that is not in {sp.src} or {sp.tgt}; they count as misses (recall at most {c.present / c.gold:.1%})")
    results = []
    for pair, (tune_on, eval_on) in plan.items():
        t0 = time.perf_counter()
        mined = {s: mine_split(found[pair][s], embed, opts, listener=listener, embedder_seconds=embedder_seconds)
                 for s in dict.fromkeys([tune_on, *eval_on])}  # each split once
        tm = mined[tune_on]
        threshold = optimize_threshold(tm.pairs, tm.gold).threshold
        tune = _split_result(tm, threshold, tune_on, out_dir, checks)
        evals = [tune if s == tune_on else _split_result(mined[s], threshold, tune_on, out_dir, checks) for s in eval_on]
        pr = PairResult(pair, tune, evals, time.perf_counter() - t0)
        if plots_dir is not None:
            pr.plots = _plot_pair(mined, threshold, tune_on, Path(plots_dir), Margin(opts.margin).value)
        results.append(pr)
        if on_pair is not None:
            on_pair(pr)
    return results


def _plot_pair(mined: Mapping[str, Mined], threshold: float, tune_on: str, folder: Path, margin: str) -> list[str]:
    """``bucc-<pair>-<split>.png`` in ``folder`` for each mined split with gold (tuning split first)."""
    paths = []
    for s, m in mined.items():
        if m.gold is None:
            continue
        sw = sweep(m.pairs, m.gold)
        best = optimize_threshold(m.pairs, m.gold)
        path = folder / f"bucc-{m.split.pair}-{s}.png"
        plot_bucc_split(sw, path, applied=threshold, tuned_on=tune_on, best=best, title=f"BUCC 2018 {m.split.pair} {s}", margin=margin)
        paths.append(str(path))
    return paths


def tuned_threshold(results: list[PairResult]) -> float:
    """The threshold to store in a model recipe: the mean of the pairs' tuned thresholds."""
    ts = [r.tune.threshold for r in results if math.isfinite(r.tune.threshold)]
    if not ts:
        raise InputError("no finite threshold was tuned (no candidate matched the gold pairs); nothing to save")
    return float(sum(ts) / len(ts))

