"""BUCC 2018 shared task: mine parallel sentences from comparable corpora, score against gold.

The protocol follows LASER's ``tasks/bucc`` (Artetxe & Schwenk, 2019) and XTREME's
``bucc_optimize``:

1. embed both sides of a split (``xx-en.<split>.{xx,en}``, lines ``id<TAB>sentence``);
2. mine candidates with the ratio margin, k=4, strategy ``max`` over unique sentences (LASER's
   ``--unify``);
3. map each candidate's texts back to ids; a text that occurs more than once on a side maps to no
   id and its candidates are dropped; a repeated (src_id, tgt_id) pair keeps its highest score;
4. sweep the candidates from the best score down and keep the cut with the best F1; the threshold
   is the midpoint between the score of the last candidate kept and the next one's;
5. precision = correct / extracted, recall = correct / gold pairs (gold pairs that can never be
   extracted, e.g. for repeated sentences, still count).

Two numbers come out: the threshold tuned on one split and applied to another (the honest one),
and the best-threshold F1 of a split tuned on itself (the number most papers print). A split
without gold (the official test) gets a file of mined ``xxid<TAB>enid`` pairs instead.

Everything in this module is a library function: nothing prints, errors are
:class:`bitextmine.errors.InputError`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, NamedTuple

import numpy as np

from bitextmine.corpus import check_input, input_identity
from bitextmine.errors import InputError, ModelError
from bitextmine.margin import Margin, Strategy
from bitextmine.store import EmbeddingStore

SPLITS = ("sample", "training", "test")
TARGET = "en"  # English is always the second language in BUCC 2018
_TEXT_RE = re.compile(r"^([a-z]{2,3})-en\.(sample|training|test)\.([a-z]{2,3}|gold)$")
_ARCHIVE_RE = re.compile(r"^bucc2018-([a-z]{2,3})-en\.(sample|training|test)(-gold)?\.tar\.bz2$")

Pair = tuple[str, str]  # (src_id, tgt_id)


# ---------------------------------------------------------------------------------------------
# the data layout


@dataclass
class BuccSplit:
    """One split of one language pair: the two text files and the gold file (if any)."""

    pair: str  # "zh-en"
    split: str  # sample | training | test
    src: Path  # xx-en.<split>.xx
    tgt: Path  # xx-en.<split>.en
    gold: Path | None = None  # xx-en.<split>.gold
    archive: Path | None = None  # the .tar.bz2 it was extracted from, if any

    @property
    def lang(self) -> str:
        return self.pair.split("-")[0]


def _scan_files(folder: Path, depth: int) -> dict[tuple[str, str], dict[str, Path]]:
    """``{(pair, split): {"xx"|"en"|"gold": path}}`` for BUCC-named files up to ``depth`` folders down."""
    found: dict[tuple[str, str], dict[str, Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for p in entries:
        if p.is_file():
            m = _TEXT_RE.match(p.name)
            if m and m.group(3) in (m.group(1), TARGET, "gold"):
                role = "gold" if m.group(3) == "gold" else ("en" if m.group(3) == TARGET else "xx")
                found.setdefault((f"{m.group(1)}-en", m.group(2)), {}).setdefault(role, p)
    if depth > 0:
        for p in entries:
            if p.is_dir() and not p.name.startswith("."):
                for key, roles in _scan_files(p, depth - 1).items():
                    have = found.setdefault(key, {})
                    for role, path in roles.items():
                        have.setdefault(role, path)
    return found


def _scan_archives(folder: Path, depth: int) -> list[Path]:
    out: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for p in entries:
        if p.is_file() and _ARCHIVE_RE.match(p.name):
            out.append(p)
        elif depth > 0 and p.is_dir() and not p.name.startswith("."):
            out.extend(_scan_archives(p, depth - 1))
    return out


def extract_archive(archive: Path, cache_dir: Path) -> Path:
    """Extract the BUCC files of a ``bucc2018-xx-en.<split>[-gold].tar.bz2`` into the cache; reuse them later.

    Only regular files named like BUCC files are taken (by base name, so nothing can be written
    outside the target folder). The folder is keyed by the archive's identity (path, size, mtime),
    so the extracted files keep their identity too and their embeddings stay cached.
    """
    key = hashlib.sha256(json.dumps(input_identity(str(archive)), sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "bucc2018" / f"{archive.name.removesuffix('.tar.bz2')}-{key}"
    if (out / ".complete").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    taken = 0
    try:
        with tarfile.open(archive, "r:bz2") as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isfile() or not _TEXT_RE.match(name):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                taken += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"{archive}: cannot read the archive ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    if taken == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"{archive}: holds no BUCC files (xx-en.<split>.xx / .en / .gold)")
    (tmp / ".complete").write_text(archive.name + "\n")
    shutil.rmtree(out, ignore_errors=True)
    try:
        os.rename(tmp, out)
    except OSError:
        if not (out / ".complete").is_file():  # not a concurrent identical extraction
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def find_bucc(data: str | Path, *, pairs: Iterable[str] | None = None, cache_dir: Path | None = None) -> dict[str, dict[str, BuccSplit]]:
    """Locate BUCC splits in ``data``: ``{pair: {split: BuccSplit}}``.

    ``data`` may hold the files directly, per-pair subfolders (``zh-en/``, also one level deeper,
    as the archives unpack: ``bucc2018/zh-en/``), or the distributed archives
    ``bucc2018-xx-en.<split>[-gold].tar.bz2``, which are extracted into ``cache_dir`` on first use.
    Files found unpacked win over archives. ``pairs`` restricts the search (archives of other pairs
    are not opened); a named pair that is not found is an InputError.
    """
    root = Path(data)
    if not root.exists():
        raise InputError(f"{data}: no such folder")
    if not root.is_dir():
        raise InputError(f"{data}: is a file; --data needs the folder holding the BUCC files or archives")
    wanted = None
    if pairs is not None:
        wanted = [_norm_pair(p) for p in pairs]
    found = _scan_files(root, depth=2)
    archives = [a for a in _scan_archives(root, depth=2)
                if wanted is None or f"{_ARCHIVE_RE.match(a.name).group(1)}-en" in wanted]
    from_archive: dict[tuple[str, str], Path] = {}
    if archives:
        if cache_dir is None:
            from bitextmine.mine import default_cache_dir

            cache_dir = default_cache_dir()
        for a in archives:
            m = _ARCHIVE_RE.match(a.name)
            pair, split = f"{m.group(1)}-en", m.group(2)
            have = found.get((pair, split), {})
            if {"xx", "en"} <= have.keys() and ("gold" in have or not m.group(3)):
                continue  # already unpacked next to the archive
            folder = extract_archive(a, cache_dir)
            for key, roles in _scan_files(folder, depth=0).items():
                dest = found.setdefault(key, {})
                for role, path in roles.items():
                    if role not in dest:
                        dest[role] = path
                        from_archive[key] = a
    out: dict[str, dict[str, BuccSplit]] = {}
    for (pair, split), roles in sorted(found.items()):
        if "xx" in roles and "en" in roles:
            out.setdefault(pair, {})[split] = BuccSplit(pair, split, roles["xx"], roles["en"], roles.get("gold"), from_archive.get((pair, split)))
    if wanted is not None:
        missing = [p for p in wanted if p not in out]
        if missing:
            have = ", ".join(sorted(out)) or "none"
            raise InputError(f"pair {', '.join(missing)} not found in {data} (pairs found: {have})")
        out = {p: out[p] for p in wanted}
    if not out:
        raise InputError(
            f"{data}: no BUCC files found (expected xx-en.<split>.xx and xx-en.<split>.en files, "
            "per-pair folders such as zh-en/, or bucc2018-xx-en.<split>[-gold].tar.bz2 archives)"
        )
    return out


def _norm_pair(p: str) -> str:
    p = p.strip().lower()
    if re.fullmatch(r"[a-z]{2,3}", p):
        p = f"{p}-en"
    if not re.fullmatch(r"[a-z]{2,3}-en", p):
        raise InputError(f"--pairs: {p!r} is not a BUCC pair such as zh-en (English is always the second language)")
    return p


# ---------------------------------------------------------------------------------------------
# ids, gold, threshold


def read_gold(path: str | Path) -> set[Pair]:
    """Gold pairs from a ``xxid<TAB>enid`` file."""
    check_input(str(path))
    gold: set[Pair] = set()
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise InputError(f"{path}:{n}: expected 'xxid<TAB>enid'")
            gold.add((parts[0].strip(), parts[1].strip()))
    if not gold:
        raise InputError(f"{path}: no gold pairs")
    return gold


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
    """Candidate pairs by id, sorted by score descending (ties keep the candidates' order)."""

    src: list[str]
    tgt: list[str]
    score: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.src)

    def keys(self) -> list[Pair]:
        return list(zip(self.src, self.tgt))

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
    pairs = _as_pairs(scored)
    keep = pairs.score >= threshold
    extracted = int(keep.sum())
    correct = sum(1 for s, t, k in zip(pairs.src, pairs.tgt, keep) if k and (s, t) in gold)
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
    return [(s, t) for s, t, sc in zip(scored.src, scored.tgt, scored.score) if sc >= threshold]


