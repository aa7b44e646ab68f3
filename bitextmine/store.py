"""Sharded Arrow embedding files: writer, memory-mapped reader, manifest.

A folder holds ``manifest.json`` and shards ``shard-NNNNN.arrow``. Each shard is an Arrow IPC
*file* (random access, memory-mappable) whose record batches have the columns

- ``embedding``: fixed_size_list<float16>[dim] — a reader gets a zero-copy (n, dim) numpy view
- ``input``: int16, index of the input file; ``line``: int64, 1-based line number in that input
- ``text``: the sentence, so a folder can be mined without the original files
- ``id``: string, only when the corpus had ``id<TAB>sentence`` lines

Shards are written under a temporary name and renamed when complete; the manifest is rewritten
(atomically) after each shard, recording its size and SHA-256, so a reader detects truncated
or corrupted shards and an interrupted encode resumes at the first missing shard.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from bitextmine.errors import MismatchError, StoreError
from bitextmine.fs import atomic_write_json, commit, create_exclusive, file_sha256, fsync_file, temp_name

MANIFEST = "manifest.json"
FORMAT = "bitextmine-embeddings"
FORMAT_VERSION = 1
META_KEY = b"bitextmine"


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.arrow"


def schema(dim: int, with_ids: bool, fingerprint: str) -> pa.Schema:
    fields = [
        pa.field("embedding", pa.list_(pa.float16(), dim), nullable=False),
        pa.field("input", pa.int16(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
    if with_ids:
        fields.append(pa.field("id", pa.string(), nullable=False))
    meta = json.dumps({"fingerprint": fingerprint, "dim": dim, "version": FORMAT_VERSION})
    return pa.schema(fields, metadata={META_KEY: meta.encode()})


class ShardWriter:
    """Writes one shard: record batches go to a temporary file; ``close()`` renames it into place.

    Use as a context manager; if the block raises, the temporary file is removed and nothing
    named like a finished shard appears.
    """

    def __init__(self, folder: Path, index: int, schema: pa.Schema) -> None:
        self.path = Path(folder) / shard_name(index)
        self.tmp = temp_name(self.path)
        self.schema = schema
        self.rows = 0
        create_exclusive(self.tmp, "wb").close()  # never writes through a planted file or symlink
        self._sink = pa.OSFile(str(self.tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)

    def write(self, embeddings: np.ndarray, inputs: Sequence[int], lines: Sequence[int], texts: Sequence[str], ids: Sequence[str] | None = None) -> None:
        """Append rows: ``embeddings`` (n, dim) any float dtype, stored as float16."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float16)
        n, dim = emb.shape
        cols = [
            pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float16()), dim),
            pa.array(inputs, type=pa.int16()),
            pa.array(lines, type=pa.int64()),
            pa.array(texts, type=pa.string()),
        ]
        if "id" in self.schema.names:
            cols.append(pa.array(ids, type=pa.string()))
        self._writer.write_batch(pa.RecordBatch.from_arrays(cols, schema=self.schema))
        self.rows += n

    def close(self) -> dict:
        """Finish the file, sync it, rename it into place; return its manifest entry."""
        self._writer.close()
        self._sink.close()
        fsync_file(self.tmp)
        entry = {"file": self.path.name, "rows": self.rows, "bytes": self.tmp.stat().st_size, "sha256": file_sha256(self.tmp)}
        commit(self.tmp, self.path)
        return entry

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:
            pass
        self._sink.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, typ, exc, tb) -> None:
        if exc is not None:
            self.abort()


