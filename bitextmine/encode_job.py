"""Corpus to embedding folder: streamed, sharded, resumable.

The job reads the inputs in chunks, embeds each chunk and appends it to the current shard;
memory is bounded by one chunk whatever the corpus size. After each finished shard the
manifest is rewritten, so a crash or Ctrl-C loses at most the shard in progress. A rerun with
the same settings re-reads the input, checks that the lines behind every finished shard are
unchanged (by a hash of their text recorded in the manifest), and encodes from the first
missing shard; a rerun with another model, other settings or changed input refuses.
"""
from __future__ import annotations

import hashlib
import itertools
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from bitextmine import __version__
from bitextmine.corpus import Errors, Line, ReadStats, check_input, count_lines, input_identity, iter_lines
from bitextmine.encoder import Encoder

if TYPE_CHECKING:
    from bitextmine.encoder import EncoderOptions
from bitextmine.errors import InputError, MismatchError
from bitextmine.events import Listener, task
from bitextmine.fs import is_temp_name
from bitextmine.store import FORMAT, FORMAT_VERSION, ShardWriter, read_manifest, schema, verify_shard, write_manifest


@dataclass
class EncodeOptions:
    shard_size: int = 250_000  # sentences per shard file (~190 MB at 384 dims)
    chunk_size: int = 8_192  # sentences read and embedded at a time (bounds memory)
    id_column: bool = False  # lines are "id<TAB>sentence"
    errors: Errors = Errors.STRICT  # invalid UTF-8 handling
    overwrite: bool = False  # discard an existing folder instead of resuming


@dataclass
class EncodeSummary:
    out: str
    sentences: int
    shards: int
    resumed_shards: int  # shards found finished and kept
    seconds: float  # wall time of this run
    encoded: int  # sentences embedded by this run
    truncated: int
    read: dict = field(default_factory=dict)
    encoder: Encoder | None = field(default=None, repr=False)  # the encoder that embedded (model, dims, dtype)

    @property
    def sentences_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def _settings(encoder: Encoder, inputs: list[str], opts: EncodeOptions) -> dict:
    lm = encoder.lm
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "fingerprint": lm.fingerprint,
        "model": lm.source,
        "recipe": lm.recipe.to_dict(),
        "dim": encoder.dim,
        "dtype": "float16",
        "inputs": [input_identity(p) for p in inputs],
        "id_column": opts.id_column,
        "errors": opts.errors.value,
        "shard_size": opts.shard_size,
    }


#: The parameters a refused resume points to.
_RESUME_FLAGS = ("out", "overwrite")


def _check_resumable(old: dict, new: dict, out: Path) -> None:
    """Raise MismatchError saying what differs between an existing folder and this run."""
    hint = f"use another {{out}} folder or {{overwrite}} to discard {out}"
    if old["fingerprint"] != new["fingerprint"]:
        raise MismatchError(f"{out} holds embeddings of another model ({old['model']}, fingerprint {old['fingerprint']}); {hint}", param=_RESUME_FLAGS)
    for key in ("id_column", "errors", "shard_size", "dim"):
        if old.get(key) != new.get(key):
            raise MismatchError(f"{out} was encoded with {key}={old.get(key)}, this run has {key}={new.get(key)}; {hint}", param=_RESUME_FLAGS)
    if len(old["inputs"]) != len(new["inputs"]):
        raise MismatchError(f"{out} was encoded from {len(old['inputs'])} inputs, this run has {len(new['inputs'])}; {hint}", param=_RESUME_FLAGS)
    for a, b in zip(old["inputs"], new["inputs"]):
        if a != b:
            what = "another file" if a.get("path") != b.get("path") else "the file changed since (size or modification time)"
            raise MismatchError(f"input {b['path']}: {what} than the one encoded into {out}; {hint}", param=_RESUME_FLAGS)


def feed_lines(h: "hashlib._Hash", lines: list[Line]) -> None:
    """Add lines (with their positions and ids) to a running hash; chunking does not change the digest."""
    for ln in lines:
        h.update(f"{ln.input}\t{ln.line}\t{ln.id or ''}\t{ln.text}\n".encode())


def lines_hash(lines: list[Line]) -> str:
    h = hashlib.sha256()
    feed_lines(h, lines)
    return h.hexdigest()


def _take(it: Iterator[Line], n: int) -> list[Line]:
    return list(itertools.islice(it, n))


def _chunks(lines: Iterator[Line], chunk_size: int, shard_size: int) -> Iterator[list[Line]]:
    """Lists of at most ``chunk_size`` lines, cut so that every ``shard_size`` lines end a chunk."""
    room = shard_size
    while chunk := _take(lines, min(chunk_size, room)):
        yield chunk
        room = room - len(chunk) or shard_size


def _finish(w: ShardWriter, h) -> dict:
    entry = w.close()
    entry["input_sha256"] = h.hexdigest()
    return entry


