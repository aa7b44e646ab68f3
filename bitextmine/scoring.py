"""Margin scores of given pairs: LASER's ``mine_bitexts.py --mode score`` for line-aligned files.

Pair ``i`` is source row ``x_i`` with target row ``y_i``. Its score is the margin of
:mod:`bitextmine.margin` with the same neighbourhoods as mining::

    score_i = margin(cos(x_i, y_i), (x2y_mean[i] + y2x_mean[i]) / 2)

``x2y_mean[i]`` is the mean cosine of ``x_i`` to its ``k`` nearest targets, ``y2x_mean[i]`` that of
``y_i`` to its ``k`` nearest sources. The neighbourhoods come from:

* **the same files** (default, LASER's score mode): every target row, every source row. Searched
  with :func:`bitextmine.knn.knn_pair` exactly as ``mine`` does, so a pair's score equals the
  score ``mine`` gives the same pair of the same two sides (same ``k``, margin and index);
* **a reference sample** (``reference_size=N``): the neighbours of a pair's source are searched
  among ``N`` target rows drawn uniformly at random (without replacement, ``seed``), those of its
  target among the same ``N`` rows of the source side; the pair's own partner always counts as a
  candidate, as it does in the full files (otherwise pairs whose partner happened to be drawn would
  score lower than the rest). For files too large to search against themselves: memory is
  ``N * dim * 4`` bytes a side plus one query chunk, whatever the number of pairs. It is an
  approximation: the ``k`` nearest of ``N`` sampled rows are on average less similar than the ``k``
  nearest of all rows, so the means are lower and ``ratio`` scores higher than with the full files;
  scores of one run are comparable with each other (ranking and cutting a corpus), not with
  ``mine``'s scores or a threshold tuned on them. ``N`` at least the number of pairs is the full mode;
* **explicit sets** (``reference=(xr, yr)`` in :func:`score_pairs`): ``x`` rows against ``yr``,
  ``y`` rows against ``xr`` (e.g. the full corpora a list of mined pairs came from).

The ``absolute`` margin is the cosine alone and needs no search.

Files (:func:`score_files`, what ``bitextmine score`` does) must be line-aligned: line ``n`` of
SRC pairs with line ``n`` of TGT. Blank lines are not sentences (the embedding folders skip
them); a line blank (or skipped as unreadable) on both sides is no pair and gets no output line,
a line blank on one side only is refused with a one-line error naming it, as are files with
different numbers of sentences. ``--with-lines`` writes each pair's line numbers.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from bitextmine.corpus import Errors, check_input, iter_lines
from bitextmine.embed_cache import is_embedding_folder
from bitextmine.errors import InputError, MismatchError
from bitextmine.events import Advance, Listener, task
from bitextmine.margin import Margin, apply_margin, knn_means, parse_margin
from bitextmine.output import Format, PairsOutput, check_output, tsv_field, write_pairs, write_rows
from bitextmine.store import EmbeddingStore, check_same_model

if TYPE_CHECKING:
    from bitextmine.encoder import Encoder, EncoderOptions
    from bitextmine.knn import BlockSource

#: Reference mode searches the pairs in chunks of this many rows (bounds the (rows, k) k-NN lists).
QUERY_CHUNK_ROWS = 1 << 22
#: Rows per float64 dot-product step and per output write step.
_DOT_ROWS = 4096
_WRITE_ROWS = 65536


@dataclass
class ScoreOptions:
    k: int = 4  # neighbours per sentence for the margin's denominators
    margin: Margin = Margin.RATIO
    index: str = "auto"  # "flat" (exact), "auto" (by size) or a FAISS index factory string
    nprobe: int | None = None
    reference_size: int | None = None  # None: neighbourhoods from the same files; N: from N random rows a side
    seed: int = 0  # draws the reference sample
    block_rows: int = 65536
    use_gpu: bool | None = None

    def __post_init__(self) -> None:
        self.margin = parse_margin(self.margin)
        if self.k < 1:
            raise InputError("{param} must be at least 1", param="k")
        if self.reference_size is not None and self.reference_size < 1:
            raise InputError("{param} must be at least 1", param="reference_size")


@dataclass
class ScoreResult:
    scores: np.ndarray  # (n,) float64, one per pair, in input order
    seconds: float
    reference: int | None  # sampled rows a side the neighbourhoods came from (plus each pair's partner); None: the same files
    blank_pairs: int = 0  # lines blank (or skipped) on both sides: no pair, no output line
    src: EmbeddingStore | None = None
    tgt: EmbeddingStore | None = None
    written: int | None = None


def reference_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """The sorted rows of a side of ``n`` rows that a reference sample of ``size`` takes (all if ``size >= n``)."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