def write_pairs_file(path: str | Path, pairs: Iterable[Pair]) -> int:
    """Write ``xxid<TAB>enid`` lines (the BUCC submission format), atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for s, t in pairs:
            fh.write(f"{s}\t{t}\n")
            n += 1
    os.replace(tmp, path)
    return n


# ---------------------------------------------------------------------------------------------
# the benchmark


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


ProgressFor = Callable[[str, int], ContextManager["Callable[[int], None] | None"]]


def mine_split(split: BuccSplit, embed: Embedder, opts: BuccOptions, *, progress_for: ProgressFor | None = None,
               embedder_seconds: Callable[[], float] | None = None) -> Mined:
    """Embed (through ``embed``) and mine one split; map the candidates to ids.

    ``progress_for(what, total)`` may return a context manager yielding a progress callback for
    the search (``total`` queries); ``embedder_seconds()`` reads the embedder's clock (time spent
    embedding), to tell embedding from mining time.
    """
    from bitextmine.mine import MineOptions, mine_stores

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
    ctx = progress_for(f"mining {split.pair} {split.split}", len(src) + len(tgt)) if progress_for else contextlib.nullcontext(None)
    with ctx as progress:
        res = mine_stores(src, tgt, mopts, progress=progress)
    cand = res.pairs
    src_map = unique_sentence_ids(src.iter_column("id"), src.iter_column("text"))
    tgt_map = unique_sentence_ids(tgt.iter_column("id"), tgt.iter_column("text"))
    pairs = candidates_to_ids(src.column("text", cand.src), tgt.column("text", cand.tgt), cand.score, src_map, tgt_map)
    gold = read_gold(split.gold) if split.gold else None
    return Mined(split, pairs, (len(src), len(tgt)), enc, time.perf_counter() - t1, gold)


def _best_dict(m: Mined) -> dict:
    ch = optimize_threshold(m.pairs, m.gold)
    ev = evaluate_at(ch.threshold, m.pairs, m.gold)
    return {"threshold": ch.threshold, "precision": ch.precision, "recall": ch.recall, "f1": ch.f1,
            "extracted": ev.extracted, "correct": ev.correct}


def _split_result(m: Mined, threshold: float, tuned_on: str, out_dir: Path | None) -> SplitResult:
    sp = m.split
    r = SplitResult(sp.pair, sp.split, tuned_on, tuned_on == sp.split, m.sentences, len(m.pairs), threshold,
                    extracted=int((m.pairs.score >= threshold).sum()),
                    encode_seconds=m.encode_seconds, mine_seconds=m.mine_seconds,
                    seconds=m.encode_seconds + m.mine_seconds,
                    files={"src": str(sp.src), "tgt": str(sp.tgt), "gold": str(sp.gold) if sp.gold else None,
                           "archive": str(sp.archive) if sp.archive else None})
    if m.gold is not None:
        ev = evaluate_at(threshold, m.pairs, m.gold)
        r.gold, r.correct, r.precision, r.recall, r.f1 = ev.gold, ev.correct, ev.precision, ev.recall, ev.f1
        r.best = _best_dict(m)
    else:
        folder = Path(out_dir) if out_dir is not None else Path.cwd()
        path = folder / f"{sp.pair}.{sp.split}.pairs.tsv"
        write_pairs_file(path, extract(m.pairs, threshold))
        r.submission = str(path)
    return r


def choose_splits(pair: str, splits: Mapping[str, BuccSplit], tune_on: str | None, eval_on: list[str] | None) -> tuple[str, list[str]]:
    """The tuning split and the evaluated splits for ``pair`` (defaults in :class:`BuccOptions`)."""
    for name in [tune_on, *(eval_on or [])]:
        if name is not None and name not in SPLITS:
            raise InputError(f"unknown split {name!r}; BUCC splits are {', '.join(SPLITS)}")
    have = ", ".join(s for s in SPLITS if s in splits)
    if tune_on is None:
        tune_on = next((s for s in ("sample", "training") if s in splits and splits[s].gold), None)
        if tune_on is None:
            raise InputError(f"{pair}: no split with a gold file to tune the threshold on (splits found: {have})")
    if tune_on not in splits:
        raise InputError(f"{pair}: no {tune_on} split found (splits found: {have})")
    if splits[tune_on].gold is None:
        raise InputError(f"{pair}: cannot tune on {tune_on}: no gold file {pair}.{tune_on}.gold next to {splits[tune_on].src}")
    if not eval_on:
        eval_on = ["training"] if tune_on == "sample" and "training" in splits else [tune_on]
    for s in eval_on:
        if s not in splits:
            raise InputError(f"{pair}: no {s} split found (splits found: {have})")
    return tune_on, list(dict.fromkeys(eval_on))


def run_bucc(
    found: Mapping[str, Mapping[str, BuccSplit]],
    embed: Embedder,
    opts: BuccOptions | None = None,
    *,
    out_dir: Path | None = None,
    plots_dir: Path | None = None,
    progress_for: ProgressFor | None = None,
    embedder_seconds: Callable[[], float] | None = None,
    on_pair: Callable[[PairResult], None] | None = None,
) -> list[PairResult]:
    """Run the benchmark on every pair of ``found`` (from :func:`find_bucc`).

    ``embed(path)`` returns the embedding store of a text file (e.g. a :class:`CachedEmbedder`
    with ``id_column=True``). Splits without gold get ``<pair>.<split>.pairs.tsv`` in ``out_dir``
    (default: the current folder). ``plots_dir`` gets PNG plots per evaluated split with gold.
    ``progress_for`` and ``embedder_seconds`` are passed to :func:`mine_split`. ``on_pair`` is
    called after each pair (e.g. to print results as they come).
    """
    opts = opts or BuccOptions()
    plan = {pair: choose_splits(pair, splits, opts.tune_on, opts.eval_on) for pair, splits in found.items()}
    results = []
    for pair, (tune_on, eval_on) in plan.items():
        t0 = time.perf_counter()
        mined = {s: mine_split(found[pair][s], embed, opts, progress_for=progress_for, embedder_seconds=embedder_seconds)
                 for s in dict.fromkeys([tune_on, *eval_on])}  # each split once
        tm = mined[tune_on]
        threshold = optimize_threshold(tm.pairs, tm.gold).threshold
        tune = _split_result(tm, threshold, tune_on, out_dir)
        evals = [tune if s == tune_on else _split_result(mined[s], threshold, tune_on, out_dir) for s in eval_on]
        pr = PairResult(pair, tune, evals, time.perf_counter() - t0)
        if plots_dir is not None:
            from bitextmine.bench.plots import plot_bucc_split

            for s in dict.fromkeys([tune_on, *eval_on]):
                m = mined[s]
                if m.gold is None:
                    continue
                sw = sweep(m.pairs, m.gold)
                best = optimize_threshold(m.pairs, m.gold)
                path = Path(plots_dir) / f"bucc-{pair}-{s}.png"
                plot_bucc_split(sw, path, applied=threshold, tuned_on=tune_on, best=best, title=f"BUCC 2018 {pair} {s}",
                                margin=Margin(opts.margin).value)
                pr.plots.append(str(path))
        results.append(pr)
        if on_pair is not None:
            on_pair(pr)
    return results


def tuned_threshold(results: list[PairResult]) -> float:
    """The threshold to store in a model recipe: the mean of the pairs' tuned thresholds."""
    ts = [r.tune.threshold for r in results if math.isfinite(r.tune.threshold)]
    if not ts:
        raise InputError("no finite threshold was tuned (no candidate matched the gold pairs); nothing to save")
    return float(sum(ts) / len(ts))


def save_threshold(model_folder: str | Path, recipe, threshold: float) -> Path:
    """Store ``threshold`` in the model's recipe file so ``mine`` uses it by default for that model.

    ``recipe`` is the model's current :class:`bitextmine.models.recipe.Recipe` (as loaded). The
    threshold is not part of the fingerprint, so existing embeddings stay valid.
    """
    from bitextmine.models.recipe import RECIPE_FILE, read_recipe, write_recipe

    folder = Path(model_folder)
    base = read_recipe(folder) or recipe
    try:
        write_recipe(folder, base.with_overrides(threshold=float(threshold)))
    except OSError as e:
        raise ModelError(f"cannot write {folder / RECIPE_FILE}: {e.strerror or e}") from None
    return folder / RECIPE_FILE