def encode_corpus(
    inputs: list[str],
    out: str | Path,
    encoder: Encoder,
    opts: EncodeOptions | None = None,
    *,
    listener: Listener | None = None,
    what: str = "encoding",
) -> EncodeSummary:
    """Embed every sentence of ``inputs`` into the folder ``out`` (see module docstring).

    ``listener`` receives one task (``what``, total = the inputs' line count when cheap to know).
    """
    with task(listener, what, count_lines(inputs) if listener else None) as advance:
        summary = _encode_corpus(inputs, Path(out), encoder, opts or EncodeOptions(), advance)
    summary.encoder = encoder
    return summary


def open_encoder(opts: EncoderOptions, listener: Listener | None = None) -> Encoder:
    """Load the encoder ``opts`` describe, reported to ``listener`` as a task of unit "model"."""
    from bitextmine.encoder import load_encoder

    with task(listener, f"loading model {opts.model}", unit="model"):
        return load_encoder(opts)


def encode_files(inputs: list[str], out: str | Path, encoder: Encoder | EncoderOptions, opts: EncodeOptions | None = None, *,
                 listener: Listener | None = None) -> EncodeSummary:
    """What ``bitextmine encode corpus`` does: check the inputs, load the model, embed into ``out``."""
    if not inputs:
        raise InputError("no input given")
    for p in inputs:  # fail on a bad path before spending time loading the model
        check_input(p)
    enc = encoder if isinstance(encoder, Encoder) else open_encoder(encoder, listener)
    return encode_corpus(inputs, out, enc, opts, listener=listener)


def _encode_corpus(inputs: list[str], out: Path, encoder: Encoder, opts: EncodeOptions, progress) -> EncodeSummary:
    if not inputs:
        raise InputError("no input given")
    if opts.shard_size < 1 or opts.chunk_size < 1:
        raise InputError("{param} must be at least 1", param="shard_size")
    for p in inputs:
        check_input(p)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    new = _settings(encoder, inputs, opts)
    old = read_manifest(out) if out.is_dir() else None
    if old is not None and opts.overwrite:
        shutil.rmtree(out)
        old = None
    elif old is None and out.is_dir() and any(out.iterdir()) and not opts.overwrite:
        raise InputError(f"{out}: folder exists, is not empty and holds no embeddings; choose another {{param}}", param="out")
    out.mkdir(parents=True, exist_ok=True)
    done: list[dict] = []
    if old is not None:
        _check_resumable(old, new, out)
        done = old["shards"]
        for entry in done:
            verify_shard(out, entry)
    for stale in out.iterdir():  # shards in progress when an earlier run stopped
        if is_temp_name(stale.name) and stale.is_file():
            stale.unlink(missing_ok=True)

    t0 = time.perf_counter()
    stats = ReadStats()
    lines = iter_lines(inputs, id_column=opts.id_column, errors=opts.errors, stats=stats)
    for i, entry in enumerate(done):
        got = _take(lines, entry["rows"])
        if len(got) != entry["rows"] or lines_hash(got) != entry["input_sha256"]:
            raise MismatchError(f"the input lines behind {out / entry['file']} changed since it was written; use another {{out}} or {{overwrite}}", param=_RESUME_FLAGS)
        if progress:
            progress(len(got))
    resumed = len(done)
    sch = schema(encoder.dim, opts.id_column, encoder.lm.fingerprint)
    encoded = 0
    truncated0 = encoder.stats.truncated
    shards = list(done)
    write_manifest(out, {**new, "bitextmine": __version__, "complete": False, "shards": shards})
    w: ShardWriter | None = None
    h = hashlib.sha256()
    try:
        # Chunks never straddle a shard boundary; the next chunk is read and tokenised while this one is embedded.
        for chunk, emb in encoder.encode_stream(_chunks(lines, opts.chunk_size, opts.shard_size), texts=lambda c: [ln.text for ln in c]):
            if w is None:
                w, h = ShardWriter(out, len(shards), sch), hashlib.sha256()
            w.write(emb, [ln.input for ln in chunk], [ln.line for ln in chunk], [ln.text for ln in chunk],
                    [ln.id or "" for ln in chunk] if opts.id_column else None)
            feed_lines(h, chunk)
            encoded += len(chunk)
            if progress:
                progress(len(chunk))
            if w.rows == opts.shard_size:
                shards.append(_finish(w, h))
                w = None
                write_manifest(out, {**new, "bitextmine": __version__, "complete": False, "shards": shards})
        if w is not None:  # the last, partly filled shard
            shards.append(_finish(w, h))
            w = None
            write_manifest(out, {**new, "bitextmine": __version__, "complete": False, "shards": shards})
    finally:
        if w is not None:  # interrupted or failed: the shard in progress is discarded, finished ones are kept
            w.abort()
    total = sum(s["rows"] for s in shards)
    if total == 0:
        raise InputError(f"{', '.join(inputs)}: no sentences (only blank or skipped lines)")
    read = asdict(stats)
    write_manifest(out, {**new, "bitextmine": __version__, "complete": True, "shards": shards, "count": total, "read": read})
    return EncodeSummary(str(out), total, len(shards), resumed, time.perf_counter() - t0, encoded, encoder.stats.truncated - truncated0, read)