def score_pairs(x: np.ndarray | BlockSource, y: np.ndarray | BlockSource, k: int = 4, margin: Margin | str = Margin.RATIO, *,
                reference: tuple[Any, Any] | None = None, reference_size: int | None = None, seed: int = 0,
                index: str = "auto", nprobe: int | None = None, block_rows: int = 65536, use_gpu: bool | None = None,
                progress: Advance | None = None) -> np.ndarray:
    """Margin score of each pair ``(x[i], y[i])``: (n,) float64 in pair order (see the module docstring).

    x, y: (n, dim) L2-normalised embeddings (arrays of any float dtype, or BlockSources), row ``i``
    of each forming pair ``i``. Neighbourhoods: the same rows by default; ``reference=(xr, yr)``
    gives the sets explicitly; ``reference_size=N`` samples ``N`` rows of each side (``seed``).
    index, nprobe, block_rows, use_gpu: the search options of :func:`bitextmine.knn.knn`.
    """
    from bitextmine.knn import _as_source

    m = parse_margin(margin)
    if k < 1:
        raise InputError("{param} must be at least 1", param="k")
    xs, ys = _as_source(x, "x"), _as_source(y, "y")
    if len(xs) != len(ys):
        raise InputError(f"pairs need as many source rows as target rows, got {len(xs)} and {len(ys)}")
    if xs.dim != ys.dim:
        raise MismatchError(f"source rows have dimension {xs.dim} but target rows {ys.dim}")
    if reference_size is not None and reference_size < 1:
        raise InputError("{param} must be at least 1", param="reference_size")
    if reference is not None and reference_size is not None:
        raise InputError("give {reference} or {reference_size}, not both", param=("reference", "reference_size"))
    cos = _pair_dots(xs, ys, block_rows)
    if m is Margin.ABSOLUTE or not len(cos):
        return apply_margin(cos, 0.0, m)
    kw: dict[str, Any] = dict(index=index, nprobe=nprobe, block_rows=block_rows, use_gpu=use_gpu, progress=progress)
    if reference_size is not None and reference_size < len(xs):
        # a sample of each side, plus each pair's own partner (always a candidate neighbour in the full files)
        rows = reference_rows(len(xs), reference_size, seed)
        xr, yr = _take(xs, rows, block_rows), _take(ys, rows, block_rows)
        x2y = _chunked_means(xs, yr, k, kw, partner=(rows, cos))
        y2x = _chunked_means(ys, xr, k, kw, partner=(rows, cos))
    elif reference is None:  # LASER's score mode: the same search as mining, both directions at once
        from bitextmine.knn import knn_pair

        (fd, fi), (bd, bi) = knn_pair(xs, ys, k, **kw)
        x2y, y2x = knn_means(fd, fi), knn_means(bd, bi)
    else:
        xr, yr = (_as_source(r, "reference") for r in reference)
        x2y, y2x = _chunked_means(xs, yr, k, kw), _chunked_means(ys, xr, k, kw)
    return apply_margin(cos, (x2y + y2x) / 2, m)


def _take(side: BlockSource, rows: np.ndarray, block_rows: int) -> np.ndarray:
    """float32 copies of the (sorted) ``rows`` of ``side``."""
    take = getattr(side, "embeddings", None)
    if callable(take):
        return np.ascontiguousarray(take(rows), dtype=np.float32)
    out, start = [], 0  # a source without random access: one pass
    for block in side.iter_blocks(block_rows):
        lo, hi = np.searchsorted(rows, [start, start + len(block)])
        out.append(np.asarray(block[rows[lo:hi] - start], dtype=np.float32))
        start += len(block)
    return np.concatenate(out)


class _Rows:
    """Rows ``[start, stop)`` of a source with random access, as a BlockSource."""

    def __init__(self, source: Any, start: int, stop: int) -> None:
        self.source, self.start, self.stop = source, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def dim(self) -> int:
        return self.source.dim

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        for s in range(self.start, self.stop, rows):
            yield self.embeddings(np.arange(s - self.start, min(s + rows, self.stop) - self.start))

    def embeddings(self, indices: np.ndarray) -> np.ndarray:
        return self.source.embeddings(np.asarray(indices, dtype=np.int64) + self.start)


