"""Embeddings made elsewhere into an embedding folder: what ``bitextmine encode import`` does.

The embeddings are either

* **raw** rows, as LASER's ``embed.py`` writes them: a headerless flat binary of float32 (or, with
  its ``--fp16``, float16) values, ``rows * dim`` of them; ``dim`` and the dtype must be given; or
* a **.npy** file (recognised by its header, whatever its name) of shape (rows, dim), float16,
  float32 or float64; its header gives dim and dtype (given ones are checked against it).

Both are memory-mapped and read one chunk of rows at a time: memory stays flat whatever the size.
The rows pair with the lines of TEXTS in order: one row per line, blank lines included (LASER
embeds every line), or one row per non-blank line (tools that skip them); any other count is a
one-line error before anything is written. Rows of blank lines are dropped, as ``encode corpus``
skips blank lines; line numbers keep referring to TEXTS.

Every row is **L2-normalised** (in float32; rows of zeros are kept as they are and counted), because
mining and scoring take the inner product for the cosine, then stored as float16 like every
embedding folder. A row that is already unit-norm float16 (e.g. read back from a folder) is stored
unchanged. NaN or infinite values are refused.

The folder is an ordinary embedding folder (the manifest and shards of :mod:`bitextmine.store`,
laid out as :mod:`bitextmine.encode_job` writes them, plus an ``imported`` record of where the rows
came from). Its model is the name the user states and its fingerprint ``import:`` + a hash of that
name and the dim (:func:`import_fingerprint`): two imports from the same model can be mined or
scored together, an import is never compared with embeddings of a bitextmine model. The folder is
built under a temporary name and renamed when complete, so a failed import leaves nothing under
the final name.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator

import numpy as np

from bitextmine import __version__
from bitextmine.corpus import Errors, Line, ReadStats, check_input, compression, input_identity, iter_lines
from bitextmine.errors import InputError
from bitextmine.events import Listener, task
from bitextmine.fs import OutputLock, file_identity, is_temp_name, publish_dir, remove_temps, replace_dir, temp_dir
from bitextmine.store import FORMAT, FORMAT_VERSION, MANIFEST, SHARD_NAME, ShardWriter, schema, write_manifest

NPY_MAGIC = b"\x93NUMPY"


class EmbeddingDtype(str, Enum):
    """The value type of raw embeddings."""

    FP32 = "fp32"
    FP16 = "fp16"

    @classmethod
    def _missing_(cls, value: object) -> EmbeddingDtype | None:
        names = {"float32": "fp32", "float16": "fp16", "f4": "fp32", "f2": "fp16"}
        v = names.get(str(value).lower(), str(value).lower())
        return next((d for d in cls if d.value == v), None)

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(np.float32 if self is EmbeddingDtype.FP32 else np.float16)


@dataclass
class ImportOptions:
    dim: int | None = None  # required for raw files; checked against a .npy header
    dtype: EmbeddingDtype | str | None = None  # raw files: fp32 (default) or fp16; checked against a .npy header
    model_name: str = "unnamed"  # the model that made the embeddings (decides which folders compare)
    id_column: bool = False  # TEXTS lines are "id<TAB>sentence"
    errors: Errors = Errors.STRICT  # invalid UTF-8 in TEXTS
    shard_size: int = 250_000  # sentences per shard file
    chunk_size: int = 16_384  # rows read, checked and normalised at a time (bounds memory)
    overwrite: bool = False  # replace an existing folder

    def __post_init__(self) -> None:
        if self.dtype is not None:
            try:
                self.dtype = EmbeddingDtype(self.dtype)
            except ValueError:
                raise InputError(f"unknown {{param}} {self.dtype!r}; choose fp32 or fp16", param="dtype") from None
        if self.dim is not None and self.dim < 1:
            raise InputError("{param} must be at least 1", param="dim")
        if self.shard_size < 1 or self.chunk_size < 1:
            raise InputError("{param} must be at least 1", param="shard_size")
        if not self.model_name.strip():
            raise InputError("{param} must not be empty", param="model_name")


@dataclass
class ImportSummary:
    out: str
    sentences: int  # rows stored (one per non-blank line)
    shards: int
    rows: int  # rows in the embedding file
    rows_per: str  # "line" (blank lines included) or "non-blank line"
    source: str  # "raw fp32", "raw fp16", "npy float32"...
    dim: int
    model: str
    fingerprint: str
    zero_rows: int  # rows of zeros, stored unnormalised
    read: dict
    seconds: float


def import_fingerprint(model_name: str, dim: int) -> str:
    """The fingerprint of imported embeddings: equal for the same stated model and dim, never equal to a
    bitextmine model's (those have no ``import:`` prefix)."""
    return "import:" + hashlib.sha256(json.dumps([model_name, dim]).encode()).hexdigest()[:16]


