"""Corpus to embedding folder: streamed, sharded, resumable.

The job reads the inputs in chunks, embeds each chunk and appends it to the current shard;
memory is bounded by one chunk whatever the corpus size. After each finished shard the
manifest is rewritten, so a crash or Ctrl-C loses at most the shard in progress. One run at a
time writes a folder (a lock file beside it names the running process).

A rerun resumes by content: it re-reads the input and keeps every finished shard whose input
lines hash as recorded in the manifest, whatever the files' modification times; a rerun with
other ``errors`` handling keeps the shards before the first line it reads differently. Where the
lines differ (the input was edited) the shards from the first difference on are re-encoded and
the summary says so. A rerun with another model, recipe, ``shard_size`` or ``id_column``, or
whose inputs are other files than those encoded, refuses, naming the difference and the fix.
"""
from __future__ import annotations

import hashlib
import itertools
import json
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
    from bitextmine.ray_engine import RayOptions
from bitextmine.errors import InputError, MismatchError, StoreError
from bitextmine.events import Listener, task
from bitextmine.fs import OutputLock, is_temp_name
from bitextmine.store import (DEFAULT_CHANGED, FORMAT, FORMAT_VERSION, MANIFEST, SHARD_NAME, ShardWriter, read_manifest, schema, verify_shard,
                              write_manifest)


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
    reencoded_from: int | None = None  # first shard of an earlier run encoded again (its input changed), else None
    reencode_reason: str = ""  # why, e.g. "its input lines changed"

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
        "numerics": encoder.numerics,  # what the embeddings' bits depend on besides model and texts
        # where the embedding ran when not in this process (bitextmine.ray_engine): not part of the bits, not checked on resume
        **({"engine": encoder.engine} if getattr(encoder, "engine", None) else {}),
    }


#: The parameters a refused resume points to.
_RESUME_FLAGS = ("out", "overwrite")


def _check_resumable(old: dict, new: dict, out: Path) -> None:
    """Raise MismatchError if an existing folder's embeddings or shard layout differ from this run's."""
    hint = f"or use another {{out}} folder, or {{overwrite}} to discard {out}"
    if old["fingerprint"] != new["fingerprint"]:
        if old.get("model") == new["model"] == "default":
            raise MismatchError(f"{out} was started by another version of --model default ({DEFAULT_CHANGED}); rerun with "
                                f"{{model}} e5-small if it was started before 0.2, {hint}", param=("model",) + _RESUME_FLAGS)
        raise MismatchError(
            f"{out} holds embeddings of another model or recipe ({old.get('model')}, fingerprint {old['fingerprint']}; this run: "
            f"{new['model']}, fingerprint {new['fingerprint']}); rerun with {{model}} {old.get('model')} and the same recipe options "
            f"to resume, {hint}", param=("model",) + _RESUME_FLAGS)
    for key in ("dim", "shard_size", "id_column"):
        if old.get(key) != new.get(key):
            fix = {"dim": "rerun with the model that wrote it to resume",
                   "shard_size": f"rerun with {{shard_size}} {old.get(key)} to resume",
                   "id_column": f"rerun {'with' if old.get(key) else 'without'} {{id_column}} to resume"}[key]
            raise MismatchError(f"{out} was encoded with {key}={json.dumps(old.get(key))}, this run has {key}={json.dumps(new.get(key))}; "
                                f"{fix}, {hint}", param=_RESUME_FLAGS + ((key,) if key != "dim" else ()))
    was, now = old.get("numerics"), new["numerics"]
    if was is not None and was != now:  # folders written before numerics were recorded are taken as they are
        raise MismatchError(f"{out} was encoded with {_numerics(was)}, this run computes {_numerics(now)}: the vectors would "
                            f"differ in their last bits; rerun with {{precision}} {was.get('dtype')} on the same device "
                            f"(and {{batch_tokens}} {was.get('token_budget')}) to resume, {hint}",
                            param=("precision", "batch_tokens") + _RESUME_FLAGS)


def _numerics(n: dict) -> str:
    return f"{n.get('dtype')} on {n.get('device')} ({n.get('forward')} forward, {n.get('token_budget')}-token batches)"


def _check_same_files(old: dict, new: dict, out: Path, entry: dict, why: str) -> None:
    """Raise MismatchError if shards would be re-encoded because the inputs are other files, not edited ones."""
    for a, b in zip(old.get("inputs", []), new["inputs"]):
        if a.get("path") != b["path"]:
            raise MismatchError(
                f"{out} was encoded from {a.get('path')}, this run reads {b['path']}, and {entry['file']} no longer matches "
                f"({why}); rerun with the original inputs to resume, or use another {{out}} folder, or {{overwrite}} to "
                f"re-encode {out}", param=_RESUME_FLAGS)


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


def _kept_prefix(out: Path, shards: list[dict], lines: Iterator[Line], shard_size: int, progress) -> tuple[int, str, list[Line]]:
    """How many finished shards still match the input, read from ``lines``.

    Returns (kept, why the next one does not match or "", the lines read past the kept shards).
    """
    for i, entry in enumerate(shards):
        got = _take(lines, entry["rows"])
        try:
            verify_shard(out, entry)
        except StoreError as e:
            return i, f"the shard file is damaged: {str(e).removeprefix(str(out / entry['file']) + ': ')}", got
        if len(got) != entry["rows"] or lines_hash(got) != entry.get("input_sha256"):
            return i, "its input lines changed", got
        if entry["rows"] < shard_size and (more := _take(lines, 1)):  # a partly filled shard must be the last
            return i, "the input has more lines than when it was written", got + more
        if progress:
            progress(len(got))
    return len(shards), "", []


