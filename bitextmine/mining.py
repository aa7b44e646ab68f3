"""The mining pipeline: two sides to scored sentence pairs, in one call at each level.

* :func:`mine_files` — text files or embedding folders (text files are embedded through the
  :class:`~bitextmine.embed_cache.EmbeddingCache`), the model's saved threshold resolved, the pairs
  optionally written; this is exactly what ``bitextmine mine`` does.
* :func:`mine_stores` — two embedding folders already open.
* :func:`mine_embeddings` — two in-memory arrays (or any ``BlockSource``).

It is one module on purpose: the three levels, their options and the one path they share are read
together. All three share one path: k-NN both ways (:mod:`bitextmine.knn`, one IVF training for the two
directions), margin scores and selection (:mod:`bitextmine.margin`), then threshold and top-N.
With ``MineOptions.filter`` the selected pairs then go through :mod:`bitextmine.filters` in the same
run (:func:`bitextmine.filters.mined.filter_candidates`): stores and files only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from bitextmine.corpus import Errors, check_input
from bitextmine.embed_cache import EmbeddingCache, is_embedding_folder
from bitextmine.errors import InputError
from bitextmine.events import Advance, Listener, task
from bitextmine.fs import OutputLock, atomic_write_json, remove_temps
from bitextmine.margin import Candidates, Margin, Strategy, parse_margin, parse_strategy, select
from bitextmine.output import STDOUT, PairsOutput, check_output, check_writable, write_pairs
from bitextmine.store import EmbeddingStore, SubsetBlocks, check_same_model
from bitextmine.threshold import ThresholdChoice, resolve_threshold, saved_threshold

if TYPE_CHECKING:
    from bitextmine.encoder import Encoder, EncoderOptions
    from bitextmine.filters.pipeline import FilterOptions, FilterReport
    from bitextmine.knn import BlockSource
    from bitextmine.ray_engine import RayOptions


@dataclass
class MineOptions:
    k: int = 4  # neighbours per sentence for the margin's denominators
    margin: Margin = Margin.RATIO
    strategy: Strategy = Strategy.MAX
    index: str = "auto"  # "flat" (exact), "auto" (by size) or a FAISS index factory string
    nprobe: int | None = None  # IVF cells visited per query (None: the index's default)
    memory_budget: int | None = None  # bytes the auto index may hold (None: a quarter of physical memory); picks its codes
    rerank: int | None = None  # candidates re-ranked exactly from the stored vectors (bitextmine.knn.rerank; None: 4k for product codes; 0: off)
    threshold: float | None = None  # keep pairs scoring at least this margin (mine_files: None = the model's saved one)
    top: int | None = None  # keep only the N best pairs
    dedup: bool = False  # mine unique sentences only (exact text match; stores only)
    block_rows: int = 65536  # rows per search block (bounds memory)
    use_gpu: bool | None = None  # None: FAISS GPUs when present
    filter: FilterOptions | None = None  # filter the selected pairs (bitextmine.filters) before they are returned / written
    engine: RayOptions | None = None  # None: search in this process; RayOptions: on a Ray cluster (bitextmine.ray_mine; stores only)
    refine_band: float = 0.005  # approximate index + threshold: pairs scoring within this share above it get their neighbourhoods searched again (bitextmine.refine: exactly, or 8x the probes where the lists are many); 0: off

    def __post_init__(self) -> None:
        if self.filter is not None:
            from bitextmine.filters.pipeline import FilterOptions

            if not isinstance(self.filter, FilterOptions):
                raise InputError("{param} must be a FilterOptions or None", param="filter")
        if self.engine is not None:
            from bitextmine.ray_engine import RayOptions

            if not isinstance(self.engine, RayOptions):
                raise InputError("{param} must be a RayOptions or None", param="engine")
            self.engine.check()
        self.margin = parse_margin(self.margin)
        self.strategy = parse_strategy(self.strategy)
        if self.k < 1:
            raise InputError("{param} must be at least 1", param="k")
        if self.threshold is not None and math.isnan(self.threshold):
            raise InputError("{param} must be a number, not NaN", param="threshold")
        if self.top is not None and self.top < 0:
            raise InputError("{param} must be 0 or more", param="top")
        if self.rerank is not None and self.rerank < 0:
            raise InputError("{param} must be 0 (off) or a number of candidates", param="rerank")
        if not 0 <= self.refine_band <= 0.5:
            raise InputError("{param} must be between 0 and 0.5", param="refine_band")


@dataclass
class MineResult:
    pairs: Candidates  # rows are store (or array) row indices, best first
    src_count: int  # sentences considered on each side (after de-duplication)
    tgt_count: int
    seconds: float  # search, scoring and selection
    index: str  # the index the search used, resolved ("IVF4096,SQfp16 (nprobe 256)"; "A / B" when the directions differ)
    threshold: ThresholdChoice | None = None  # mine_files: which threshold applied, and why
    src: EmbeddingStore | None = None  # mine_files: the two sides, to read texts back
    tgt: EmbeddingStore | None = None
    written: int | None = None  # mine_files with an output: pairs written
    filter: FilterReport | None = None  # with MineOptions.filter: counts by rule (``pairs`` are the kept ones)
    mined: int | None = None  # with MineOptions.filter: pairs before filtering
    engine: dict | None = None  # with MineOptions.engine: where the search ran (workers, nodes) and the index of each direction
    refined: dict | None = None  # approximate index with a threshold: the near-threshold pairs re-scored (bitextmine.refine.Refined, plus "search": "flat" or the wider index)


def unique_rows(store: EmbeddingStore) -> np.ndarray:
    """Row index of the first occurrence of each distinct sentence text."""
    seen: set[bytes] = set()
    keep = []
    for row, text in enumerate(store.iter_column("text")):
        h = hashlib.blake2b(text.encode(), digest_size=12).digest()
        if h not in seen:
            seen.add(h)
            keep.append(row)
    return np.asarray(keep, dtype=np.int64)


def _no_search(n: int) -> tuple[np.ndarray, np.ndarray]:
    """An (n, 0) neighbour list, standing in for a search whose result is not needed."""
    return np.empty((n, 0), np.float32), np.empty((n, 0), np.int64)


def plan_index(opts: MineOptions, src_rows: int, tgt_rows: int, dim: int) -> str:
    """The index the search will use, resolved as it will resolve it ("auto" by sizes and memory budget), described."""
    from bitextmine.knn import index_used

    one_way = opts.margin is Margin.ABSOLUTE and opts.strategy in (Strategy.FORWARD, Strategy.BACKWARD)
    x, y = (tgt_rows, src_rows) if one_way and opts.strategy is Strategy.BACKWARD else (src_rows, tgt_rows)
    # Ray workers search with the CPU rule (bitextmine.ray_mine): plan as they will search
    return index_used(opts.index, x, y, dim, nprobe=opts.nprobe, memory_budget=opts.memory_budget, both=not one_way,
                      use_gpu=False if opts.engine is not None else opts.use_gpu, k=opts.k, rerank=opts.rerank)


def _search_and_select(xs: Any, ys: Any, opts: MineOptions, advance: Advance | None, engine: dict | None = None,
                       notes: dict | None = None) -> Candidates:
    """The one k-NN + margin + threshold path: both directions searched (one IVF training for the
    two), candidates scored and selected (near-threshold pairs of an approximate index re-scored
    exactly: ``notes["refined"]``), then cut at the threshold and to the top N.
    With ``opts.engine`` the searches run on Ray (``engine`` gets its record)."""
    notes = {} if notes is None else notes
    if opts.engine is not None:
        from bitextmine.ray_mine import RaySearch

        with RaySearch(opts.engine) as rs:
            cand = _select(xs, ys, opts, advance, rs.knn, rs.knn_pair, notes)
            if engine is not None:
                engine.update(rs.engine)
            return cand
    from bitextmine.knn import knn, knn_pair  # FAISS is imported only when mining

    return _select(xs, ys, opts, advance, knn, knn_pair, notes, kept={})


def _refine(xs: Any, ys: Any, fwd: Any, bwd: Any, cand: Candidates, opts: MineOptions, notes: dict,
            wider: Any = None) -> Candidates:
    """New neighbourhoods for the near-threshold pairs when the search was approximate (bitextmine.refine):
    exact, or where the index has many lists from ``wider`` (:class:`bitextmine.knn.Wider`: 8 times the
    lists probed, at most a quarter of them)."""
    from bitextmine.knn import knn
    from bitextmine.knn.pairwise import _take_rows
    from bitextmine.knn.sources import _as_source
    from bitextmine.refine import refine

    xs, ys = _as_source(xs, "source"), _as_source(ys, "target")
    if opts.threshold is None or not opts.refine_band or plan_index(opts, len(xs), len(ys), xs.dim).lower() == "flat":
        return cand
    if wider is not None:
        search, how = (lambda q, db, k: wider.search(q, 0 if db is ys else 1, k)), wider.describe()
    else:
        search, how = (lambda q, db, k: knn(q, db, k, index="flat", block_rows=opts.block_rows, use_gpu=opts.use_gpu)), "flat"
    cand, info = refine(xs, ys, fwd, bwd, cand, opts.threshold, margin=opts.margin, strategy=opts.strategy,
                        band=opts.refine_band, take_rows=lambda s, r: _take_rows(s, r, opts.block_rows), exact_knn=search)
    notes["refined"] = {**info.as_dict(), "search": how}
    return cand


def _select(xs: Any, ys: Any, opts: MineOptions, advance: Advance | None, knn: Any, knn_pair: Any, notes: dict,
            kept: dict | None = None) -> Candidates:
    """``kept``: given to the local knn_pair (``keep``), which leaves its Wider search there for _refine."""

    kw: dict[str, Any] = dict(index=opts.index, block_rows=opts.block_rows, nprobe=opts.nprobe, use_gpu=opts.use_gpu, progress=advance)
    if opts.memory_budget is not None:
        kw["memory_budget"] = opts.memory_budget
    if opts.rerank is not None:
        kw["rerank"] = opts.rerank
    m, st = opts.margin, opts.strategy
    # The absolute margin needs no neighbourhood means: forward/backward then need one search only.
    if m is Margin.ABSOLUTE and st is Strategy.FORWARD:
        fwd, bwd = knn(xs, ys, opts.k, **kw), _no_search(len(ys))
    elif m is Margin.ABSOLUTE and st is Strategy.BACKWARD:
        fwd, bwd = _no_search(len(xs)), knn(ys, xs, opts.k, **kw)
    else:
        fwd, bwd = knn_pair(xs, ys, opts.k, **kw, **({} if kept is None else {"keep": kept}))
    cand = select(fwd[0], fwd[1], bwd[0], bwd[1], margin=m, strategy=st)
    if m is not Margin.ABSOLUTE:
        cand = _refine(xs, ys, fwd, bwd, cand, opts, notes, (kept or {}).get("wider"))
    if opts.threshold is not None:
        cand = cand.above(opts.threshold)
    return cand if opts.top is None else cand.head(opts.top)


def mine_embeddings(x: np.ndarray | BlockSource, y: np.ndarray | BlockSource, opts: MineOptions | None = None, **options: Any) -> Candidates:
    """Mine pairs between two sets of L2-normalised embeddings.

    x: (n_src, dim) source embeddings (array of any float dtype, or a BlockSource).
    y: (n_tgt, dim) target embeddings.
    ``opts`` or keyword options (the fields of :class:`MineOptions`: ``k``, ``margin``, ``strategy``,
    ``threshold``, ``top``, ``index``, ``nprobe``...). Each search uses ``min(k, rows searched)``.
    Returns the pairs, best first, with row indices into ``x`` and ``y``.
    """
    opts = replace(opts, **options) if opts is not None else MineOptions(**options)
    for name in ("dedup", "filter"):
        if getattr(opts, name):
            raise InputError("{param} needs sentence texts: use mine_stores or mine_files", param=name)
    if opts.engine is not None:
        raise InputError("{param} needs embedding folders, which its workers read: use mine_stores or mine_files", param="engine")
    return _search_and_select(x, y, opts, None)


def mine_stores(src: EmbeddingStore, tgt: EmbeddingStore, opts: MineOptions | None = None, *,
                listener: Listener | None = None) -> MineResult:
    """Margin-mine ``src`` against ``tgt``; both must come from the same model and recipe."""
    opts = opts or MineOptions()
    check_same_model(src, tgt)
    if opts.engine is not None:
        from bitextmine.ray_mine import preflight

        preflight(opts.engine)
    index = plan_index(opts, len(src), len(tgt), src.dim)  # before any work: a budget too small is an error now
    t0 = time.perf_counter()
    xs: EmbeddingStore | SubsetBlocks = src
    ys: EmbeddingStore | SubsetBlocks = tgt
    src_rows = tgt_rows = None
    if opts.dedup:
        src_rows, tgt_rows = unique_rows(src), unique_rows(tgt)
        xs, ys = SubsetBlocks(src, src_rows), SubsetBlocks(tgt, tgt_rows)
    engine: dict = {}
    notes: dict = {}
    with task(listener, "searching", len(src) + len(tgt), unit="queries") as advance:
        cand = _search_and_select(xs, ys, opts, advance, engine, notes)
    if src_rows is not None:
        cand = Candidates(src_rows[cand.src], tgt_rows[cand.tgt], cand.score)
        index = plan_index(opts, len(xs), len(ys), src.dim)
    res = MineResult(cand, len(xs), len(ys), time.perf_counter() - t0, index, src=src, tgt=tgt, engine=engine or None,
                     refined=notes.get("refined"))
    if opts.filter is not None:  # exact scores and texts (mine_files filters as it writes)
        from bitextmine.filters.mined import filter_candidates

        res.mined = len(cand)
        res.pairs, res.filter = filter_candidates(cand, src, tgt, opts.filter, listener=listener)
    return res


def mine_files(
    src: str | Path,
    tgt: str | Path,
    opts: MineOptions | None = None,
    *,
    encoder: Encoder | EncoderOptions | None = None,
    output: PairsOutput | None = None,
    id_column: bool = False,
    errors: Errors = Errors.STRICT,
    cache_dir: str | Path | None = None,
    listener: Listener | None = None,
    rejects: PairsOutput | str | Path | None = None,
    report: str | Path | None = None,
) -> MineResult:
    """Mine SRC against TGT, each a text file or an embedding folder: what ``bitextmine mine`` does.

    Text files are embedded with ``encoder`` (an :class:`~bitextmine.encoder.Encoder`, or
    :class:`~bitextmine.encoder.EncoderOptions` to load one; the default model if None) through the
    embedding cache. ``opts.threshold`` None means the model's saved threshold when it was tuned for
    the same margin and k (see :func:`bitextmine.threshold.resolve_threshold`). With ``output`` the
    pairs are written atomically: the output location is checked before any work (its folder
    exists and is writable, it is no input and not inside an input folder, ids exist when asked
    for) and locked for the whole run, so a second run to the same file is refused.

    With ``opts.filter`` the pairs are filtered as they are written (the same result as ``bitextmine
    filter`` on the output): ``rejects`` (a path, in the output's format unless named ``.parquet``,
    or a PairsOutput) gets the dropped pairs with their reason. ``report`` gets a JSON report of the
    run: counts, threshold and, with a filter, the filter's counts by rule and its languages.
    """
    opts = opts or MineOptions()
    src, tgt = str(src), str(tgt)
    rejects = _rejects_output(rejects, output, opts)
    _check_side_outputs(output, rejects, report, [src, tgt])
    enc_opts = None
    if encoder is not None:  # torch is imported only when there is an encoder (two folders need none)
        from bitextmine.encoder import EncoderOptions

        enc_opts = encoder if isinstance(encoder, EncoderOptions) else None
    if enc_opts is not None:
        if enc_opts.threads:  # None or 0: leave the thread count as it is
            check_threads(enc_opts.threads)
        opts = _apply_device(opts, enc_opts)
    if output is not None:
        check_output(output, inputs=[src, tgt], id_column=id_column)
    if opts.engine is not None:  # no Ray, or no cluster at --address: said before anything is embedded
        from bitextmine.ray_mine import preflight

        preflight(opts.engine)
    texts = [p for p in (src, tgt) if not is_embedding_folder(p)]
    for p in texts:  # a bad path fails before the model loads (folders without a manifest: see cache.open)
        if not Path(p).is_dir():
            check_input(p)
    t0 = time.perf_counter()
    with _locked(output, rejects):
        enc, sides = open_sides(src, tgt, encoder, enc_opts, id_column=id_column, errors=errors, cache_dir=cache_dir,
                                listener=listener, output=output)
        if rejects is not None:
            check_output(rejects, stores=sides)
        recipe = enc.lm.recipe if enc is not None else sides[0].manifest.get("recipe")
        choice = resolve_threshold(opts.threshold, saved_threshold(recipe), opts.margin, opts.k)
        res = mine_stores(sides[0], sides[1], replace(opts, threshold=choice.value, filter=None), listener=listener)
        res.threshold = choice
        if opts.filter is not None:  # filtered as written: decisions on the values the files hold
            from bitextmine.filters.mined import filter_candidates

            res.mined = len(res.pairs)
            res.pairs, res.filter = filter_candidates(res.pairs, sides[0], sides[1], opts.filter, output=output,
                                                      rejects=rejects, listener=listener)
            res.written = len(res.pairs) if output is not None else None
        elif output is not None:
            res.written = write_pairs(output, res.pairs, sides[0], sides[1])
    if report is not None:  # written last: a report names files that exist
        _write_report(str(report), res, src, tgt, output, rejects, time.perf_counter() - t0)
    return res


def _rejects_output(rejects: PairsOutput | str | Path | None, output: PairsOutput | None, opts: MineOptions) -> PairsOutput | None:
    if rejects is None or isinstance(rejects, PairsOutput):
        out = rejects
    else:
        from bitextmine.output import Format, choose_format

        fallback = output.format if output is not None else Format.TSV
        fmt = choose_format(rejects, None, fallback, "rejects")
        out = PairsOutput(rejects, fmt, with_lines=output.with_lines if output else False,
                          with_ids=output.with_ids if output else False)
    if out is not None and opts.filter is None:
        raise InputError("{rejects} needs {filter}: only filtered pairs are rejected", param=("rejects", "filter"))
    return out


def _check_side_outputs(output: PairsOutput | None, rejects: PairsOutput | None, report: str | Path | None,
                        inputs: list[str]) -> None:
    """The rejects and report files: writable, no input, each file named once, one stdout at most."""
    named = [("out", output.path if output else None), ("rejects", rejects.path if rejects else None), ("report", report)]
    if sum(str(p) == STDOUT for _, p in named) > 1:
        raise InputError("only one of {out}, {rejects} and {report} can be '-' (stdout)", param=("out", "rejects", "report"))
    seen: dict[str, str] = {}
    for param, path in named:
        if path is None or str(path) == STDOUT:
            continue
        if param != "out":
            check_writable(path, param, inputs=inputs)
        key = str(Path(path).resolve())
        if key in seen:
            raise InputError(f"{path}: given as both {{{seen[key]}}} and {{{param}}}", param=(seen[key], param))
        seen[key] = param


def _write_report(path: str, res: MineResult, src: str, tgt: str, output: PairsOutput | None,
                  rejects: PairsOutput | None, seconds: float) -> None:
    thr = res.threshold
    doc = {"src": src, "tgt": tgt, "out": None if output is None else str(output.path),
           "rejects": None if rejects is None else str(rejects.path), "seconds": round(seconds, 3),
           "sentences": [res.src_count, res.tgt_count], "index": res.index,
           "engine": res.engine or {"name": "local"},
           "refined": res.refined,
           "threshold": None if thr is None else {"value": thr.value, "from_model": thr.from_model, "note": thr.note},
           "mined": len(res.pairs) if res.mined is None else res.mined, "written": res.written,
           "filter": None if res.filter is None else res.filter.to_dict()}
    if path == STDOUT:
        import sys

        sys.stdout.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        return
    with OutputLock(path):
        atomic_write_json(path, doc)


@contextlib.contextmanager
def _locked(*outputs: PairsOutput | None) -> Iterator[None]:
    """Hold the outputs' locks for the whole run (a second run to the same file is refused, naming
    this process); temporary files that a killed run left are removed once they are held."""
    with contextlib.ExitStack() as stack:
        for output in outputs:
            if output is None or output.to_stdout:
                continue
            lock = OutputLock(output.path)
            try:
                lock.acquire()
            except OSError as e:
                raise InputError(f"{output.path}: cannot create the lock file {lock.path} ({e.strerror or e})") from None
            stack.callback(lock.release)
            remove_temps(Path(output.path))
        yield


def check_threads(threads: int | None) -> None:
    """Raise InputError unless ``threads`` is None (the default) or a count of at least 1."""
    if threads is not None and threads < 1:
        raise InputError(f"{{param}} must be at least 1, got {threads}", param="threads")


def open_sides(src: str, tgt: str, encoder: Any, enc_opts: Any, *, id_column: bool, errors: Errors,
               cache_dir: str | Path | None, listener: Listener | None, output: PairsOutput | None) -> tuple[Any, list[EmbeddingStore]]:
    """Load the encoder when a side is a text file (``encoder`` as given, else from ``enc_opts``), open
    both sides through the embedding cache, and check that ids asked for by ``output`` exist.
    Returns ``(encoder or None, [src store, tgt store])``; shared by ``mine_files`` and ``score_files``."""
    enc = None
    if not (is_embedding_folder(src) and is_embedding_folder(tgt)):
        from bitextmine.encode_job import open_encoder
        from bitextmine.encoder import Encoder, EncoderOptions

        enc = encoder if isinstance(encoder, Encoder) else open_encoder(enc_opts or EncoderOptions(), listener)
    cache = EmbeddingCache(enc, cache_dir, errors, listener=listener)
    sides = [cache.open(p, id_column=id_column) for p in (src, tgt)]
    if output is not None:
        check_output(output, stores=sides)
    return enc, sides


def _apply_device(opts: MineOptions, enc_opts: EncoderOptions) -> MineOptions:
    """The encoder's device and threads also decide the search: ``cpu`` keeps FAISS on the CPU."""
    if enc_opts.device != "auto":
        from bitextmine.models.loader import resolve_device

        resolve_device(enc_opts.device)  # unknown names fail here, also when both sides are folders
        if opts.use_gpu is None:
            opts = replace(opts, use_gpu=enc_opts.device != "cpu")
    if enc_opts.threads:
        import faiss

        faiss.omp_set_num_threads(enc_opts.threads)
    return opts