SHARD_NAME = re.compile(r"shard-\d{5}\.arrow")


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, None if it has none; StoreError if it is not one of ours or is malformed.

    Shard entries are checked here, once, for every reader: each names a plain ``shard-NNNNN.arrow``
    file inside the folder (its position in the list), so an edited manifest cannot make a reader
    open ``../other/file`` or ``/etc/passwd``.
    """
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StoreError(f"{p}: manifest is not valid JSON (corrupted?)") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{p}: not a bitextmine embedding manifest")
    version = m.get("version", 0)
    if not _is_int(version):
        raise StoreError(f"{p}: manifest field version must be an integer, found {_show(version)}")
    if version > FORMAT_VERSION:
        raise StoreError(f"{p}: written by a newer bitextmine (format {version}); upgrade to read it")
    _check_manifest(p, m)
    return m


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _show(v: object) -> str:
    """A manifest value as JSON, cut short: it came from a file anyone may have edited."""
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_manifest(p: Path, m: dict) -> None:
    """Raise StoreError naming the first field of ``m`` that no bitextmine could have written."""
    def bad(what: str) -> StoreError:
        return StoreError(f"{p}: {what} (the manifest was edited or damaged; encode the folder again)")

    if not isinstance(m.get("fingerprint"), str):
        raise bad("fingerprint must be a string")
    if not _is_int(m.get("dim")) or m["dim"] < 1:
        raise bad(f"dim must be a positive integer, found {_show(m.get('dim'))}")
    for key in ("complete", "id_column"):
        if not isinstance(m.get(key, False), bool):
            raise bad(f"{key} must be true or false, found {_show(m.get(key))}")
    if not isinstance(m.get("inputs", []), list):
        raise bad("inputs must be a list")
    shards = m.get("shards")
    if not isinstance(shards, list):
        raise bad("shards must be a list")
    for i, e in enumerate(shards):
        if not isinstance(e, dict):
            raise bad(f"shard entry {i} must be an object")
        name = e.get("file")
        if not isinstance(name, str) or not SHARD_NAME.fullmatch(name) or name != shard_name(i):
            raise bad(f"shard entry {i} names {_show(name)}; shards must be plain files named {shard_name(i)} in this folder")
        for key in ("rows", "bytes"):
            if not _is_int(e.get(key)) or e[key] < 0:
                raise bad(f"shard entry {i} ({name}): {key} must be a non-negative integer, found {_show(e.get(key))}")
        if not isinstance(e.get("sha256"), str):
            raise bad(f"shard entry {i} ({name}): sha256 must be a string")
    if m.get("complete"):
        count = m.get("count")
        if not _is_int(count) or count != sum(e["rows"] for e in shards):
            raise bad(f"count {_show(count)} differs from the shards' rows ({sum(e['rows'] for e in shards)})")


def shard_path(folder: Path, entry: dict) -> Path:
    """The path of a manifest entry's shard, confined to ``folder`` (StoreError for any other name)."""
    name = entry.get("file")
    if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
        raise StoreError(f"{Path(folder) / MANIFEST}: shard name {_show(name)} is not a plain shard-NNNNN.arrow file name")
    return Path(folder) / name


def verify_shard(folder: Path, entry: dict, checksum: bool = True) -> None:
    """Raise StoreError unless the shard file exists with the recorded size (and SHA-256)."""
    p = shard_path(folder, entry)
    if not p.is_file() or p.is_symlink():
        raise StoreError(f"{p}: shard is missing" + (" (a symlink stands in its place)" if p.is_symlink() else ""))
    size = p.stat().st_size
    if size != entry["bytes"]:
        raise StoreError(f"{p}: shard is truncated or altered ({size} bytes, manifest says {entry['bytes']})")
    if checksum and file_sha256(p) != entry["sha256"]:
        raise StoreError(f"{p}: shard is corrupted (SHA-256 differs from the manifest)")


@dataclass
class _Chunk:
    start: int  # global row index of the first row
    emb: np.ndarray  # (n, dim) float16 view into the memory map
    batch: pa.RecordBatch


_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") and _MADV_DONTNEED is not None else None


def _release(view: np.ndarray) -> None:
    """Drop the pages under ``view`` (a read-only view into a shard's memory map) from this process
    (``madvise(MADV_DONTNEED)``): they stay in the page cache and a later read maps them again, but a
    search that streams two 1M-row folders no longer counts ~1.5 GiB of file pages as its resident
    memory. Linux only; elsewhere, and on any error, nothing happens."""
    if _libc is None or not view.size:
        return
    page = mmap.PAGESIZE
    start = view.ctypes.data // page * page
    end = view.ctypes.data + view.nbytes
    _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), ctypes.c_int(_MADV_DONTNEED))