def _only_ours(out: Path) -> bool:
    """Whether ``out`` holds nothing but what an encode writes (manifest, shards, temporary files)."""
    return all(f.name == MANIFEST or SHARD_NAME.fullmatch(f.name) or is_temp_name(f.name) for f in out.iterdir())


def _remove_shards(out: Path, keep: int) -> None:
    """Delete shard files from index ``keep`` on and leftover temporary files (the folder is locked)."""
    for f in out.iterdir():
        if (SHARD_NAME.fullmatch(f.name) and int(f.name[6:11]) >= keep) or (is_temp_name(f.name) and f.is_file()):
            f.unlink(missing_ok=True)


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
                 listener: Listener | None = None, engine: RayOptions | None = None) -> EncodeSummary:
    """What ``bitextmine encode corpus`` does: check the inputs, load the model, embed into ``out``.

    ``engine``: embed on a pool of Ray actors that each load ``encoder`` (EncoderOptions), same bytes
    as a local run (:mod:`bitextmine.ray_engine`); None embeds in this process.
    """
    if not inputs:
        raise InputError("no input given")
    for p in inputs:  # fail on a bad path before spending time loading the model
        check_input(p)
    if engine is not None:
        from bitextmine.ray_engine import open_ray_encoder

        if isinstance(encoder, Encoder):
            raise InputError("the Ray engine loads the model on its workers: pass EncoderOptions, not a loaded Encoder")
        with open_ray_encoder(encoder, engine, listener) as ray_enc:
            return encode_corpus(inputs, out, ray_enc, opts, listener=listener)  # type: ignore[arg-type]
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
        raise InputError(f"{out}: exists and is not a folder; choose another {{param}}", param="out")
    lock = OutputLock(out.resolve())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # the lock file lives beside the folder
        lock.acquire()
    except OSError as e:
        raise InputError(f"{out}: cannot create the folder or its lock file {lock.path.name} beside it ({e.strerror or e}); "
                         "choose another {param}", param="out") from None
    try:
        created = not out.exists()
        try:
            return _encode_locked(inputs, out, encoder, opts, progress)
        except BaseException:
            # a folder this run created and that holds no finished shard is no use to a rerun
            if created and out.is_dir() and not any(SHARD_NAME.fullmatch(f.name) for f in out.iterdir()):
                shutil.rmtree(out, ignore_errors=True)
            raise
    finally:
        lock.release()


def _previous(out: Path, overwrite: bool) -> dict | None:
    """The manifest of an earlier run in ``out`` (None if there is none or it is to be discarded)."""
    if not out.is_dir():
        return None
    try:
        old = read_manifest(out)
    except StoreError as e:
        if not overwrite:
            raise StoreError(f"{e}; use {{overwrite}} to encode into {out} again, or another {{out}} folder", param=("overwrite", "out")) from None
        if _only_ours(out):
            return None
        raise StoreError(f"{e}; {out} also holds other files, so it is not discarded: choose another {{param}}", param="out") from None
    if old is None and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: folder exists, is not empty and holds no embeddings; choose another {{param}}", param="out")
    return None if overwrite else old


def _encode_locked(inputs: list[str], out: Path, encoder: Encoder, opts: EncodeOptions, progress) -> EncodeSummary:
    new = _settings(encoder, inputs, opts)
    old = _previous(out, opts.overwrite)
    if old is not None:
        _check_resumable(old, new, out)
    out.mkdir(exist_ok=True)

    t0 = time.perf_counter()
    stats = ReadStats()
    lines = iter_lines(inputs, id_column=opts.id_column, errors=opts.errors, stats=stats)
    old_shards = old["shards"] if old is not None else []
    kept, why, reread = _kept_prefix(out, old_shards, lines, opts.shard_size, progress)
    if kept < len(old_shards):
        _check_same_files(old, new, out, old_shards[kept], why)  # type: ignore[arg-type]
        lines = itertools.chain(reread, lines)
    shards = old_shards[:kept]
    # The manifest records this run's settings and the kept shards before anything else is removed or written.
    write_manifest(out, {**new, "bitextmine": __version__, "complete": False, "shards": shards})
    _remove_shards(out, kept)

    sch = schema(encoder.dim, opts.id_column, encoder.lm.fingerprint)
    encoded = 0
    truncated0 = encoder.stats.truncated
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
        (out / MANIFEST).unlink(missing_ok=True)  # nothing to resume: leave no folder that asks for a rerun
        raise InputError(f"{', '.join(inputs)}: no sentences (only blank or skipped lines); nothing to encode")
    read = asdict(stats)
    write_manifest(out, {**new, "bitextmine": __version__, "complete": True, "shards": shards, "count": total, "read": read})
    return EncodeSummary(str(out), total, len(shards), kept, time.perf_counter() - t0, encoded, encoder.stats.truncated - truncated0, read,
                         reencoded_from=kept if kept < len(old_shards) else None, reencode_reason=why)