def open_embeddings(path: str | Path, dim: int | None = None, dtype: EmbeddingDtype | str | None = None) -> tuple[np.ndarray, str]:
    """Memory-map raw or .npy embeddings: ((rows, dim) array, a description such as ``"raw fp16"``)."""
    path = str(path)
    if path == "-":
        raise InputError("embeddings are memory-mapped: give a file, not '-'")
    check_input(path)
    dt = EmbeddingDtype(dtype) if dtype is not None else None
    with open(path, "rb") as fh:
        head = fh.read(8)
    if (kind := compression(head)) is not None:
        raise InputError(f"{path}: is {kind}-compressed; decompress it first (embeddings are memory-mapped)")
    if head.startswith(NPY_MAGIC):
        return _open_npy(path, dim, dt)
    if dim is None:
        raise InputError(f"{path}: raw embeddings (no .npy header) need {{param}}", param="dim")
    dt = dt or EmbeddingDtype.FP32
    row = dim * dt.numpy.itemsize
    size = Path(path).stat().st_size
    if size % row:
        raise InputError(f"{path}: {size:,} bytes is not a whole number of {dim}-dim {dt.value} rows ({row:,} bytes each); "
                         "check {dim} and {dtype}", param=("dim", "dtype"))
    return np.memmap(path, dtype=dt.numpy, mode="r", shape=(size // row, dim)), f"raw {dt.value}"


def _open_npy(path: str, dim: int | None, dt: EmbeddingDtype | None) -> tuple[np.ndarray, str]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: unreadable .npy file ({str(e).splitlines()[0][:120]})") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: a .npy array of shape {arr.shape}; expected (rows, dim)")
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise InputError(f"{path}: a .npy array of {arr.dtype}; expected float16, float32 or float64")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{path}: holds {arr.shape[1]}-dim rows (.npy header), not {dim}; drop or fix {{param}}", param="dim")
    if dt is not None and arr.dtype != dt.numpy:
        raise InputError(f"{path}: holds {arr.dtype} values (.npy header), not {dt.value}; drop or fix {{param}}", param="dtype")
    return arr, f"npy {arr.dtype}"


def import_embeddings(embeddings: str | Path, texts: str | Path, out: str | Path, opts: ImportOptions | None = None, *,
                      listener: Listener | None = None) -> ImportSummary:
    """Wrap ``embeddings`` (raw or .npy) and the lines of ``texts`` into the embedding folder ``out``.

    Counts and dims are checked before anything is written (see the module docstring); the folder
    appears complete or not at all. ``listener`` receives one task, "importing", in rows.
    """
    opts = opts or ImportOptions()
    t0 = time.perf_counter()
    emb_path, text_path, out = str(embeddings), str(texts), Path(out)
    arr, source = open_embeddings(emb_path, opts.dim, opts.dtype)
    if text_path == "-":
        raise InputError("the texts are read twice (count, then import): give a file, not '-'")
    check_input(text_path)
    _check_out(out, [emb_path, text_path], opts.overwrite)
    counted = ReadStats()
    kept = sum(1 for _ in iter_lines([text_path], id_column=opts.id_column, errors=opts.errors, stats=counted))
    rows, dim = arr.shape
    if rows == counted.lines:
        rows_per = "line"
    elif rows == kept:
        rows_per = "non-blank line"
    else:
        raise InputError(f"{emb_path} has {rows:,} rows but {text_path} has {counted.lines:,} lines ({kept:,} not blank); "
                         "the embeddings need one row per line (as LASER's embed.py writes) or one per non-blank line")
    if kept == 0:
        raise InputError(f"{text_path}: no sentences (only blank or skipped lines); nothing to import")
    fp = import_fingerprint(opts.model_name, dim)
    out.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(out.resolve()):
        remove_temps(out)
        tmp = temp_dir(out)
        try:
            with task(listener, f"importing {emb_path}", kept) as advance:
                shards, stats, zeros = _write_shards(tmp, arr, text_path, rows_per, fp, opts, advance)
            settings = {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fp, "model": opts.model_name, "recipe": None,
                        "dim": dim, "dtype": "float16", "inputs": [input_identity(text_path)], "id_column": opts.id_column,
                        "errors": opts.errors.value, "shard_size": opts.shard_size,
                        # computed elsewhere: what the bits depend on is the source file (see "imported")
                        "numerics": {"device": None, "dtype": source, "token_budget": None, "forward": "import"}}
            imported = {"embeddings": file_identity(emb_path), "source": source, "rows": rows, "rows_per": rows_per,
                        "l2_normalised": True, "zero_rows": zeros}
            write_manifest(tmp, {**settings, "bitextmine": __version__, "complete": True, "shards": shards, "count": kept,
                                 "read": asdict(stats), "imported": imported})
            if out.exists():
                replace_dir(tmp, out)
            else:
                publish_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ImportSummary(str(out), kept, len(shards), rows, rows_per, source, dim, opts.model_name, fp, zeros,
                         asdict(stats), time.perf_counter() - t0)


def _check_out(out: Path, inputs: list[str], overwrite: bool) -> None:
    """InputError unless ``out`` can become the folder: not a file, empty or ``overwrite``, holding no input."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another {{param}}", param="out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: folder exists and is not empty; use {{overwrite}} to replace it, or another {{out}}",
                             param=("overwrite", "out"))
        if not (out / MANIFEST).is_file() or not all(f.name == MANIFEST or SHARD_NAME.fullmatch(f.name) or is_temp_name(f.name)
                                                     for f in out.iterdir()):
            raise InputError(f"{out}: holds other files than embeddings; it is not replaced: choose another {{param}}", param="out")
    for p in inputs:
        if Path(p).resolve().is_relative_to(out.resolve()):
            raise InputError(f"{out}: holds the input {p}; choose another {{param}}", param="out")


def _feed(h: "hashlib._Hash", lines: list[Line]) -> None:
    """The input-lines hash of a shard, as :func:`bitextmine.encode_job.feed_lines` computes it."""
    for ln in lines:
        h.update(f"{ln.input}\t{ln.line}\t{ln.id or ''}\t{ln.text}\n".encode())


def _chunks(lines: Iterator[Line], chunk: int, shard: int) -> Iterator[list[Line]]:
    """Lists of at most ``chunk`` lines, cut so that every ``shard`` lines end a list."""
    room = shard
    while part := list(itertools.islice(lines, min(chunk, room))):
        yield part
        room = room - len(part) or shard


def _write_shards(folder: Path, arr: np.ndarray, text_path: str, rows_per: str, fingerprint: str, opts: ImportOptions,
                  advance) -> tuple[list[dict], ReadStats, int]:
    """Stream the rows of the kept lines, normalised, into shards in ``folder``: (manifest entries, read stats, zero rows)."""
    stats = ReadStats()
    lines = iter_lines([text_path], id_column=opts.id_column, errors=opts.errors, stats=stats)
    sch = schema(arr.shape[1], opts.id_column, fingerprint)
    shards: list[dict] = []
    writer: ShardWriter | None = None
    h = hashlib.sha256()
    done = zeros = 0
    try:
        for part in _chunks(lines, opts.chunk_size, opts.shard_size):
            idx = np.fromiter((ln.line - 1 for ln in part), np.int64, len(part)) if rows_per == "line" \
                else np.arange(done, done + len(part), dtype=np.int64)
            emb, z = _normalised(arr, idx, part)
            zeros += z
            if writer is None:
                writer, h = ShardWriter(folder, len(shards), sch), hashlib.sha256()
            writer.write(emb, [ln.input for ln in part], [ln.line for ln in part], [ln.text for ln in part],
                         [ln.id or "" for ln in part] if opts.id_column else None)
            _feed(h, part)
            done += len(part)
            if advance:
                advance(len(part))
            if writer.rows == opts.shard_size:
                shards.append({**writer.close(), "input_sha256": h.hexdigest()})
                writer = None
        if writer is not None:
            shards.append({**writer.close(), "input_sha256": h.hexdigest()})
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return shards, stats, zeros


def _normalised(arr: np.ndarray, idx: np.ndarray, lines: list[Line]) -> tuple[np.ndarray, int]:
    """float32 rows ``idx`` of ``arr``, each divided by its L2 norm: (rows, number of all-zero rows)."""
    emb = np.asarray(arr[idx], dtype=np.float32)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise InputError(f"row {int(idx[bad]) + 1} of the embeddings (line {lines[bad].line}) holds NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", emb, emb, dtype=np.float64))
    zero = norms == 0
    emb /= np.where(zero, 1.0, norms)[:, None].astype(np.float32)
    return emb, int(zero.sum())