class EmbeddingStore:
    """Read side of an embedding folder: memory-mapped, zero-copy, row-addressable.

    Implements the ``BlockSource`` protocol of :mod:`bitextmine.knn` (``len``, ``dim``,
    ``iter_blocks``), so search reads the fp16 shards block by block without loading them.
    """

    def __init__(self, folder: str | Path, *, verify: bool = True) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise StoreError(f"{folder}: no such embedding folder")
        m = read_manifest(self.folder)
        if m is None:
            raise StoreError(f"{folder}: no {MANIFEST}; not an embedding folder from 'bitextmine encode corpus'")
        if not m.get("complete"):
            raise StoreError(f"{folder}: encoding is incomplete ({len(m.get('shards', []))} shards); rerun the same encode command to resume")
        self.manifest = m
        self.fingerprint: str = m["fingerprint"]
        self._dim = int(m["dim"])
        self._chunks: list[_Chunk] = []
        start = 0
        for entry in m["shards"]:
            verify_shard(self.folder, entry, checksum=verify)
            path = shard_path(self.folder, entry)
            try:
                reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
                meta = json.loads(reader.schema.metadata[META_KEY])
                batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            except (pa.ArrowInvalid, OSError, KeyError, ValueError, TypeError) as e:
                raise StoreError(f"{path}: unreadable shard ({str(e).splitlines()[0][:120]})") from None
            if not isinstance(meta, dict) or meta.get("fingerprint") != self.fingerprint:
                raise StoreError(f"{path}: shard belongs to another model (fingerprint {meta.get('fingerprint') if isinstance(meta, dict) else None})")
            self._check_layout(path, reader.schema)
            if sum(b.num_rows for b in batches) != entry["rows"]:
                raise StoreError(f"{path}: shard has a different number of rows than the manifest says")
            for b in batches:
                values = b.column(0).values
                emb = values.to_numpy(zero_copy_only=True).reshape(b.num_rows, self._dim)
                self._chunks.append(_Chunk(start, emb, b))
                start += b.num_rows
        self._n = start
        self._starts = np.array([c.start for c in self._chunks], dtype=np.int64)

    def _check_layout(self, path: Path, sch: pa.Schema) -> None:
        """StoreError unless the shard's columns are what the manifest says (dims, ids)."""
        want = schema(self._dim, self.has_ids, self.fingerprint)
        if sch.names != want.names or not sch.remove_metadata().equals(want.remove_metadata()):
            emb = sch.field("embedding").type if "embedding" in sch.names else None
            dim = getattr(emb, "list_size", None)
            if dim is not None and dim != self._dim:
                raise StoreError(f"{path}: shard holds {dim}-dim embeddings, the manifest says dim {self._dim} (edited manifest?)")
            if ("id" in sch.names) != self.has_ids:
                raise StoreError(f"{path}: shard {'has' if 'id' in sch.names else 'lacks'} an id column, the manifest says "
                                 f"id_column={json.dumps(self.has_ids)} (edited manifest?)")
            raise StoreError(f"{path}: shard columns {', '.join(sch.names)} are not those of a bitextmine embedding shard")

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def has_ids(self) -> bool:
        return bool(self.manifest.get("id_column"))

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive float32 blocks of at most ``rows`` rows, converted from fp16 one block at a time.
        A chunk's pages leave the process once it has been read (:func:`_release`): a pass over the
        folder holds one chunk, not the whole memory map, in resident memory."""
        for c in self._chunks:
            for s in range(0, len(c.emb), rows):
                yield np.ascontiguousarray(c.emb[s : s + rows], dtype=np.float32)
            _release(c.emb)

    def embeddings(self, indices: np.ndarray) -> np.ndarray:
        """float32 rows at the given global indices. As in :meth:`iter_blocks`, a chunk's pages leave
        the process once its rows are read: a training sample drawn across a 10M-row folder touches
        nearly every page (five 384-d rows a page) and kept the whole memory map, 14 GiB for two
        folders, in resident memory."""
        out = np.empty((len(indices), self._dim), dtype=np.float32)
        for pos, (c, local) in self._locate(indices):
            out[pos] = c.emb[local]
            _release(c.emb)
        return out

    def column(self, name: str, indices: np.ndarray) -> list:
        """Python values of column ``name`` ("text", "line", "input", "id") at global indices, in order."""
        out: list = [None] * len(indices)
        for pos, (c, local) in self._locate(indices):
            vals = c.batch.column(name).take(pa.array(local)).to_pylist()
            for p, v in zip(pos, vals):
                out[p] = v
        return out

    def iter_column(self, name: str) -> Iterator:
        """All values of a column in row order (streamed chunk by chunk)."""
        for c in self._chunks:
            yield from c.batch.column(name).to_pylist()

    def _locate(self, indices: np.ndarray) -> Iterator[tuple[np.ndarray, tuple[_Chunk, np.ndarray]]]:
        """Group global indices by chunk: yields (positions in ``indices``, (chunk, local rows))."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self._n):
            raise IndexError("row index out of range")
        which = np.searchsorted(self._starts, indices, side="right") - 1
        for ci in np.unique(which):
            pos = np.nonzero(which == ci)[0]
            c = self._chunks[ci]
            yield pos, (c, indices[pos] - c.start)


