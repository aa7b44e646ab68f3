"""The mining pipeline: two sides (text files or embedding folders) to scored sentence pairs.

Text files are embedded into a reusable cache keyed by the file's identity and the model's
fingerprint, so mining the same files again (with other settings) does not re-encode them.
The scoring and selection core lives in :mod:`bitextmine.margin` and :mod:`bitextmine.knn`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bitextmine.corpus import Errors, check_input, input_identity
from bitextmine.errors import InputError
from bitextmine.knn import knn_pair
from bitextmine.margin import Candidates, Margin, Strategy, select
from bitextmine.store import MANIFEST, EmbeddingStore, check_same_model


def default_cache_dir() -> Path:
    """``$BITEXTMINE_CACHE`` if set, else the user cache folder (e.g. ~/.cache/bitextmine)."""
    env = os.environ.get("BITEXTMINE_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("bitextmine"))


def is_embedding_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def cache_folder(path: str, fingerprint: str, id_column: bool, errors: Errors, cache_dir: Path) -> Path:
    """Where the embeddings of text file ``path`` by the model ``fingerprint`` are cached."""
    key = json.dumps([input_identity(path), fingerprint, id_column, errors.value], sort_keys=True)
    return cache_dir / "embeddings" / hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass
class MineOptions:
    k: int = 4  # neighbours per sentence for the margin's denominators
    margin: Margin = Margin.RATIO
    strategy: Strategy = Strategy.MAX
    index: str = "auto"  # "flat" (exact), "auto" (by size) or a FAISS index factory string
    nprobe: int | None = None  # IVF cells visited per query (None: the index's default)
    threshold: float | None = None  # keep pairs scoring at least this margin
    top: int | None = None  # keep only the N best pairs
    dedup: bool = False  # mine unique sentences only (exact text match)
    block_rows: int = 65536  # rows per search block (bounds memory)
    use_gpu: bool | None = None  # None: FAISS GPUs when present


@dataclass
class MineResult:
    pairs: Candidates  # rows are store row indices
    src_count: int  # sentences considered on each side (after de-duplication)
    tgt_count: int
    seconds: float
    index: str


class SubsetBlocks:
    """The rows ``rows`` of a store as a BlockSource (used after de-duplication)."""

    def __init__(self, store: EmbeddingStore, rows: np.ndarray) -> None:
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return self.store.dim

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        for s in range(0, len(self.rows), rows):
            yield self.store.embeddings(self.rows[s : s + rows])


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


def mine_stores(
    src: EmbeddingStore,
    tgt: EmbeddingStore,
    opts: MineOptions | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> MineResult:
    """Margin-mine ``src`` against ``tgt``; both must come from the same model and recipe."""
    opts = opts or MineOptions()
    if opts.k < 1:
        raise InputError("-k must be at least 1")
    check_same_model(src, tgt)
    t0 = time.perf_counter()
    xs: EmbeddingStore | SubsetBlocks = src
    ys: EmbeddingStore | SubsetBlocks = tgt
    src_rows = tgt_rows = None
    if opts.dedup:
        src_rows, tgt_rows = unique_rows(src), unique_rows(tgt)
        xs, ys = SubsetBlocks(src, src_rows), SubsetBlocks(tgt, tgt_rows)
    kw = dict(index=opts.index, block_rows=opts.block_rows, nprobe=opts.nprobe, use_gpu=opts.use_gpu, progress=progress)
    (fwd_sims, fwd_ids), (bwd_sims, bwd_ids) = knn_pair(xs, ys, opts.k, **kw)  # one IVF training for both
    cand = select(fwd_sims, fwd_ids, bwd_sims, bwd_ids, margin=opts.margin, strategy=opts.strategy)
    cand = filter_candidates(cand, opts.threshold, opts.top)
    if src_rows is not None:
        cand = Candidates(src_rows[cand.src], tgt_rows[cand.tgt], cand.score)
    return MineResult(cand, len(xs), len(ys), time.perf_counter() - t0, opts.index)


def filter_candidates(cand: Candidates, threshold: float | None, top: int | None) -> Candidates:
    """Keep candidates scoring at least ``threshold``, then the ``top`` best (candidates are sorted)."""
    keep = np.ones(len(cand.score), dtype=bool) if threshold is None else cand.score >= threshold
    idx = np.nonzero(keep)[0]
    if top is not None:
        idx = idx[:top]
    return Candidates(cand.src[idx], cand.tgt[idx], cand.score[idx])


FORMATS = ("tsv", "jsonl")


def write_pairs(
    path: str | Path,
    pairs: Candidates,
    src: EmbeddingStore,
    tgt: EmbeddingStore,
    *,
    fmt: str = "tsv",
    with_lines: bool = False,
    with_ids: bool = False,
) -> int:
    """Write pairs (best first) to ``path`` atomically; ``-`` writes to stdout. Returns pairs written.

    TSV columns: ``score src tgt`` then, on request, ``src_line tgt_line`` and ``src_id tgt_id``.
    JSONL objects carry the same fields by name. Line numbers refer to the original inputs.
    """
    import sys

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}")
    if with_ids and not (src.has_ids and tgt.has_ids):
        raise InputError("--with-ids needs both sides encoded with --id-column")
    order = np.arange(len(pairs.score))
    cols = {"src": src.column("text", pairs.src), "tgt": tgt.column("text", pairs.tgt)}
    if with_lines:
        cols["src_line"] = src.column("line", pairs.src)
        cols["tgt_line"] = tgt.column("line", pairs.tgt)
        if len(src.manifest["inputs"]) > 1 or len(tgt.manifest["inputs"]) > 1:
            cols["src_input"] = src.column("input", pairs.src)
            cols["tgt_input"] = tgt.column("input", pairs.tgt)
    if with_ids:
        cols["src_id"] = src.column("id", pairs.src)
        cols["tgt_id"] = tgt.column("id", pairs.tgt)

    def rows() -> Iterator[str]:
        for i in order:
            score = float(pairs.score[i])
            if fmt == "jsonl":
                yield json.dumps({"score": round(score, 6), **{k: v[i] for k, v in cols.items()}}, ensure_ascii=False) + "\n"
            else:
                yield "\t".join([f"{score:.6f}", *(_tsv(v[i]) for v in cols.values())]) + "\n"

    if str(path) == "-":
        sys.stdout.writelines(rows())
        return len(order)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; --out needs a file name")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(rows())
    os.replace(tmp, path)
    return len(order)


def _tsv(v) -> str:
    s = str(v)
    return s.replace("\t", " ").replace("\n", " ") if isinstance(v, str) else s


def open_side(path: str, *, encode: Callable[[str, Path], None] | None, fingerprint: str | None, id_column: bool, errors: Errors, cache_dir: Path) -> EmbeddingStore:
    """Open a mining side: an embedding folder as is, or a text file through the embedding cache.

    ``encode(path, folder)`` embeds a text file into ``folder`` (resuming if interrupted);
    ``fingerprint`` is the model's, to key the cache.
    """
    if is_embedding_folder(path):
        return EmbeddingStore(path)
    if Path(path).is_dir():
        raise InputError(f"{path}: is a directory without {MANIFEST}; expected a text file or an embedding folder")
    check_input(path)
    if encode is None or fingerprint is None:
        raise ValueError("open_side needs encode and fingerprint to embed a text file")
    folder = cache_folder(path, fingerprint, id_column, errors, cache_dir)
    if not (is_embedding_folder(folder) and _complete(folder)):
        encode(path, folder)
    return EmbeddingStore(folder)


def _complete(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / MANIFEST).read_text()).get("complete"))
    except (OSError, ValueError):
        return False