def _chunked_means(queries: BlockSource, database: BlockSource, k: int, kw: dict[str, Any], *,
                   partner: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Mean similarity of each query row to its ``k`` nearest database rows, searched chunk by chunk.

    ``partner=(rows, cos)``: the database is the sample ``rows`` of the other side, and query ``i``'s
    own partner (row ``i`` there, similarity ``cos[i]``) counts as a neighbour whether sampled or not.
    """
    from bitextmine.knn import knn

    n = len(queries)
    step = QUERY_CHUNK_ROWS if callable(getattr(queries, "embeddings", None)) else max(n, 1)
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, step):
        part = queries if step >= n else _Rows(queries, s, min(s + step, n))
        d, i = knn(part, database, k, **kw)
        if partner is not None:
            rows, cos = partner
            d, i = _with_partner(d, i, rows, np.arange(s, s + len(part)), cos[s : s + len(part)], k)
        out[s : s + len(part)] = knn_means(d, i)
    return out


def _with_partner(d: np.ndarray, i: np.ndarray, rows: np.ndarray, pair: np.ndarray, cos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each row's sampled neighbours and its partner (added unless already listed):
    (m, k') float64 similarities, descending, and ids (0 valid, -1 none) for :func:`knn_means`."""
    valid = i >= 0
    listed = (valid & (rows[np.where(valid, i, 0)] == pair[:, None])).any(axis=1)
    sims = np.concatenate([np.where(valid, d.astype(np.float64), -np.inf), np.where(listed, -np.inf, cos)[:, None]], axis=1)
    top = -np.sort(-sims, axis=1)[:, :k]
    return top, np.where(np.isfinite(top), 0, -1)


def _aligned_blocks(x: BlockSource, y: BlockSource, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Equal-length float32 blocks of two sources of the same length, in row order."""
    xi, yi = iter(x.iter_blocks(rows)), iter(y.iter_blocks(rows))
    xb = yb = np.empty((0, x.dim), np.float32)
    while True:
        xb = xb if len(xb) else next(xi, None)
        yb = yb if len(yb) else next(yi, None)
        if xb is None or yb is None:
            return
        m = min(len(xb), len(yb))
        yield np.asarray(xb[:m], dtype=np.float32), np.asarray(yb[:m], dtype=np.float32)
        xb, yb = xb[m:], yb[m:]


def _pair_dots(x: BlockSource, y: BlockSource, rows: int) -> np.ndarray:
    """(n,) float64 inner products ``x_i . y_i``, summed in float64."""
    out = np.empty(len(x), dtype=np.float64)
    pos = 0
    for xb, yb in _aligned_blocks(x, y, rows):
        for s in range(0, len(xb), _DOT_ROWS):
            a, b = xb[s : s + _DOT_ROWS], yb[s : s + _DOT_ROWS]
            out[pos : pos + len(a)] = np.einsum("ij,ij->i", a, b, dtype=np.float64)
            pos += len(a)
    if pos != len(out):
        raise InputError(f"block sources yielded {pos} aligned rows, expected {len(out)}")
    return out


def score_stores(src: EmbeddingStore, tgt: EmbeddingStore, opts: ScoreOptions | None = None, *,
                 listener: Listener | None = None) -> ScoreResult:
    """Score the line-aligned pairs of two embedding folders of the same model (rows paired by line)."""
    opts = opts or ScoreOptions()
    check_same_model(src, tgt)
    blank = check_aligned(_store_keys(src), _store_keys(tgt), _names(src), _names(tgt))
    t0 = time.perf_counter()
    ref = None
    if opts.reference_size is not None and opts.reference_size < len(src) and opts.margin is not Margin.ABSOLUTE:
        ref = opts.reference_size
    searches = 0 if opts.margin is Margin.ABSOLUTE else 2 * len(src)
    with task(listener, "searching", searches, unit="queries") as advance:
        scores = score_pairs(src, tgt, opts.k, opts.margin, reference_size=opts.reference_size, seed=opts.seed,
                             index=opts.index, nprobe=opts.nprobe, block_rows=opts.block_rows, use_gpu=opts.use_gpu,
                             progress=advance)
    return ScoreResult(scores, time.perf_counter() - t0, ref, blank, src, tgt)


def score_files(src: str | Path, tgt: str | Path, opts: ScoreOptions | None = None, *,
                encoder: Encoder | EncoderOptions | None = None, output: PairsOutput | None = None,
                id_column: bool = False, errors: Errors = Errors.STRICT, cache_dir: str | Path | None = None,
                listener: Listener | None = None) -> ScoreResult:
    """Score line-aligned SRC and TGT (text files or embedding folders): what ``bitextmine score`` does.

    Text files are embedded through the embedding cache with ``encoder`` (as in
    :func:`bitextmine.mining.mine_files`); their line alignment is checked before the model loads.
    With ``output`` the scores are written atomically, one line per pair in input order; the output
    is checked before any work and locked for the run.
    """
    from bitextmine.encoder import EncoderOptions
    from bitextmine.mining import _apply_device, _locked, check_threads, open_sides

    opts = opts or ScoreOptions()
    src, tgt = str(src), str(tgt)
    enc_opts = encoder if isinstance(encoder, EncoderOptions) else None
    if enc_opts is not None:
        if enc_opts.threads:
            check_threads(enc_opts.threads)
        opts = _apply_device(opts, enc_opts)  # type: ignore[arg-type]
    if output is not None:
        check_output(output, inputs=[src, tgt], id_column=id_column)
    texts = [p for p in (src, tgt) if not is_embedding_folder(p)]
    for p in texts:
        if p == "-":
            raise InputError("score reads its inputs twice (alignment check, then embedding): give files, not '-'")
        if not Path(p).is_dir():
            check_input(p)
    if len(texts) == 2:  # fail on misaligned files before spending time on the model and the embedding
        keys = [((ln.input, ln.line) for ln in iter_lines([p], id_column=id_column, errors=errors)) for p in texts]
        check_aligned(keys[0], keys[1], [src], [tgt])
    with _locked(output):
        _, sides = open_sides(src, tgt, encoder, enc_opts, id_column=id_column, errors=errors, cache_dir=cache_dir,
                              listener=listener, output=output)
        res = score_stores(sides[0], sides[1], opts, listener=listener)
        if output is not None:
            res.written = write_scores(output, res.scores, sides[0], sides[1])
    return res


def _store_keys(store: EmbeddingStore) -> Iterator[tuple[int, int]]:
    return zip(store.iter_column("input"), store.iter_column("line"))


def _names(store: EmbeddingStore) -> list[str]:
    return [str(i.get("path", "?")) for i in store.manifest.get("inputs", [])] or [str(store.folder)]


def check_aligned(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]], a_names: Sequence[str], b_names: Sequence[str]) -> int:
    """Check that two sides hold sentences at the same (input, line) positions, in one streamed pass.

    ``a`` and ``b`` yield each sentence's (input index, 1-based line); ``*_names`` name the inputs.
    Returns the lines skipped on both sides before the last pair (blank: no pair). Raises
    InputError naming the first line that is a sentence on one side only, or the two counts.
    """
    a, b = iter(a), iter(b)
    blank = count = 0
    prev = (-1, 0)
    for ka, kb in itertools.zip_longest(a, b):
        if ka is None or kb is None:
            more_a = 1 + sum(1 for _ in a) if kb is None else 0
            more_b = 1 + sum(1 for _ in b) if ka is None else 0
            raise InputError(f"{_join(a_names)} has {count + more_a:,} sentences and {_join(b_names)} has {count + more_b:,}; "
                             "score needs line-aligned files, one pair per line")
        if ka != kb:
            (inp, line), names, other = (ka, b_names, a_names) if ka < kb else (kb, a_names, b_names)
            raise InputError(f"{_name(names, inp)}: line {line} is blank or was skipped, but line {line} of {_name(other, inp)} "
                             "is a sentence; score needs line-aligned files (a blank line must be blank on both sides)")
        blank += ka[1] - (prev[1] if ka[0] == prev[0] else 0) - 1
        prev = ka
        count += 1
    return blank


def _name(names: Sequence[str], i: int) -> str:
    return names[i] if 0 <= i < len(names) else f"input {i}"


def _join(names: Sequence[str]) -> str:
    return " + ".join(names)


def write_scores(out: PairsOutput, scores: np.ndarray, src: EmbeddingStore, tgt: EmbeddingStore) -> int:
    """Write one line per pair, in pair order, with the columns of ``mine``'s output (score first).

    TSV and JSONL are streamed (memory bounded by one step of rows); another format goes through
    :func:`bitextmine.output.write_pairs`. Returns the number of lines written.
    """
    if out.format not in (Format.TSV, Format.JSONL):
        from bitextmine.margin import Candidates

        rows = np.arange(len(scores), dtype=np.int64)
        return write_pairs(out, Candidates(rows, rows, np.asarray(scores, dtype=np.float64)), src, tgt)
    check_output(out, stores=(src, tgt))
    names = ["src", "tgt"]
    if out.with_lines:
        names += ["src_line", "tgt_line"]
        if len(src.manifest["inputs"]) > 1 or len(tgt.manifest["inputs"]) > 1:
            names += ["src_input", "tgt_input"]
    if out.with_ids:
        names += ["src_id", "tgt_id"]

    def lines() -> Iterator[str]:
        for s in range(0, len(scores), _WRITE_ROWS):
            idx = np.arange(s, min(s + _WRITE_ROWS, len(scores)))
            cols = [(src if n.startswith("src") else tgt).column(n.partition("_")[2] or "text", idx) for n in names]
            for j, i in enumerate(idx):
                v = float(scores[i])
                if out.format is Format.JSONL:
                    row = {"score": round(v, 6) if math.isfinite(v) else None, **{n: c[j] for n, c in zip(names, cols)}}
                    yield json.dumps(row, ensure_ascii=False) + "\n"
                else:
                    yield "\t".join([f"{v:.6f}", *(tsv_field(c[j]) for c in cols)]) + "\n"

    write_rows(out, lines(), "scores")
    return len(scores)


__all__ = ["ScoreOptions", "ScoreResult", "check_aligned", "reference_rows", "score_files", "score_pairs", "score_stores",
           "write_scores"]