class SubsetBlocks:
    """Rows of a store as a BlockSource: ``rows`` an index array (the rows kept by de-duplication) or a ``range``
    (a contiguous part, as the Ray workers read them: held lazily, where a 100M-row part's index array would take 800 MB)."""

    def __init__(self, store: EmbeddingStore, rows: np.ndarray | range) -> None:
        if isinstance(rows, range) and rows.step != 1:
            raise ValueError("a range of rows must have step 1")
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return self.store.dim

    def _take(self, idx: np.ndarray | slice) -> np.ndarray:
        r = self.rows
        if not isinstance(r, range):
            return r[idx]
        if isinstance(idx, slice):
            picked = r[idx]
            return np.arange(picked.start, picked.stop, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(r)):
            raise IndexError("row index out of range")
        return r.start + idx

    def iter_blocks(self, rows: int) -> Iterator[np.ndarray]:
        for s in range(0, len(self.rows), rows):
            yield self.store.embeddings(self._take(slice(s, s + rows)))

    def embeddings(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), dim) float32: rows of the subset (random reads, e.g. for the exact re-rank)."""
        return self.store.embeddings(self._take(np.asarray(indices, dtype=np.int64)))


DEFAULT_CHANGED = ("since bitextmine 0.2 'default' is the DAP-trained model that ships with the package, and 'e5-small' "
                   "the untouched base that was 'default' before")


def check_same_model(a: EmbeddingStore, b: EmbeddingStore) -> None:
    """Raise MismatchError unless both stores were made by the same model and recipe."""
    if a.fingerprint != b.fingerprint:
        ma, mb = a.manifest, b.manifest
        if ma.get("model") == mb.get("model") == "default":
            raise MismatchError(
                f"embeddings in {a.folder} (fingerprint {a.fingerprint}) and {b.folder} (fingerprint {b.fingerprint}) were both "
                f"made by --model default, but by different versions of it: {DEFAULT_CHANGED}; re-encode the "
                "older folder (or encode both sides with --model e5-small)"
            )
        raise MismatchError(
            f"embeddings in {a.folder} (model {ma.get('model')}, fingerprint {a.fingerprint}) and {b.folder} "
            f"(model {mb.get('model')}, fingerprint {b.fingerprint}) were made by different models or recipes; "
            "encode both sides with the same --model"
        )


def write_manifest(folder: Path, manifest: dict) -> None:
    """Replace the folder's manifest atomically."""
    atomic_write_json(Path(folder) / MANIFEST, manifest)
