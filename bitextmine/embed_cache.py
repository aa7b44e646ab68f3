"""The one embedding cache: text files embedded once per model, reused by ``mine`` and ``bench``.

A text file's embeddings live in ``<cache>/embeddings/<key>``, an ordinary embedding folder, where
the key hashes the file's content (SHA-256 of every byte, about 2.6 s per GB on one core: nothing
next to embedding a GB of text, and an edit that keeps size and modification time still misses),
the model's fingerprint and the reading options. Mining the same files again with other
settings, or running a benchmark again, never re-encodes; an interrupted encoding resumes; a
copied or moved file hits the same entry. An embedding folder given directly is used as is.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bitextmine.corpus import Errors, check_input
from bitextmine.errors import InputError, LockedError, StoreError
from bitextmine.events import Listener, task
from bitextmine.fs import OutputLock, default_cache_dir, file_sha256
from bitextmine.store import MANIFEST, EmbeddingStore, read_manifest

if TYPE_CHECKING:
    from bitextmine.encoder import Encoder


def is_embedding_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def cache_folder(path: str, fingerprint: str, id_column: bool, errors: Errors, cache_dir: Path, numerics: dict | None = None) -> Path:
    """Where the embeddings of text file ``path`` (by its content) by the model ``fingerprint`` are cached.

    ``numerics`` (the encoder's dtype, device kind, batch budget and forward) is part of the key, so
    embeddings computed differently are never mixed in one mining run.
    """
    try:
        content = {"size": Path(path).stat().st_size, "sha256": file_sha256(path)}
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    key = json.dumps([content, fingerprint, id_column, errors.value] + ([numerics] if numerics else []), sort_keys=True)
    return cache_dir / "embeddings" / hashlib.sha256(key.encode()).hexdigest()[:20]


def _complete(folder: Path) -> bool:
    try:
        return bool((read_manifest(folder) or {}).get("complete"))
    except StoreError:
        return False


@dataclass
class EmbeddingCache:
    """Opens mining sides: embedding folders as they are, text files through the cache.

    ``encoder`` embeds cache misses (``None`` with a ``fingerprint`` gives a cache that must already
    hold what is asked: dry runs and tests). ``encoded`` lists the files embedded by this object,
    ``seconds`` their time; ``listener`` receives one task per file embedded.
    """

    encoder: Encoder | None = None
    cache_dir: Path | None = None  # None: $BITEXTMINE_CACHE or the user cache folder
    errors: Errors = Errors.STRICT  # invalid UTF-8 in text files
    id_column: bool = False  # text files are "id<TAB>sentence" unless open() says otherwise
    listener: Listener | None = None
    fingerprint: str | None = None
    encoded: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()
        if self.fingerprint is None and self.encoder is not None:
            self.fingerprint = self.encoder.lm.fingerprint

    def open(self, path: str | Path, *, id_column: bool | None = None) -> EmbeddingStore:
        """The embeddings of ``path`` (an embedding folder, or a text file embedded on first use)."""
        path = str(path)
        id_column = self.id_column if id_column is None else id_column
        if is_embedding_folder(path):
            return EmbeddingStore(path)
        if Path(path).is_dir():
            raise InputError(f"{path}: is a directory without {MANIFEST}; expected a text file or an embedding folder")
        check_input(path)
        if self.fingerprint is None:
            raise StoreError(f"{path}: a text file needs a model to embed it")
        numerics = self.encoder.numerics if self.encoder is not None else None
        folder = cache_folder(path, self.fingerprint, id_column, self.errors, Path(self.cache_dir), numerics)
        if not (is_embedding_folder(folder) and _complete(folder)):
            self._encode(path, folder, id_column)
        return EmbeddingStore(folder)

    __call__ = open

    def _encode(self, path: str, folder: Path, id_column: bool) -> None:
        from bitextmine.encode_job import EncodeOptions, encode_corpus

        if self.encoder is None:
            raise StoreError(f"{path}: not in the embedding cache and no model to embed it")
        t0 = time.perf_counter()
        while True:
            self._wait_for_other_writer(path, folder)
            if _complete(folder):  # another process embedded it meanwhile
                return
            try:
                encode_corpus([path], folder, self.encoder, EncodeOptions(id_column=id_column, errors=self.errors),
                              listener=self.listener, what=f"encoding {path}")
                break
            except LockedError:
                pass  # lost the race for the lock to another process: wait for it again
        self.encoded.append(path)
        self.seconds += time.perf_counter() - t0

    def _wait_for_other_writer(self, path: str, folder: Path, poll: float = 1.0) -> None:
        """Wait while another process holds the cache folder's lock (it is embedding the same file)."""
        lock = OutputLock(folder.resolve())
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as e:
            raise InputError(f"{folder.parent}: cannot write to the embedding cache ({e.strerror or e}); choose another "
                             "{param}", param="cache") from None
        except InputError:
            with task(self.listener, f"waiting for another process embedding {path}", unit="s") as advance:
                while True:
                    time.sleep(poll)
                    if advance:
                        advance(1)
                    try:
                        lock.acquire()
                        break
                    except InputError:
                        continue
        lock.release()
